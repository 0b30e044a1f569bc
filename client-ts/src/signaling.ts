/** WebRTC signaling relay in the manner of Peero (PROTOCOL.md §6.5): a room is a topic the
 * peer has joined; the server relays payloads untouched and names the sender. */
import type { Signal, SignalKind } from './codec/frames.js';
import { toBytes, withBody, type Body } from './json.js';
import type { Core } from './core.js';

export interface SignalMessage extends Body {
  room: string;
  kind: SignalKind;
  /** The sending peer. */
  from: string;
  payload: Uint8Array;
}

type Payload = Uint8Array | string;

export interface Signaling {
  /** No `to`: to every other member of the room. */
  offer(room: string, payload: Payload, opts?: { to?: string }): Promise<void>;
  answer(room: string, to: string, payload: Payload): Promise<void>;
  candidate(room: string, to: string, payload: Payload): Promise<void>;
  bye(room: string, to: string, payload?: Payload): Promise<void>;
  /** Every signal this peer receives; returns the unsubscribe function. */
  on(fn: (s: SignalMessage) => void): () => void;
}

export function signalingPart(core: Core) {
  const bus = new EventTarget(); // a throwing listener is reported, the others still run
  const signal = (room: string, kind: SignalKind, to: string | null, payload?: Payload) =>
    core.request((req) => ({ kind: 'Signal', req, room, signal: kind, peer: to, payload: toBytes(payload) }));
  return {
    api: {
      offer: (room, payload, o) => signal(room, 'offer', o?.to ?? null, payload),
      answer: (room, to, payload) => signal(room, 'answer', to, payload),
      candidate: (room, to, payload) => signal(room, 'candidate', to, payload),
      bye: (room, to, payload) => signal(room, 'bye', to, payload),
      on(fn) {
        const l = (e: Event) => fn((e as CustomEvent<SignalMessage>).detail);
        bus.addEventListener('s', l);
        return () => bus.removeEventListener('s', l);
      },
    } satisfies Signaling as Signaling,
    frame(f: Signal) {
      const detail = withBody({ room: f.room, kind: f.signal, from: f.peer ?? '', payload: f.payload }, f.payload);
      bus.dispatchEvent(new CustomEvent('s', { detail }));
    },
  };
}
