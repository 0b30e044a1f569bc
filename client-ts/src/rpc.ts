/** RPC in both directions (PROTOCOL.md §6.2) and named events and broadcasts (§6.3). */
import type { Broadcast, Event as EventFrame, Frame, RpcError, RpcRequest, RpcResponse } from './codec/frames.js';
import { Code } from './codes.js';
import { DisconnectedError, PeerdError } from './errors.js';
import { decodeJson, encodeJson, toBytes, withBody, type Body } from './json.js';
import type { Core, Part } from './core.js';

export interface CallOptions {
  /** Call this peer (through the server) instead of the server. */
  peer?: string;
  /** Deadline; default the peer's `callTimeoutMs`. The server enforces it on peer calls; the
   * client also gives up one second after it, whoever the callee is. */
  timeoutMs?: number;
}

export interface CallContext {
  method: string;
  /** The calling peer; null: the server itself. */
  from: string | null;
  /** How long the caller waits. */
  timeoutMs: number;
}

export type Handler = (params: Uint8Array, ctx: CallContext) => Uint8Array | string | Promise<Uint8Array | string>;

export interface Rpc {
  call(method: string, params?: Uint8Array | string, opts?: CallOptions): Promise<Uint8Array>;
  callJson<T = unknown>(method: string, value?: unknown, opts?: CallOptions): Promise<T>;
  /** Answers calls of `method` (from the server or any peer); returns the unregister function.
   * Throw a PeerdError to answer with its code (4000-4999 for the application's own);
   * anything else thrown answers `internal`. */
  handle(method: string, fn: Handler): () => void;
  handleJson(method: string, fn: (value: any, ctx: CallContext) => unknown): () => void;
}

type Call = { ok(v: Uint8Array): void; fail(e: unknown): void; sent?: boolean };

// Past the deadline the server answers `timeout` itself for peer calls; the grace keeps the
// client's own deadline from racing that answer.
const GRACE_MS = 1000;

export function rpcPart(core: Core, defaultTimeout: number) {
  const handlers = new Map<string, Handler>();
  const calls = new Map<bigint, Call>();
  let ids = 0n;

  const call = (method: string, params?: Uint8Array | string, o: CallOptions = {}) =>
    new Promise<Uint8Array>((resolve, reject) => {
      const id = ++ids;
      const ms = o.timeoutMs ?? defaultTimeout;
      const t0 = Date.now();
      const end = () => (clearTimeout(timer), calls.delete(id));
      const c: Call = { ok: (v) => end() && resolve(v), fail: (e) => end() && reject(e) };
      const timer = setTimeout(
        () => c.fail(new PeerdError(Code.timeout, `${method}: no answer within ${ms} ms`)),
        ms + GRACE_MS,
      );
      calls.set(id, c);
      // Made while the link is down, a call waits for the next one (within its deadline and
      // the queue's bounds), and then has what is left of its deadline (0 would mean the
      // server's default).
      const req = (): RpcRequest => ({
        kind: 'RpcRequest',
        id,
        method,
        peer: o.peer ?? null,
        timeoutMs: Math.max(1, t0 + ms - Date.now()),
        params: toBytes(params),
      });
      try {
        core.later(
          () => {
            if (!calls.has(id)) return;
            core.send(req());
            c.sent = true;
          },
          c.fail,
          req,
        );
      } catch (x) {
        c.fail(x); // closed: also clears the deadline timer, which would keep Node alive
      }
    });

  const handle = (method: string, fn: Handler) => {
    handlers.set(method, fn);
    return () => {
      if (handlers.get(method) == fn) handlers.delete(method);
    };
  };

  // A call from the server or a peer: answer it on the link it came in on (its id means
  // nothing on a later one), with the handler's result or its failure's code.
  function serve(f: RpcRequest) {
    const gen = core.gen;
    const h = handlers.get(f.method);
    const reply = (r: Frame) => {
      if (core.gen == gen) core.send(r);
    };
    const fail = (code: number, message: string): RpcError => ({ kind: 'RpcError', id: f.id, code, message });
    if (!h) return reply(fail(Code.methodNotFound, `no handler for ${f.method}`));
    new Promise<Uint8Array | string>((r) => r(h(f.params, { method: f.method, from: f.peer, timeoutMs: f.timeoutMs })))
      .then(
        (v): Frame => ({ kind: 'RpcResponse', id: f.id, result: toBytes(v) }),
        (x) => (x instanceof PeerdError ? fail(x.code, x.message) : fail(Code.internal, String(x?.message ?? x))),
      )
      .then(reply)
      .catch((x) => reply(fail(Code.internal, String(x))));
  }

  return {
    api: {
      call,
      callJson: async <T>(method: string, value?: unknown, o?: CallOptions) =>
        decodeJson<T>(await call(method, encodeJson(value), o)),
      handle,
      handleJson: (method: string, fn: (value: any, ctx: CallContext) => unknown) =>
        handle(method, async (p, ctx) => {
          let v;
          try {
            v = decodeJson(p);
          } catch (x) {
            throw new PeerdError(Code.invalidArgument, `${method}: params are not JSON`);
          }
          return encodeJson(await fn(v, ctx));
        }),
    } satisfies Rpc as Rpc,
    frame(f: RpcRequest | RpcResponse | RpcError) {
      if (f.kind == 'RpcRequest') return serve(f);
      const c = calls.get(f.id); // unknown or already settled: ignored (§6.2)
      if (f.kind == 'RpcResponse') c?.ok(f.result);
      else c?.fail(new PeerdError(f.code, f.message));
    },
    down(e: DisconnectedError) {
      for (const c of calls.values()) if (c.sent) c.fail(e);
    },
  } satisfies Part & Record<string, unknown>;
}

export interface PeerdEvent extends Body {
  name: string;
  data: Uint8Array;
  /** The sending peer; null: the server. */
  from: string | null;
  /** Sent with `broadcast` (to every peer) rather than as an event. */
  broadcast: boolean;
}

export interface Events {
  /** No `to`: to the server's listeners for `name`; `to`: directly to that peer (if it is not
   * connected, the Peer gets an 'error' event with `unknown_peer`). Sent when the link is up;
   * while it is down it waits in the reconnect queue: throws a QueueError `queue_full` when
   * that is full, and one that expires there is an 'error' event (`queue_timeout`). */
  emit(name: string, data?: Uint8Array | string, opts?: { to?: string }): void;
  emitJson(name: string, value: unknown, opts?: { to?: string }): void;
  /** To every other connected peer. */
  broadcast(name: string, data?: Uint8Array | string): void;
  /** Events and broadcasts named `name`; returns the unsubscribe function. */
  on(name: string, fn: (e: PeerdEvent) => void): () => void;
}

export function eventsPart(core: Core, peer: EventTarget) {
  // Listeners sit on an EventTarget so that one that throws is reported (as any DOM listener's
  // error is) without keeping the others from running.
  const bus = new EventTarget();
  // Nobody waits on an event: one that expired in the reconnect queue is an 'error' event on
  // the Peer (one dropped because the peer closed is not: 'close' says why).
  const out = (f: Frame) =>
    core.later(
      () => core.send(f),
      (e) => core.state != 'closed' && core.error(peer, e as PeerdError),
      () => f,
    );
  const emit = (name: string, data?: Uint8Array | string, o?: { to?: string }) =>
    out({ kind: 'Event', name, peer: o?.to ?? null, payload: toBytes(data) });
  return {
    api: {
      emit,
      emitJson: (name, value, o) => emit(name, encodeJson(value), o),
      broadcast: (name, data) => out({ kind: 'Broadcast', name, peer: null, payload: toBytes(data) }),
      on(name, fn) {
        const l = (e: Event) => fn((e as CustomEvent<PeerdEvent>).detail);
        bus.addEventListener(name, l);
        return () => bus.removeEventListener(name, l);
      },
    } satisfies Events as Events,
    frame(f: EventFrame | Broadcast) {
      const detail = withBody({ name: f.name, data: f.payload, from: f.peer, broadcast: f.kind == 'Broadcast' }, f.payload);
      bus.dispatchEvent(new CustomEvent(f.name, { detail }));
    },
  };
}
