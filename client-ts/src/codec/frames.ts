/**
 * Every frame of peerd protocol v2 as a plain TypeScript value (docs/PROTOCOL.md §5).
 *
 * Naming: the fields of §5 in camelCase (`peer_id` -> `peerId`). Two departures, both because
 * `kind` is the discriminant of {@link Frame}: Signal's `kind` field is `signal`, and the
 * enum values are lower-case strings (`'join'`, `'offer'`).
 *
 * Types: `u16`/`u32` are `number`; `u64` is `bigint` (ids, request ids, nonces and session ids
 * use the whole 64-bit range, and a decoded frame must re-encode byte for byte); `Option<T>`
 * is `T | null`; byte fields are `Uint8Array`. A decoded frame's byte fields are views into
 * the decoded buffer (no copy): copy them if the buffer is reused.
 */

/** Limits the server enforces on a session, announced in Welcome. */
export interface Limits {
  maxFrameLen: number;
  maxTopicsPerPeer: number;
  maxMembersPerTopic: number;
  maxTopicLen: number;
  outboundQueueBytes: number;
}

export type PresenceChange = 'join' | 'leave';
export type SignalKind = 'offer' | 'answer' | 'candidate' | 'bye';

export interface Hello {
  kind: 'Hello';
  version: number;
  peerId: string | null;
  credentials: Uint8Array | null;
  resumeToken: Uint8Array | null;
  client: string;
}
export interface Welcome {
  kind: 'Welcome';
  version: number;
  peerId: string;
  sessionId: bigint;
  resumeToken: Uint8Array;
  limits: Limits;
  heartbeatMs: number;
}
export interface Reject {
  kind: 'Reject';
  code: number;
  reason: string;
}
/** Protocol v2: new credentials (a fresh token) for the live session (§6.8). */
export interface Refresh {
  kind: 'Refresh';
  req: bigint;
  credentials: Uint8Array;
}
export interface RpcRequest {
  kind: 'RpcRequest';
  id: bigint;
  method: string;
  peer: string | null;
  timeoutMs: number;
  params: Uint8Array;
}
export interface RpcResponse {
  kind: 'RpcResponse';
  id: bigint;
  result: Uint8Array;
}
export interface RpcError {
  kind: 'RpcError';
  id: bigint;
  code: number;
  message: string;
}
export interface Event {
  kind: 'Event';
  name: string;
  peer: string | null;
  payload: Uint8Array;
}
export interface Broadcast {
  kind: 'Broadcast';
  name: string;
  peer: string | null;
  payload: Uint8Array;
}
export interface Join {
  kind: 'Join';
  req: bigint;
  topic: string;
}
export interface Leave {
  kind: 'Leave';
  req: bigint;
  topic: string;
}
export interface Publish {
  kind: 'Publish';
  req: bigint;
  topic: string;
  echo: boolean;
  payload: Uint8Array;
}
export interface TopicSend {
  kind: 'TopicSend';
  req: bigint;
  topic: string;
  to: string;
  payload: Uint8Array;
}
export interface TopicMessage {
  kind: 'TopicMessage';
  topic: string;
  from: string;
  direct: boolean;
  payload: Uint8Array;
}
export interface Watch {
  kind: 'Watch';
  req: bigint;
  topic: string | null;
}
export interface Unwatch {
  kind: 'Unwatch';
  req: bigint;
  topic: string | null;
}
export interface PresenceSnapshot {
  kind: 'PresenceSnapshot';
  topic: string | null;
  peers: string[];
}
export interface Presence {
  kind: 'Presence';
  topic: string | null;
  peer: string;
  change: PresenceChange;
}
export interface ListPeers {
  kind: 'ListPeers';
  req: bigint;
  topic: string | null;
}
export interface PeerList {
  kind: 'PeerList';
  req: bigint;
  peers: string[];
}
export interface Signal {
  kind: 'Signal';
  req: bigint;
  room: string;
  /** The wire's `kind` field of Signal (offer, answer, candidate, bye). */
  signal: SignalKind;
  peer: string | null;
  payload: Uint8Array;
}
export interface Status {
  kind: 'Status';
  req: bigint;
  code: number;
  message: string;
}
export interface Ping {
  kind: 'Ping';
  nonce: bigint;
}
export interface Pong {
  kind: 'Pong';
  nonce: bigint;
}
export interface Close {
  kind: 'Close';
  code: number;
  reason: string;
}

/** Any frame; `kind` names it. */
export type Frame =
  | Hello
  | Welcome
  | Reject
  | Refresh
  | RpcRequest
  | RpcResponse
  | RpcError
  | Event
  | Broadcast
  | Join
  | Leave
  | Publish
  | TopicSend
  | TopicMessage
  | Watch
  | Unwatch
  | PresenceSnapshot
  | Presence
  | ListPeers
  | PeerList
  | Signal
  | Status
  | Ping
  | Pong
  | Close;

export type FrameKindName = Frame['kind'];

/** The header's kind byte of every frame (docs/PROTOCOL.md §2). */
export const FRAME_KIND = {
  Hello: 0x01,
  Welcome: 0x02,
  Reject: 0x03,
  Refresh: 0x04,
  RpcRequest: 0x10,
  RpcResponse: 0x11,
  RpcError: 0x12,
  Event: 0x20,
  Broadcast: 0x21,
  Join: 0x30,
  Leave: 0x31,
  Publish: 0x32,
  TopicSend: 0x33,
  TopicMessage: 0x34,
  Watch: 0x40,
  Unwatch: 0x41,
  PresenceSnapshot: 0x42,
  Presence: 0x43,
  ListPeers: 0x44,
  PeerList: 0x45,
  Signal: 0x50,
  Status: 0x60,
  Ping: 0x70,
  Pong: 0x71,
  Close: 0x7f,
} as const satisfies Record<FrameKindName, number>;
