// Draining (PROTOCOL.md §6.10) against real servers: a successor `peerd serve --takeover`
// takes the listening socket over, the old server drains its peers towards it, and a client
// busy calling and publishing all along loses nothing.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { type PeerState, type TopicMessageEvent } from '../src/index.js';
import { startServer, type TestServer } from './support/server.js';
import { Collector, inState, Peers, text, within } from './support/wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('drain', () => {
  const servers: TestServer[] = [];
  const sockets: string[] = [];
  let url = '';
  const peers = new Peers(() => url);
  afterEach(() => peers.closeAll());
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    for (const s of sockets) rmSync(s, { force: true });
  });

  it('a takeover: the old server drains towards the new one, and no call, publish or answer fails', async () => {
    const sock = join(tmpdir(), `peerd-ts-handoff-${process.pid}-${Date.now()}.sock`);
    sockets.push(sock);
    // The notices spread over 300 ms; a peer has 5 s to finish (it needs far less).
    const drain = { drainWindowMs: 300, drainGraceMs: 5000 };
    const old = await startServer({ ...drain, args: ['--handoff-socket', sock] });
    servers.push(old);
    url = old.url;

    const a = await peers.ready({ peerId: 'dr-alice' });
    const states = new Collector<PeerState>();
    const topic = a.join('dr-room');
    await topic.ready;
    const echoes = new Collector<string>();
    topic.addEventListener('message', (m: TopicMessageEvent) => m.text() != 'while draining' && echoes.push(m.text()));
    const drainEcho = new Promise<void>((ok) => topic.addEventListener('message', (m: TopicMessageEvent) => m.text() == 'while draining' && ok()));
    // Sent the moment the drain starts: they wait in the queue for the new server.
    let whileDraining: Promise<[Uint8Array, void]> | undefined;
    a.addEventListener('statechange', (e) => {
      states.push(e.detail.state);
      if (e.detail.state == 'draining')
        whileDraining ??= Promise.all([a.rpc.call('echo', 'made while draining'), topic.publish('while draining', { echo: true })]);
    });
    // The server calls a back (builtin `callback`) while it drains: a's answers must still go
    // out after its Close{reconnect}, or the server could not finish a's `callback` calls.
    a.rpc.handle('dr.slow', async (p) => (await sleep(20), p));

    // Steady traffic: echo calls in three loops, callbacks in one, publishes in one.
    let running = true;
    const failures: unknown[] = [];
    let calls = 0;
    let published = 0;
    const loop = async (body: (i: number) => Promise<void>) => {
      for (let i = 0; running; i++) {
        try {
          await body(i);
        } catch (e) {
          failures.push(e);
        }
        await sleep(3);
      }
    };
    const loops = [
      ...[0, 1, 2].map((k) =>
        loop(async (i) => {
          const v = `${k}-${i}`;
          assert.equal(text(await a.rpc.call('echo', v)), v);
          calls++;
        }),
      ),
      loop(async (i) => {
        const v = `cb-${i}`;
        assert.equal(text(await a.rpc.call('callback', JSON.stringify({ method: 'dr.slow', params: v }))), v);
        calls++;
      }),
      loop(async (i) => {
        await topic.publish(`m${i}`, { echo: true });
        published++;
      }),
    ];

    await sleep(200);
    const before = calls;
    assert.ok(before > 0, 'traffic before the takeover');
    // The successor: same address, the old server's sockets. Its ready line means it
    // accepts; the old one then drains by itself and exits.
    const next = await startServer({ ...drain, port: old.port, args: ['--takeover', '--handoff-socket', sock] });
    servers.push(next);
    await within(old.exited(), 'the old server draining and exiting', 10_000);
    await within(inState(a, 'active'), 'a active on the new server');
    // Traffic keeps flowing on the new server.
    const atSwitch = calls;
    while (calls < atSwitch + 20) await within(sleep(10), 'calls after the takeover');
    running = false;
    await within(Promise.all(loops), 'the loops ending');

    assert.deepEqual(failures, []);
    assert.ok(states.items.includes('draining'), `states: ${states.items.join(' ')}`);
    assert.deepEqual(states.items.slice(-4), ['draining', 'reconnecting', 'negotiating', 'active']);
    assert.equal(a.peerId, 'dr-alice');
    assert.ok(whileDraining, 'sends made while draining');
    assert.equal(text((await within(whileDraining, 'the sends made while draining'))[0]), 'made while draining');
    await within(drainEcho, 'the echo of the publish made while draining');
    // Every publish resolved, and its echo arrived, in order (re-joined before the queue
    // went out).
    const got = await echoes.until(published, 'the echoes');
    assert.deepEqual(got, Array.from({ length: published }, (_, i) => `m${i}`));
    // The new server answers, alone now.
    assert.equal(text(await within(a.rpc.call('echo', 'after'), 'a call to the new server')), 'after');
    assert.deepEqual(await within(a.listPeers('dr-room'), 'listPeers'), ['dr-alice']);
  });
});
