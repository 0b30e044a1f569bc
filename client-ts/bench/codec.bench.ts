/**
 * Codec throughput next to JSON (npm run bench).
 *
 * Frames: `publish-64b` and `rpc-request-1k` from ../fixtures/wire/valid.json when present
 * (else the same shapes built here, and the output says so). JSON is given its best case:
 * JSON.parse of a string (what a WebSocket text message already is) and JSON.stringify of an
 * object whose payload is already a base64 string, so neither side pays for base64 or for
 * UTF-8 transcoding. The codec decodes from, and encodes to, bytes ready for the socket.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { decodeFrame, encodeFrame, type Frame } from '../src/codec/index.js';

const ROUNDS = Number(process.env['ROUNDS'] ?? 9);
const ROUND_MS = Number(process.env['ROUND_MS'] ?? 200);

let fixtureSource = 'fixtures/wire/valid.json';
function fixture(name: string, fallback: () => Frame): Uint8Array {
  try {
    const file = JSON.parse(readFileSync(new URL('../../fixtures/wire/valid.json', import.meta.url), 'utf8')) as {
      fixtures: { name: string; frame: string }[];
    };
    const f = file.fixtures.find((x) => x.name === name);
    if (f) return new Uint8Array(Buffer.from(f.frame, 'hex'));
  } catch {
    // fall through to the built-in frame
  }
  fixtureSource = 'built in the bench (fixtures/wire/valid.json not found)';
  return encodeFrame(fallback());
}

const fill = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
const publishBytes = fixture('publish-64b', () => ({
  kind: 'Publish', req: 1n, topic: 'chat', echo: false, payload: fill(64),
}));
const rpcBytes = fixture('rpc-request-1k', () => ({
  kind: 'RpcRequest', id: 1n, method: 'math.add', peer: 'bob', timeoutMs: 30000, params: fill(1024),
}));

/** The message as a JSON client would send it: same fields, u64 as numbers, bytes as base64. */
function asJson(f: Frame): string {
  return JSON.stringify(f, (_k, v: unknown) =>
    typeof v === 'bigint' ? Number(v) : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v,
  );
}

let sink = 0;
type Op = { label: string; fn: () => number; batch: number; rates: number[] };
const op = (label: string, fn: () => number): Op => ({ label, fn, batch: 1000, rates: [] });

/** Calls per second of one timed round of about ROUND_MS; the clock is read once per batch. */
function round(o: Op): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ROUND_MS) {
    for (let i = 0; i < o.batch; i++) sink += o.fn();
    n += o.batch;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

/**
 * Warm every op up, then run ROUNDS rounds in which each op is timed in turn: on a shared
 * machine a burst of load then hits the codec and JSON alike, and each round gives one
 * codec/JSON ratio measured under the same conditions.
 */
function measure(ops: Op[]): void {
  for (const o of ops) {
    const end = performance.now() + 400;
    while (performance.now() < end) for (let i = 0; i < o.batch; i++) sink += o.fn();
    o.batch = Math.max(100, Math.round(round({ ...o, rates: [] }) / 1000)); // about 1 ms per batch
  }
  for (let r = 0; r < ROUNDS; r++) for (const o of ops) o.rates.push(round(o));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => (x >= 1e6 ? (x / 1e6).toFixed(2) + ' M' : (x / 1e3).toFixed(0) + ' k');
function row(o: Op): void {
  const sorted = [...o.rates].sort((a, b) => a - b);
  const med = median(sorted);
  console.log(`| ${o.label} | ${fmt(med)}/s | ${fmt(sorted[0]!)} .. ${fmt(sorted[sorted.length - 1]!)} |`);
}
function ratio(a: Op, b: Op): string {
  const rs = a.rates.map((x, i) => x / b.rates[i]!).sort((x, y) => x - y);
  return `${median(rs).toFixed(2)}x (rounds: ${rs[0]!.toFixed(2)} .. ${rs[rs.length - 1]!.toFixed(2)})`;
}

console.log(`node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} (${cpus().length} CPUs), ${ROUNDS} interleaved rounds of ${ROUND_MS} ms per operation, frames from ${fixtureSource}`);
for (const [name, bytes] of [
  ['publish-64b', publishBytes],
  ['rpc-request-1k', rpcBytes],
] as const) {
  const frame = decodeFrame(bytes);
  const json = asJson(frame);
  const obj = JSON.parse(json) as unknown;
  console.log(`\n${name}: frame ${bytes.length} B; JSON ${json.length} B: ${json.length > 160 ? json.slice(0, 150) + '...' : json}\n`);
  const dec = op('decodeFrame (bytes -> Frame)', () => (decodeFrame(bytes) as { kind: string }).kind.length);
  const parse = op('JSON.parse (string -> object)', () => ((JSON.parse(json) as object) === null ? 0 : 1));
  const enc = op('encodeFrame (Frame -> bytes)', () => encodeFrame(frame).length);
  const str = op('JSON.stringify (object -> string)', () => JSON.stringify(obj).length);
  measure([dec, parse, enc, str]);
  console.log('| operation | median | min .. max |');
  console.log('|---|---:|---|');
  for (const o of [dec, parse, enc, str]) row(o);
  console.log(`\ndecode / JSON.parse: ${ratio(dec, parse)}; encode / JSON.stringify: ${ratio(enc, str)}`);
}
if (sink === 42) console.log('');
