/**
 * peerd-client: the TypeScript client of peerd (browsers, Node 20+), its public entry.
 *
 * Modules, from the wire up (imports only point down this list):
 * - `codes`: the code table of Close, Reject, RpcError and Status, and their names;
 * - `codec/`: frames as TypeScript values, validated decoding and exact-size encoding (no IO;
 *   `codec/index.ts` names its parts);
 * - `errors`: PeerdError (a wire code), DisconnectedError and QueueError;
 * - `json`: UTF-8 and JSON conveniences over byte payloads;
 * - `link`: one WebSocket at a time, the handshake, heartbeats, the drain handshake,
 *   reconnect with backoff (at once after a drain);
 * - `peer`: the Peer (states, requests and their Status, the bounded queue of work that waits
 *   while the link is down);
 * - `rpc`, `topics`, `presence`, `signaling`: the features, each on top of the Peer.
 */
export { connect, Peer } from './peer.js';
export type { PeerOptions, PeerState, StateChange, CloseInfo } from './peer.js';
export type { WebSocketLike, WebSocketCtor, ReconnectOptions } from './link.js';
export type { Rpc, CallOptions, CallContext, Handler, Events, PeerdEvent } from './rpc.js';
export { Topic, type TopicMessageEvent } from './topics.js';
export { PeerEvents, type PresenceEvent } from './presence.js';
export type { Signaling, SignalMessage } from './signaling.js';
export { PeerdError, DisconnectedError, QueueError } from './errors.js';
export { encodeJson, decodeJson, type Body } from './json.js';
// The codec, the frame types and the code table (Code, codeName).
export * from './codec/index.js';
