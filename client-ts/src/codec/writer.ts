/**
 * Encoding (docs/PROTOCOL.md §4 Writing), producing the same bytes as peerd's Rust encoder.
 *
 * Two passes over the fields: the first checks every value and measures the body, so the
 * frame is one exact-size allocation; the second writes. Since the out-of-line data comes
 * first and its total is known after the first pass, the root's position is known too, and
 * each field's out-of-line data and its root slot are written in the same step.
 */
import { EncodeError } from './errors.js';
import type { Frame } from './frames.js';
import { FORMAT_MAX_BODY_LEN, HEADER_LEN } from './header.js';
import {
  BOOL, BYTES, BY_NAME, LIMITS, LIMIT_FIELDS, OPT_BYTES, OPT_STR, PRESENCE_CHANGE,
  PRESENCE_CHANGES, SIGNAL_KIND, SIGNAL_KINDS, SIZE, STR, STRS, U16, U32, U64,
} from './layouts.js';
import { utf8Len, writeUtf8 } from './utf8.js';

/** rkyv stores a string length in 30 bits. */
const MAX_STR_LEN = 0x3fffffff;

/**
 * UTF-8 lengths of the frame's strings in visiting order, measured in pass 1 and consumed
 * in pass 2. Reused across calls (encoding is synchronous) to avoid an allocation per frame.
 */
const lens: number[] = [];
let nLens = 0;
/** Field values read in pass 1, so that pass 2 does not look each up by name again. */
const vals: unknown[] = [];
/** Positions of the out-of-line bytes of one Vec<String>'s elements. */
const elemPos: number[] = [];

function bad(field: string, what: string): never {
  throw new EncodeError(`${field}: ${what}`);
}

function w32(b: Uint8Array, p: number, v: number): void {
  b[p] = v;
  b[p + 1] = v >>> 8;
  b[p + 2] = v >>> 16;
  b[p + 3] = v >>> 24;
}

function measureStr(s: unknown, field: string): number {
  if (typeof s !== 'string') bad(field, 'expected a string');
  const n = utf8Len(s);
  if (n > MAX_STR_LEN) bad(field, 'string longer than 2^30 - 1 bytes');
  lens[nLens++] = n;
  return n > 8 ? n : 0;
}

function checkUint(v: unknown, max: number, field: string): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    bad(field, `expected an integer in 0..${max}`);
  }
}

/** Write the 8-byte string object at `p` for `s` of `n` bytes whose out-of-line bytes are at `t`. */
function strObject(b: Uint8Array, p: number, s: string, n: number, t: number): void {
  if (n <= 8) {
    writeUtf8(b, p, s, n);
    for (let i = p + n; i < p + 8; i++) b[i] = 0xff; // cheaper than fill() for a few bytes
  } else {
    w32(b, p, (n & 0x3f) | 0x80 | ((n >>> 6) << 8));
    w32(b, p + 4, t - p);
  }
}

/** Encode one frame: 8-byte header + body, in one exactly sized buffer. */
export function encodeFrame(frame: Frame): Uint8Array {
  const layout = frame == null ? undefined : BY_NAME.get(frame.kind);
  if (layout === undefined) throw new EncodeError('not a frame: unknown kind');
  const f = frame as unknown as Record<string, unknown>;
  const { names, types } = layout;
  nLens = 0;

  // Pass 1: check and measure the out-of-line data.
  let size = 0;
  for (let i = 0; i < types.length; i++) {
    const name = names[i]!;
    const v = (vals[i] = f[name]);
    switch (types[i]) {
      case U16:
        checkUint(v, 0xffff, name);
        break;
      case U32:
        checkUint(v, 0xffffffff, name);
        break;
      case U64:
        if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) {
          bad(name, 'expected a bigint in 0..2^64-1');
        }
        break;
      case BOOL:
        if (typeof v !== 'boolean') bad(name, 'expected a boolean');
        break;
      case OPT_STR:
        if (v === null) break;
      // fallthrough
      case STR:
        size += measureStr(v, name);
        break;
      case OPT_BYTES:
        if (v === null) break;
      // fallthrough
      case BYTES:
        if (!(v instanceof Uint8Array)) bad(name, 'expected a Uint8Array');
        size += v.length;
        break;
      case STRS:
        if (!Array.isArray(v)) bad(name, 'expected an array of strings');
        for (const s of v) size += measureStr(s, name) + 8;
        break;
      case LIMITS:
        if (typeof v !== 'object' || v === null) bad(name, 'expected Limits');
        for (const k of LIMIT_FIELDS) checkUint((v as Record<string, unknown>)[k], 0xffffffff, name + '.' + k);
        break;
      case PRESENCE_CHANGE:
        if (!PRESENCE_CHANGES.includes(v as never)) bad(name, "expected 'join' or 'leave'");
        break;
      case SIGNAL_KIND:
        if (!SIGNAL_KINDS.includes(v as never)) bad(name, 'expected a SignalKind');
        break;
    }
  }
  const bodyLen = size + layout.rootSize;
  if (bodyLen > FORMAT_MAX_BODY_LEN) throw new EncodeError('body larger than 2 GiB - 1');

  const b = new Uint8Array(HEADER_LEN + bodyLen);
  w32(b, 0, bodyLen);
  b[4] = layout.byte;

  // Pass 2: out-of-line data at `cur`, root fields at `p`.
  let cur = HEADER_LEN;
  let p = HEADER_LEN + size;
  let li = 0;
  for (let i = 0; i < types.length; i++) {
    const t = types[i]!;
    const v = vals[i];
    switch (t) {
      case U16:
        b[p] = v as number;
        b[p + 1] = (v as number) >>> 8;
        break;
      case U32:
        w32(b, p, v as number);
        break;
      case U64: {
        const x = v as bigint;
        // Most ids are small, and BigInt arithmetic allocates: skip it when it can.
        if (x <= 0xffffffffn) w32(b, p, Number(x));
        else {
          w32(b, p, Number(x & 0xffffffffn));
          w32(b, p + 4, Number(x >> 32n));
        }
        break;
      }
      case BOOL:
        b[p] = v ? 1 : 0;
        break;
      case OPT_STR:
      case STR: {
        // None: tag 0 and zeros, which the fresh buffer already holds.
        if (v === null) break;
        const q = t === STR ? p : p + 1;
        if (t === OPT_STR) b[p] = 1;
        const n = lens[li++]!;
        strObject(b, q, v as string, n, cur);
        if (n > 8) {
          writeUtf8(b, cur, v as string, n);
          cur += n;
        }
        break;
      }
      case OPT_BYTES:
      case BYTES: {
        if (v === null) break;
        const q = t === BYTES ? p : p + 1;
        if (t === OPT_BYTES) b[p] = 1;
        const x = v as Uint8Array;
        // TypedArray#set has a fixed cost that a short loop undercuts.
        if (x.length <= 16) for (let j = 0; j < x.length; j++) b[cur + j] = x[j]!;
        else b.set(x, cur);
        w32(b, q, cur - q);
        w32(b, q + 4, x.length);
        cur += x.length;
        break;
      }
      case STRS: {
        const list = v as string[];
        // §4: first the long elements' bytes in order, then the array of string objects.
        for (let j = 0; j < list.length; j++) {
          const n = lens[li + j]!;
          elemPos[j] = cur;
          if (n > 8) {
            writeUtf8(b, cur, list[j]!, n);
            cur += n;
          }
        }
        const arr = cur;
        for (let j = 0; j < list.length; j++) {
          strObject(b, arr + 8 * j, list[j]!, lens[li + j]!, elemPos[j]!);
        }
        li += list.length;
        cur += 8 * list.length;
        w32(b, p, arr - p);
        w32(b, p + 4, list.length);
        break;
      }
      case LIMITS:
        for (let j = 0; j < 5; j++) w32(b, p + 4 * j, (v as Record<string, number>)[LIMIT_FIELDS[j]!]!);
        break;
      case PRESENCE_CHANGE:
        b[p] = PRESENCE_CHANGES.indexOf(v as never);
        break;
      case SIGNAL_KIND:
        b[p] = SIGNAL_KINDS.indexOf(v as never);
        break;
    }
    p += SIZE[t]!;
  }
  vals.fill(undefined); // do not keep the caller's payloads alive
  return b;
}
