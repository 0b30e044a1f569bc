/** Presence watches in the manner of Beaker's `watch()` (PROTOCOL.md §6.5). */
import type { Presence, PresenceSnapshot } from './codec/frames.js';
import { DisconnectedError, type PeerdError } from './errors.js';
import type { Core, Part } from './core.js';

export type PresenceEvent = Event & {
  peerId: string;
  /** The watched topic; null: the global watch. */
  topic: string | null;
};

type L<E> = (e: E) => void;
type O = boolean | AddEventListenerOptions;
// Typed listeners (declaration merging: types only, no code).
export interface PeerEvents {
  addEventListener(type: 'join' | 'leave', fn: L<PresenceEvent>, o?: O): void;
  addEventListener(type: 'error', fn: L<CustomEvent<PeerdError>>, o?: O): void;
  addEventListener(type: string, fn: EventListenerOrEventListenerObject | null, o?: O): void;
  removeEventListener(type: 'join' | 'leave', fn: L<PresenceEvent>, o?: O): void;
  removeEventListener(type: string, fn: EventListenerOrEventListenerObject | null, o?: O): void;
}

/**
 * One handle on a presence watch. Events: 'join' and 'leave' ({@link PresenceEvent}); the
 * members present when the watch starts come first, as joins. After a reconnect the new
 * snapshot is compared with `peers`: a leave for each peer gone, a join for each new one.
 * 'error': a re-watch after a reconnect failed.
 */
export class PeerEvents extends EventTarget {
  /** The current members as this handle has reported them. */
  readonly peers: ReadonlySet<string> = new Set();
  /** @internal */
  constructor(
    readonly topic: string | null,
    /** The Watch's answer (after the snapshot's joins); rejects with a PeerdError. */
    readonly ready: Promise<void>,
    /** Stops this handle's events; the last handle of a watch to close unwatches. */
    readonly close: () => void,
  ) {
    super();
  }
}

// One change to one handle; repeats (a join of a member, a leave of a stranger) are dropped,
// as §6.5 asks clients to tolerate them.
function change(w: PeerEvents, peerId: string, join: boolean) {
  const s = w.peers as Set<string>;
  if (join == s.has(peerId)) return;
  join ? s.add(peerId) : s.delete(peerId);
  w.dispatchEvent(Object.assign(new Event(join ? 'join' : 'leave'), { peerId, topic: w.topic }));
}

// Brings a handle to the set `now`: leaves first, then joins.
function sync(w: PeerEvents, now: Set<string>) {
  for (const p of [...w.peers]) if (!now.has(p)) change(w, p, false);
  for (const p of now) change(w, p, true);
}

interface Watch {
  handles: Set<PeerEvents>;
  ready: Promise<void>;
  first: [ok: () => void, fail: (e: unknown) => void] | null;
  /** The members per the last snapshot and changes since; null before the first snapshot. */
  peers: Set<string> | null;
  /** A Watch went out on some link: every later link watches again. */
  sent?: boolean;
}

export function presencePart(core: Core) {
  const watches = new Map<string | null, Watch>();

  const sendWatch = (topic: string | null, w: Watch) => (
    (w.sent = true),
    core.request((req) => ({ kind: 'Watch', req, topic })).then(
      () => {
        w.first?.[0]();
        w.first = null;
      },
      (e: PeerdError) => {
        if (e instanceof DisconnectedError && core.state != 'closed') return;
        if (w.first) {
          w.first[1](e);
          w.first = null;
          if (watches.get(topic) == w) watches.delete(topic);
        } else for (const h of w.handles) core.error(h, e);
      },
    )
  );

  function watch(topic: string | null = null): PeerEvents {
    let w = watches.get(topic);
    if (!w) {
      let first!: NonNullable<Watch['first']>;
      const ready = new Promise<void>((ok, fail) => (first = [ok, fail]));
      ready.catch(() => {});
      const nw: Watch = (w = { handles: new Set(), ready, first, peers: null });
      watches.set(topic, w);
      try {
        core.later(() => watches.get(topic) == nw && sendWatch(topic, nw), first[1]); // unless closed meanwhile
      } catch (e) {
        first[1](e);
      }
    } else if (w.peers) {
      // Watched already: the server sends no second snapshot, so this handle gets the
      // current set from here, once its listeners are attached.
      const ww = w;
      queueMicrotask(() => ww.handles.has(h) && sync(h, ww.peers!));
    }
    const ww = w;
    const h: PeerEvents = new PeerEvents(topic, w.ready, () => {
      if (!ww.handles.delete(h) || ww.handles.size || watches.get(topic) != ww) return;
      watches.delete(topic);
      ww.first?.[1](new DisconnectedError('closed before watching'));
      if (core.state == 'active') core.request((req) => ({ kind: 'Unwatch', req, topic })).catch(() => {});
    });
    w.handles.add(h);
    return h;
  }

  return {
    watch,
    // Watches belong to a connection (§6.1): every new link watches again.
    up() {
      for (const [topic, w] of watches) if (w.sent) sendWatch(topic, w);
    },
    down(e: DisconnectedError, final: boolean) {
      if (final) for (const w of watches.values()) w.first?.[1](e);
    },
    frame(f: PresenceSnapshot | Presence) {
      const w = watches.get(f.topic);
      if (!w) return; // unwatched while in flight
      if (f.kind == 'PresenceSnapshot') {
        w.peers = new Set(f.peers);
        for (const h of [...w.handles]) sync(h, w.peers);
      } else {
        const join = f.change == 'join';
        if (w.peers) join ? w.peers.add(f.peer) : w.peers.delete(f.peer);
        for (const h of [...w.handles]) change(h, f.peer, join);
      }
    },
  } satisfies Part & Record<string, unknown>;
}
