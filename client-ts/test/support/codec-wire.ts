/**
 * Test helpers for the codec: hex, and the JSON form of frames used by the golden fixtures
 * (fixtures/wire/*.json: PROTOCOL.md §5 snake_case names, u64 as decimal strings, bytes as
 * lowercase hex, None as null, enums lower-case, Signal's SignalKind as `kind`).
 */
import type { Frame } from '../../src/codec/index.js';

export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
const camel = (k: string): string => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

function toJsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Uint8Array) return hex(v);
  if (Array.isArray(v)) return v.map(toJsonValue);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [snake(k), toJsonValue(x)]));
  }
  return v;
}

/** A frame in the fixtures' JSON form. */
export function frameToJson(f: Frame): Record<string, unknown> {
  const out: Record<string, unknown> = { frame_kind: f.kind };
  for (const [k, v] of Object.entries(f)) {
    if (k === 'kind') continue;
    out[f.kind === 'Signal' && k === 'signal' ? 'kind' : snake(k)] = toJsonValue(v);
  }
  return out;
}

// Which fields are u64 and which are bytes, so that a fixture message can become a Frame.
const U64 = new Set(['id', 'req', 'nonce', 'sessionId']);
const BYTES = new Set(['credentials', 'resumeToken', 'params', 'result', 'payload']);

/** A fixture message as a Frame (the inverse of frameToJson). */
export function jsonToFrame(m: Record<string, unknown>): Frame {
  const kind = m['frame_kind'] as string;
  const out: Record<string, unknown> = { kind };
  for (const [k, v] of Object.entries(m)) {
    if (k === 'frame_kind') continue;
    const name = kind === 'Signal' && k === 'kind' ? 'signal' : camel(k);
    if (v === null) out[name] = null;
    else if (U64.has(name)) out[name] = BigInt(v as string);
    else if (BYTES.has(name)) out[name] = unhex(v as string);
    else if (name === 'limits') {
      out[name] = Object.fromEntries(Object.entries(v as object).map(([lk, lv]) => [camel(lk), lv]));
    } else out[name] = v;
  }
  return out as unknown as Frame;
}
