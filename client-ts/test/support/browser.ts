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
import { startDemoServer, type DemoServer } from '../../demo/serve';
import type { DemoHooks } from '../../demo/app';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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
 * replace, and this way the whole command line is here.
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
    // Hard stop: no host name resolves, so nothing can reach a host by name (the pages use
    // 127.0.0.1, an IP literal, which is never looked up).
    '--host-resolver-rules=MAP * ~NOTFOUND',
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
// peerd (temporary: to be replaced by the client's test/support/server.ts once merged)

export interface PeerdServer {
  url: string;
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

let peerdBin: string | null = null;
function findPeerd(): string {
  if (peerdBin) return peerdBin;
  if (process.env.PEERD_BIN) return (peerdBin = process.env.PEERD_BIN);
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const r = spawnSync('cargo', ['build', '-q', '--bin', 'peerd'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('cargo build --bin peerd failed');
  return (peerdBin = join(root, 'target', 'debug', 'peerd'));
}

export async function startPeerd(opts: { args?: string[] } = {}): Promise<PeerdServer> {
  const bin = findPeerd();
  const child = spawn(bin, ['serve', '--listen', 'ws://127.0.0.1:0', '--shards', '2', ...(opts.args ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  child.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`peerd not ready in 10 s: ${out.join('')}`)), 10_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      out.push(line + '\n');
      const m = /^peerd listening on (\S+) /.exec(line);
      if (m) { clearTimeout(timer); ok(m[1]!); }
    });
    child.once('error', (e) => { clearTimeout(timer); fail(e); });
    void exited.then(() => { clearTimeout(timer); fail(new Error(`peerd exited before ready: ${out.join('')}`)); });
  });
  return {
    url,
    pid: child.pid!,
    output: () => out.join(''),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
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
      // The harness closes it; do not let Playwright's own signal handlers race with ours.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
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
  peerd: PeerdServer;
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
    const extra = opts.heartbeatMs ? ['--heartbeat-ms', String(opts.heartbeatMs)] : [];
    const peerd = await startPeerd({ args: extra });
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
        parts.push('--- peerd ---', peerd.output());
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
