/**
 * A real `peerd serve` for the tests.
 *
 * The binary: $PEERD_BIN, else `cargo build -q --bin peerd` at the repository root (once per
 * test process) and target/debug/peerd. The port comes from the ready line on stdout, so
 * tests ask for port 0 and never collide.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
let binary: Promise<string> | undefined;

/** The `peerd` binary's path, building it if PEERD_BIN is not set. */
export function peerdBin(): Promise<string> {
  return (binary ??= (async () => {
    const env = process.env.PEERD_BIN;
    if (env) {
      if (!existsSync(env)) throw new Error(`PEERD_BIN=${env} does not exist`);
      return env;
    }
    await promisify(execFile)('cargo', ['build', '-q', '--bin', 'peerd'], {
      cwd: repoRoot,
      maxBuffer: 64 << 20,
    });
    return resolve(repoRoot, 'target/debug/peerd');
  })());
}

export interface ServerOptions {
  /** --heartbeat-ms; default the server's (15 s). */
  heartbeatMs?: number;
  /** --drain-window-ms: SIGTERM drains (PROTOCOL.md §6.10), the peers' notices spread over
   * this; default 100 (the server's: 10 s), so that stopping a test server is quick. */
  drainWindowMs?: number;
  /** --drain-grace-ms: how long a draining peer has to finish; default 1 000 (the server's: 5 s). */
  drainGraceMs?: number;
  /** More `peerd serve` flags. */
  args?: string[];
  /** Listen on this port (one just freed by another server: retried while the kernel holds
   * it); default 0, any free one. */
  port?: number;
}

export interface TestServer {
  /** ws://127.0.0.1:PORT/ */
  readonly url: string;
  readonly port: number;
  /** SIGTERM (a drain: peers asked to reconnect, PROTOCOL.md §6.10) or SIGINT (a quick stop:
   * Close{shutdown}), then wait for the exit (SIGKILL after 5 s). Idempotent. */
  stop(signal?: 'SIGTERM' | 'SIGINT'): Promise<void>;
  /** stop(signal), then start again on the same port (for reconnect tests). */
  restart(signal?: 'SIGTERM' | 'SIGINT'): Promise<void>;
  /** Resolves when the running process exits (by itself too: after a takeover it drains). */
  exited(): Promise<void>;
  /** What the server wrote to stderr (its logs), for failure messages. */
  logs(): string;
}

const READY = /^peerd listening on (ws:\/\/127\.0\.0\.1:(\d+)\/?) /;
const running = new Set<ChildProcess>();
// A test process that dies without its teardown still must not leave servers behind.
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** Starts one `peerd serve` on ws://127.0.0.1 (port 0 = any free one). */
export async function startServer(o: ServerOptions = {}): Promise<TestServer> {
  const bin = await peerdBin();
  let log = '';
  let proc: ChildProcess;
  let port = 0;

  const launch = async (want: number) => {
    const args = ['serve', '--listen', `ws://127.0.0.1:${want}`, '--shards', '2', '--no-pin', '--drain-ms', '200'];
    args.push('--drain-window-ms', String(o.drainWindowMs ?? 100), '--drain-grace-ms', String(o.drainGraceMs ?? 1000));
    if (o.heartbeatMs) args.push('--heartbeat-ms', String(o.heartbeatMs));
    args.push(...(o.args ?? []));
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    running.add(p);
    p.once('exit', () => running.delete(p));
    p.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log = (log + d).slice(-20_000);
    });
    return new Promise<number>((ok, fail) => {
      let out = '';
      const timer = setTimeout(() => fail(new Error(`peerd serve not ready after 15 s:\n${log}`)), 15_000);
      p.once('exit', (code, sig) => {
        clearTimeout(timer);
        fail(new Error(`peerd serve exited (${code ?? sig}) before its ready line:\n${log}`));
      });
      p.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = READY.exec(out);
        if (m) {
          clearTimeout(timer);
          ok(Number(m[2]));
        }
      });
    });
  };

  const exited = () => {
    const p = proc;
    if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
    return new Promise<void>((ok) => p.once('exit', () => ok()));
  };

  const stop = async (signal: 'SIGTERM' | 'SIGINT' = 'SIGTERM') => {
    const p = proc;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((ok) => p.once('exit', () => ok()));
    p.kill(signal);
    const kill = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(kill);
  };

  // A port that was just in use: if the kernel still holds it, try again for a few seconds.
  const relaunch = async (want: number) => {
    for (let i = 0; ; i++) {
      try {
        return await launch(want);
      } catch (e) {
        if (i >= 20 || !/in use|AddrInUse/i.test(String(e))) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  };

  port = await relaunch(o.port ?? 0);
  return {
    url: `ws://127.0.0.1:${port}/`,
    port,
    stop,
    async restart(signal) {
      await stop(signal);
      await relaunch(port);
    },
    exited,
    logs: () => log,
  };
}
