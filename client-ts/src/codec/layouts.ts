/**
 * The archived layout of every message (docs/PROTOCOL.md §5) as data: one generic reader and
 * one generic writer interpret this table, which keeps the bundle far smaller than 25
 * hand-written codecs and is just as fast once V8 has seen each kind.
 */
import { FRAME_KIND, type FrameKindName } from './frames.js';

// Field types. Numbers rather than strings so that the reader's switch compiles to a jump table.
export const U16 = 0;
export const U32 = 1;
export const U64 = 2;
export const BOOL = 3;
export const STR = 4;
export const BYTES = 5;
export const STRS = 6;
export const OPT_STR = 7;
export const OPT_BYTES = 8;
export const LIMITS = 9;
export const PRESENCE_CHANGE = 10;
export const SIGNAL_KIND = 11;

/** Archived size of each field type, indexed by type. */
export const SIZE = [2, 4, 8, 1, 8, 8, 8, 9, 9, 20, 1, 1];

export const PRESENCE_CHANGES = ['join', 'leave'] as const;
export const SIGNAL_KINDS = ['offer', 'answer', 'candidate', 'bye'] as const;
export const LIMIT_FIELDS = [
  'maxFrameLen',
  'maxTopicsPerPeer',
  'maxMembersPerTopic',
  'maxTopicLen',
  'outboundQueueBytes',
] as const;

export interface Layout {
  readonly kind: FrameKindName;
  readonly byte: number;
  readonly rootSize: number;
  /** Field names (camelCase, as in frames.ts), in declaration order. */
  readonly names: readonly string[];
  /** Field types, parallel to `names`. */
  readonly types: readonly number[];
}

// Field specs: "name:type" in declaration order; compact to keep the bundle small.
const T: Record<string, number> = {
  u16: U16, u32: U32, u64: U64, bool: BOOL, str: STR, bytes: BYTES, strs: STRS,
  ostr: OPT_STR, obytes: OPT_BYTES, limits: LIMITS, change: PRESENCE_CHANGE, signal: SIGNAL_KIND,
};
const SPECS: Record<FrameKindName, string> = {
  Hello: 'version:u16 peerId:ostr credentials:obytes resumeToken:obytes client:str',
  Welcome: 'version:u16 peerId:str sessionId:u64 resumeToken:bytes limits:limits heartbeatMs:u32',
  Reject: 'code:u16 reason:str',
  Refresh: 'req:u64 credentials:bytes',
  RpcRequest: 'id:u64 method:str peer:ostr timeoutMs:u32 params:bytes',
  RpcResponse: 'id:u64 result:bytes',
  RpcError: 'id:u64 code:u16 message:str',
  Event: 'name:str peer:ostr payload:bytes',
  Broadcast: 'name:str peer:ostr payload:bytes',
  Join: 'req:u64 topic:str',
  Leave: 'req:u64 topic:str',
  Publish: 'req:u64 topic:str echo:bool payload:bytes',
  TopicSend: 'req:u64 topic:str to:str payload:bytes',
  TopicMessage: 'topic:str from:str direct:bool payload:bytes',
  Watch: 'req:u64 topic:ostr',
  Unwatch: 'req:u64 topic:ostr',
  PresenceSnapshot: 'topic:ostr peers:strs',
  Presence: 'topic:ostr peer:str change:change',
  ListPeers: 'req:u64 topic:ostr',
  PeerList: 'req:u64 peers:strs',
  Signal: 'req:u64 room:str signal:signal peer:ostr payload:bytes',
  Status: 'req:u64 code:u16 message:str',
  Ping: 'nonce:u64',
  Pong: 'nonce:u64',
  Close: 'code:u16 reason:str',
};

/** Layouts by frame name (a Map: a plain object would answer for `toString` too). */
export const BY_NAME = new Map<string, Layout>();
/** Layouts by header kind byte; `undefined` for bytes that name no frame. */
export const BY_BYTE: (Layout | undefined)[] = new Array(256).fill(undefined);

for (const kind of Object.keys(SPECS) as FrameKindName[]) {
  const names: string[] = [];
  const types: number[] = [];
  let rootSize = 0;
  for (const f of SPECS[kind].split(' ')) {
    const [name, type] = f.split(':') as [string, string];
    const t = T[type]!;
    names.push(name);
    types.push(t);
    rootSize += SIZE[t]!;
  }
  const byte = FRAME_KIND[kind];
  const layout = { kind, byte, rootSize, names, types };
  BY_BYTE[byte] = layout;
  BY_NAME.set(kind, layout);
}
