// Reconnecting: after a server restart, after an abrupt cut, and after silence (the
// watchdog), with the resume token taking a still-live session over.
import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { DisconnectedError, type PresenceEvent, type TopicMessageEvent } from '../src/index.js';
import { startProxy, type Proxy } from './support/proxy.js';
import { startServer, type TestServer } from './support/server.js';
import { Collector, inState, next, Peers, text, within } from './support/wait.js';

const callback = (method: string) => JSON.stringify({ method, params: '' });

/** A handler that never answers, and a promise of its first call. */
function hanging() {
  let called!: () => void;
  const wasCalled = new Promise<void>((r) => (called = r));
  return { wasCalled, handler: () => (called(), new Promise<Uint8Array>(() => {})) };
}

describe('reconnect', () => {
  const servers: TestServer[] = [];
  const proxies: Proxy[] = [];
  let url = '';
  const peers = new Peers(() => url);
  afterEach(() => peers.closeAll());
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(servers.map((s) => s.stop()));
  });
  const server = async (heartbeatMs?: number) => {
    const s = await startServer({ heartbeatMs });
    servers.push(s);
    return s;
  };

  it('after a server restart: same id, pending calls failed at once, topics and watches restored', async () => {
    const s = await server();
    url = s.url;
    const a = await peers.ready({ peerId: 'rs-alice' });
    const w = await peers.ready({ peerId: 'rs-watcher' });
    await peers.ready({ peerId: 'rs-gone', reconnect: false });
    const ta = a.join('rs-room');
    await ta.ready;
    const gw = w.watch();
    const leaves = new Collector<PresenceEvent>();
    gw.addEventListener('leave', leaves.push);
    await gw.ready;
    assert.ok(gw.peers.has('rs-gone'));

    // A call in flight when the link drops: the server calls `a` back and `a` never answers.
    const hang = hanging();
    a.rpc.handle('hang', hang.handler);
    let stateAtFailure = '';
    const failed = a.rpc.call('callback', callback('hang'), { timeoutMs: 60_000 }).then(
      () => assert.fail('answered'),
      (e) => ((stateAtFailure = a.state), e),
    );
    await within(hang.wasCalled, 'the server calling back');

    // A quick stop (SIGINT: Close{shutdown}), not a drain: a drain would wait for the
    // server's call to `a`, which never answers, until its grace (client-drain.test.ts).
    const restarted = s.restart('SIGINT');
    const e = await within(failed, 'the pending call failing', 5000);
    assert.ok(e instanceof DisconnectedError);
    assert.equal(e.code, 0);
    assert.equal(e.codeName, 'disconnected');
    // Failed while the link was down, not at its 60 s deadline nor after coming back.
    assert.equal(stateAtFailure, 'reconnecting');

    // A call made while the link is down waits for the next one.
    const queued = a.rpc.call('echo', 'queued');
    await restarted;
    await within(inState(a, 'active', 10_000), 'a active again', 10_000);
    assert.equal(a.peerId, 'rs-alice');
    assert.equal(text(await within(queued, 'the queued call')), 'queued');

    // The watcher re-watched: its new snapshot lacks the peer that did not come back.
    await within(inState(w, 'active', 10_000), 'watcher active again', 10_000);
    await leaves.until(1, 'leave of rs-gone');
    assert.ok(leaves.items.some((l) => l.peerId == 'rs-gone'));
    assert.ok(!gw.peers.has('rs-gone'));

    // The topic was re-joined: a newcomer sees alice in it, publishes, and alice's old handle
    // receives it.
    const b = await peers.ready({ peerId: 'rs-bob' });
    const bw = b.watch('rs-room');
    await next<PresenceEvent>(bw, 'join', (j) => j.peerId == 'rs-alice');
    const got = new Collector<TopicMessageEvent>();
    ta.addEventListener('message', got.push);
    await b.join('rs-room').publish('again');
    const [m] = await got.until(1, 'the message after the restart');
    assert.equal(m!.peerId, 'rs-bob');
    assert.equal(m!.text(), 'again');
  });

  it('after an abrupt cut (no Close): pending calls fail at once, then work resumes', async () => {
    const s = await server();
    const proxy = await startProxy(s.port);
    proxies.push(proxy);
    url = s.url;
    const b = await peers.ready({ peerId: 'cut-b' });
    const hang = hanging();
    b.rpc.handle('hang', hang.handler);
    b.rpc.handle('ok', () => 'fine');
    url = proxy.url;
    const a = await peers.ready({ peerId: 'cut-a' });
    const failed = a.rpc.call('hang', undefined, { peer: 'cut-b', timeoutMs: 60_000 }).then(
      () => assert.fail('answered'),
      (e) => e,
    );
    await within(hang.wasCalled, 'b called');
    const t0 = Date.now();
    proxy.cut();
    assert.ok((await within(failed, 'the pending call failing')) instanceof DisconnectedError);
    assert.ok(Date.now() - t0 < 1000);
    await within(inState(a, 'active'), 'a back');
    assert.equal(a.peerId, 'cut-a');
    assert.equal(text(await a.rpc.call('ok', undefined, { peer: 'cut-b' })), 'fine');
  });

  it('after silence: the watchdog drops the link and the resume token takes the live session over', async () => {
    const hb = 600;
    const s = await server(hb);
    const proxy = await startProxy(s.port);
    proxies.push(proxy);
    url = proxy.url;
    const a = await peers.ready(); // a server-assigned id: kept only by a takeover
    const id = a.peerId!;
    const session = a.sessionId;
    await a.join('fz').ready;
    const t0 = Date.now();
    proxy.freeze();
    await within(inState(a, 'reconnecting', 10 * hb), 'the watchdog', 10 * hb);
    const silent = Date.now() - t0;
    assert.ok(silent >= 2.5 * hb, `dropped after ${silent} ms`);
    await within(inState(a, 'active'), 'a back');
    // The old connection is still open on the server (its last byte, a Ping, passed the
    // proxy an interval after the freeze): only the resume token lets the Hello take the
    // numeric id over rather than get a fresh one.
    assert.equal(a.peerId, id);
    assert.notEqual(a.sessionId, session);
    assert.deepEqual(await a.listPeers('fz'), [id]);
  });
});
