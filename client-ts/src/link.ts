/**
 * The link: one WebSocket at a time, the handshake on it, heartbeats, the drain handshake,
 * and reconnecting with backoff when it ends (at once after a drain). It knows nothing of
 * RPC or topics: it hands the Peer the Welcome, every later frame, the start of a drain and
 * each end of a link (PROTOCOL.md §1.1, §6.1, §6.6, §6.7, §6.10).
 */
import { decodeFrame, encodeFrame, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from './codec/index.js';
import type { Frame, Hello, Welcome } from './codec/frames.js';
import { Code } from './codes.js';
import { DisconnectedError, PeerdError } from './errors.js';

/**
 * What the client needs of a WebSocket: the browser's `WebSocket` and the `ws` package's
 * both fit. Handlers take `any` because the two type their events differently.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((e: any) => void) | null;
  onmessage: ((e: any) => void) | null;
  onclose: ((e: any) => void) | null;
  onerror: ((e: any) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ReconnectOptions {
  /** Backoff base, default 100 ms. */
  minDelayMs?: number;
  /** Backoff cap, default 5 000 ms. */
  maxDelayMs?: number;
  /** Attempts after a link ends before giving up (state `closed`); default unlimited. */
  maxAttempts?: number;
}

/** What the link tells its Peer. */
export interface LinkHost {
  /** The Hello for the next handshake (it carries the last Welcome's resume token). */
  hello(): Hello;
  /** The socket is open and the Hello sent. */
  negotiating(): void;
  up(w: Welcome): void;
  /** Every frame after the Welcome except Ping/Pong/Close and the drain notice, which the link handles. */
  frame(f: Frame): void;
  /** The server asked this v2 session to drain (§6.10): from now on only answers go out;
   * the link has sent its Close{reconnect} and reads on until the server's Close. */
  draining(): void;
  /** A link ended because of `e`; `retry`: another attempt is scheduled, else the peer is done. */
  down(e: PeerdError, retry: boolean): void;
}

export interface Link {
  /** Writes on the open socket; false when there is none. */
  send(f: Frame): boolean;
  /** Ends for good: Close{normal} if the handshake is done, no more attempts. */
  close(): void;
}

// Refusals that the same Hello would get again, so retrying cannot help.
const FINAL_REJECT: number[] = [
  Code.unauthorized,
  Code.peerIdTaken,
  Code.invalidArgument,
  Code.unsupportedVersion,
];
// Closes after which the server does not want this connection back: the application
// disconnected it (normal), or another connection took the session over (replaced: coming
// back would take it back, and the two would evict each other forever).
const FINAL_CLOSE: number[] = [Code.normal, Code.replaced];
// Upgrade + Hello + Welcome must fit in this; the server's own deadline is 5 s.
const HANDSHAKE_MS = 10_000;

const noop = () => {};

export function openLink(
  url: string,
  WS: WebSocketCtor,
  rc: ReconnectOptions | false,
  host: LinkHost,
): Link {
  let ws: WebSocketLike | null = null;
  let stopped = false;
  let attempts = 0; // attempts since the last Welcome: the backoff exponent
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  let hb = 0; // Welcome.heartbeat_ms; 0 until the Welcome of this socket
  let ver = 0; // Welcome.version of this socket
  let draining = false; // this socket sent its Close{reconnect} (§6.10)
  let lastRx = 0;
  let lastPing = 0;
  let nonce = 0n;

  const send = (f: Frame): boolean => {
    if (ws?.readyState !== 1) return false;
    ws.send(encodeFrame(f));
    return true;
  };

  // Silence watchdog (§6.6). The server pings only when *it* hears nothing, so a client that
  // talks but is never answered would see silence on a healthy link: after one quiet
  // interval we ping, and only three quiet intervals count as a dead link.
  const tick = (s: WebSocketLike, born: number) => {
    clearTimeout(watchdog);
    const now = Date.now();
    const quiet = now - lastRx;
    if (!hb) {
      if (now - born > HANDSHAKE_MS) return drop(s, new DisconnectedError('handshake timed out'));
    } else if (quiet >= 3 * hb) {
      return drop(s, new DisconnectedError(`nothing from the server for ${quiet} ms`));
    } else if (quiet >= hb && now - lastPing >= hb && !draining) {
      // (Draining, only answers may go out: the server's Close is on its way.)
      lastPing = now;
      send({ kind: 'Ping', nonce: ++nonce });
    }
    watchdog = setTimeout(tick, hb ? hb / 4 : 1000, s, born);
  };

  function start() {
    let s: WebSocketLike;
    try {
      s = new WS(url, 'peerd.v1');
    } catch (x) {
      // A malformed URL: no attempt can succeed.
      return end(new PeerdError(Code.invalidArgument, String(x)), true);
    }
    ws = s;
    hb = 0;
    draining = false;
    lastRx = Date.now();
    s.binaryType = 'arraybuffer';
    // `ws` (Node) throws an 'error' event that has no listener; the 'close' after it is
    // what we act on.
    s.onerror = noop;
    s.onopen = () => {
      host.negotiating();
      send(host.hello());
    };
    s.onclose = (e: { code: number; reason: string }) =>
      drop(s, new DisconnectedError(`connection closed (${e.code}${e.reason ? ' ' + e.reason : ''})`));
    s.onmessage = (e: { data: unknown }) => {
      lastRx = Date.now();
      let f: Frame;
      try {
        // One binary message = one whole frame (§1.1); a text message cannot be one.
        if (!(e.data instanceof ArrayBuffer)) throw new PeerdError(Code.badFrame, 'text message');
        f = decodeFrame(new Uint8Array(e.data));
      } catch (x: any) {
        const code: number = x.code ?? Code.badFrame;
        send({ kind: 'Close', code, reason: String(x.message) });
        return drop(s, new PeerdError(code, x.message));
      }
      switch (f.kind) {
        case 'Welcome':
          // The server answers with the lower of its version and ours (§6.1).
          if (f.version < MIN_PROTOCOL_VERSION || f.version > PROTOCOL_VERSION) {
            send({ kind: 'Close', code: Code.unsupportedVersion, reason: `v${f.version}` });
            return drop(s, new PeerdError(Code.unsupportedVersion), true);
          }
          hb = f.heartbeatMs || 15_000;
          ver = f.version;
          attempts = 0;
          tick(s, 0); // from now on every quarter interval, not on the handshake's schedule
          return host.up(f);
        case 'Reject':
          return drop(s, new PeerdError(f.code, f.reason), FINAL_REJECT.includes(f.code));
        case 'Close':
          return drop(s, new PeerdError(f.code, f.reason), FINAL_CLOSE.includes(f.code));
        case 'Ping':
          send({ kind: 'Pong', nonce: f.nonce });
          return;
        case 'Pong':
          return;
        case 'Status':
          // The drain notice (§6.10): Status{req 0, reconnect} on a v2 session. Stop sending
          // (but answers), half-close at the peerd level (a Close frame in a binary message,
          // the WebSocket stays open) and read on until the server's Close{reconnect}.
          if (!f.req && f.code == Code.reconnect && ver > 1) {
            if (!draining) {
              draining = true;
              host.draining();
              send({ kind: 'Close', code: Code.reconnect, reason: 'draining' });
            }
            return;
          }
      }
      // Nothing else may come before the Welcome.
      if (hb) host.frame(f);
    };
    tick(s, lastRx);
  }

  // Forget socket `s` (stale events of an old socket are ignored) and close it.
  function detach(s: WebSocketLike) {
    s.onopen = s.onmessage = s.onclose = null;
    clearTimeout(watchdog);
    if (s === ws) ws = null;
    try {
      s.close(1000);
    } catch {
      // already closing; nothing to do
    }
  }

  function drop(s: WebSocketLike, e: PeerdError, final = false) {
    if (s !== ws) return;
    detach(s);
    end(e, final);
  }

  function end(e: PeerdError, final: boolean) {
    if (stopped) return;
    // The end of a drain is no failure: not counted, no backoff (the server spread its peers
    // over time already), just a few ms of jitter (§6.10).
    const drained = e.code == Code.reconnect;
    if (final || !rc || (!drained && attempts >= (rc.maxAttempts ?? Infinity))) {
      stopped = true;
      return host.down(e, false);
    }
    // Exponential backoff with full jitter: uniform in [0, min(max, min * 2^n)), so that
    // peers cut off together do not come back together.
    const cap = drained ? 5 : Math.min(rc.maxDelayMs ?? 5000, (rc.minDelayMs ?? 100) * 2 ** Math.min(attempts++, 30));
    host.down(e, true);
    retryTimer = setTimeout(start, Math.random() * cap);
  }

  start();
  return {
    send,
    close() {
      stopped = true;
      clearTimeout(retryTimer);
      if (ws) {
        // Close may only follow the handshake (§6.7), and only once (a drain sent one).
        if (hb && !draining) send({ kind: 'Close', code: Code.normal, reason: 'bye' });
        detach(ws);
      }
    },
  };
}
