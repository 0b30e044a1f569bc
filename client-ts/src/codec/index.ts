/**
 * The codec: peerd protocol v2 frames (v1's and Refresh) to bytes and back, without IO (docs/PROTOCOL.md §2-§5).
 * - `frames`: every frame as a plain value, and the kind bytes;
 * - `header`: the 8-byte header's constants;
 * - `layouts`: each message's archived layout as data, read by the two below;
 * - `reader`: `decodeFrame`, validating everything (§3) before returning a value;
 * - `writer`: `encodeFrame`, one exact-size allocation, the Rust encoder's bytes;
 * - `utf8`: strings, with a fast path for short ASCII;
 * - `errors`: DecodeError (a code and the rule it broke) and EncodeError.
 */
export * from './frames.js';
export { encodeFrame } from './writer.js';
export { decodeFrame } from './reader.js';
export { DecodeError, EncodeError } from './errors.js';
export { HEADER_LEN, PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, MAX_HELLO_LEN } from './header.js';
export { Code, codeName, type CodeName } from '../codes.js';
