// Three real browser pages chat in a room (a peerd topic): a message to everyone reaches the
// other two; a message to one peer by id reaches that page only.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { browserSkipReason, startHarness, waitForMembers, withDiagnostics, type DemoPage, type Harness } from './support/browser.js';

const skip = browserSkipReason();

async function say(p: DemoPage, text: string, to = ''): Promise<void> {
  await p.page.selectOption('#chat-to', to);
  await p.page.fill('#chat-text', text);
  await p.page.click('#chat-send');
  // The page shows its own line once the server said ok (Topic.publish / Topic.send resolved).
  await p.page.waitForFunction((t) => window.demo.chat.some((e) => e.mine && e.text === t), text);
}

async function received(p: DemoPage, from: string, text: string): Promise<{ direct: boolean }> {
  const handle = await p.page.waitForFunction(([f, t]) => window.demo.chat.find((e) => !e.mine && e.from === f && e.text === t) ?? false, [from, text] as const);
  return (await handle.jsonValue()) as { direct: boolean };
}

describe('browser: topic chat between three pages', { skip: skip ?? false, timeout: 90_000 }, () => {
  let h: Harness;
  before(async () => { h = await startHarness(); });
  after(async () => { await h?.close(); });

  test('presence, a message to everyone, and a message to one peer by id', async () => {
    await withDiagnostics(h, async () => {
      const room = 'chat-room';
      const ann = await h.openPage('ann', room);
      const ben = await h.openPage('ben', room);
      const cat = await h.openPage('cat', room);
      // Everyone sees everyone (the watch snapshot, then joins).
      await waitForMembers([ann, ben, cat], ['ann', 'ben', 'cat']);

      // To everyone: both others get it, as a room message.
      await say(ann, 'hello room');
      assert.equal((await received(ben, 'ann', 'hello room')).direct, false);
      assert.equal((await received(cat, 'ann', 'hello room')).direct, false);

      // To cat only (chosen by id in the recipient list).
      await say(ann, 'psst, cat only', 'cat');
      assert.equal((await received(cat, 'ann', 'psst, cat only')).direct, true);

      // ben must not get it. No sleeping: ann then publishes a marker to everyone; peerd keeps
      // the order of one sender's messages to one receiver, so once ben has the marker, anything
      // ann sent ben before it has arrived too.
      await say(ann, 'marker after the direct message');
      await received(ben, 'ann', 'marker after the direct message');
      const benTexts = await ben.hooks((d) => d.chat.map((e) => e.text));
      assert.deepEqual(benTexts, ['hello room', 'marker after the direct message']);
      await received(cat, 'ann', 'marker after the direct message');
      const catTexts = await cat.hooks((d) => d.chat.map((e) => `${e.text}${e.direct ? ' (direct)' : ''}`));
      assert.deepEqual(catTexts, ['hello room', 'psst, cat only (direct)', 'marker after the direct message']);

      // The sender does not get its own message back (Publish without echo).
      const annIncoming = await ann.hooks((d) => d.chat.filter((e) => !e.mine).length);
      assert.equal(annIncoming, 0);

      // Replies go the other way too: cat answers ann directly, ben answers the room.
      await say(cat, 'got it, ann', 'ann');
      assert.equal((await received(ann, 'cat', 'got it, ann')).direct, true);
      await say(ben, 'hi both');
      await received(ann, 'ben', 'hi both');
      await received(cat, 'ben', 'hi both');
    });
  });
});
