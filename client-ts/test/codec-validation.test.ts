// Hand-made malformed and lenient inputs, one per rule of PROTOCOL.md §2/§3/§4, and encoder errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DecodeError, EncodeError, decodeFrame, encodeFrame, type Frame } from '../src/codec/index.js';
import { hex, unhex } from './support/codec-wire.js';

function rejects(bytes: Uint8Array | string, check: string, code = 1002): void {
  const b = typeof bytes === 'string' ? unhex(bytes) : bytes;
  assert.throws(
    () => decodeFrame(b),
    (e: unknown) => {
      assert.ok(e instanceof DecodeError, `not a DecodeError: ${String(e)}`);
      assert.equal(e.check, check);
      assert.equal(e.code, code);
      return true;
    },
  );
}

/** Encode, let `edit` change body bytes (offsets relative to the body), return the frame. */
function edited(f: Frame, edit: (body: Uint8Array) => void): Uint8Array {
  const b = encodeFrame(f);
  edit(b.subarray(8));
  return b;
}

const ping = '08000000700000000100000000000000';

test('header: incomplete, unknown kind, flags, reserved', () => {
  rejects('', 'frame has a header');
  rejects('08000000700000', 'frame has a header');
  rejects('0800000000000000' + '0100000000000000', 'known frame kind');
  rejects('08000000ee000000' + '0100000000000000', 'known frame kind');
  rejects('0800000070010000' + '0100000000000000', 'flags are zero');
  rejects('0800000070000100' + '0100000000000000', 'reserved is zero');
  rejects('0800000070000001' + '0100000000000000', 'reserved is zero');
});

test('header: body_len must equal the rest of the message exactly', () => {
  rejects(ping.slice(0, -2), 'body_len matches the message');
  rejects(ping + '00', 'body_len matches the message');
  rejects('ffffffff70000000', 'body_len matches the message');
});

test('a zero or short body has no room for the root', () => {
  rejects('0000000070000000', 'root fits in the body');
  rejects('0000000030000000', 'root fits in the body');
  rejects('070000007000000001000000000000', 'root fits in the body');
});

test('maxBodyLen gives too_large (1003)', () => {
  assert.throws(() => decodeFrame(unhex(ping), 7), (e: unknown) => e instanceof DecodeError && e.code === 1003);
  assert.deepStrictEqual(decodeFrame(unhex(ping), 8), { kind: 'Ping', nonce: 1n });
});

test('not a Uint8Array', () => {
  assert.throws(() => decodeFrame('x' as unknown as Uint8Array), DecodeError);
  assert.throws(() => decodeFrame(null as unknown as Uint8Array), DecodeError);
});

const resp: Frame = { kind: 'RpcResponse', id: 1n, result: new Uint8Array([1, 2, 3]) };
// body: 01 02 03 | id (8) | offset @11 | len @15

test('pointers: target must lie in the body, before the root', () => {
  const setOffset = (off: number) => edited(resp, (b) => new DataView(b.buffer, b.byteOffset).setInt32(11, off, true));
  rejects(setOffset(-12), 'target inside the body'); // before the body
  rejects(setOffset(-10), 'target before the enclosing object'); // ends inside the root
  rejects(setOffset(0), 'target before the enclosing object'); // at the object itself
  rejects(setOffset(0x7fffffff), 'target inside the body');
  rejects(setOffset(-0x80000000), 'target inside the body');
  const setLen = (len: number) => edited(resp, (b) => new DataView(b.buffer, b.byteOffset).setUint32(15, len, true));
  rejects(setLen(4), 'target before the enclosing object');
  rejects(setLen(0xffffffff), 'target inside the body');
  assert.deepStrictEqual([...(decodeFrame(setLen(2)) as typeof resp).result], [1, 2]); // a gap is allowed
});

test('empty vector: any position from the previous target up to the root', () => {
  const empty: Frame = { kind: 'RpcResponse', id: 1n, result: new Uint8Array() };
  assert.equal(hex(encodeFrame(empty)), '1000000011000000' + '0100000000000000' + 'f8ffffff00000000');
  const at = (off: number) => edited(empty, (b) => new DataView(b.buffer, b.byteOffset).setInt32(8, off, true));
  // The root is the whole body here, so body 0 (the root's start) is the only valid target.
  assert.deepStrictEqual(decodeFrame(at(-8)), empty);
  rejects(at(0), 'target before the enclosing object'); // its own position lies inside the root
  rejects(at(-9), 'target inside the body');
  rejects(at(-7), 'target before the enclosing object');
  // With a long string before it: anywhere from the end of the string's bytes to the root.
  const pub: Frame = { kind: 'Publish', req: 0n, topic: 'a-long-topic', echo: false, payload: new Uint8Array() };
  // body: topic 0..12, root 12: req, topic@20, echo@28, payload@29
  const pubAt = (target: number) =>
    edited(pub, (b) => new DataView(b.buffer, b.byteOffset).setInt32(29, target - 29, true));
  assert.equal(hex(encodeFrame(pub)).slice(16 + 2 * 29, 16 + 2 * 33), 'efffffff'); // 12 - 29 = -17
  assert.deepStrictEqual(decodeFrame(pubAt(12)), pub);
  rejects(pubAt(11), 'targets in order'); // inside the topic's bytes
  rejects(pubAt(13), 'target before the enclosing object'); // inside the root
});

test('siblings: targets in field order, without overlap', () => {
  const ts: Frame = { kind: 'TopicSend', req: 0n, topic: 'topic-nine', to: 'peer-eleven', payload: new Uint8Array([9]) };
  const ok = encodeFrame(ts);
  assert.deepStrictEqual(decodeFrame(ok), ts);
  // body: topic bytes 0..10, to bytes 10..21, payload 21..22, root at 22: req, topic@30, to@38, payload@46
  // `to` pointing at the topic's bytes (overlap, and before the previous sibling's target).
  const overlap = edited(ts, (b) => {
    const dv = new DataView(b.buffer, b.byteOffset);
    dv.setUint32(38, 0x80 | 10, true);
    dv.setInt32(42, 0 - 38, true);
  });
  rejects(overlap, 'targets in order');
});

test('strings: out-of-line of 8 bytes or less, invalid UTF-8, inline filler', () => {
  // "bye" out of line: 3 bytes then root (code, string object at body 5)
  rejects('0d0000007f000000' + '627965' + 'e803' + '83000000' + 'fbffffff', 'short strings inline');
  rejects('0a0000007f000000' + 'e803' + '62ff65ffffffffff'.replace('ff65', 'c365'), 'valid UTF-8');
  rejects('0a0000007f000000' + 'e803' + 'eda080ffffffffff', 'valid UTF-8'); // an encoded surrogate
  const long = edited({ kind: 'Close', code: 1, reason: 'é'.repeat(10) }, (b) => (b[3] = 0xff));
  rejects(long, 'valid UTF-8');
  // Bytes after the first 0xFF filler of an inline string are ignored.
  assert.deepStrictEqual(decodeFrame(unhex('0a0000007f000000' + 'e803' + '6279ff0102030405')), {
    kind: 'Close',
    code: 1000,
    reason: 'by',
  });
  // A leading BOM is content, not a marker to strip.
  const bom: Frame = { kind: 'Close', code: 1, reason: '\ufeffhello world' };
  assert.deepStrictEqual(decodeFrame(encodeFrame(bom)), bom);
  const bomInline: Frame = { kind: 'Close', code: 1, reason: '\ufeffhi' };
  assert.deepStrictEqual(decodeFrame(encodeFrame(bomInline)), bomInline);
});

test('bool, Option tag, enum tags', () => {
  const pub: Frame = { kind: 'Publish', req: 0n, topic: 't', echo: true, payload: new Uint8Array() };
  rejects(edited(pub, (b) => (b[16] = 2)), 'bool is 0 or 1');
  const watch: Frame = { kind: 'Watch', req: 0n, topic: null };
  rejects(edited(watch, (b) => (b[8] = 2)), 'option tag is 0 or 1');
  // None: the 8 bytes after the tag are ignored.
  assert.deepStrictEqual(decodeFrame(edited(watch, (b) => b.fill(0xab, 9))), watch);
  const presence: Frame = { kind: 'Presence', topic: null, peer: 'p', change: 'leave' };
  rejects(edited(presence, (b) => (b[17] = 2)), 'known enum tag');
  const sig: Frame = { kind: 'Signal', req: 0n, room: 'r', signal: 'bye', peer: null, payload: new Uint8Array() };
  rejects(edited(sig, (b) => (b[16] = 4)), 'known enum tag');
});

test('Vec<String>: element bytes before the element array, after the previous sibling', () => {
  const pl: Frame = { kind: 'PeerList', req: 1n, peers: ['a-long-peer-id', 'b'] };
  const ok = encodeFrame(pl);
  assert.deepStrictEqual(decodeFrame(ok), pl);
  // body: 'a-long-peer-id' 0..14, array 14..30, root 30: req, peers@38
  // Point element 0 at the array itself (inside the vector's own target): invalid.
  rejects(edited(pl, (b) => new DataView(b.buffer, b.byteOffset).setInt32(18, 0, true)), 'target before the enclosing object');
  // Array that overlaps the root.
  rejects(edited(pl, (b) => new DataView(b.buffer, b.byteOffset).setUint32(42, 3, true)), 'target before the enclosing object');
  const snap: Frame = { kind: 'PresenceSnapshot', topic: 'a-long-topic', peers: ['x-long-peer-id'] };
  // body: topic 0..12, 'x-long-peer-id' 12..26, array 26..34, root 34: topic (opt) @34, peers @43
  assert.deepStrictEqual(decodeFrame(encodeFrame(snap)), snap);
  // The element's bytes pointing into the topic's bytes (before the previous sibling's end).
  rejects(edited(snap, (b) => new DataView(b.buffer, b.byteOffset).setInt32(30, -26, true)), 'targets in order');
});

test('encoder refuses values the protocol cannot carry', () => {
  const bad = (f: unknown) => assert.throws(() => encodeFrame(f as Frame), EncodeError);
  bad(null);
  bad({ kind: 'Nope' });
  bad({ kind: 'toString' });
  bad({ kind: 'Ping', nonce: 1 });
  bad({ kind: 'Ping', nonce: -1n });
  bad({ kind: 'Ping', nonce: 2n ** 64n });
  bad({ kind: 'Close', code: 65536, reason: '' });
  bad({ kind: 'Close', code: 1.5, reason: '' });
  bad({ kind: 'Close', code: 1 });
  bad({ kind: 'RpcResponse', id: 0n, result: [1, 2] });
  bad({ kind: 'Publish', req: 0n, topic: 't', echo: 1, payload: new Uint8Array() });
  bad({ kind: 'Presence', topic: null, peer: 'p', change: 'gone' });
  bad({ kind: 'PeerList', req: 0n, peers: ['a', 1] });
  bad({ kind: 'Welcome', version: 1, peerId: 'p', sessionId: 1n, resumeToken: new Uint8Array(), limits: {}, heartbeatMs: 1 });
  bad({ kind: 'RpcRequest', id: 0n, method: 'm', peer: null, timeoutMs: 2 ** 32, params: new Uint8Array() });
});

test('lone surrogates encode as U+FFFD, as TextEncoder does', () => {
  for (const s of ['\ud800', 'abc\udc00', 'x'.repeat(20) + '\ud83d']) {
    const d = decodeFrame(encodeFrame({ kind: 'Close', code: 1, reason: s })) as { reason: string };
    assert.equal(d.reason, new TextDecoder().decode(new TextEncoder().encode(s)));
  }
});

test('byte fields are views into the input', () => {
  const b = encodeFrame(resp);
  const d = decodeFrame(b) as typeof resp;
  assert.equal(d.result.buffer, b.buffer);
});
