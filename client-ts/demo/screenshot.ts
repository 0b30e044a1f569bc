/**
 * `npm run screenshot`: docs/img/demo-two-tabs.png, two demo tabs connected by a WebRTC data
 * channel (signaled through peerd), each showing the messages they exchanged.
 *
 * Runs what the browser tests run (a real `peerd serve`: PEERD_BIN or a cargo build; Debian's
 * headless Chromium; the demo server), drives two pages, screenshots each and lays the two
 * screenshots side by side in a third page, whose screenshot is the image.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHarness, type DemoPage } from '../test/support/browser.js';

const out = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'img', 'demo-two-tabs.png');
const VIEWPORT = { width: 1000, height: 700 };

async function say(p: DemoPage, text: string, to = ''): Promise<void> {
  await p.page.selectOption('#chat-to', to);
  await p.page.fill('#chat-text', text);
  await p.page.click('#chat-send');
}

async function dc(from: DemoPage, to: DemoPage, text: string): Promise<void> {
  await from.page.fill('#rtc-text', text);
  await from.page.click('#rtc-send');
  await to.page.waitForFunction(([f, t]) => window.demo.rtc.some((e) => e.from === f && e.text === t), [from.name, text] as const);
}

async function main(): Promise<void> {
  const h = await startHarness();
  try {
    const room = 'lobby';
    const alice = await h.openPage('alice', room);
    const bob = await h.openPage('bob', room);
    for (const p of [alice, bob]) await p.page.setViewportSize(VIEWPORT);
    await Promise.all([alice, bob].map((p) => p.page.waitForFunction(() => window.demo.members().length === 2)));

    await say(alice, 'hi bob! calling you over WebRTC');
    await bob.page.waitForFunction(() => window.demo.chat.some((e) => e.from === 'alice'));
    await say(bob, 'ok, go ahead');
    await alice.page.waitForFunction(() => window.demo.chat.some((e) => e.from === 'bob'));

    await alice.page.click('#call-room');
    for (const [p, r] of [[alice, 'bob'], [bob, 'alice']] as const) {
      await p.page.waitForFunction((x) => window.demo.conns().some((c) => c.remote === x && c.channel === 'open'), r);
    }
    await dc(alice, bob, 'hello bob, this goes peer to peer');
    await dc(bob, alice, 'hi alice, peerd only relayed the offer, answer and candidates');
    await dc(alice, bob, 'nice, no STUN needed on one machine');

    // The RPC box: a call the server makes on the page (callback -> ask), for show.
    await bob.page.fill('#rpc-method', 'callback');
    await bob.page.fill('#rpc-params', '{"method":"ask","params":"who is there?"}');
    await bob.page.click('#rpc-call');
    await bob.page.waitForFunction(() => window.demo.rpc.length === 1);
    await alice.page.fill('#rpc-method', 'ask');
    await alice.page.fill('#rpc-params', 'bob, are you there?');
    await alice.page.fill('#rpc-peer', 'bob');
    await alice.page.click('#rpc-call');
    await alice.page.waitForFunction(() => window.demo.rpc.length === 1);

    const shots = await Promise.all([alice, bob].map(async (p) => (await p.page.screenshot({ type: 'png' })).toString('base64')));
    const composite = await h.browser.newPage({ viewport: { width: 2 * VIEWPORT.width + 3 * 16, height: VIEWPORT.height + 2 * 16 + 28 } });
    await composite.setContent(`<!doctype html><html><body style="margin:0;padding:16px;background:#3b4252;display:flex;gap:16px;font:13px system-ui,sans-serif;color:#e5e9f0">
      ${shots.map((b64, i) => `<figure style="margin:0"><figcaption style="height:28px">Tab ${i + 1}: ${i === 0 ? 'alice' : 'bob'}</figcaption>
        <img style="display:block;box-shadow:0 2px 8px #0008" width="${VIEWPORT.width}" height="${VIEWPORT.height}" src="data:image/png;base64,${b64}"></figure>`).join('')}
      </body></html>`);
    await composite.waitForFunction(() => [...document.images].every((i) => i.complete && i.naturalWidth > 0));
    await mkdir(dirname(out), { recursive: true });
    await composite.screenshot({ path: out, type: 'png' });
    console.log(`wrote ${out}`);
  } finally {
    await h.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
