/** Waiting for conditions with bounded timeouts (never sleeping to synchronise). */
import { after, afterEach, before } from 'node:test';
import WebSocket from 'ws';
import { connect, type Peer, type PeerOptions, type PeerState } from '../../src/index.js';
import { startServer, type ServerOptions, type TestServer } from './server.js';

/** `p`, or a rejection naming `what` after `ms`. */
export function within<T>(p: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<never>((_, fail) => {
      timer = setTimeout(() => fail(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The next event `type` on `t` that satisfies `pred`. */
export function next<E extends Event = Event>(
  t: EventTarget,
  type: string,
  pred: (e: E) => boolean = () => true,
  ms = 5000,
): Promise<E> {
  let l!: (e: Event) => void;
  const p = new Promise<E>((ok) => {
    l = (e) => pred(e as E) && ok(e as E);
    t.addEventListener(type, l);
  });
  return within(p, `'${type}' event`, ms).finally(() => t.removeEventListener(type, l));
}

/** Resolves when `peer` is in state `s` (now or later). */
export function inState(peer: Peer, s: PeerState, ms = 5000): Promise<unknown> {
  if (peer.state == s) return Promise.resolve();
  return next<CustomEvent<{ state: PeerState }>>(peer, 'statechange', (e) => e.detail.state == s, ms);
}

/** Collects values pushed by callbacks; `until(n)` waits for the n-th. */
export class Collector<T> {
  readonly items: T[] = [];
  #waiters: Array<[n: number, ok: () => void]> = [];
  push = (v: T) => {
    this.items.push(v);
    this.#waiters = this.#waiters.filter(([n, ok]) => (this.items.length >= n ? (ok(), false) : true));
  };
  until(n: number, what = `${n} items`, ms = 5000): Promise<T[]> {
    if (this.items.length >= n) return Promise.resolve(this.items);
    return within(new Promise<void>((ok) => this.#waiters.push([n, ok])), what, ms).then(() => this.items);
  }
}

/** Peers connected with the `ws` package, all disconnected by `closeAll()` (test teardown). */
export class Peers {
  #all: Peer[] = [];
  constructor(readonly url: () => string) {}
  open(o: PeerOptions = {}): Peer {
    const p = connect(this.url(), { WebSocket, reconnect: { minDelayMs: 20, maxDelayMs: 200 }, ...o });
    this.#all.push(p);
    return p;
  }
  /** Opens and waits until active. */
  async ready(o: PeerOptions = {}): Promise<Peer> {
    const p = this.open(o);
    await within(p.whenReady(), `peer ${o.peerId ?? ''} ready`);
    return p;
  }
  closeAll() {
    for (const p of this.#all.splice(0)) p.disconnect();
  }
}

export const bytes = (s: string) => new TextEncoder().encode(s);
export const text = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * A real server for the enclosing `describe`, started before its first test and stopped after
 * its last, and the suite's peers, disconnected after each test.
 */
export function withServer(o: ServerOptions = {}): { readonly server: TestServer; readonly peers: Peers } {
  let server: TestServer | undefined;
  const started = (): TestServer => {
    if (!server) throw new Error('the suite server is not started yet');
    return server;
  };
  const peers = new Peers(() => started().url);
  before(async () => {
    server = await startServer(o);
  });
  afterEach(() => peers.closeAll());
  after(() => server?.stop());
  return { get server() { return started(); }, peers };
}
