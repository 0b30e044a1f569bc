// The session: states, whenReady, peer ids, refusals, disconnect, listPeers, heartbeats.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { Code, connect, DisconnectedError, PeerdError, type PeerState } from '../src/index.js';
import { Collector, inState, next, within, withServer } from './support/wait.js';

describe('session', () => {
  const suite = withServer({ heartbeatMs: 200 });
  const peers = suite.peers;

  it('goes connecting -> negotiating -> active, and whenReady resolves', async () => {
    const p = peers.open();
    assert.equal(p.state, 'connecting');
    assert.equal(p.peerId, null);
    const states = new Collector<[PeerState, PeerState]>();
    p.addEventListener('statechange', (e) => states.push([e.detail.previous, e.detail.state]));
    await within(p.whenReady(), 'whenReady');
    assert.equal(p.state, 'active');
    assert.deepEqual(states.items, [
      ['connecting', 'negotiating'],
      ['negotiating', 'active'],
    ]);
    // Assigned ids are numeric; the Welcome's session parameters are exposed.
    assert.match(p.peerId!, /^\d+$/);
    assert.equal(typeof p.sessionId, 'bigint');
    assert.equal(p.limits!.maxFrameLen, 1 << 20);
    // whenReady on an active peer resolves at once.
    await within(p.whenReady(), 'whenReady again');
  });

  it('keeps a declared peer id', async () => {
    const p = await peers.ready({ peerId: 'decl.id-1@x' });
    assert.equal(p.peerId, 'decl.id-1@x');
  });

  it('work started before the Welcome waits for it', async () => {
    const p = peers.open();
    const [echo, list] = await within(Promise.all([p.rpc.call('echo', 'early'), p.listPeers()]), 'early work');
    assert.equal(new TextDecoder().decode(echo), 'early');
    assert.ok(list.includes(p.peerId!));
  });

  it('a peer id held by another session is refused for good (peer_id_taken)', async () => {
    await peers.ready({ peerId: 'taken' });
    const p = peers.open({ peerId: 'taken' });
    const closed = next<CustomEvent>(p, 'close');
    const e = await p.whenReady().then(() => assert.fail('welcomed'), (x) => x);
    assert.ok(e instanceof PeerdError);
    assert.equal(e.code, Code.peerIdTaken);
    assert.equal(e.codeName, 'peer_id_taken');
    assert.equal(p.state, 'closed');
    assert.deepEqual((await closed).detail.code, Code.peerIdTaken);
  });

  it('a malformed declared id is refused for good (invalid_argument)', async () => {
    const p = peers.open({ peerId: '12345' }); // all digits: reserved for assigned ids
    await assert.rejects(p.whenReady(), { code: Code.invalidArgument, codeName: 'invalid_argument' });
    assert.equal(p.state, 'closed');
  });

  it('disconnect() closes once, fails what is pending and refuses new work; it is idempotent', async () => {
    const p = await peers.ready();
    let called!: () => void;
    const handlerCalled = new Promise<void>((r) => (called = r));
    p.rpc.handle('hang', () => (called(), new Promise(() => {})));
    const pending = p.rpc.call('callback', JSON.stringify({ method: 'hang' }));
    await within(handlerCalled, 'the server calling back');
    const closes = new Collector<CustomEvent>();
    p.addEventListener('close', (e) => closes.push(e));
    p.disconnect();
    p.disconnect();
    assert.equal(p.state, 'closed');
    const e = await pending.then(() => assert.fail('answered'), (x) => x);
    assert.ok(e instanceof DisconnectedError);
    assert.equal(e.code, 0);
    assert.equal(e.codeName, 'disconnected');
    assert.equal(closes.items.length, 1);
    assert.equal(closes.items[0]!.detail.code, Code.normal);
    await assert.rejects(p.whenReady(), { code: Code.normal });
    await assert.rejects(p.rpc.call('echo'), PeerdError);
    await assert.rejects(p.listPeers(), PeerdError);
    await assert.rejects(p.join('t').ready, { code: Code.normal });
    await assert.rejects(p.watch().ready, { code: Code.normal });
  });

  it('no reconnect: a refused connection closes the peer', async () => {
    const p = connect('ws://127.0.0.1:1/', { WebSocket, reconnect: false });
    await assert.rejects(within(p.whenReady(), 'refusal'), DisconnectedError);
    assert.equal(p.state, 'closed');
  });

  it('gives up after maxAttempts', async () => {
    const p = connect('ws://127.0.0.1:1/', { WebSocket, reconnect: { minDelayMs: 1, maxDelayMs: 5, maxAttempts: 3 } });
    const seen = new Collector<PeerState>();
    p.addEventListener('statechange', (e) => seen.push(e.detail.state));
    await assert.rejects(within(p.whenReady(), 'giving up'), DisconnectedError);
    assert.deepEqual(seen.items, ['reconnecting', 'closed']);
  });

  it('without a WebSocket implementation, connect throws a TypeError', () => {
    assert.throws(() => connect(suite.server.url, { WebSocket: undefined as never }), TypeError);
  });

  it('listPeers: every connected peer, or the members of a topic, sorted', async () => {
    const a = await peers.ready({ peerId: 'lp-a' });
    const b = await peers.ready({ peerId: 'lp-b' });
    await a.join('lp-room').ready;
    const all = await a.listPeers();
    assert.ok(all.includes('lp-a') && all.includes('lp-b'));
    assert.deepEqual(all, [...all].sort());
    assert.deepEqual(await b.listPeers('lp-room'), ['lp-a']);
    assert.deepEqual(await b.listPeers('nobody-here'), []);
  });

  it('answers the server heartbeat: an idle peer outlives three intervals', async () => {
    const p = await peers.ready();
    const changes = new Collector<unknown>();
    p.addEventListener('statechange', changes.push);
    // Idle on purpose: the server (heartbeat 200 ms) closes a peer silent for 600 ms.
    await new Promise((r) => setTimeout(r, 1200));
    assert.deepEqual(changes.items, []);
    assert.equal(p.state, 'active');
    await within(p.rpc.call('echo'), 'echo after idling');
  });

  it('statechange to closed comes after disconnect', async () => {
    const p = await peers.ready();
    const closed = inState(p, 'closed');
    p.disconnect();
    await closed;
  });
});
