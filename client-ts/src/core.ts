/**
 * What the Peer offers the feature modules (rpc, topics, presence, signaling), and what they
 * offer it back: the seam between `peer` and the features, in its own module so that the
 * features depend on it and not on `peer` (which depends on them).
 */
import type { Frame } from './codec/frames.js';
import type { DisconnectedError, PeerdError } from './errors.js';

export type PeerState = 'connecting' | 'negotiating' | 'active' | 'draining' | 'reconnecting' | 'closed';

/** What the feature modules may do with the session. */
export interface Core {
  readonly state: PeerState;
  /** Counts Welcomes: an answer to a request goes out only on the link it came in on. */
  readonly gen: number;
  /** Writes `f` if the session is active (or draining: answers only); false otherwise. */
  send(f: Frame): boolean;
  /**
   * Runs `run` now if active, else right after the next Welcome (after topics and watches
   * are restored); `fail` instead if the peer closes first. Throws if it is closed already.
   * With `out` (the frame `run` sends) it is a send, held by the bounded reconnect queue:
   * throws a QueueError when the queue is full, and `fail`s with one past its time bound.
   */
  later(run: () => void, fail: (e: unknown) => void, out?: () => Frame): void;
  /** A request with a fresh `req`: settles with its Status (or PeerList: the peers). */
  request<T = void>(make: (req: bigint) => Frame): Promise<T>;
  /** Reports a failure nobody waits for, as an 'error' event on `target`. */
  error(target: EventTarget, e: PeerdError): void;
}

/** A feature's share of the session. */
export interface Part {
  /** The link came up (after a Welcome). */
  up?(): void;
  /** The link went down (`e.cause` says why); `final`: the peer is closed for good. */
  down?(e: DisconnectedError, final: boolean): void;
}

