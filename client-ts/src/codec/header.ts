/** Bytes in the frame header (docs/PROTOCOL.md §2). */
export const HEADER_LEN = 8;
/** The highest protocol version this codec speaks (v2 added Refresh, §6.8). */
export const PROTOCOL_VERSION = 2;
/** The lowest it still speaks: a v1 server's Welcome is a session too, without Refresh. */
export const MIN_PROTOCOL_VERSION = 1;
/** Largest Hello body a server accepts, whatever its frame limit (§8). */
export const MAX_HELLO_LEN = 16384;
/** 32-bit relative pointers cannot reach further (§8, format limit). */
export const FORMAT_MAX_BODY_LEN = 0x7fffffff;
