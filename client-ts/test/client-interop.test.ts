// A Rust client (the `peerd` CLI, built on peerd's Rust client library) and this TypeScript
// client talking through one server over ws://.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { PeerdError, type PresenceEvent, type SignalMessage, type TopicMessageEvent } from '../src/index.js';
import { peerdBin, type TestServer } from './support/server.js';
import { Collector, next, text, within, withServer } from './support/wait.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `peerd <args> --server URL`; resolves when it exits (killed after `ms`). */
async function cli(server: TestServer, args: string[], ms = 10_000): Promise<Run> {
  const p = spawn(await peerdBin(), [...args, '--server', server.url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const kill = setTimeout(() => p.kill('SIGKILL'), ms);
  const code = await new Promise<number | null>((ok) => p.once('close', (c) => ok(c)));
  clearTimeout(kill);
  return { code, stdout, stderr };
}

describe('interop with the Rust client (peerd CLI)', () => {
  const suite = withServer();
  const peers = suite.peers;

  it('Rust subscribes and receives a TypeScript publish', async () => {
    const ts = await peers.ready({ peerId: 'ts-pub' });
    const w = ts.watch('mix');
    const rustJoined = next<PresenceEvent>(w, 'join', (e) => e.peerId == 'rs-sub', 10_000);
    const sub = cli(suite.server, ['sub', 'mix', '--count', '1', '--id', 'rs-sub']);
    await rustJoined;
    await ts.join('mix').publish('hello from ts');
    const r = await within(sub, 'peerd sub', 10_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ts-pub: hello from ts\n');
  });

  it('TypeScript receives a Rust publish and a Rust direct send', async () => {
    const ts = await peers.ready({ peerId: 'ts-sub' });
    const t = ts.join('mix2');
    await t.ready;
    const got = new Collector<TopicMessageEvent>();
    t.addEventListener('message', got.push);
    const pub = await cli(suite.server, ['pub', 'mix2', 'hello from rust', '--id', 'rs-pub']);
    assert.equal(pub.code, 0, pub.stderr);
    const send = await cli(suite.server, ['send', 'mix2', 'ts-sub', 'just you', '--id', 'rs-send']);
    assert.equal(send.code, 0, send.stderr);
    const [m1, m2] = await got.until(2);
    assert.deepEqual([m1!.peerId, m1!.text(), m1!.direct], ['rs-pub', 'hello from rust', false]);
    assert.deepEqual([m2!.peerId, m2!.text(), m2!.direct], ['rs-send', 'just you', true]);
  });

  it('Rust calls a TypeScript handler by peer id; errors keep their codes', async () => {
    const ts = await peers.ready({ peerId: 'ts-callee' });
    ts.rpc.handle('greet', (p, ctx) => `hello ${text(p)}, from ts (caller ${ctx.from})`);
    ts.rpc.handle('refuse', () => {
      throw new PeerdError(4001, 'not today');
    });
    const ok = await cli(suite.server, ['call', '--peer', 'ts-callee', '--id', 'rs-caller', 'greet', 'rust']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'hello rust, from ts (caller rs-caller)\n');

    const refused = await cli(suite.server, ['call', '--peer', 'ts-callee', 'refuse']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /4001|app_4001/);
    assert.match(refused.stderr, /not today/);

    const missing = await cli(suite.server, ['call', '--peer', 'ts-callee', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /method_not_found|1007/);
  });

  it('Rust lists and watches TypeScript peers', async () => {
    const ts = await peers.ready({ peerId: 'ts-listed' });
    await ts.join('mix3').ready;
    const list = await cli(suite.server, ['peers', '--topic', 'mix3']);
    assert.equal(list.code, 0, list.stderr);
    assert.equal(list.stdout, 'ts-listed\n');
    const watch = await cli(suite.server, ['watch', '--topic', 'mix3', '--count', '1']);
    assert.equal(watch.stdout, 'join ts-listed\n');
  });

  it('signaling between Rust and TypeScript', async () => {
    const ts = await peers.ready({ peerId: 'ts-rtc' });
    await ts.join('rtc').ready;
    const got = new Collector<SignalMessage>();
    ts.signaling.on(got.push);
    // Rust waits in the room for one signal; TypeScript offers to the room once it is there.
    const w = ts.watch('rtc');
    const rustIn = next<PresenceEvent>(w, 'join', (e) => e.peerId == 'rs-rtc', 10_000);
    const wait = cli(suite.server, ['signal', '--room', 'rtc', '--id', 'rs-rtc', 'wait']);
    await rustIn;
    await ts.signaling.offer('rtc', 'v=0 offer from ts');
    const r = await within(wait, 'peerd signal wait', 10_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'v=0 offer from ts\n');
    assert.match(r.stderr, /Offer from ts-rtc/);
    // And Rust answers TypeScript directly.
    const ans = await cli(suite.server, ['signal', '--room', 'rtc', '--id', 'rs-rtc2', '--to', 'ts-rtc', 'answer', 'v=0 answer from rust']);
    assert.equal(ans.code, 0, ans.stderr);
    const [s] = await got.until(1);
    assert.deepEqual([s!.kind, s!.from, s!.room, s!.text()], ['answer', 'rs-rtc2', 'rtc', 'v=0 answer from rust']);
  });
});
