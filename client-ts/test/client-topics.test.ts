// Topics (Beaker peersockets): publish, echo, send to one member, close refcount.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, PeerdError, type TopicMessageEvent } from '../src/index.js';
import { Collector, withServer } from './support/wait.js';

const texts = (c: Collector<TopicMessageEvent>) => c.items.map((e) => e.text());

describe('topics', () => {
  const suite = withServer();
  const peers = suite.peers;

  it('publish reaches every other member with the sender id; the publisher gets no copy', async () => {
    const a = await peers.ready({ peerId: 'tp-a' });
    const b = await peers.ready({ peerId: 'tp-b' });
    const c = await peers.ready({ peerId: 'tp-c' });
    const [ta, tb, tc] = [a.join('chat'), b.join('chat'), c.join('chat')];
    await Promise.all([ta.ready, tb.ready, tc.ready]);
    const atA = new Collector<TopicMessageEvent>();
    const atB = new Collector<TopicMessageEvent>();
    const atC = new Collector<TopicMessageEvent>();
    ta.addEventListener('message', atA.push);
    tb.addEventListener('message', atB.push);
    tc.addEventListener('message', atC.push);
    await ta.publish(new Uint8Array([104, 105]));
    await ta.publishJson({ hello: 'json' });
    const [m1, m2] = await atB.until(2);
    assert.equal(m1!.peerId, 'tp-a');
    assert.equal(m1!.topic, 'chat');
    assert.equal(m1!.direct, false);
    assert.deepEqual(m1!.message, new Uint8Array([104, 105]));
    assert.deepEqual(m2!.json(), { hello: 'json' });
    await atC.until(2);
    // A's copy would have come before the answer to this later request.
    await a.listPeers();
    assert.equal(atA.items.length, 0);
  });

  it('echo: the publisher receives its own message too', async () => {
    const a = await peers.ready({ peerId: 'echo-a' });
    const t = a.join('echo-room');
    await t.ready;
    const got = new Collector<TopicMessageEvent>();
    t.addEventListener('message', got.push);
    await t.publish('me too', { echo: true });
    const [m] = await got.until(1);
    assert.equal(m!.peerId, 'echo-a');
    assert.equal(m!.text(), 'me too');
  });

  it('send to one member reaches only it', async () => {
    const a = await peers.ready({ peerId: 'ts-a' });
    const b = await peers.ready({ peerId: 'ts-b' });
    const c = await peers.ready({ peerId: 'ts-c' });
    const [ta, tb, tc] = [a.join('dm'), b.join('dm'), c.join('dm')];
    await Promise.all([ta.ready, tb.ready, tc.ready]);
    const atB = new Collector<TopicMessageEvent>();
    const atC = new Collector<TopicMessageEvent>();
    tb.addEventListener('message', atB.push);
    tc.addEventListener('message', atC.push);
    await ta.send('ts-b', 'only for b');
    await ta.publish('for all'); // after the direct one from the same sender: C sees it first
    const [direct, all] = await atB.until(2);
    assert.equal(direct!.direct, true);
    assert.equal(direct!.peerId, 'ts-a');
    assert.equal(direct!.text(), 'only for b');
    assert.equal(all!.direct, false);
    await atC.until(1);
    assert.deepEqual(texts(atC), ['for all']);
  });

  it('send and join failures carry their codes', async () => {
    const a = await peers.ready({ peerId: 'err-a' });
    const t = a.join('errs');
    await t.ready;
    await assert.rejects(t.send('nobody-at-all', 'x'), { code: Code.unknownPeer });
    await peers.ready({ peerId: 'err-b' }); // connected, but not a member
    await assert.rejects(t.send('err-b', 'x'), { code: Code.notMember, codeName: 'not_member' });
    const bad = a.join('bad\u0007name');
    await assert.rejects(bad.ready, (e) => e instanceof PeerdError && e.code == Code.invalidArgument);
    bad.close(); // harmless
  });

  it('close: the Leave goes out only when the last handle of a topic closes', async () => {
    const a = await peers.ready({ peerId: 'rc-a' });
    const b = await peers.ready({ peerId: 'rc-b' });
    const t1 = a.join('rc');
    const t2 = a.join('rc');
    assert.notEqual(t1, t2);
    const tb = b.join('rc');
    await Promise.all([t1.ready, t2.ready, tb.ready]);
    const at1 = new Collector<TopicMessageEvent>();
    const at2 = new Collector<TopicMessageEvent>();
    t1.addEventListener('message', at1.push);
    t2.addEventListener('message', at2.push);

    await tb.publish('one');
    await at1.until(1);
    await at2.until(1);

    t1.close();
    t1.close(); // idempotent
    assert.deepEqual(await a.listPeers('rc'), ['rc-a', 'rc-b']);
    await tb.publish('two');
    await at2.until(2);
    assert.deepEqual(texts(at1), ['one']); // a closed handle hears nothing more

    t2.close();
    assert.deepEqual(await a.listPeers('rc'), ['rc-b']);
    // Joining again after the last close is a fresh membership.
    const t3 = a.join('rc');
    await t3.ready;
    assert.deepEqual(await a.listPeers('rc'), ['rc-a', 'rc-b']);
  });

  it('join before the link is up: the Join goes out with the Welcome and publish waits', async () => {
    const a = peers.open({ peerId: 'early-a' });
    const t = a.join('early');
    const got = new Collector<TopicMessageEvent>();
    t.addEventListener('message', got.push);
    const published = t.publish('first', { echo: true });
    await t.ready;
    await published;
    assert.deepEqual((await got.until(1)).map((e) => e.text()), ['first']);
  });

  it('join and close before the link is up: no Join goes out', async () => {
    const a = peers.open({ peerId: 'never-a' });
    const t = a.join('never');
    const w = a.watch('never');
    t.close();
    w.close();
    await assert.rejects(t.ready, { code: 0 });
    await assert.rejects(w.ready, { code: 0 });
    await a.whenReady();
    assert.deepEqual(await a.listPeers('never'), []);
  });
});
