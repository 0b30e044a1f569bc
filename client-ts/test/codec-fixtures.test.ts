// The golden frames the Rust codec writes (fixtures/wire/, see its README.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DecodeError, decodeFrame, encodeFrame } from '../src/codec/index.js';
import { frameToJson, hex, jsonToFrame, unhex } from './support/codec-wire.js';

interface Fixture {
  name: string;
  note: string;
  frame: string;
  message?: Record<string, unknown>;
  canonical?: string;
  code?: number;
  check?: string;
  max_body_len?: number;
}

const DIR = new URL('../../fixtures/wire/', import.meta.url);

/** A fixture file's entries; a missing or empty file throws, so these tests never pass vacuously. */
function load(file: string, min: number): Fixture[] {
  const url = new URL(file, DIR);
  let text: string;
  try {
    text = readFileSync(url, 'utf8');
  } catch (e) {
    throw new Error(`golden fixtures missing: ${url.pathname} (merge the \`fixtures\` branch)`, { cause: e });
  }
  const { fixtures } = JSON.parse(text) as { fixtures?: Fixture[] };
  assert.ok(Array.isArray(fixtures) && fixtures.length >= min, `${file}: expected at least ${min} fixtures`);
  return fixtures;
}

const valid = load('valid.json', 50);
const lenient = load('lenient.json', 10);
const invalid = load('invalid.json', 20);

test('every frame kind has a valid fixture', () => {
  const kinds = new Set(valid.map((f) => f.message?.['frame_kind']));
  assert.equal(kinds.size, 25);
  for (const name of ['publish-64b', 'rpc-request-1k']) assert.ok(valid.some((f) => f.name === name), name);
});

for (const f of valid) {
  test(`valid ${f.name}: decodes to its message and re-encodes byte for byte`, () => {
    const bytes = unhex(f.frame);
    const frame = decodeFrame(bytes);
    assert.deepStrictEqual(frameToJson(frame), f.message);
    assert.equal(hex(encodeFrame(frame)), f.frame);
    assert.equal(hex(encodeFrame(jsonToFrame(f.message!))), f.frame);
  });
}

for (const f of lenient) {
  test(`lenient ${f.name}: decodes to its message and re-encodes to the canonical frame`, () => {
    const frame = decodeFrame(unhex(f.frame));
    assert.deepStrictEqual(frameToJson(frame), f.message);
    assert.equal(hex(encodeFrame(frame)), f.canonical);
    assert.equal(hex(encodeFrame(jsonToFrame(f.message!))), f.canonical);
  });
}

for (const f of invalid) {
  test(`invalid ${f.name}: refused with ${f.code} (${f.check})`, () => {
    assert.throws(
      () => decodeFrame(unhex(f.frame), f.max_body_len),
      (e: unknown) => {
        assert.ok(e instanceof DecodeError, `not a DecodeError: ${String(e)}`);
        assert.equal(e.code, f.code);
        assert.equal(e.check, f.check);
        return true;
      },
    );
  });
}
