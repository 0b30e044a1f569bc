/**
 * Real-browser harness: Debian's headless Chromium driven by playwright-core (never a browser
 * download), a real `peerd serve`, and the demo page (demo/serve.ts) served on loopback.
 *
 * Chromium: CHROMIUM_BIN, default /usr/bin/chromium (Debian package `chromium`; CI:
 * `apt-get install chromium`). Set SKIP_BROWSER_TESTS=1 to skip the browser tests where there is
 * no Chromium; without it a missing Chromium fails them, so CI cannot skip them by accident.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startDemoServer, type DemoServer } from '../../demo/serve.js';
import type { DemoHooks } from '../../demo/app.js';
import { startServer, type TestServer } from './server.js';

export const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** Why a browser test must be skipped, or null. A missing Chromium only skips when asked to. */
export function browserSkipReason(): string | null {
  if (process.env.SKIP_BROWSER_TESTS === '1') return 'SKIP_BROWSER_TESTS=1';
  return null;
}

/**
 * Chromium features turned off (one `--disable-features`: Chromium keeps only the last such
 * switch, so this list must hold all of them).
 */
export const DISABLED_FEATURES = [
  // WebRTC: host candidates carry the machine's real IP addresses instead of random
  // `<uuid>.local` mDNS names. With mDNS names the other side resolves them by multicast DNS
  // (224.0.0.251 / ff02::fb on every interface), i.e. packets on the network.
  'WebRtcHideLocalIpsWithMdns',
  // No background requests to Google services (these are the ones Playwright turns off for the
  // same reason; it would, but we pass our own --disable-features, which replaces its list).
  'OptimizationHints',            // optimization guide hints download at startup
  'NetworkTimeServiceQuerying',   // network time queries (clients2.google.com)
  'MediaRouter',                  // Cast: discovery by mDNS/SSDP on the LAN
  'DialMediaRouteProvider',       // Cast/DIAL: SSDP discovery on the LAN
  'Translate',                    // translate script and language model downloads
  'AutofillServerCommunication',  // autofill server queries
  'CertificateTransparencyComponentUpdater', // CT log list component
  'PreconnectToSearch',           // preconnect to the default search engine
  'AimEnabled',                   // "AI mode" eligibility requests
  'LensOverlay',
  // Keep http://127.0.0.1 pages on http (no HTTPS-First upgrade attempts).
  'HttpsUpgrades',
  'HttpsFirstBalancedModeAutoEnable',
];

/**
 * Every Chromium switch we launch with, and why. Playwright's own default switches are not
 * used (`ignoreDefaultArgs: true`): they carry a `--disable-features` that ours would silently
 * replace, and this way the whole command line is here. (Debian's /usr/bin/chromium wrapper adds
 * a few of its own first: --enable-remote-extensions --load-extension= (empty), overridden by
 * --disable-extensions; --disable-pings, --media-router=0, --no-default-browser-check,
 * --show-component-extension-options, --enable-gpu-rasterization.)
 *
 * Not used: `--allow-loopback-in-peer-connection`. Tried with Chromium 148: it adds no
 * 127.0.0.1 / ::1 candidate (the network list Chromium's network service hands to WebRTC skips
 * loopback interfaces), and in a network namespace with only `lo` no host candidate is gathered
 * with or without it. WebRTC therefore needs one non-loopback interface with an address; its
 * host candidates are this machine's own addresses, which Linux delivers through `lo`
 * (`ip route get <own address>` says `local ... dev lo`), so no packet leaves the machine.
 * Checked with strace on Chromium during the browser tests: TCP connects only to 127.0.0.1,
 * UDP sends only to this machine's own addresses; the only other addresses are UDP connect()s
 * to 8.8.8.8 and 2001:4860:4860::8888 (how WebRTC and the network service find the default
 * route's local address: a UDP connect sends nothing).
 */
export function chromiumFlags(userDataDir: string): string[] {
  return [
    // -- what Playwright needs to drive it --
    '--headless',                        // no display (CI, containers); Chromium's new headless mode
    '--remote-debugging-pipe',           // Playwright's CDP channel on fds 3 and 4
    `--user-data-dir=${userDataDir}`,    // a fresh throwaway profile, deleted at close (never ~/.config/chromium)
    '--no-startup-window',               // Playwright opens its own contexts and pages
    // -- where it runs --
    '--no-sandbox',                      // we run as root, where Chromium refuses its sandbox
    '--disable-dev-shm-usage',           // Docker's /dev/shm is 64 MB: shared memory in /tmp instead
    // -- WebRTC and what may reach the network --
    `--disable-features=${DISABLED_FEATURES.join(',')}`, // real host IPs (not mDNS names); no Google services
    '--disable-background-networking',   // no variations seed, GCM, safe browsing updates, ... at startup
    '--disable-component-update',        // no component updater downloads
    '--disable-sync',                    // no sync service
    '--no-first-run',                    // no first-run tasks (welcome page, import)
    '--disable-default-apps',            // no default apps install
    '--disable-domain-reliability',      // no Domain Reliability beacons
    '--disable-client-side-phishing-detection', // no phishing model download
    '--disable-breakpad',                // no crash report collection or upload
    '--no-pings',                        // no <a ping> hyperlink auditing
    '--disable-field-trial-config',      // no field trial (variations) configuration
    '--metrics-recording-only',          // UMA recorded, never uploaded
    '--disable-extensions',              // Debian's wrapper asks for remote extensions; none
    '--disable-component-extensions-with-background-pages',
    '--no-default-browser-check',
    '--disable-search-engine-choice-screen',
    // Hard stop for HTTP and WebSocket: every host but loopback "does not resolve" (IP literals
    // included), so a page or a browser service can only reach 127.0.0.1 / ::1 / localhost.
    // (WebRTC does not go through the resolver: host candidates only, see DISABLED_FEATURES.)
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE ::1, EXCLUDE localhost',
    // -- timing: the tests measure delays, so no tab is throttled for being in the background --
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    // -- quiet, stable screenshots --
    '--mute-audio',
    '--hide-scrollbars',
  ];
}

// ---------------------------------------------------------------------------------------------
// Chromium

export interface LaunchedBrowser {
  browser: Browser;
  close(): Promise<void>;
}

/** Launch Debian's Chromium headless with {@link chromiumFlags}. */
export async function launchChromium(): Promise<LaunchedBrowser> {
  if (!existsSync(CHROMIUM_BIN)) {
    throw new Error(`no Chromium at ${CHROMIUM_BIN}: install it (apt-get install chromium) or set CHROMIUM_BIN; SKIP_BROWSER_TESTS=1 skips the browser tests`);
  }
  const userDataDir = await mkdtemp(join(tmpdir(), 'peerd-chromium-'));
  let browser: Browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM_BIN,
      ignoreDefaultArgs: true,
      args: chromiumFlags(userDataDir),
      timeout: 30_000,
    });
  } catch (err) {
    await rm(userDataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    browser,
    async close() {
      await browser.close().catch(() => undefined);
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/** One demo page (its own browser context: like a separate browser profile). */
export interface DemoPage {
  page: Page;
  context: BrowserContext;
  name: string;
  /** Evaluate against `window.demo`. */
  hooks<T>(fn: (demo: DemoHooks) => T): Promise<T>;
  /** Console output and the page's own event log, for failure reports. */
  diagnostics(): Promise<string>;
}

export interface Harness {
  peerd: TestServer;
  demo: DemoServer;
  browser: Browser;
  /** Open the demo page as `name` (its declared peer id) and join `room` through the form. */
  openPage(name: string, room: string, opts?: { join?: boolean }): Promise<DemoPage>;
  /** Everything the pages logged, for a failed test's report. */
  diagnostics(): Promise<string>;
  close(): Promise<void>;
}

export const WAIT_MS = 15_000;

/** peerd, the demo server and Chromium, ready; `close()` stops all three (and is safe to repeat). */
export async function startHarness(opts: { heartbeatMs?: number } = {}): Promise<Harness> {
  const cleanups: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  };
  try {
    const peerd = await startServer(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {});
    cleanups.push(() => peerd.stop());
    const demo = await startDemoServer({ host: '127.0.0.1', port: 0 });
    cleanups.push(() => demo.close());
    const launched = await launchChromium();
    cleanups.push(() => launched.close());
    const pages: DemoPage[] = [];

    const openPage = async (name: string, room: string, o: { join?: boolean } = {}): Promise<DemoPage> => {
      const context = await launched.browser.newContext({ viewport: { width: 1100, height: 760 } });
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT_MS);
      const consoleLines: string[] = [];
      page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
      const dp: DemoPage = {
        page,
        context,
        name,
        // fn(window.demo), run in the page (fn must not use anything from its surroundings).
        hooks: <T>(fn: (demo: DemoHooks) => T) => page.evaluate(`(${fn.toString()})(window.demo)`) as Promise<T>,
        async diagnostics() {
          let log: string[] = [];
          if (!page.isClosed()) {
            log = await page.evaluate(() => [...window.demo.log, ...window.demo.errors.map((e) => `ERROR ${e}`)]).catch(() => ['(page not readable)']);
          }
          return [`--- page ${name} ---`, ...consoleLines, ...log].join('\n');
        },
      };
      pages.push(dp);
      await page.goto(demo.pageUrl({ server: peerd.url, name, room }));
      await page.waitForFunction(() => document.body.dataset.ready === 'true');
      if (o.join !== false) await joinThroughForm(dp, name, room);
      return dp;
    };

    return {
      peerd,
      demo,
      browser: launched.browser,
      openPage,
      async diagnostics() {
        const parts = [];
        for (const p of pages) parts.push(await p.diagnostics());
        parts.push('--- peerd ---', peerd.logs());
        return parts.join('\n');
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Fill the form and press Join; resolves once the page is in the room and sees itself there. */
export async function joinThroughForm(p: DemoPage, name: string, room: string): Promise<void> {
  await p.page.fill('#name', name);
  await p.page.fill('#room', room);
  await p.page.click('#join');
  await p.page.waitForFunction(([n, r]) => {
    const d = window.demo;
    if (d.errors.length > 0) throw new Error(`the page failed: ${d.errors.join('; ')}`);
    return d.me() === n && d.room() === r && d.members().includes(n);
  }, [name, room] as const);
}

/** Wait until every page sees exactly `names` in its room. */
export async function waitForMembers(pages: DemoPage[], names: string[]): Promise<void> {
  const want = [...names].sort();
  await Promise.all(pages.map((p) => p.page.waitForFunction((w) => JSON.stringify(window.demo.members()) === JSON.stringify(w), want)));
}

/**
 * Run a test body; on failure, print what the pages and peerd logged before rethrowing.
 */
export async function withDiagnostics<T>(h: Harness, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    console.error(await h.diagnostics().catch((e: unknown) => `(no diagnostics: ${String(e)})`));
    throw err;
  }
}
