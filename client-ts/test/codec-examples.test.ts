// PROTOCOL.md §10 worked examples, byte for byte, plus the code table and constants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Code, codeName, decodeFrame, encodeFrame, FRAME_KIND, HEADER_LEN, MAX_HELLO_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
  type Frame,
} from '../src/codec/index.js';
import { hex, unhex } from './support/codec-wire.js';

const EXAMPLES: [string, Frame, string][] = [
  ['Ping { nonce: 1 }', { kind: 'Ping', nonce: 1n }, '08 00 00 00 70 00 00 00 01 00 00 00 00 00 00 00'],
  ['Pong { nonce: 1 }', { kind: 'Pong', nonce: 1n }, '08 00 00 00 71 00 00 00 01 00 00 00 00 00 00 00'],
  [
    'Close, inline string',
    { kind: 'Close', code: 1000, reason: 'bye' },
    '0a 00 00 00 7f 00 00 00 e8 03 62 79 65 ff ff ff ff ff',
  ],
  [
    'Close, out-of-line string',
    { kind: 'Close', code: 1001, reason: 'server shutting down' },
    `1e 00 00 00 7f 00 00 00
     73 65 72 76 65 72 20 73 68 75 74 74 69 6e 67 20 64 6f 77 6e
     e9 03 94 00 00 00 ea ff ff ff`,
  ],
  [
    'RpcResponse, byte vector',
    { kind: 'RpcResponse', id: 1n, result: new Uint8Array([1, 2, 3]) },
    `13 00 00 00 11 00 00 00 01 02 03 01 00 00 00 00 00 00 00 f5 ff ff ff 03 00 00 00`,
  ],
  [
    'Hello',
    { kind: 'Hello', version: 1, peerId: 'alice', credentials: null, resumeToken: null, client: 'peerd-rs' },
    `25 00 00 00 01 00 00 00 01 00
     01 61 6c 69 63 65 ff ff ff
     00 00 00 00 00 00 00 00 00
     00 00 00 00 00 00 00 00 00
     70 65 65 72 64 2d 72 73`,
  ],
];

for (const [name, frame, bytes] of EXAMPLES) {
  test(`§10 ${name}: encodes byte for byte and decodes back`, () => {
    const expected = unhex(bytes);
    assert.equal(hex(encodeFrame(frame)), hex(expected));
    assert.deepStrictEqual(decodeFrame(expected), frame);
  });
}

test('§4 out-of-line length word: 300 -> ac 04 00 00', () => {
  const f = encodeFrame({ kind: 'Close', code: 0, reason: 'x'.repeat(300) });
  assert.equal(hex(f.subarray(HEADER_LEN + 300 + 2, HEADER_LEN + 300 + 6)), 'ac040000');
});

test('§2 header: body_len first, kind, zero flags and reserved', () => {
  const f = encodeFrame({ kind: 'Join', req: 0n, topic: 'chat' });
  assert.equal(hex(f.subarray(0, 8)), '1000000030000000');
});

test('constants', () => {
  assert.equal(HEADER_LEN, 8);
  assert.equal(PROTOCOL_VERSION, 2);
  assert.equal(MIN_PROTOCOL_VERSION, 1);
  assert.equal(MAX_HELLO_LEN, 16384);
  assert.equal(Object.keys(FRAME_KIND).length, 25);
  assert.equal(FRAME_KIND.Refresh, 0x04);
});

test('codes and their wire names', () => {
  assert.equal(Object.keys(Code).length, 24);
  const names: Record<number, string> = {
    0: 'ok', 1000: 'normal', 1001: 'shutdown', 1002: 'bad_frame', 1003: 'too_large', 1004: 'unauthorized',
    1005: 'peer_id_taken', 1006: 'unknown_peer', 1007: 'method_not_found', 1008: 'timeout',
    1009: 'overloaded', 1010: 'slow_consumer', 1011: 'replaced', 1012: 'peer_gone',
    1013: 'unsupported_version', 1014: 'handshake_timeout', 1015: 'limit_exceeded',
    1016: 'invalid_argument', 1017: 'not_member', 1018: 'internal', 1019: 'idle_timeout',
    1020: 'token_expired',
    1021: 'rate_limited',
    1022: 'reconnect',
  };
  for (const v of Object.values(Code)) assert.equal(codeName(v), names[v]);
  assert.equal(codeName(4000), 'app_4000');
  assert.equal(codeName(4999), 'app_4999');
  assert.equal(codeName(5000), 'code_5000');
  assert.equal(codeName(77), 'code_77');
  assert.equal(codeName(1023), 'code_1023');
});
