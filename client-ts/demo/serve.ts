/**
 * The demo's static server, and `npm run demo`.
 *
 * As a library (the browser tests, `npm run screenshot`): `startDemoServer()` serves demo/index.html
 * and `/app.js`, bundled by esbuild from demo/app.ts and the client's src/index.ts when asked for
 * (incrementally: an edit shows on reload). Nothing else is served.
 *
 * As a command (`npm run demo [-- --server ws://host:port/] [--port 8080] [--host 127.0.0.1]`):
 * without `--server` it starts `peerd serve --listen ws://<host>:7401` (PEERD_BIN, or
 * `cargo build --release --bin peerd` at the repository root), serves the page on
 * http://<host>:<port>/, prints the address, and stops peerd on Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const demoDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(demoDir, '..', '..');

export interface DemoServer {
  /** The page, e.g. `http://127.0.0.1:8080/`. */
  url: string;
  /** The page for a given peerd endpoint and form values. */
  pageUrl(query?: { server?: string; name?: string; room?: string; join?: boolean }): string;
  close(): Promise<void>;
}

/** Serve the demo page (port 0: any free port). Rejects if the bundle does not build. */
export async function startDemoServer(opts: { host?: string; port?: number } = {}): Promise<DemoServer> {
  const host = opts.host ?? '127.0.0.1';
  const ctx = await esbuild.context({
    entryPoints: [join(demoDir, 'app.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile: 'app.js',
    write: false,
    sourcemap: 'inline',
    logLevel: 'silent',
  });
  // One build at a time; the first one now, so that a broken bundle fails the start.
  let building: Promise<string> = Promise.resolve('');
  const bundle = (): Promise<string> => {
    building = building.catch(() => '').then(async () => {
      const result = await ctx.rebuild();
      const out = result.outputFiles?.[0];
      if (!out) throw new Error('esbuild produced no output');
      return out.text;
    });
    return building;
  };
  try {
    await bundle();
  } catch (err) {
    await ctx.dispose();
    throw err;
  }

  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const send = (type: string, body: string) => {
      res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const fail = (err: unknown) => {
      const text = err instanceof Error ? err.message : String(err);
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(text);
    };
    if (path === '/' || path === '/index.html') {
      readFile(join(demoDir, 'index.html'), 'utf8').then((html) => send('text/html', html), fail);
    } else if (path === '/app.js') {
      bundle().then((js) => send('text/javascript', js), fail);
    } else if (path === '/favicon.ico') {
      res.writeHead(204).end();
    } else {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
    }
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(opts.port ?? 0, host, () => { server.off('error', fail); ok(); });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  return {
    url,
    pageUrl(query = {}) {
      const q = new URLSearchParams();
      if (query.server) q.set('server', query.server);
      if (query.name) q.set('name', query.name);
      if (query.room) q.set('room', query.room);
      if (query.join) q.set('join', '1');
      const s = q.toString();
      return s ? `${url}?${s}` : url;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((ok) => server.close(() => ok()));
      await building.catch(() => undefined);
      await ctx.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// `npm run demo`

/** The peerd binary: PEERD_BIN, else a release build at the repository root. */
function findPeerd(): string {
  const env = process.env.PEERD_BIN;
  if (env) {
    if (!existsSync(env)) throw new Error(`PEERD_BIN=${env} does not exist`);
    return env;
  }
  console.log('building peerd (cargo build --release --bin peerd) ...');
  const built = spawnSync('cargo', ['build', '--release', '--bin', 'peerd'], { cwd: repoRoot, stdio: 'inherit' });
  if (built.error) throw new Error(`cargo: ${built.error.message} (install Rust, or set PEERD_BIN to a peerd binary)`);
  if (built.status !== 0) throw new Error(`cargo build failed (exit ${built.status})`);
  return join(repoRoot, 'target', 'release', 'peerd');
}

/** Start `peerd serve` and wait for its ready line: `peerd listening on ws://... shards=N pid=N`. */
function startPeerd(bin: string, listen: string): Promise<{ child: ChildProcess; endpoint: string }> {
  const child = spawn(bin, ['serve', '--listen', listen], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((ok, fail) => {
    const lines = createInterface({ input: child.stdout! });
    let ready = false;
    lines.on('line', (line) => {
      const m = /^peerd listening on (\S+)/.exec(line);
      if (!ready && m) {
        ready = true;
        ok({ child, endpoint: m[1]! });
      } else {
        console.log(line);
      }
    });
    child.once('error', (err) => fail(new Error(`cannot start ${bin}: ${err.message}`)));
    child.once('exit', (code, signal) => {
      if (!ready) fail(new Error(`peerd exited before it was ready (${signal ?? `exit ${code}`}); is ${listen} in use?`));
    });
  });
}

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i >= 0) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes('-h') || argv.includes('--help')) {
    console.log('usage: npm run demo [-- --server ws://host:port/] [--host 127.0.0.1] [--port 8080] [--peerd-port 7401]');
    return;
  }
  const host = arg(argv, '--host') ?? '127.0.0.1';
  const port = Number(arg(argv, '--port') ?? 8080);
  const peerdPort = Number(arg(argv, '--peerd-port') ?? 7401);
  let server = arg(argv, '--server');
  let peerd: ChildProcess | null = null;
  let stopping = false;
  if (!server) {
    const bin = findPeerd();
    const hostPart = host.includes(':') ? `[${host}]` : host;
    const started = await startPeerd(bin, `ws://${hostPart}:${peerdPort}`);
    peerd = started.child;
    server = started.endpoint;
    peerd.once('exit', (code, signal) => {
      if (!stopping) {
        console.error(`peerd exited (${signal ?? `exit ${code}`}); stopping the demo`);
        process.exit(1);
      }
    });
  }
  const demo = await startDemoServer({ host, port }).catch(async (err) => {
    peerd?.kill('SIGTERM');
    throw err;
  });
  // The page's default server is ws://<page host>:7401/; say so explicitly otherwise.
  const defaultServer = `ws://${new URL(demo.url).host.replace(/:\d+$/, '')}:7401/`;
  const page = server === defaultServer ? demo.url : demo.pageUrl({ server });
  console.log('');
  console.log(`peerd demo: open ${page} in two tabs (or two browsers),`);
  console.log('join the same room in both, chat, then "Call the room" for a WebRTC data channel.');
  console.log(`  page   ${demo.url}`);
  console.log(`  peerd  ${server}${peerd ? ` (pid ${peerd.pid})` : ''}`);
  console.log('Ctrl-C stops' + (peerd ? ' the page server and peerd.' : ' the page server.'));

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping ...');
    if (peerd && peerd.exitCode === null && peerd.signalCode === null) {
      const exited = new Promise<void>((ok) => peerd!.once('exit', () => ok()));
      peerd.kill('SIGTERM');
      const timer = setTimeout(() => peerd!.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await demo.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
