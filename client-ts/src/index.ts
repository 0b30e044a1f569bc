/** peerd-client: the public entry. */
export { connect, Peer } from './peer.js';
export type { PeerOptions, PeerState, StateChange, CloseInfo } from './peer.js';
export type { WebSocketLike, WebSocketCtor, ReconnectOptions } from './link.js';
export type { Rpc, CallOptions, CallContext, Handler, Events, PeerdEvent } from './rpc.js';
export { Topic, type TopicMessageEvent } from './topics.js';
export { PeerEvents, type PresenceEvent } from './presence.js';
export type { Signaling, SignalMessage } from './signaling.js';
export { PeerdError, DisconnectedError } from './errors.js';
export { encodeJson, decodeJson, type Body } from './json.js';
// The codec, the frame types and the code table (Code, codeName).
export * from './codec/index.js';
