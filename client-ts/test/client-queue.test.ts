// The reconnect queue: what the application sends while the link is down waits for the next
// link, bounded in time (reconnectQueueTimeoutMs) and size (frames, bytes), and fails with a
// QueueError past a bound, or with the closing error when the peer closes for good.
import assert from 'node:assert/strict';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, it } from 'node:test';
import { Code, PeerdError, QueueError, type TopicMessageEvent } from '../src/index.js';
import { startServer, type TestServer } from './support/server.js';
import { Collector, inState, Peers, text, within } from './support/wait.js';

const secret = resolve(dirname(fileURLToPath(import.meta.url)), '../../testdata/auth/hs256.secret');

/** The rejection of `p` (failing the test if it resolves). */
const rejection = (p: Promise<unknown>) =>
  p.then(
    () => assert.fail('resolved'),
    (e: unknown) => e,
  );

const isQueueError = (e: unknown, name: string) =>
  e instanceof QueueError && e instanceof PeerdError && e.code === 0 && e.codeName === name && e.name === 'QueueError';

describe('reconnect queue', () => {
  const servers: TestServer[] = [];
  let url = '';
  const peers = new Peers(() => url);
  afterEach(() => peers.closeAll());
  after(() => Promise.all(servers.map((s) => s.stop())));
  const server = async (o: Parameters<typeof startServer>[0] = {}) => {
    const s = await startServer(o);
    servers.push(s);
    url = s.url;
    return s;
  };

  it('sends made while the server is down wait for the next one and go out in order, after the re-join', async () => {
    const s = await server();
    const a = await peers.ready({ peerId: 'q-alice' });
    const t = a.join('q-room');
    await t.ready;
    const got = new Collector<TopicMessageEvent>();
    t.addEventListener('message', got.push);

    await s.stop();
    await within(inState(a, 'reconnecting'), 'a reconnecting');
    const t0 = Date.now();
    const one = t.publish('one', { echo: true });
    const call = a.rpc.call('echo', 'queued');
    const two = t.publish('two', { echo: true });
    const members = a.listPeers('q-room');
    const json = a.rpc.callJson('echo', { n: 1 });

    await s.restart();
    assert.equal(text(await within(call, 'the queued call', 10_000)), 'queued');
    assert.deepEqual(await within(json, 'the queued JSON call'), { n: 1 });
    await within(Promise.all([one, two]), 'the queued publishes');
    // Re-joined before the queue went out: its own echoes came back, in order.
    assert.deepEqual((await got.until(2, 'the echoes')).map((m) => m.text()), ['one', 'two']);
    assert.deepEqual(await within(members, 'listPeers'), ['q-alice']);
    assert.equal(a.peerId, 'q-alice');
    assert.ok(Date.now() - t0 < 10_000, 'within the default bound');
  });

  it('past its time bound a queued send fails with QueueError queue_timeout; a call keeps its own deadline', async () => {
    const s = await server();
    const a = await peers.ready({ reconnectQueueTimeoutMs: 300 });
    const b = await peers.ready(); // default bound: 10 s
    const errors = new Collector<PeerdError>();
    a.addEventListener('error', (e) => errors.push(e.detail));

    await s.stop();
    await within(Promise.all([inState(a, 'reconnecting'), inState(b, 'reconnecting')]), 'reconnecting');
    const t0 = Date.now();
    const call = rejection(a.rpc.call('echo', 'late'));
    const pub = rejection(a.join('q-late').publish('late'));
    a.events.emit('q-nobody', 'late');
    const short = rejection(b.rpc.call('echo', 'short', { timeoutMs: 100 }));

    const e = await within(call, 'the call expiring');
    const waited = Date.now() - t0;
    assert.ok(isQueueError(e, 'queue_timeout'), String(e));
    assert.ok(waited >= 300 && waited < 3000, `failed after ${waited} ms`);
    assert.ok(isQueueError(await within(pub, 'the publish expiring'), 'queue_timeout'));
    // Nobody waits on an event: its expiry is an 'error' event on the Peer.
    const [ee] = await errors.until(1, 'the event expiring');
    assert.ok(isQueueError(ee, 'queue_timeout'), String(ee));
    // b's call had a deadline shorter than the queue's bound: the deadline won.
    const se = (await within(short, 'the short call')) as PeerdError;
    assert.ok(!(se instanceof QueueError) && se.code === Code.timeout, String(se));
    assert.equal(a.state, 'reconnecting');

    // Still down: new sends queue again (the bound is per send), and go out when it is back.
    const again = a.rpc.call('echo', 'again');
    await s.restart();
    assert.equal(text(await within(again, 'the call after the expiry', 10_000)), 'again');
    assert.equal(errors.items.length, 1);
  });

  it('past its size bound (frames, bytes) a new send fails at once with QueueError queue_full', async () => {
    const s = await server();
    const a = await peers.ready({ reconnectQueueFrames: 3 });
    const b = await peers.ready({ reconnectQueueBytes: 1000 });
    const c = await peers.ready({ reconnectQueueFrames: 0 });
    await s.stop();
    await within(Promise.all([a, b, c].map((p) => inState(p, 'reconnecting'))), 'reconnecting');

    // Frames: three sends fit, the fourth (of any kind) does not; joins are not sends.
    const queued = [a.rpc.call('echo', '1'), a.rpc.call('echo', '2'), a.listPeers()];
    const t0 = Date.now();
    assert.ok(isQueueError(await rejection(a.rpc.call('echo', '4')), 'queue_full'));
    assert.ok(Date.now() - t0 < 100, 'at once');
    assert.ok(isQueueError(await rejection(a.join('q-full').publish('x')), 'queue_full'));
    assert.throws(() => a.events.broadcast('q-b', 'x'), (e) => isQueueError(e, 'queue_full'));
    const joined = a.join('q-full-2').ready;

    // Bytes: the encoded frames, params included.
    const big = 'x'.repeat(600);
    const first = b.rpc.call('echo', big);
    assert.ok(isQueueError(await rejection(b.rpc.call('echo', big)), 'queue_full'));
    const small = b.rpc.call('echo', 'small');

    // A bound of 0 frames: nothing waits, every send fails at once.
    assert.ok(isQueueError(await rejection(c.rpc.call('echo', 'c')), 'queue_full'));
    assert.throws(() => c.events.emit('q-c'), QueueError);

    await s.restart();
    const [r1, r2, list] = await within(Promise.all(queued), 'a queue going out', 10_000);
    assert.deepEqual([text(r1 as Uint8Array), text(r2 as Uint8Array)], ['1', '2']);
    assert.ok((list as string[]).includes(a.peerId!));
    await within(joined, 'the join made while full');
    assert.equal(text(await within(first, 'b first')), big);
    assert.equal(text(await within(small, 'b small')), 'small');
    // The queue is empty again: a full bound's worth fits.
    await s.stop();
    await within(inState(a, 'reconnecting'), 'a reconnecting again');
    const more = [a.rpc.call('echo', '5'), a.rpc.call('echo', '6'), a.rpc.call('echo', '7')];
    await s.restart();
    assert.deepEqual((await within(Promise.all(more), 'the second queue', 10_000)).map(text), ['5', '6', '7']);
  });

  it('disconnect() fails what is queued with the closing error, at once', async () => {
    const s = await server();
    const a = await peers.ready();
    await s.stop();
    await within(inState(a, 'reconnecting'), 'reconnecting');
    const failed = [
      rejection(a.rpc.call('echo', 'x', { timeoutMs: 60_000 })),
      rejection(a.join('q-bye').publish('x')),
      rejection(a.listPeers()),
    ];
    a.disconnect();
    for (const e of await within(Promise.all(failed), 'the queue failing')) {
      assert.ok(e instanceof PeerdError && !(e instanceof QueueError), String(e));
      assert.equal((e as PeerdError).code, Code.normal);
    }
    assert.equal(a.state, 'closed');
    assert.throws(() => a.events.emit('x'), (e: PeerdError) => e.code === Code.normal);
  });

  it('a final Reject on reconnect (unauthorized) fails what is queued with it', async () => {
    const s = await server();
    const a = await peers.ready({ peerId: 'q-anon' });
    await s.stop();
    await within(inState(a, 'reconnecting'), 'reconnecting');
    const call = rejection(a.rpc.call('echo', 'x'));
    const pub = rejection(a.join('q-auth').publish('x'));
    // The same port now wants tokens, and a has none.
    await server({ port: s.port, args: ['--auth-hs256-secret', secret] });
    for (const e of await within(Promise.all([call, pub]), 'the queue failing', 10_000)) {
      assert.ok(e instanceof PeerdError && !(e instanceof QueueError), String(e));
      assert.equal((e as PeerdError).code, Code.unauthorized);
    }
    assert.equal(a.state, 'closed');
  });
});
