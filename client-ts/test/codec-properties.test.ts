// Property tests: round trips of every kind, and malformed input that can only end in DecodeError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DecodeError, FRAME_KIND, decodeFrame, encodeFrame, type Frame } from '../src/codec/index.js';
import { ARBITRARIES, anyFrame } from './support/codec-arbitraries.js';

// Bounded so that the whole file runs in a second or two.
const RUNS = 300;

/** Decode; anything thrown but a DecodeError fails the property. */
function tryDecode(b: Uint8Array): Frame | DecodeError {
  try {
    return decodeFrame(b);
  } catch (e) {
    if (e instanceof DecodeError) return e;
    throw new Error(`decodeFrame threw ${String(e)} instead of a DecodeError`, { cause: e });
  }
}

for (const [kind, arb] of Object.entries(ARBITRARIES)) {
  test(`${kind}: encode -> decode -> equal, re-encode -> same bytes`, () => {
    fc.assert(
      fc.property(arb, (frame) => {
        const bytes = encodeFrame(frame);
        assert.equal(bytes[4], FRAME_KIND[frame.kind]);
        assert.equal(new DataView(bytes.buffer).getUint32(0, true), bytes.length - 8);
        const back = decodeFrame(bytes);
        assert.deepStrictEqual(back, frame);
        assert.deepStrictEqual(encodeFrame(back), bytes);
      }),
      { numRuns: RUNS / 3 },
    );
  });
}

test('random bytes (with a valid header, and without) never throw anything but DecodeError', () => {
  const kinds = Object.values(FRAME_KIND);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), fc.constantFrom(...kinds), fc.boolean(), (body, kind, withHeader) => {
      let b = body;
      if (withHeader) {
        b = new Uint8Array(8 + body.length);
        new DataView(b.buffer).setUint32(0, body.length, true);
        b[4] = kind;
        b.set(body, 8);
      }
      const r = tryDecode(b);
      if (!(r instanceof DecodeError)) encodeFrame(r);
    }),
    { numRuns: RUNS * 3 },
  );
});

test('truncations of valid frames are refused with DecodeError', () => {
  fc.assert(
    fc.property(anyFrame, fc.nat(), (frame, cut) => {
      const b = encodeFrame(frame);
      const n = cut % b.length;
      assert.ok(tryDecode(b.subarray(0, n)) instanceof DecodeError);
      // The same bytes with the header's length fixed up: the root moves, checks must hold.
      if (n >= 8) {
        const c = b.slice(0, n);
        new DataView(c.buffer).setUint32(0, n - 8, true);
        const r = tryDecode(c);
        if (!(r instanceof DecodeError)) encodeFrame(r);
      }
    }),
    { numRuns: RUNS },
  );
});

test('bit flips of valid frames decode or fail with DecodeError; what decodes re-encodes', () => {
  fc.assert(
    fc.property(anyFrame, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 4 }), (frame, flips) => {
      const b = encodeFrame(frame);
      for (const [at, bit] of flips) b[at % b.length]! ^= 1 << bit;
      const r = tryDecode(b);
      if (!(r instanceof DecodeError)) {
        const again = encodeFrame(r);
        // Canonical re-encoding is a fixed point.
        assert.deepStrictEqual(encodeFrame(decodeFrame(again)), again);
      }
    }),
    { numRuns: RUNS * 2 },
  );
});

test('frames at unaligned offsets of a larger buffer decode the same', () => {
  fc.assert(
    fc.property(anyFrame, fc.integer({ min: 1, max: 7 }), (frame, pad) => {
      const b = encodeFrame(frame);
      const big = new Uint8Array(b.length + pad + 3).fill(0xee);
      big.set(b, pad);
      assert.deepStrictEqual(decodeFrame(big.subarray(pad, pad + b.length)), frame);
    }),
    { numRuns: RUNS / 3 },
  );
});
