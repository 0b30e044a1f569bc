/** fast-check arbitraries for every frame kind (well-formed strings only, so they round-trip). */
import fc from 'fast-check';
import type { Frame, FrameKindName } from '../../src/codec/index.js';

// Lengths around 8 exercise both string forms; 'binary' adds multi-byte and astral characters.
const str = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.string({ minLength: 7, maxLength: 80 }),
);
const ostr = fc.option(str, { nil: null });
const bytes = fc.oneof(fc.uint8Array({ maxLength: 3 }), fc.uint8Array({ maxLength: 300 }));
const obytes = fc.option(bytes, { nil: null });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const strs = fc.array(str, { maxLength: 6 });
// fc.record builds null-prototype objects; decoded frames are plain ones.
const plain = <T extends object>(a: fc.Arbitrary<T>): fc.Arbitrary<T> => a.map((r) => ({ ...r }));
const limits = plain(fc.record({
  maxFrameLen: u32,
  maxTopicsPerPeer: u32,
  maxMembersPerTopic: u32,
  maxTopicLen: u32,
  outboundQueueBytes: u32,
}));

const k = <K extends FrameKindName>(kind: K, fields: Record<string, fc.Arbitrary<unknown>>) =>
  plain(fc.record({ kind: fc.constant(kind), ...fields })) as unknown as fc.Arbitrary<Frame>;

export const ARBITRARIES: Record<FrameKindName, fc.Arbitrary<Frame>> = {
  Hello: k('Hello', { version: u16, peerId: ostr, credentials: obytes, resumeToken: obytes, client: str }),
  Welcome: k('Welcome', { version: u16, peerId: str, sessionId: u64, resumeToken: bytes, limits, heartbeatMs: u32 }),
  Reject: k('Reject', { code: u16, reason: str }),
  Refresh: k('Refresh', { req: u64, credentials: bytes }),
  RpcRequest: k('RpcRequest', { id: u64, method: str, peer: ostr, timeoutMs: u32, params: bytes }),
  RpcResponse: k('RpcResponse', { id: u64, result: bytes }),
  RpcError: k('RpcError', { id: u64, code: u16, message: str }),
  Event: k('Event', { name: str, peer: ostr, payload: bytes }),
  Broadcast: k('Broadcast', { name: str, peer: ostr, payload: bytes }),
  Join: k('Join', { req: u64, topic: str }),
  Leave: k('Leave', { req: u64, topic: str }),
  Publish: k('Publish', { req: u64, topic: str, echo: fc.boolean(), payload: bytes }),
  TopicSend: k('TopicSend', { req: u64, topic: str, to: str, payload: bytes }),
  TopicMessage: k('TopicMessage', { topic: str, from: str, direct: fc.boolean(), payload: bytes }),
  Watch: k('Watch', { req: u64, topic: ostr }),
  Unwatch: k('Unwatch', { req: u64, topic: ostr }),
  PresenceSnapshot: k('PresenceSnapshot', { topic: ostr, peers: strs }),
  Presence: k('Presence', { topic: ostr, peer: str, change: fc.constantFrom('join', 'leave') }),
  ListPeers: k('ListPeers', { req: u64, topic: ostr }),
  PeerList: k('PeerList', { req: u64, peers: strs }),
  Signal: k('Signal', {
    req: u64,
    room: str,
    signal: fc.constantFrom('offer', 'answer', 'candidate', 'bye'),
    peer: ostr,
    payload: bytes,
  }),
  Status: k('Status', { req: u64, code: u16, message: str }),
  Ping: k('Ping', { nonce: u64 }),
  Pong: k('Pong', { nonce: u64 }),
  Close: k('Close', { code: u16, reason: str }),
};

export const anyFrame: fc.Arbitrary<Frame> = fc.oneof(...Object.values(ARBITRARIES));
