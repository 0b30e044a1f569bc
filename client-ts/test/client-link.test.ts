// The link's rules against a scripted server (the `ws` package speaking frames from the
// codec), for what a real peerd cannot be made to do: send a bad frame, a Reject of any
// code, Close{replaced}, a Welcome of another version.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import {
  Code,
  connect,
  decodeFrame,
  encodeFrame,
  PeerdError,
  type Frame,
  type Hello,
  type Peer,
  type PeerState,
  type Welcome,
} from '../src/index.js';
import { Collector, inState, within } from './support/wait.js';

/** One accepted connection: the frames it got, and a way to answer. */
interface Conn {
  frames: Collector<Frame>;
  closed: Promise<void>;
  send(f: Frame): void;
  raw(data: Uint8Array | string): void;
}

const welcome = (peerId: string, token: number, heartbeatMs = 15_000): Welcome => ({
  kind: 'Welcome',
  version: 1,
  peerId,
  sessionId: BigInt(token),
  resumeToken: new Uint8Array(16).fill(token),
  limits: { maxFrameLen: 1 << 20, maxTopicsPerPeer: 1024, maxMembersPerTopic: 100_000, maxTopicLen: 128, outboundQueueBytes: 8 << 20 },
  heartbeatMs,
});

describe('link (scripted server)', () => {
  let wss: WebSocketServer;
  let url = '';
  const conns = new Collector<Conn>();
  const opened: Peer[] = [];
  const open = (o: Parameters<typeof connect>[1] = {}) => {
    const p = connect(url, { WebSocket, reconnect: { minDelayMs: 5, maxDelayMs: 20 }, ...o });
    opened.push(p);
    return p;
  };

  before(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (ps) => (ps.has('peerd.v1') ? 'peerd.v1' : false) });
    await new Promise((ok) => wss.once('listening', ok));
    url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`;
    wss.on('connection', (ws) => {
      const frames = new Collector<Frame>();
      ws.on('message', (d: Buffer) => frames.push(decodeFrame(new Uint8Array(d))));
      conns.push({
        frames,
        closed: new Promise((ok) => ws.once('close', () => ok())),
        send: (f) => ws.send(encodeFrame(f)),
        raw: (d) => ws.send(d),
      });
    });
  });
  afterEach(() => {
    for (const p of opened.splice(0)) p.disconnect();
  });
  after(() => new Promise<void>((ok) => wss.close(() => ok())));

  /** The n-th connection (counting from 1 over the whole file) and its Hello. */
  async function nth(n: number): Promise<[Conn, Hello]> {
    const c = (await conns.until(n, `connection ${n}`))[n - 1]!;
    const [hello] = await c.frames.until(1, 'Hello');
    assert.equal(hello!.kind, 'Hello');
    return [c, hello as Hello];
  }

  it('the Hello; a reconnect presents the last Welcome id and resume token', async () => {
    const n = conns.items.length;
    const p = open({ peerId: 'me', credentials: new Uint8Array([7, 7]), client: 'test/1' });
    const states = new Collector<PeerState>();
    p.addEventListener('statechange', (e) => states.push(e.detail.state));
    const [c1, h1] = await nth(n + 1);
    assert.deepEqual(
      { ...h1, credentials: [...h1.credentials!] },
      { kind: 'Hello', version: 2, peerId: 'me', credentials: [7, 7], resumeToken: null, client: 'test/1' },
    );
    c1.send(welcome('me', 3));
    await within(p.whenReady(), 'welcome');
    c1.send({ kind: 'Close', code: Code.shutdown, reason: 'restart' });
    const [c2, h2] = await nth(n + 2);
    assert.equal(h2.peerId, 'me');
    assert.deepEqual(h2.resumeToken, new Uint8Array(16).fill(3));
    c2.send(welcome('me', 4));
    await inState(p, 'active');
    assert.deepEqual(states.items, ['negotiating', 'active', 'reconnecting', 'negotiating', 'active']);
    assert.equal(p.sessionId, 4n);
  });

  it('answers Ping with Pong of the same nonce', async () => {
    const n = conns.items.length;
    const p = open();
    const [c] = await nth(n + 1);
    c.send(welcome('1', 1));
    await p.whenReady();
    c.send({ kind: 'Ping', nonce: 0xfedcba9876543210n });
    const fs = await c.frames.until(2, 'Pong');
    assert.deepEqual(fs[1], { kind: 'Pong', nonce: 0xfedcba9876543210n });
  });

  it('pings a silent server after one heartbeat interval, drops it after three', async () => {
    const n = conns.items.length;
    const p = open();
    const [c] = await nth(n + 1);
    c.send(welcome('1', 1, 100));
    await p.whenReady();
    const t0 = Date.now();
    const fs = await c.frames.until(2, 'a Ping', 2000);
    assert.equal(fs[1]!.kind, 'Ping');
    await within(inState(p, 'reconnecting', 2000), 'the watchdog', 2000);
    const quiet = Date.now() - t0;
    assert.ok(quiet >= 250 && quiet < 1000, `dropped after ${quiet} ms`);
    await nth(n + 2);
  });

  it('a bad frame: Close{bad_frame}, then a new connection', async () => {
    const n = conns.items.length;
    const p = open();
    const [c1] = await nth(n + 1);
    c1.send(welcome('1', 1));
    await p.whenReady();
    c1.raw(new Uint8Array([1, 0, 0, 0, 0xee, 0, 0, 0, 0])); // unknown kind 0xee
    const fs = await c1.frames.until(2, 'Close');
    assert.deepEqual({ ...fs[1], reason: '' }, { kind: 'Close', code: Code.badFrame, reason: '' });
    await c1.closed;
    await nth(n + 2);
    // A text message is no frame either.
    const [c2] = await nth(n + 2);
    c2.send(welcome('1', 2));
    await inState(p, 'active');
    c2.raw('hello');
    const fs2 = await c2.frames.until(2, 'Close');
    assert.equal((fs2[1] as { code: number }).code, Code.badFrame);
    await nth(n + 3);
  });

  it('Reject: overloaded is retried; unauthorized is final', async () => {
    const n = conns.items.length;
    const p = open();
    const [c1] = await nth(n + 1);
    c1.send({ kind: 'Reject', code: Code.overloaded, reason: 'full' });
    const [c2] = await nth(n + 2);
    c2.send({ kind: 'Reject', code: Code.unauthorized, reason: 'who are you' });
    const e = await p.whenReady().then(() => assert.fail('welcomed'), (x) => x);
    assert.ok(e instanceof PeerdError);
    assert.deepEqual([e.code, e.codeName, e.message], [Code.unauthorized, 'unauthorized', 'who are you']);
    assert.equal(p.state, 'closed');
  });

  it('Close{replaced} is final: another connection took the session over', async () => {
    const n = conns.items.length;
    const p = open();
    const [c] = await nth(n + 1);
    c.send(welcome('1', 1));
    await p.whenReady();
    const closed = inState(p, 'closed');
    c.send({ kind: 'Close', code: Code.replaced, reason: 'session resumed by a new connection' });
    await closed;
    await assert.rejects(p.whenReady(), { code: Code.replaced });
  });

  it('a Welcome of a version it does not speak: Close{unsupported_version}, closed', async () => {
    const n = conns.items.length;
    const p = open();
    const [c] = await nth(n + 1);
    c.send({ ...welcome('1', 1), version: 3 });
    const fs = await c.frames.until(2, 'Close');
    assert.equal((fs[1] as { code: number }).code, Code.unsupportedVersion);
    await assert.rejects(p.whenReady(), { code: Code.unsupportedVersion });
  });

  it('a v1 server is a session, and refresh() on it sends nothing and says why', async () => {
    const n = conns.items.length;
    const p = open();
    const [c] = await nth(n + 1);
    c.send(welcome('1', 1)); // version 1
    await p.whenReady();
    await assert.rejects(p.refresh('new-token'), { code: Code.unsupportedVersion });
    c.send({ kind: 'Ping', nonce: 5n });
    const fs = await c.frames.until(2, 'Pong');
    assert.deepEqual(fs.map((f) => f.kind), ['Hello', 'Pong'], 'no Refresh went out');
  });

  it('a TopicMessage for a topic not joined is discarded; a joined one is delivered', async () => {
    const n = conns.items.length;
    const p = open();
    const [c] = await nth(n + 1);
    c.send(welcome('1', 1));
    await p.whenReady();
    const t = p.join('joined');
    const fs = await c.frames.until(2, 'Join');
    const join = fs[1] as { kind: string; req: bigint };
    assert.equal(join.kind, 'Join');
    c.send({ kind: 'Status', req: join.req, code: 0, message: '' });
    await t.ready;
    const got = new Collector<string>();
    t.addEventListener('message', (e) => got.push(e.text()));
    const msg = (topic: string, s: string): Frame => ({ kind: 'TopicMessage', topic, from: 'x', direct: false, payload: new TextEncoder().encode(s) });
    c.send(msg('elsewhere', 'no'));
    c.send(msg('joined', 'yes'));
    await got.until(1);
    assert.deepEqual(got.items, ['yes']);
  });

  // Last: the aborted connection must not be counted by a later test.
  it('disconnect() while the socket is still connecting', async () => {
    const p = open();
    p.disconnect();
    assert.equal(p.state, 'closed');
    await assert.rejects(p.whenReady(), { code: Code.normal });
  });
});
