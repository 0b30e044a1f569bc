// Two real browser pages open a WebRTC data channel to each other, with peerd relaying the
// offer, the answer and the ICE candidates (host candidates only: no STUN, no TURN).
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { browserSkipReason, startHarness, waitForMembers, withDiagnostics, type DemoPage, type Harness } from './support/browser.js';

const skip = browserSkipReason();

/** Wait until `p` has an open data channel to `remote`. */
async function channelOpen(p: DemoPage, remote: string): Promise<void> {
  await p.page.waitForFunction((r) => window.demo.conns().some((c) => c.remote === r && c.channel === 'open'), remote);
}

/** Type `text` into the data-channel box of `from` and wait for it to arrive at `to`. */
async function sendOverChannel(from: DemoPage, to: DemoPage, text: string): Promise<void> {
  await from.page.fill('#rtc-text', text);
  await from.page.click('#rtc-send');
  await to.page.waitForFunction(([f, t]) => window.demo.rtc.some((e) => !e.mine && e.from === f && e.text === t), [from.name, text] as const);
}

describe('browser: WebRTC data channel signaled through peerd', { skip: skip ?? false, timeout: 90_000 }, () => {
  let h: Harness;
  before(async () => { h = await startHarness(); });
  after(async () => { await h?.close(); });

  test('a room offer, an answer and ICE candidates through peerd open a data channel; messages cross it', async () => {
    await withDiagnostics(h, async () => {
      const room = 'rtc-room';
      const alice = await h.openPage('alice', room);
      const bob = await h.openPage('bob', room);
      await waitForMembers([alice, bob], ['alice', 'bob']);

      // alice offers to the whole room (Signal with no target); bob's page answers.
      await alice.page.click('#call-room');
      await Promise.all([channelOpen(alice, 'bob'), channelOpen(bob, 'alice')]);

      await sendOverChannel(alice, bob, 'hello bob, over the data channel');
      await sendOverChannel(bob, alice, 'hello alice, peer to peer');

      // The channel is a direct peer connection, not peerd: neither message went through the room chat.
      const chat = await bob.hooks((d) => d.chat.length);
      assert.equal(chat, 0);

      // Host candidates only, with real addresses (no mDNS names), exchanged both ways through peerd.
      for (const p of [alice, bob]) {
        const [c] = await p.hooks((d) => d.conns());
        assert.ok(c, `${p.name} has a connection`);
        assert.ok(c.localCandidates.length > 0, `${p.name} gathered candidates`);
        assert.ok(c.remoteCandidates.length > 0, `${p.name} received candidates through peerd`);
        for (const cand of [...c.localCandidates, ...c.remoteCandidates]) {
          assert.match(cand, / typ host( |$)/, `only host candidates: ${cand}`);
          assert.doesNotMatch(cand, /\.local /, `no mDNS names: ${cand}`);
        }
      }
      // The pair ICE selected joins two host candidates on this machine's own addresses (Linux
      // routes those through lo: the data never leaves the machine).
      const own = new Set(Object.values(networkInterfaces()).flat().map((i) => i!.address));
      const pair = await alice.page.evaluate(() => window.demo.selectedPair('bob'));
      assert.ok(pair, 'a selected candidate pair');
      for (const end of [pair.local, pair.remote]) {
        assert.equal(end.candidateType, 'host');
        assert.ok(own.has(end.address), `${end.address} is one of this machine's addresses`);
      }
    });
  });

  test('a direct offer to one member (Call), then Hang up: the other page sees the bye', async () => {
    await withDiagnostics(h, async () => {
      const room = 'rtc-direct';
      const carol = await h.openPage('carol', room);
      const dave = await h.openPage('dave', room);
      const erin = await h.openPage('erin', room);
      await waitForMembers([carol, dave, erin], ['carol', 'dave', 'erin']);

      // carol calls dave only: the Call button next to dave in carol's member list.
      await carol.page.click('#members li[data-peer="dave"] button.call');
      await Promise.all([channelOpen(carol, 'dave'), channelOpen(dave, 'carol')]);
      await sendOverChannel(dave, carol, 'just us two');
      // erin was not offered anything.
      assert.deepEqual(await erin.hooks((d) => d.conns().length), 0);

      // carol hangs up: a bye through peerd closes dave's side too.
      await carol.page.click('#conns li[data-peer="dave"] button.hangup');
      await dave.page.waitForFunction(() => window.demo.conns().length === 0);
      assert.ok((await dave.hooks((d) => d.log)).some((l) => l.includes('carol hung up')));
    });
  });

  test('a room offer answered by two pages: the first answer takes it, the second gets an offer of its own', async () => {
    await withDiagnostics(h, async () => {
      const room = 'rtc-three';
      const hub = await h.openPage('hub', room);
      const kim = await h.openPage('kim', room);
      const lea = await h.openPage('lea', room);
      await waitForMembers([hub, kim, lea], ['hub', 'kim', 'lea']);

      await hub.page.click('#call-room');
      await Promise.all([channelOpen(hub, 'kim'), channelOpen(kim, 'hub'), channelOpen(hub, 'lea'), channelOpen(lea, 'hub')]);
      // One message from hub goes out on both channels.
      await hub.page.fill('#rtc-text', 'to both of you');
      await hub.page.click('#rtc-send');
      for (const p of [kim, lea]) {
        await p.page.waitForFunction(() => window.demo.rtc.some((e) => e.from === 'hub' && e.text === 'to both of you'));
      }
      // kim and lea were not connected to each other (only hub called).
      assert.deepEqual(await kim.hooks((d) => d.conns().map((c) => c.remote)), ['hub']);
      assert.deepEqual(await lea.hooks((d) => d.conns().map((c) => c.remote)), ['hub']);
    });
  });
});
