export * from './frames.js';
export { encodeFrame } from './writer.js';
export { decodeFrame } from './reader.js';
export { DecodeError, EncodeError } from './errors.js';
export { HEADER_LEN, PROTOCOL_VERSION, MAX_HELLO_LEN } from './header.js';
export { Code, codeName, type CodeName } from '../codes.js';
