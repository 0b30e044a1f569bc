/** The codes of Close, Reject, RpcError and Status (docs/PROTOCOL.md, Codes). */
export const Code = {
  ok: 0,
  normal: 1000,
  shutdown: 1001,
  badFrame: 1002,
  tooLarge: 1003,
  unauthorized: 1004,
  peerIdTaken: 1005,
  unknownPeer: 1006,
  methodNotFound: 1007,
  timeout: 1008,
  overloaded: 1009,
  slowConsumer: 1010,
  replaced: 1011,
  peerGone: 1012,
  unsupportedVersion: 1013,
  handshakeTimeout: 1014,
  limitExceeded: 1015,
  invalidArgument: 1016,
  notMember: 1017,
  internal: 1018,
  idleTimeout: 1019,
  tokenExpired: 1020,
  rateLimited: 1021,
  reconnect: 1022,
} as const;

export type CodeName = keyof typeof Code;

// The wire names are the snake_case of the keys; derived rather than listed to keep the bundle small.
const NAMES = new Map<number, string>(
  Object.entries(Code).map(([k, v]) => [v, k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())]),
);

/** The wire name of a code: `bad_frame`, ..., `app_<n>` for 4000-4999, `code_<n>` otherwise. */
export function codeName(code: number): string {
  return NAMES.get(code) ?? (code >= 4000 && code <= 4999 ? 'app_' : 'code_') + code;
}
