// Presence watches (Beaker watch()) and WebRTC signaling (Peero).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, type PresenceEvent, type SignalMessage } from '../src/index.js';
import { Collector, withServer } from './support/wait.js';

const log = (c: Collector<PresenceEvent>) => c.items.map((e) => `${e.type} ${e.peerId}`);

describe('watch', () => {
  const suite = withServer();
  const peers = suite.peers;

  it('a topic watch: current members first as joins, then joins and leaves', async () => {
    const a = await peers.ready({ peerId: 'w-a' });
    const b = await peers.ready({ peerId: 'w-b' });
    const c = await peers.ready({ peerId: 'w-c' });
    await Promise.all([a.join('wt').ready, b.join('wt').ready]);
    const w = c.watch('wt');
    const ev = new Collector<PresenceEvent>();
    w.addEventListener('join', ev.push);
    w.addEventListener('leave', ev.push);
    await w.ready;
    // The snapshot comes before the Watch's answer.
    assert.deepEqual(log(ev), ['join w-a', 'join w-b']);
    assert.equal(ev.items[0]!.topic, 'wt');
    assert.deepEqual([...w.peers], ['w-a', 'w-b']);

    const tc = c.join('wt');
    await ev.until(3);
    tc.close();
    await ev.until(4);
    b.disconnect();
    await ev.until(5);
    assert.deepEqual(log(ev), ['join w-a', 'join w-b', 'join w-c', 'leave w-c', 'leave w-b']);
    assert.deepEqual([...w.peers], ['w-a']);
  });

  it('the global watch: every connected peer (the watcher too), then connects and disconnects', async () => {
    const a = await peers.ready({ peerId: 'g-a' });
    const w = a.watch();
    assert.equal(w.topic, null);
    const ev = new Collector<PresenceEvent>();
    w.addEventListener('join', ev.push);
    w.addEventListener('leave', ev.push);
    await w.ready;
    assert.ok(w.peers.has('g-a'));
    const n = ev.items.length;
    const b = await peers.ready({ peerId: 'g-b' });
    await ev.until(n + 1);
    b.disconnect();
    await ev.until(n + 2);
    assert.deepEqual(log(ev).slice(n), ['join g-b', 'leave g-b']);
    assert.equal(ev.items[n]!.topic, null);
  });

  it('a second handle on the same watch gets the current set as joins; the last close unwatches', async () => {
    const a = await peers.ready({ peerId: 's-a' });
    const b = await peers.ready({ peerId: 's-b' });
    await b.join('st').ready;
    const w1 = a.watch('st');
    await w1.ready;
    const w2 = a.watch('st');
    const ev2 = new Collector<PresenceEvent>();
    w2.addEventListener('join', ev2.push);
    w2.addEventListener('leave', ev2.push);
    await w2.ready;
    await ev2.until(1);
    assert.deepEqual(log(ev2), ['join s-b']);

    const ev1 = new Collector<PresenceEvent>();
    w1.addEventListener('join', ev1.push);
    w1.close();
    const c = await peers.ready({ peerId: 's-c' });
    await c.join('st').ready;
    await ev2.until(2);
    assert.deepEqual(log(ev2), ['join s-b', 'join s-c']);
    assert.deepEqual(ev1.items, []); // closed

    w2.close();
    // Unwatched: a Watch again is a fresh one with a fresh snapshot.
    const w3 = a.watch('st');
    const ev3 = new Collector<PresenceEvent>();
    w3.addEventListener('join', ev3.push);
    await w3.ready;
    assert.deepEqual(log(ev3), ['join s-b', 'join s-c']);
  });

  it('a watch of an invalid topic rejects ready (invalid_argument)', async () => {
    const a = await peers.ready();
    await assert.rejects(a.watch('x'.repeat(200)).ready, { code: Code.invalidArgument });
  });
});

describe('signaling', () => {
  const suite = withServer();
  const peers = suite.peers;

  it('offer to the room, answer/candidate/bye to one peer, each with the sender id', async () => {
    const a = await peers.ready({ peerId: 'sg-a' });
    const b = await peers.ready({ peerId: 'sg-b' });
    const c = await peers.ready({ peerId: 'sg-c' });
    await Promise.all([a, b, c].map((p) => p.join('call-1').ready));
    const atA = new Collector<SignalMessage>();
    const atB = new Collector<SignalMessage>();
    const atC = new Collector<SignalMessage>();
    a.signaling.on(atA.push);
    b.signaling.on(atB.push);
    c.signaling.on(atC.push);

    await a.signaling.offer('call-1', 'v=0 sdp-offer');
    const [ob] = await atB.until(1);
    const [oc] = await atC.until(1);
    for (const o of [ob!, oc!]) {
      assert.equal(o.kind, 'offer');
      assert.equal(o.from, 'sg-a');
      assert.equal(o.room, 'call-1');
      assert.equal(o.text(), 'v=0 sdp-offer');
    }

    await b.signaling.answer('call-1', 'sg-a', 'v=0 sdp-answer');
    await b.signaling.candidate('call-1', 'sg-a', JSON.stringify({ candidate: 'c1' }));
    await b.signaling.bye('call-1', 'sg-a');
    const [ans, cand, bye] = await atA.until(3);
    assert.deepEqual([ans!.kind, ans!.from, ans!.text()], ['answer', 'sg-b', 'v=0 sdp-answer']);
    assert.deepEqual([cand!.kind, cand!.json()], ['candidate', { candidate: 'c1' }]);
    assert.deepEqual([bye!.kind, bye!.payload.length], ['bye', 0]);

    // An offer to one peer reaches only it.
    await a.signaling.offer('call-1', 'just c', { to: 'sg-c' });
    await atC.until(2);
    assert.equal(atC.items[1]!.text(), 'just c');
    await b.listPeers(); // b's copy would have come before this answer
    assert.equal(atB.items.length, 1);
    assert.equal(atC.items.length, 2);
  });

  it('signaling outside the room is not_member; to a stranger unknown_peer', async () => {
    const a = await peers.ready({ peerId: 'sx-a' });
    await assert.rejects(a.signaling.offer('not-joined', 'x'), { code: Code.notMember });
    await a.join('r').ready;
    await assert.rejects(a.signaling.answer('r', 'nobody-here', 'x'), { code: Code.unknownPeer });
  });
});
