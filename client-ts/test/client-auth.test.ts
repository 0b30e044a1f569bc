// Connect tokens: a token names the peer, refresh() renews it on the live session (and a bad
// one is refused without harm), no token is refused for good. Tokens come from `peerd token`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, it } from 'node:test';
import { Code, PeerdError } from '../src/index.js';
import { peerdBin, startServer, type TestServer } from './support/server.js';
import { Peers, within } from './support/wait.js';

const secret = resolve(dirname(fileURLToPath(import.meta.url)), '../../testdata/auth/hs256.secret');

async function token(sub: string, ...more: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(await peerdBin(), ['token', '--secret', secret, '--sub', sub, ...more]);
  return stdout.trim();
}

describe('connect tokens', () => {
  let server: TestServer;
  const peers = new Peers(() => server.url);
  before(async () => {
    server = await startServer({ args: ['--auth-hs256-secret', secret] });
  });
  afterEach(() => peers.closeAll());
  after(() => server.stop());

  it('a token names the peer, and refresh() renews it on the live session', async () => {
    const p = await peers.ready({ credentials: await token('tess', '--ttl', '60') });
    assert.equal(p.peerId, 'tess');
    await within(p.refresh(await token('tess', '--ttl', '120')), 'refresh');
    // Another peer's token, or garbage: refused, and the session carries on.
    await assert.rejects(within(p.refresh(await token('someone-else')), 'foreign refresh'), (e: PeerdError) => e.code === Code.unauthorized);
    await assert.rejects(within(p.refresh('not a token'), 'bad refresh'), (e: PeerdError) => e.code === Code.unauthorized);
    assert.deepEqual(await within(p.listPeers(), 'listPeers'), ['tess']);
  });

  it('the permissions of a token are enforced', async () => {
    const p = await peers.ready({ credentials: await token('uma', '--join', 'chat') });
    await within(p.join('chat').ready, 'join chat');
    await assert.rejects(within(p.join('chat-admin').ready, 'join chat-admin'), (e: PeerdError) => e.code === Code.unauthorized);
  });

  it('no token: refused for good', async () => {
    const p = peers.open();
    await assert.rejects(within(p.whenReady(), 'refusal'));
    assert.equal(p.state, 'closed');
  });
});
