// RPC with a real browser page at either end: the server calls the page (through peerd serve's
// builtin `callback`), the page calls the server (`echo`), the page calls another page by its
// peer id, and a Node client calls a page.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { connect, PeerdError } from '../src/index.js';
import { browserSkipReason, startHarness, waitForMembers, withDiagnostics, type DemoPage, type Harness } from './support/browser.js';

const skip = browserSkipReason();

/** Call through the page's RPC box and wait for its outcome. */
async function rpcBox(p: DemoPage, method: string, params: string, on = ''): Promise<{ ok: boolean; result: string; codeName: string }> {
  const before = await p.hooks((d) => d.rpc.length);
  await p.page.fill('#rpc-method', method);
  await p.page.fill('#rpc-params', params);
  await p.page.fill('#rpc-peer', on);
  await p.page.click('#rpc-call');
  const handle = await p.page.waitForFunction((n) => window.demo.rpc[n] ?? false, before);
  return (await handle.jsonValue()) as { ok: boolean; result: string; codeName: string };
}

describe('browser: RPC to and from a page', { skip: skip ?? false, timeout: 90_000 }, () => {
  let h: Harness;
  let fox: DemoPage;
  let gus: DemoPage;
  before(async () => {
    h = await startHarness();
    fox = await h.openPage('fox', 'rpc-room');
    gus = await h.openPage('gus', 'rpc-room');
    await waitForMembers([fox, gus], ['fox', 'gus']);
  });
  after(async () => { await h?.close(); });

  test('the server calls a handler on the page (builtin callback)', async () => {
    await withDiagnostics(h, async () => {
      // callback {"method": m, "params": s}: the server calls m on the caller, returns its answer.
      const out = await rpcBox(fox, 'callback', JSON.stringify({ method: 'ask', params: 'are you there?' }));
      assert.deepEqual(out, { ...out, ok: true, result: 'fox heard: are you there?' });
      const handled = await fox.hooks((d) => d.handled.map((c) => ({ method: c.method, from: c.from, params: c.params })));
      assert.deepEqual(handled, [{ method: 'ask', from: null, params: 'are you there?' }]); // from null: the server

      const who = await rpcBox(fox, 'callback', JSON.stringify({ method: 'whoami', params: '' }));
      assert.equal(who.ok, true);
      const me = JSON.parse(who.result) as { peerId: string; room: string; members: string[] };
      assert.equal(me.peerId, 'fox');
      assert.equal(me.room, 'rpc-room');
      assert.deepEqual(me.members, ['fox', 'gus']);

      // A method the page does not handle: the server's call fails with method_not_found, and
      // callback passes that code on.
      const missing = await rpcBox(fox, 'callback', JSON.stringify({ method: 'nope', params: '' }));
      assert.equal(missing.ok, false);
      assert.equal(missing.codeName, 'method_not_found');
    });
  });

  test('the page calls the server (echo)', async () => {
    await withDiagnostics(h, async () => {
      const out = await rpcBox(fox, 'echo', 'héllo, server');
      assert.equal(out.ok, true);
      assert.equal(out.result, 'héllo, server');
      const missing = await rpcBox(fox, 'no_such_method', '');
      assert.equal(missing.ok, false);
      assert.equal(missing.codeName, 'method_not_found');
    });
  });

  test('a page calls another page by peer id, through peerd', async () => {
    await withDiagnostics(h, async () => {
      const out = await rpcBox(fox, 'ask', 'gus, what time is it?', 'gus');
      assert.equal(out.ok, true);
      assert.equal(out.result, 'gus heard: gus, what time is it?');
      const seen = await gus.hooks((d) => d.handled.map((c) => ({ method: c.method, from: c.from, params: c.params })));
      assert.deepEqual(seen, [{ method: 'ask', from: 'fox', params: 'gus, what time is it?' }]);

      const gone = await rpcBox(fox, 'ask', 'anyone?', 'nobody-here');
      assert.equal(gone.ok, false);
      assert.equal(gone.codeName, 'unknown_peer');
    });
  });

  test('a Node client calls a page, and the page calls it back', async () => {
    await withDiagnostics(h, async () => {
      const node = connect(h.peerd.url, { peerId: 'node-client', WebSocket, reconnect: false });
      try {
        await node.whenReady();
        node.rpc.handle('ask', (params, ctx) => new TextEncoder().encode(`node heard ${ctx.from}: ${new TextDecoder().decode(params)}`));
        const answer = await node.rpc.call('ask', new TextEncoder().encode('from node'), { peer: 'gus' });
        assert.equal(new TextDecoder().decode(answer), 'gus heard: from node');
        const back = await rpcBox(gus, 'ask', 'hello node', 'node-client');
        assert.equal(back.result, 'node heard gus: hello node');
        // And the page's whoami, JSON, from Node.
        const who = await node.rpc.call('whoami', new Uint8Array(), { peer: 'fox' });
        assert.equal((JSON.parse(new TextDecoder().decode(who)) as { peerId: string }).peerId, 'fox');
        await assert.rejects(node.rpc.call('nope', new Uint8Array(), { peer: 'fox' }), (e: unknown) => e instanceof PeerdError && e.codeName === 'method_not_found');
      } finally {
        node.disconnect();
      }
    });
  });
});
