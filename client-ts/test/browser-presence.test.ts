// A page that goes away is seen to leave by the others, within the heartbeat bound of
// PROTOCOL.md §6.6: the server closes a connection it has heard nothing from for three
// heartbeat intervals, checking four times per interval (so at most 3.25 intervals of silence).
//
// Three ways to go: a normal close (the browser closes the WebSocket: the leave is immediate),
// a renderer crash (the browser's network process drops the socket: immediate too), and a hung
// page (its script stopped: the socket stays open but nothing answers the server's pings, so
// only the heartbeat can notice; this is the case the bound is for).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { browserSkipReason, startHarness, waitForMembers, withDiagnostics, type DemoPage, type Harness } from './support/browser.js';

const skip = browserSkipReason();

const HEARTBEAT_MS = 500;
/** PROTOCOL.md §6.6: three silent intervals, noticed at most a quarter interval later. */
const BOUND_MS = 3 * HEARTBEAT_MS + HEARTBEAT_MS / 4;
/** Delivery of the Presence frame and the page's bookkeeping on a busy machine. */
const SLACK_MS = 750;

/** Milliseconds from `t0` (Date.now() here; the page's clock is the same machine's) until `observer` saw `who` leave. */
async function leaveSeen(observer: DemoPage, who: string, t0: number): Promise<number> {
  const handle = await observer.page.waitForFunction(
    (w) => window.demo.presence.find((e) => e.change === 'leave' && e.peerId === w)?.t ?? false,
    who,
    { timeout: BOUND_MS + 10_000 },
  );
  const t = (await handle.jsonValue()) as number;
  await observer.page.waitForFunction((w) => !window.demo.members().includes(w), who);
  return t - t0;
}

describe('browser: leave is seen within the heartbeat bound', { skip: skip ?? false, timeout: 120_000 }, () => {
  let h: Harness;
  let watcher: DemoPage;
  const room = 'presence-room';
  before(async () => {
    h = await startHarness({ heartbeatMs: HEARTBEAT_MS });
    watcher = await h.openPage('watcher', room);
  });
  after(async () => { await h?.close(); });

  test('closing a page: the WebSocket closes, the leave is immediate', async (t) => {
    await withDiagnostics(h, async () => {
      const leaver = await h.openPage('closer', room);
      await waitForMembers([watcher, leaver], ['closer', 'watcher']);
      const t0 = Date.now();
      await leaver.context.close();
      const ms = await leaveSeen(watcher, 'closer', t0);
      t.diagnostic(`normal close: leave seen after ${ms} ms (heartbeat ${HEARTBEAT_MS} ms, bound ${BOUND_MS} ms)`);
      assert.ok(ms <= BOUND_MS + SLACK_MS, `${ms} ms is within the bound`);
      // Not by the heartbeat: well before even one interval.
      assert.ok(ms < HEARTBEAT_MS, `${ms} ms: a close is not waited out`);
    });
  });

  test('a crashed renderer: the socket drops with it, the leave is immediate', async (t) => {
    await withDiagnostics(h, async () => {
      const leaver = await h.openPage('crasher', room);
      await waitForMembers([watcher, leaver], ['crasher', 'watcher']);
      const cdp = await leaver.context.newCDPSession(leaver.page);
      const crashed = new Promise<void>((ok) => leaver.page.once('crash', () => ok()));
      const t0 = Date.now();
      void cdp.send('Page.crash').catch(() => undefined); // never answered: the target dies
      await crashed;
      const ms = await leaveSeen(watcher, 'crasher', t0);
      t.diagnostic(`renderer crash: leave seen after ${ms} ms (bound ${BOUND_MS} ms)`);
      assert.ok(ms <= BOUND_MS + SLACK_MS, `${ms} ms is within the bound`);
      await leaver.context.close();
    });
  });

  test('a hung page (script stopped, socket open): the heartbeat notices within 3.25 intervals', async (t) => {
    await withDiagnostics(h, async () => {
      const leaver = await h.openPage('hung', room);
      await waitForMembers([watcher, leaver], ['hung', 'watcher']);
      const cdp = await leaver.context.newCDPSession(leaver.page);
      // Stop the page's script as a hung tab would (paused in the debugger: no handler runs, so
      // no Pong answers the server's Ping) while the browser keeps the WebSocket open.
      // (Page.setWebLifecycleState 'frozen' does not do: the frozen page still answers.)
      await cdp.send('Debugger.enable');
      const t0 = Date.now();
      await cdp.send('Debugger.pause');
      const ms = await leaveSeen(watcher, 'hung', t0);
      t.diagnostic(`hung page: leave seen after ${ms} ms (heartbeat ${HEARTBEAT_MS} ms, bound ${BOUND_MS} ms)`);
      assert.ok(ms <= BOUND_MS + SLACK_MS, `${ms} ms is within ${BOUND_MS} + ${SLACK_MS} ms`);
      // And it was the heartbeat: the page's last sign of life (a Pong) is at most about one
      // interval before the freeze, so the close cannot come before about two intervals.
      assert.ok(ms >= 1.5 * HEARTBEAT_MS, `${ms} ms: not before the heartbeat could have noticed`);
      await leaver.context.close();
    });
  });
});
