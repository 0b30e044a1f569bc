// Events (to the server, direct to a peer) and broadcasts, all reaching name listeners.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, type PeerdError, type PeerdEvent } from '../src/index.js';
import { Collector, next, text, withServer } from './support/wait.js';

describe('events', () => {
  const suite = withServer();
  const peers = suite.peers;

  it('a direct event reaches that peer with the sender id', async () => {
    const a = await peers.ready({ peerId: 'ev-a' });
    const b = await peers.ready({ peerId: 'ev-b' });
    const got = new Collector<PeerdEvent>();
    b.events.on('chat', got.push);
    a.events.emit('chat', 'hi b', { to: 'ev-b' });
    a.events.emitJson('chat', { n: 2 }, { to: 'ev-b' });
    const [e1, e2] = await got.until(2);
    assert.equal(e1!.name, 'chat');
    assert.equal(e1!.from, 'ev-a');
    assert.equal(e1!.broadcast, false);
    assert.equal(e1!.text(), 'hi b');
    assert.deepEqual(e2!.json(), { n: 2 });
  });

  it('an event to the server is accepted without an answer; the link stays healthy', async () => {
    const a = await peers.ready();
    const errors = new Collector<Event>();
    a.addEventListener('error', errors.push);
    a.events.emit('telemetry', new Uint8Array([1, 2, 3]));
    a.events.emitJson('telemetry', { ok: true });
    // Frames of one connection are handled in order: the echo answer comes after both.
    assert.equal(text(await a.rpc.call('echo', 'after')), 'after');
    assert.deepEqual(errors.items, []);
    assert.equal(a.state, 'active');
  });

  it('a direct event to an unknown peer surfaces as an error event (unknown_peer)', async () => {
    const a = await peers.ready();
    const err = next<CustomEvent<PeerdError>>(a, 'error');
    a.events.emit('x', 'y', { to: 'no-such-peer' });
    const e = (await err).detail;
    assert.equal(e.code, Code.unknownPeer);
  });

  it('a broadcast reaches the name listeners of every other peer, not the sender', async () => {
    const a = await peers.ready({ peerId: 'bc-a' });
    const b = await peers.ready({ peerId: 'bc-b' });
    const c = await peers.ready({ peerId: 'bc-c' });
    const atA = new Collector<PeerdEvent>();
    const atC = new Collector<PeerdEvent>();
    const atB = new Collector<PeerdEvent>();
    a.events.on('news', atA.push);
    c.events.on('news', atC.push);
    b.events.on('news', atB.push);
    b.events.broadcast('news', 'extra');
    const [ea] = await atA.until(1);
    const [ec] = await atC.until(1);
    for (const e of [ea!, ec!]) {
      assert.equal(e.from, 'bc-b');
      assert.equal(e.broadcast, true);
      assert.equal(e.text(), 'extra');
    }
    // b's own copy would have come before this echo answer.
    await b.rpc.call('echo');
    assert.equal(atB.items.length, 0);
  });

  it('on() returns an unsubscribe; other listeners keep receiving', async () => {
    const a = await peers.ready({ peerId: 'un-a' });
    const b = await peers.ready({ peerId: 'un-b' });
    const first = new Collector<PeerdEvent>();
    const second = new Collector<PeerdEvent>();
    const off = b.events.on('n', first.push);
    b.events.on('n', second.push);
    a.events.emit('n', '1', { to: 'un-b' });
    await second.until(1);
    off();
    a.events.emit('n', '2', { to: 'un-b' });
    await second.until(2);
    assert.deepEqual(first.items.map((e) => e.text()), ['1']);
    // Other names are not delivered to these listeners.
    a.events.emit('other', '3', { to: 'un-b' });
    a.events.emit('n', '4', { to: 'un-b' });
    await second.until(3);
    assert.deepEqual(second.items.map((e) => e.text()), ['1', '2', '4']);
  });
});
