import { DecodeError } from './errors.js';

// ignoreBOM: without it a leading U+FEFF would be stripped and the string would not
// round-trip. fatal: invalid UTF-8 must be refused, as Rust's str::from_utf8 does.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * Below this many bytes, building a string by hand beats crossing into TextDecoder (which
 * costs a fixed ~100 ns per call); above it TextDecoder's bulk path wins.
 */
const SHORT = 32;

/** Decode `b[start..end)` as strict UTF-8; the caller has checked the bounds. */
export function readUtf8(b: Uint8Array, start: number, end: number): string {
  if (end - start <= SHORT) {
    let s = '';
    let i = start;
    for (; i < end; i++) {
      const c = b[i]!;
      if (c >= 0x80) break;
      s += String.fromCharCode(c);
    }
    if (i === end) return s;
  }
  try {
    return decoder.decode(b.subarray(start, end));
  } catch {
    throw new DecodeError('valid UTF-8');
  }
}

/**
 * Bytes `s` takes as UTF-8. A lone surrogate counts as U+FFFD (3 bytes), which is what
 * TextEncoder and writeUtf8 produce for it.
 */
export function utf8Len(s: string): number {
  const n = s.length;
  let len = n;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) len += 1;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      len += 2; // a pair: 2 code units, 4 bytes
      i++;
    } else len += 2;
  }
  return len;
}

/** Write `s` (`len` = utf8Len(s) bytes) at `b[pos]`. */
export function writeUtf8(b: Uint8Array, pos: number, s: string, len: number): void {
  if (len === s.length) {
    for (let i = 0; i < len; i++) b[pos + i] = s.charCodeAt(i);
  } else {
    encoder.encodeInto(s, b.subarray(pos, pos + len));
  }
}
