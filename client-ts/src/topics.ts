/** Topics in the manner of Beaker's peersockets (PROTOCOL.md §6.5). */
import type { TopicMessage } from './codec/frames.js';
import { DisconnectedError, type PeerdError } from './errors.js';
import { encodeJson, toBytes, withBody, type Body } from './json.js';
import type { Core, Part } from './core.js';

export type TopicMessageEvent = Event &
  Body & {
    topic: string;
    /** The sending peer. */
    peerId: string;
    message: Uint8Array;
    /** Sent to this peer alone (`send`) rather than published to all members. */
    direct: boolean;
  };

type L<E> = (e: E) => void;
type O = boolean | AddEventListenerOptions;
// Typed listeners (declaration merging: types only, no code).
export interface Topic {
  addEventListener(type: 'message', fn: L<TopicMessageEvent>, o?: O): void;
  addEventListener(type: 'error', fn: L<CustomEvent<PeerdError>>, o?: O): void;
  addEventListener(type: string, fn: EventListenerOrEventListenerObject | null, o?: O): void;
  removeEventListener(type: 'message', fn: L<TopicMessageEvent>, o?: O): void;
  removeEventListener(type: string, fn: EventListenerOrEventListenerObject | null, o?: O): void;
}

/**
 * One handle on a joined topic. Several handles of one name share the membership: the Leave
 * goes out when the last one closes. Events: 'message' ({@link TopicMessageEvent}), 'error'
 * (a re-join after a reconnect failed).
 */
export class Topic extends EventTarget {
  /** @internal */
  constructor(
    readonly name: string,
    /** The Join's answer; rejects with a PeerdError (or DisconnectedError if the peer closes). */
    readonly ready: Promise<void>,
    private readonly c: Core,
    /** Stops this handle's messages; the last handle of a name to close leaves the topic. */
    readonly close: () => void,
  ) {
    super();
  }

  /** To every other member (and to this peer too with `echo`); resolves on the server's ok.
   * A string is sent as UTF-8. */
  publish(msg: Uint8Array | string, opts?: { echo?: boolean }): Promise<void> {
    return this.c.request((req) => ({ kind: 'Publish', req, topic: this.name, echo: !!opts?.echo, payload: toBytes(msg) }));
  }

  publishJson(value: unknown): Promise<void> {
    return this.publish(encodeJson(value));
  }

  /** To one member only. */
  send(peerId: string, msg: Uint8Array | string): Promise<void> {
    return this.c.request((req) => ({ kind: 'TopicSend', req, topic: this.name, to: peerId, payload: toBytes(msg) }));
  }
}

interface Membership {
  handles: Set<Topic>;
  ready: Promise<void>;
  /** Settles `ready` with the first Join's outcome; null once it has. */
  first: [ok: () => void, fail: (e: unknown) => void] | null;
  /** A Join went out on some link: every later link joins again. */
  sent?: boolean;
}

export function topicsPart(core: Core) {
  const joined = new Map<string, Membership>();

  const sendJoin = (name: string, m: Membership) => (
    (m.sent = true),
    core.request((req) => ({ kind: 'Join', req, topic: name })).then(
      () => {
        m.first?.[0]();
        m.first = null;
      },
      (e: PeerdError) => {
        // The link dropped before the answer: the next Welcome joins again.
        if (e instanceof DisconnectedError && core.state != 'closed') return;
        if (m.first) {
          // The first Join failed (a bad name, a limit): nothing to restore on reconnect.
          m.first[1](e);
          m.first = null;
          if (joined.get(name) == m) joined.delete(name);
        } else for (const t of m.handles) core.error(t, e);
      },
    )
  );

  function join(name: string): Topic {
    let m = joined.get(name);
    if (!m) {
      let first!: NonNullable<Membership['first']>;
      const ready = new Promise<void>((ok, fail) => (first = [ok, fail]));
      // Nobody may await `ready`; its failure still reaches those who do.
      ready.catch(() => {});
      const mm: Membership = (m = { handles: new Set(), ready, first });
      joined.set(name, m);
      // Now, or once the link is up; a closed peer fails `ready`.
      try {
        core.later(() => joined.get(name) == mm && sendJoin(name, mm), first[1]); // unless closed meanwhile
      } catch (e) {
        first[1](e);
      }
    }
    const mm = m;
    const t: Topic = new Topic(name, m.ready, core, () => {
      if (!mm.handles.delete(t) || mm.handles.size || joined.get(name) != mm) return;
      joined.delete(name);
      mm.first?.[1](new DisconnectedError('closed before joined'));
      if (core.state == 'active') core.request((req) => ({ kind: 'Leave', req, topic: name })).catch(() => {});
    });
    m.handles.add(t);
    return t;
  }

  return {
    join,
    // Memberships belong to a connection (§6.1): every new link joins again (those never
    // sent yet go out from the queue right after).
    up() {
      for (const [name, m] of joined) if (m.sent) sendJoin(name, m);
    },
    down(e: DisconnectedError, final: boolean) {
      if (final) for (const m of joined.values()) m.first?.[1](e);
    },
    frame(f: TopicMessage) {
      // Not joined (left while the message was in flight): discarded (§6.5).
      for (const t of [...(joined.get(f.topic)?.handles ?? [])]) {
        const e = Object.assign(new Event('message'), { topic: f.topic, peerId: f.from, message: f.payload, direct: f.direct });
        t.dispatchEvent(withBody(e, f.payload));
      }
    },
  } satisfies Part & Record<string, unknown>;
}
