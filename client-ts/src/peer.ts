/**
 * The Peer: session state, requests and their Status answers, and the queue of work that
 * waits for the link. The features (RPC, events, topics, presence, signaling) live in their
 * own modules and reach the session only through {@link Core}.
 */
import { encodeFrame, PROTOCOL_VERSION } from './codec/index.js';
import type { Frame, Limits, PeerList, Status, Welcome } from './codec/frames.js';
import { Code } from './codes.js';
import { DisconnectedError, PeerdError, QueueError } from './errors.js';
import { openLink, type Link, type ReconnectOptions, type WebSocketCtor } from './link.js';
import { rpcPart, eventsPart, type Rpc, type Events } from './rpc.js';
import { topicsPart, type Topic } from './topics.js';
import { presencePart, type PeerEvents } from './presence.js';
import { signalingPart, type Signaling } from './signaling.js';
import { toBytes } from './json.js';
import type { Core, Part, PeerState } from './core.js';

export type { PeerState } from './core.js';

export interface PeerOptions {
  /** Declared peer id; omitted: the server assigns a numeric one. */
  peerId?: string;
  /** Hello.credentials, for the server's authenticator: a connect token (JWT) for peerd
   * serve with --auth-*; a string is sent as UTF-8. Replace it with {@link Peer.refresh}. */
  credentials?: Uint8Array | string;
  /** Hello.client; default `peerd-client-ts/0.1`. */
  client?: string;
  /** WebSocket constructor; default `globalThis.WebSocket` (in Node 20 pass the `ws` package). */
  WebSocket?: WebSocketCtor;
  /** Default on: backoff 100 ms .. 5 s with full jitter, unlimited attempts. */
  reconnect?: boolean | ReconnectOptions;
  /** Default deadline of `rpc.call`, 30 000 ms. */
  callTimeoutMs?: number;
  /** How long a send made while the link is down (connecting, reconnecting, draining) waits
   * in the queue for the next link before it fails with a QueueError `queue_timeout`;
   * default 10 000 ms. Calls also keep their own deadline. */
  reconnectQueueTimeoutMs?: number;
  /** The most sends the queue holds; past it a send fails at once with a QueueError
   * `queue_full`. Default 1 024; 0: sends fail at once while the link is down. */
  reconnectQueueFrames?: number;
  /** The most bytes (encoded frames) the queue holds; past it: `queue_full`. Default 1 MiB. */
  reconnectQueueBytes?: number;
}


export interface StateChange {
  state: PeerState;
  previous: PeerState;
}
export interface CloseInfo {
  code: number;
  reason: string;
}

type Settle = [ok: (v: any) => void, fail: (e: unknown) => void];
// Work waiting for the link: a send has its encoded size and its expiry (Date.now() + the
// bound); other work (whenReady, a first Join or Watch) has size 0 and no bound.
type Queued = [run: () => void, fail: (e: unknown) => void, bytes: number, expires: number];

// Typed listeners for the Peer's events (declaration merging: types only, no code).
export interface Peer {
  addEventListener(type: 'statechange', fn: (e: CustomEvent<StateChange>) => void, o?: boolean | AddEventListenerOptions): void;
  addEventListener(type: 'close', fn: (e: CustomEvent<CloseInfo>) => void, o?: boolean | AddEventListenerOptions): void;
  addEventListener(type: 'error', fn: (e: CustomEvent<PeerdError>) => void, o?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, fn: EventListenerOrEventListenerObject | null, o?: boolean | AddEventListenerOptions): void;
}

/**
 * A connection to a peerd server that outlives its links: calls, topics and watches carry on
 * across reconnects. Events: 'statechange' ({state, previous}), 'close' ({code, reason}, once,
 * when the state becomes `closed`), 'error' (a PeerdError for a request that had no one to
 * answer to: a direct event to an unknown peer).
 */
export class Peer extends EventTarget {
  readonly rpc: Rpc;
  readonly events: Events;
  readonly signaling: Signaling;
  /** Joins a topic: see {@link Topic}. */
  readonly join: (topic: string) => Topic;
  /** Watches presence, of one topic or (no topic) of every connected peer: see {@link PeerEvents}. */
  readonly watch: (topic?: string | null) => PeerEvents;

  #state: PeerState = 'connecting';
  #welcome: Welcome | null = null;
  #gen = 0;
  #error: PeerdError | null = null;
  #req = 0n;
  #pending = new Map<bigint, Settle>();
  #queue: Queued[] = [];
  #qFrames = 0; // sends in #queue
  #qBytes = 0;
  #qTimer: ReturnType<typeof setTimeout> | undefined;
  #qBound: [ms: number, frames: number, bytes: number];
  #parts: Part[];
  #link: Link;
  #core: Core;
  #credentials: Uint8Array | null;

  /** Use {@link connect}. */
  constructor(url: string, o: PeerOptions = {}) {
    super();
    const peer = this;
    this.#credentials = o.credentials == null ? null : toBytes(o.credentials);
    this.#qBound = [o.reconnectQueueTimeoutMs ?? 10_000, o.reconnectQueueFrames ?? 1024, o.reconnectQueueBytes ?? 1 << 20];
    const WS = o.WebSocket ?? globalThis.WebSocket;
    if (!WS) throw new TypeError('no WebSocket: pass options.WebSocket (in Node 20: the ws package)');
    const core: Core = {
      get state() { return peer.#state; },
      get gen() { return peer.#gen; },
      // Draining, only answers are sent, and only answers come here then: what else the
      // features send goes through `later`, which queues while not active.
      send: (f) => (this.#state == 'active' || this.#state == 'draining') && this.#link.send(f),
      later: (run, fail, out) => this.#later(run, fail, out),
      request: (make) =>
        new Promise((ok, fail) =>
          this.#later(
            () => {
              const req = ++this.#req;
              this.#link.send(make(req));
              this.#pending.set(req, [ok, fail]);
            },
            fail,
            () => make(0n),
          ),
        ),
      error: (t, e) => t.dispatchEvent(new CustomEvent('error', { detail: e })),
    };
    this.#core = core;
    const rpc = rpcPart(core, o.callTimeoutMs ?? 30_000);
    const events = eventsPart(core, this);
    const topics = topicsPart(core);
    const presence = presencePart(core);
    const signaling = signalingPart(core);
    this.rpc = rpc.api;
    this.events = events.api;
    this.signaling = signaling.api;
    this.join = topics.join;
    this.watch = presence.watch;
    this.#parts = [rpc, topics, presence];

    const rc = o.reconnect ?? true;
    this.#link = openLink(url, WS as WebSocketCtor, rc && (rc === true ? {} : rc), {
      hello: () => {
        const w = this.#welcome;
        return {
          kind: 'Hello',
          version: PROTOCOL_VERSION,
          // Resume: the id and token of the last Welcome take the session over if the
          // server still holds it (§6.1), and keep a declared id across a server restart.
          peerId: w?.peerId ?? o.peerId ?? null,
          credentials: this.#credentials,
          resumeToken: w?.resumeToken ?? null,
          client: o.client ?? 'peerd-client-ts/0.1',
        };
      },
      negotiating: () => this.#set('negotiating'),
      up: (w) => {
        const prev = this.#state;
        this.#welcome = w;
        this.#gen++;
        this.#state = 'active';
        // Restore topics and watches first, then what waited for the link, and only then
        // tell listeners: a publish from a 'statechange' listener comes after the re-joins.
        for (const p of this.#parts) p.up?.();
        for (const [run, fail] of this.#unqueue()) {
          try {
            run();
          } catch (x) {
            fail(x);
          }
        }
        this.#emitState(prev);
      },
      frame: (f) => {
        switch (f.kind) {
          case 'Status':
          case 'PeerList':
            return this.#answer(f);
          case 'RpcRequest':
          case 'RpcResponse':
          case 'RpcError':
            return rpc.frame(f);
          case 'Event':
          case 'Broadcast':
            return events.frame(f);
          case 'TopicMessage':
            return topics.frame(f);
          case 'PresenceSnapshot':
          case 'Presence':
            return presence.frame(f);
          case 'Signal':
            return signaling.frame(f);
        }
      },
      // The server drains this session (§6.10): what the application sends from now on
      // waits for the next link, answers still go out.
      draining: () => this.#set('draining'),
      down: (e, retry) => this.#lost(e, !retry),
    });
  }

  get state(): PeerState {
    return this.#state;
  }
  /** The id of the last Welcome (null before the first). */
  get peerId(): string | null {
    return this.#welcome?.peerId ?? null;
  }
  get sessionId(): bigint | null {
    return this.#welcome?.sessionId ?? null;
  }
  get limits(): Limits | null {
    return this.#welcome?.limits ?? null;
  }

  /** Resolves when the session is active; rejects with the PeerdError that closed it. */
  whenReady(): Promise<void> {
    return new Promise((ok, fail) => this.#later(ok, fail));
  }

  /** Ends the session for good (Close{normal}, no reconnect); idempotent. */
  disconnect(): void {
    if (this.#state == 'closed') return;
    this.#link.close();
    this.#lost(new PeerdError(Code.normal, 'disconnect() was called'), true);
  }

  /**
   * New credentials (a fresh connect token) before the current ones expire. On an active
   * v2 session they are sent in a Refresh: resolves when the server accepted them (the
   * session then lives under their expiry and permissions), rejects with its PeerdError
   * (`unauthorized`, `token_expired`) and changes nothing otherwise. Not active: they are
   * kept for the next Hello (how a peer closed with `token_expired` gets back in). A v1
   * server has no Refresh: rejects with `unsupported_version`, and the next connection
   * uses them.
   */
  refresh(token: Uint8Array | string): Promise<void> {
    const credentials = toBytes(token);
    if (this.#state != 'active') {
      this.#credentials = credentials;
      return Promise.resolve();
    }
    if ((this.#welcome?.version ?? 1) < 2) {
      this.#credentials = credentials;
      return Promise.reject(new PeerdError(Code.unsupportedVersion, 'the server speaks protocol v1: no Refresh'));
    }
    return this.#core
      .request<void>((req) => ({ kind: 'Refresh', req, credentials }))
      .then(() => {
        this.#credentials = credentials;
      });
  }

  /** Connected peer ids, or the members of `topic`, sorted. */
  listPeers(topic?: string | null): Promise<string[]> {
    return this.#core.request((req) => ({ kind: 'ListPeers', req, topic: topic ?? null }));
  }

  #later(run: () => void, fail: (e: unknown) => void, out?: () => Frame) {
    if (this.#state == 'closed') throw this.#error;
    if (this.#state == 'active') return run();
    let n = 0;
    if (out) {
      // A send: bounded in frames and bytes (the new one is refused), and in time.
      const [ms, frames, bytes] = this.#qBound;
      n = encodeFrame(out()).length;
      if (this.#qFrames >= frames || this.#qBytes + n > bytes) throw new QueueError(0, 'reconnect queue full', 'queue_full');
      this.#qFrames++;
      this.#qBytes += n;
      this.#qTimer ??= this.#arm(ms);
    }
    this.#queue.push([run, fail, n, Date.now() + (n && this.#qBound[0])]);
  }

  // Fails the sends that waited their time; sends expire in queue order, so the timer waits
  // for the oldest. (Other work, n 0, waits for the link however long it takes.)
  #arm(ms: number) {
    return setTimeout(() => {
      const now = Date.now();
      const gone = this.#queue.filter((q) => q[2] && q[3] <= now);
      this.#queue = this.#queue.filter((q) => !gone.includes(q));
      this.#qFrames -= gone.length;
      for (const q of gone) this.#qBytes -= q[2];
      const next = this.#queue.find((q) => q[2]);
      this.#qTimer = next && this.#arm(next[3] - now);
      const e = new QueueError(0, `not sent: no link within ${this.#qBound[0]} ms`, 'queue_timeout');
      for (const q of gone) q[1](e);
    }, Math.min(ms, 2 ** 31 - 1));
  }

  // Empties the queue, returning what it held.
  #unqueue(): Queued[] {
    clearTimeout(this.#qTimer);
    this.#qTimer = undefined;
    this.#qFrames = this.#qBytes = 0;
    return this.#queue.splice(0);
  }

  #answer(f: Status | PeerList) {
    const p = this.#pending.get(f.req);
    this.#pending.delete(f.req);
    if (f.kind == 'Status' && f.code) {
      const e = new PeerdError(f.code, f.message);
      // req 0: a request that asked for no answer failed (a direct event to an unknown peer).
      if (p) p[1](e);
      else this.dispatchEvent(new CustomEvent('error', { detail: e }));
    } else p?.[0](f.kind == 'PeerList' ? f.peers : undefined);
  }

  #set(s: PeerState) {
    const prev = this.#state;
    this.#state = s;
    this.#emitState(prev);
  }

  #emitState(previous: PeerState) {
    if (previous != this.#state)
      this.dispatchEvent(new CustomEvent('statechange', { detail: { state: this.#state, previous } }));
  }

  // The link ended. What was in flight on it will never be answered, so it fails now
  // (DisconnectedError) rather than at its deadline; what had not been sent yet waits for
  // the next link, or fails with `e` when there is none (`final`).
  #lost(e: PeerdError, final: boolean) {
    if (this.#state == 'closed') return;
    if (final) this.#error = e;
    this.#set(final ? 'closed' : 'reconnecting');
    const x = new DisconnectedError(`link lost: ${e.message}`, e);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p[1](x);
    for (const p of this.#parts) p.down?.(x, final);
    if (final) {
      for (const [, fail] of this.#unqueue()) fail(e);
      this.dispatchEvent(new CustomEvent('close', { detail: { code: e.code, reason: e.message } }));
    }
  }
}

/** Connects to `url` (`ws://` or `wss://`) and returns at once; see {@link Peer.whenReady}. */
export function connect(url: string, options?: PeerOptions): Peer {
  return new Peer(url, options);
}
