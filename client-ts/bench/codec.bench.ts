/**
 * Codec throughput next to JSON (npm run bench).
 *
 * Frames: `publish-64b` and `rpc-request-1k` from ../fixtures/wire/valid.json when present
 * (else the same shapes built here, and the output says so). JSON is given its best case:
 * JSON.parse of a string (what a WebSocket text message already is) and JSON.stringify of an
 * object whose payload is already a base64 string, so neither side pays for base64 or for
 * UTF-8 transcoding. The codec decodes from, and encodes to, bytes ready for the socket.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { decodeFrame, encodeFrame, type Frame } from '../src/codec/index.js';

const ROUNDS = Number(process.env['ROUNDS'] ?? 7);
const ROUND_MS = Number(process.env['ROUND_MS'] ?? 300);

let fixtureSource = 'fixtures/wire/valid.json';
function fixture(name: string, fallback: () => Frame): Uint8Array {
  try {
    const file = JSON.parse(readFileSync(new URL('../../fixtures/wire/valid.json', import.meta.url), 'utf8')) as {
      fixtures: { name: string; frame: string }[];
    };
    const f = file.fixtures.find((x) => x.name === name);
    if (f) return new Uint8Array(Buffer.from(f.frame, 'hex'));
  } catch {
    // fall through to the built-in frame
  }
  fixtureSource = 'built in the bench (fixtures/wire/valid.json not found)';
  return encodeFrame(fallback());
}

const fill = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
const publishBytes = fixture('publish-64b', () => ({
  kind: 'Publish', req: 1n, topic: 'chat', echo: false, payload: fill(64),
}));
const rpcBytes = fixture('rpc-request-1k', () => ({
  kind: 'RpcRequest', id: 1n, method: 'math.add', peer: 'bob', timeoutMs: 30000, params: fill(1024),
}));

/** The message as a JSON client would send it: same fields, u64 as numbers, bytes as base64. */
function asJson(f: Frame): string {
  return JSON.stringify(f, (_k, v: unknown) =>
    typeof v === 'bigint' ? Number(v) : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v,
  );
}

let sink = 0;
/** Runs per second: warm up, then ROUNDS timed rounds of about ROUND_MS each. */
function measure(fn: () => number): number[] {
  let batch = 1000;
  const warmEnd = performance.now() + 500;
  while (performance.now() < warmEnd) for (let i = 0; i < batch; i++) sink += fn();
  // Size batches so that a round is about ROUND_MS; the clock is read once per batch.
  const t0 = performance.now();
  for (let i = 0; i < batch; i++) sink += fn();
  batch = Math.max(1000, Math.round((batch * 20) / Math.max(0.01, performance.now() - t0)));
  const rates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let n = 0;
    const start = performance.now();
    let now = start;
    while (now - start < ROUND_MS) {
      for (let i = 0; i < batch; i++) sink += fn();
      n += batch;
      now = performance.now();
    }
    rates.push((n * 1000) / (now - start));
  }
  return rates.sort((a, b) => a - b);
}

const fmt = (x: number) => (x >= 1e6 ? (x / 1e6).toFixed(2) + ' M' : (x / 1e3).toFixed(0) + ' k');
function row(label: string, rates: number[]): [string, number] {
  const med = rates[Math.floor(rates.length / 2)]!;
  const spread = ((rates[rates.length - 1]! - rates[0]!) / med) * 100;
  console.log(`| ${label} | ${fmt(med)}/s | ${fmt(rates[0]!)} .. ${fmt(rates[rates.length - 1]!)} (±${(spread / 2).toFixed(0)}%) |`);
  return [label, med];
}

console.log(`node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ${ROUNDS} rounds of ${ROUND_MS} ms, frames ${fixtureSource}`);
for (const [name, bytes] of [
  ['publish-64b', publishBytes],
  ['rpc-request-1k', rpcBytes],
] as const) {
  const frame = decodeFrame(bytes);
  const json = asJson(frame);
  const obj = JSON.parse(json) as unknown;
  console.log(`\n${name}: frame ${bytes.length} B; JSON ${json.length} B: ${json.length > 160 ? json.slice(0, 150) + '...' : json}`);
  console.log('| operation | median | min .. max |');
  console.log('|---|---:|---|');
  const [, dec] = row('decodeFrame (bytes -> Frame)', measure(() => (decodeFrame(bytes) as { kind: string }).kind.length));
  const [, parse] = row('JSON.parse (string -> object)', measure(() => (JSON.parse(json) as object) === null ? 0 : 1));
  const [, enc] = row('encodeFrame (Frame -> bytes)', measure(() => encodeFrame(frame).length));
  const [, str] = row('JSON.stringify (object -> string)', measure(() => JSON.stringify(obj).length));
  console.log(`decode / JSON.parse = ${(dec / parse).toFixed(2)}x; encode / JSON.stringify = ${(enc / str).toFixed(2)}x`);
}
if (sink === 42) console.log('');
