// RPC in every direction: client -> server, server -> client (builtin `callback`), peer to
// peer by id; failures with their wire codes; deadlines.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, PeerdError, type CallContext } from '../src/index.js';
import { text, within, withServer } from './support/wait.js';

describe('rpc', () => {
  const suite = withServer();
  const peers = suite.peers;

  const callback = (method: string, params = '') => JSON.stringify({ method, params });

  it('client -> server: echo returns the params, bytes and JSON', async () => {
    const p = await peers.ready();
    const bin = new Uint8Array([0, 1, 2, 255]);
    assert.deepEqual(await p.rpc.call('echo', bin), bin);
    assert.deepEqual(await p.rpc.call('echo'), new Uint8Array());
    assert.deepEqual(await p.rpc.callJson('echo', { a: [1, 'x'] }), { a: [1, 'x'] });
    assert.equal(text(await p.rpc.call('echo', 'héllo')), 'héllo');
  });

  it('client -> server: an unknown method is method_not_found', async () => {
    const p = await peers.ready();
    await assert.rejects(p.rpc.call('no.such.method'), (e: PeerdError) => {
      assert.ok(e instanceof PeerdError);
      assert.equal(e.code, Code.methodNotFound);
      assert.equal(e.codeName, 'method_not_found');
      return true;
    });
  });

  it('server -> client: the server calls a handler (builtin callback) with from = null', async () => {
    const p = await peers.ready();
    let seen: CallContext | undefined;
    p.rpc.handle('client.upper', (params, ctx) => {
      seen = ctx;
      return text(params).toUpperCase();
    });
    assert.equal(text(await p.rpc.call('callback', callback('client.upper', 'shout'))), 'SHOUT');
    assert.equal(seen!.method, 'client.upper');
    assert.equal(seen!.from, null);
    assert.ok(seen!.timeoutMs > 0);
  });

  it('server -> client: no handler answers method_not_found; an unregistered handler is gone', async () => {
    const p = await peers.ready();
    await assert.rejects(p.rpc.call('callback', callback('nope')), { code: Code.methodNotFound });
    const off = p.rpc.handle('once', () => 'x');
    assert.equal(text(await p.rpc.call('callback', callback('once'))), 'x');
    off();
    await assert.rejects(p.rpc.call('callback', callback('once')), { code: Code.methodNotFound });
  });

  it('peer -> peer by id, JSON both ways, with the caller id in ctx.from', async () => {
    const a = await peers.ready({ peerId: 'rpc-a' });
    const b = await peers.ready({ peerId: 'rpc-b' });
    b.rpc.handleJson('math.add', ({ x, y }: { x: number; y: number }, ctx) => ({ sum: x + y, from: ctx.from }));
    assert.deepEqual(await a.rpc.callJson('math.add', { x: 2, y: 3 }, { peer: 'rpc-b' }), { sum: 5, from: 'rpc-a' });
    // And back the other way, to a server-assigned id.
    const c = await peers.ready();
    c.rpc.handle('who', (_p, ctx) => ctx.from ?? 'server');
    assert.equal(text(await b.rpc.call('who', undefined, { peer: c.peerId! })), 'rpc-b');
  });

  it('peer -> peer: method_not_found, unknown_peer', async () => {
    const a = await peers.ready();
    const b = await peers.ready();
    await assert.rejects(a.rpc.call('missing', undefined, { peer: b.peerId! }), { code: Code.methodNotFound });
    await assert.rejects(a.rpc.call('x', undefined, { peer: 'nobody-by-that-name' }), {
      code: Code.unknownPeer,
      codeName: 'unknown_peer',
    });
  });

  it('a handler throwing PeerdError answers its code (app 4001); anything else is internal', async () => {
    const a = await peers.ready();
    const b = await peers.ready();
    b.rpc.handle('app.fail', () => {
      throw new PeerdError(4001, 'out of stock');
    });
    b.rpc.handle('bug', async () => {
      throw new Error('oops');
    });
    await assert.rejects(a.rpc.call('app.fail', undefined, { peer: b.peerId! }), (e: PeerdError) => {
      assert.equal(e.code, 4001);
      assert.equal(e.codeName, 'app_4001');
      assert.equal(e.message, 'out of stock');
      return true;
    });
    await assert.rejects(a.rpc.call('bug', undefined, { peer: b.peerId! }), {
      code: Code.internal,
      codeName: 'internal',
      message: 'oops',
    });
    // The same through the server's call of the caller.
    await assert.rejects(b.rpc.call('callback', callback('app.fail')), { code: 4001 });
  });

  it('handleJson: params that are not JSON are invalid_argument', async () => {
    const a = await peers.ready();
    const b = await peers.ready();
    b.rpc.handleJson('j', (v) => v);
    await assert.rejects(a.rpc.call('j', '{nope', { peer: b.peerId! }), { code: Code.invalidArgument });
  });

  it('timeout: the server answers timeout for a peer call past its deadline', async () => {
    const a = await peers.ready();
    const b = await peers.ready();
    b.rpc.handle('slow', () => new Promise(() => {}));
    const t0 = Date.now();
    await assert.rejects(a.rpc.call('slow', undefined, { peer: b.peerId!, timeoutMs: 300 }), {
      code: Code.timeout,
      codeName: 'timeout',
    });
    // The server's answer, not the client's own deadline (300 ms + 1 s grace).
    assert.ok(Date.now() - t0 < 1200, `took ${Date.now() - t0} ms`);
  });

  it('timeout: the client gives up on its own one second after the deadline', async () => {
    const p = await peers.ready();
    p.rpc.handle('never', () => new Promise(() => {}));
    // The server's call of this peer waits 30 s; the client's deadline is 200 ms + 1 s.
    const t0 = Date.now();
    await assert.rejects(p.rpc.call('callback', callback('never'), { timeoutMs: 200 }), { code: Code.timeout });
    const took = Date.now() - t0;
    assert.ok(took >= 1150 && took < 3000, `took ${took} ms`);
  });

  it('many concurrent calls settle with their own results', async () => {
    const a = await peers.ready();
    const b = await peers.ready();
    b.rpc.handle('delay', async (p) => {
      await new Promise((r) => setTimeout(r, 50 - p[0]!));
      return p;
    });
    const results = await within(
      Promise.all(Array.from({ length: 40 }, (_, i) => a.rpc.call('delay', new Uint8Array([i]), { peer: b.peerId! }))),
      'forty calls',
    );
    results.forEach((r, i) => assert.deepEqual(r, new Uint8Array([i])));
  });
});
