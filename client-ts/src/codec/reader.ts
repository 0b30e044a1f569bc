/**
 * Validated decoding (docs/PROTOCOL.md §2 receiver steps, §3 Validation, §4 Reading).
 *
 * Every index is checked before it is read, so malformed input can only end in a
 * DecodeError: Uint8Array reads past the end would not throw but silently yield undefined,
 * which is why the bounds checks, not exceptions, are the safety net here.
 */
import { DecodeError } from './errors.js';
import type { Frame, Limits } from './frames.js';
import { HEADER_LEN } from './header.js';
import {
  BOOL, BYTES, BY_BYTE, LIMITS, LIMIT_FIELDS, OPT_BYTES, OPT_STR, PRESENCE_CHANGE,
  PRESENCE_CHANGES, SIGNAL_KIND, SIGNAL_KINDS, SIZE, STR, STRS, U16, U32, U64,
} from './layouts.js';
import { readUtf8 } from './utf8.js';

const u16 = (b: Uint8Array, p: number): number => b[p]! | (b[p + 1]! << 8);
const i32 = (b: Uint8Array, p: number): number =>
  b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24);
const u32 = (b: Uint8Array, p: number): number => i32(b, p) >>> 0;

function u64(b: Uint8Array, p: number): bigint {
  const lo = u32(b, p);
  const hi = u32(b, p + 4);
  // Most ids are small: one BigInt from an exact double is much cheaper than shift-and-or.
  return hi < 0x200000 ? BigInt(hi * 0x100000000 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

function fail(check: string): never {
  throw new DecodeError(check);
}

/**
 * The range out-of-line targets may still use: [lo, hi). Targets reached from one object
 * must come in field order without overlap (lo advances past each), and before the object
 * that points to them (hi). Module state rather than an object passed around: decoding is
 * synchronous and this saves an allocation per frame.
 */
let lo = 0;

/**
 * Check a target of `size` bytes at `t` that must end by `hi`; return `t`. The checks are
 * named, and ordered, as in the golden fixtures (fixtures/wire/invalid.json).
 */
function target(b: Uint8Array, t: number, size: number, hi: number): number {
  const end = t + size;
  if (t < HEADER_LEN || end > b.length) fail('target inside the body');
  if (end > hi) fail('target before the enclosing object');
  if (t < lo) fail('targets in order');
  lo = end;
  return t;
}

/** The 8-byte string object at `p`, whose out-of-line bytes must end by `hi`. */
function str(b: Uint8Array, p: number, hi: number): string {
  const c = b[p]!;
  if ((c & 0xc0) !== 0x80) {
    // Inline: the length is the index of the first 0xFF filler; what follows it is ignored.
    let n = 0;
    while (n < 8 && b[p + n] !== 0xff) n++;
    return readUtf8(b, p, p + n);
  }
  const w = u32(b, p);
  const n = (w & 0x3f) | ((w >>> 8) << 6);
  // Agreed with the Rust side: a string that fits inline must be inline, so that every
  // string has exactly one encoding.
  if (n <= 8) fail('short strings inline');
  // The pointer is measured from the start of the string object.
  const t = target(b, p + i32(b, p + 4), n, hi);
  return readUtf8(b, t, t + n);
}

function tag(b: Uint8Array, p: number): boolean {
  const v = b[p]!;
  if (v > 1) fail('option tag is 0 or 1');
  return v === 1;
}

/**
 * Decode exactly one whole frame (header + body, nothing more). Byte fields of the result
 * are views into `bytes`. `maxBodyLen`, if given, refuses a larger body with code 1003.
 */
export function decodeFrame(bytes: Uint8Array, maxBodyLen?: number): Frame {
  if (!(bytes instanceof Uint8Array)) fail('input is a Uint8Array');
  const b = bytes;
  const end = b.length;
  if (end < HEADER_LEN) fail('frame has a header');
  const layout = BY_BYTE[b[4]!];
  if (layout === undefined) fail('known frame kind');
  if (b[5] !== 0) fail('flags are zero');
  if (b[6]! | b[7]!) fail('reserved is zero');
  const bodyLen = u32(b, 0);
  if (maxBodyLen !== undefined && bodyLen > maxBodyLen) throw new DecodeError('body within the limit', 1003);
  if (bodyLen !== end - HEADER_LEN) fail('body_len matches the message');
  const root = end - layout.rootSize;
  if (root < HEADER_LEN) fail('root fits in the body');

  const { names, types } = layout;
  const out: Record<string, unknown> = { kind: layout.kind };
  lo = HEADER_LEN;
  let p = root;
  for (let i = 0; i < types.length; i++) {
    const t = types[i]!;
    let v: unknown;
    switch (t) {
      case U16:
        v = u16(b, p);
        break;
      case U32:
        v = u32(b, p);
        break;
      case U64:
        v = u64(b, p);
        break;
      case BOOL: {
        const x = b[p]!;
        if (x > 1) fail('bool is 0 or 1');
        v = x === 1;
        break;
      }
      case STR:
        v = str(b, p, root);
        break;
      case OPT_STR:
        v = tag(b, p) ? str(b, p + 1, root) : null;
        break;
      case BYTES:
      case OPT_BYTES: {
        const q = t === BYTES ? p : p + 1;
        if (t === OPT_BYTES && !tag(b, p)) {
          v = null;
          break;
        }
        const n = u32(b, q + 4);
        const s = target(b, q + i32(b, q), n, root);
        v = b.subarray(s, s + n);
        break;
      }
      case STRS: {
        const n = u32(b, p + 4);
        // The element array is checked first, then the elements' own targets must lie
        // between the previous sibling's target and the array (rkyv's prefix range).
        const start = lo;
        const arr = target(b, p + i32(b, p), n * 8, root);
        const after = lo;
        lo = start;
        const list: string[] = new Array(n);
        for (let j = 0; j < n; j++) list[j] = str(b, arr + 8 * j, arr);
        lo = after;
        v = list;
        break;
      }
      case LIMITS: {
        const l = {} as Limits;
        for (let j = 0; j < 5; j++) l[LIMIT_FIELDS[j]!] = u32(b, p + 4 * j);
        v = l;
        break;
      }
      case PRESENCE_CHANGE:
      case SIGNAL_KIND: {
        const values = t === PRESENCE_CHANGE ? PRESENCE_CHANGES : SIGNAL_KINDS;
        v = values[b[p]!];
        if (v === undefined) fail('known enum tag');
        break;
      }
    }
    out[names[i]!] = v;
    p += SIZE[t]!;
  }
  return out as unknown as Frame;
}
