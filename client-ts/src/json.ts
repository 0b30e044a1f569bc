/** Payloads are bytes on the wire; these are the UTF-8 and JSON conveniences on top. */

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Accessors every received payload carries (events, topic messages, signals). */
export interface Body {
  /** The payload parsed as JSON (`undefined` for an empty payload). */
  json<T = unknown>(): T;
  /** The payload as UTF-8 text. */
  text(): string;
}

export const utf8 = (b: Uint8Array): string => dec.decode(b);

/** A payload argument: bytes as they are, a string as UTF-8, nothing as no bytes. */
export const toBytes = (m?: Uint8Array | string | null): Uint8Array =>
  typeof m == 'string' ? enc.encode(m) : (m ?? new Uint8Array(0));

/** JSON as UTF-8 bytes; `undefined` encodes as no bytes (and decodes back to `undefined`). */
export function encodeJson(value: unknown): Uint8Array {
  return enc.encode(JSON.stringify(value));
}

export function decodeJson<T = unknown>(bytes: Uint8Array): T {
  return (bytes.length ? JSON.parse(dec.decode(bytes)) : undefined) as T;
}

/** Adds {@link Body}'s accessors for `payload` to `o`. */
export const withBody = <T extends object>(o: T, payload: Uint8Array): T & Body =>
  Object.assign(o, {
    json: <U>() => decodeJson<U>(payload),
    text: () => utf8(payload),
  });
