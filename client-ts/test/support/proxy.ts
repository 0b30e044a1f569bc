/**
 * A TCP proxy in front of a test server, to break links in ways a server restart cannot:
 * `cut()` ends every connection at once (no Close frame), `freeze()` makes the current ones
 * silent while the server still holds their sessions (to exercise the client's watchdog
 * and a resume that takes a live session over).
 */
import { createServer, connect, type Socket } from 'node:net';

export interface Proxy {
  /** ws://127.0.0.1:PORT/ of the proxy. */
  readonly url: string;
  /** Destroys every current connection, both sides. */
  cut(): void;
  /**
   * Current connections stop delivering anything to the client. Toward the server they pass
   * one more chunk (the client's heartbeat Ping, which keeps the session alive on the server
   * for three more intervals) and then nothing, so the client's Close never arrives there.
   * New connections are not affected.
   */
  freeze(): void;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number): Promise<Proxy> {
  const pairs = new Set<{ c: Socket; s: Socket; frozen: boolean; up: number }>();
  const server = createServer((c) => {
    const s = connect(targetPort, '127.0.0.1');
    const pair = { c, s, frozen: false, up: 0 };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      c.destroy();
      s.destroy();
    };
    c.on('data', (d) => {
      if (!pair.frozen || pair.up++ < 1) s.write(d);
    });
    s.on('data', (d) => {
      if (!pair.frozen) c.write(d);
    });
    // A frozen pair keeps the server side open when the client goes: the server must not
    // learn that the client left (it finds out by its own idle timeout).
    c.on('close', () => (pair.frozen ? c.destroy() : end()));
    s.on('close', end);
    c.on('error', () => {});
    s.on('error', () => {});
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as { port: number }).port;
  const cut = () => {
    for (const p of pairs) {
      p.c.destroy();
      p.s.destroy();
    }
    pairs.clear();
  };
  return {
    url: `ws://127.0.0.1:${port}/`,
    cut,
    freeze() {
      for (const p of pairs) p.frozen = true;
    },
    close() {
      cut();
      return new Promise((ok) => server.close(() => ok()));
    },
  };
}
