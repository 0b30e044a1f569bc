#!/usr/bin/env python3
"""Write the seed scripts of the `server` fuzz target into fuzz/seeds-server/.

Each seed is a short script in the input format of fuzz_targets/server.rs (documented in
docs/FUZZING.md): it gets the fuzzer past the handshake and into topics, presence, calls in
every direction, signaling, split frames, takeovers, floods and resets from the first
second. Rerun after changing the input format: `python3 fuzz/server_seeds.py`.
"""

import os

# Operations (bits 2-5 of the operation byte; bits 0-1 are the slot).
CONNECT, SEND, SEND_SPLIT, FLUSH, RAW, RAW_FRAME, REPEAT, READ, ANSWER = range(9)
SHUTDOWN, CLOSE, RESET, SLEEP = range(9, 13)
# Frame kinds of SEND / SEND_SPLIT (first argument byte, modulo 18).
RPC_REQUEST, RPC_RESPONSE, RPC_ERROR, EVENT, BROADCAST, JOIN, LEAVE, PUBLISH = range(8)
TOPIC_SEND, WATCH, UNWATCH, LIST_PEERS, SIGNAL, PING, PONG, CLOSE_FRAME, HELLO = range(8, 17)
# Dictionaries (index into the target's NAMES / TOPICS / IDS).
NAMES = ["echo", "later", "back", "kick", "fail", "emit", "mine", "nope", "ev"]
TOPICS = ["t0", "t1", "t2", "room"]


def op(slot, code):
    return bytes([(code << 2) | slot])


def connect(slot, how):
    """how: ("id", i) declared id p<i>; ("assigned",); ("takeover", i); ("none",)."""
    kind = how[0]
    if kind == "none":
        return op(slot, CONNECT) + bytes([0])
    if kind == "id":
        return op(slot, CONNECT) + bytes([1 | (how[1] << 3)])
    if kind == "assigned":
        return op(slot, CONNECT) + bytes([2])
    if kind == "takeover":
        # The fallback token (an empty payload) is read even when a token is known.
        return op(slot, CONNECT) + bytes([3 | (how[1] << 3), 0])
    raise ValueError(kind)


def name(n):
    return bytes([NAMES.index(n)])


def topic(t):
    return bytes([TOPICS.index(t)])


def payload(b):
    assert len(b) < 0x80
    return bytes([len(b)]) + b


def big(units, fill=0x61):
    """`units` * 40 bytes of `fill`."""
    return bytes([0x80 | units, fill])


def req(i):
    return bytes([i])


NO_PEER = bytes([0])


def peer_id(i):
    """The declared id p<i>."""
    return bytes([1 | (i << 2)])


def slot_peer(s):
    """Whatever id slot s was given (assigned ids too)."""
    return bytes([2 | (s << 2)])


def send(slot, kind, *fields, split=None):
    body = bytes([kind]) + b"".join(fields)
    if split is None:
        return op(slot, SEND) + body
    return op(slot, SEND_SPLIT) + body + split.to_bytes(2, "little")


READ_MS = [1, 1, 2, 2, 3, 4, 6, 8]
SLEEP_MS = [0, 1, 2, 5, 10, 20, 40, 80]


def read(slot, ms=4):
    return op(slot, READ) + bytes([READ_MS.index(ms)])


def sleep(slot, ms):
    return op(slot, SLEEP) + bytes([SLEEP_MS.index(ms)])


def seeds():
    yield "topics", b"".join([
        connect(0, ("id", 0)),
        connect(1, ("id", 1)),
        connect(2, ("assigned",)),
        send(2, WATCH, req(1), bytes([1]), topic("t0")),
        send(0, JOIN, req(2), topic("t0")),
        send(1, JOIN, req(3), topic("t0")),
        send(0, PUBLISH, req(4), topic("t0"), bytes([1]), payload(b"hello")),
        send(1, TOPIC_SEND, req(5), topic("t0"), peer_id(0), payload(b"direct")),
        send(1, LIST_PEERS, req(6), bytes([1]), topic("t0")),
        read(0), read(1), read(2),
        send(1, LEAVE, req(7), topic("t0")),
        op(0, CLOSE),
        read(2),
    ])
    yield "rpc-server", b"".join([
        connect(0, ("id", 0)),
        send(0, RPC_REQUEST, req(1), name("echo"), NO_PEER, bytes([0]), payload(b"x")),
        send(0, RPC_REQUEST, req(2), name("later"), NO_PEER, bytes([0]), payload(b"\x05")),
        send(0, RPC_REQUEST, req(3), name("mine"), NO_PEER, bytes([0]), payload(b"")),
        send(0, RPC_REQUEST, req(4), name("back"), NO_PEER, bytes([0]), payload(b"cb")),
        read(0, 8),
        op(0, ANSWER) + bytes([0]) + payload(b"answer"),
        send(0, RPC_REQUEST, req(5), name("emit"), NO_PEER, bytes([0]), payload(b"e")),
        send(0, RPC_REQUEST, req(6), name("fail"), NO_PEER, bytes([0]), payload(b"")),
        send(0, RPC_REQUEST, req(7), name("nope"), NO_PEER, bytes([0]), payload(b"")),
        read(0, 8),
        send(0, RPC_REQUEST, req(8), name("kick"), NO_PEER, bytes([0]), payload(b"")),
        read(0, 8),
    ])
    yield "peer-to-peer", b"".join([
        connect(0, ("id", 0)),
        connect(1, ("assigned",)),
        send(0, RPC_REQUEST, req(1), name("mine"), slot_peer(1), bytes([10]), payload(b"q")),
        read(1),
        op(1, ANSWER) + bytes([0]) + payload(b"a"),
        send(0, RPC_REQUEST, req(2), name("echo"), slot_peer(1), bytes([10]), payload(b"q")),
        read(1),
        op(1, ANSWER) + bytes([1]) + payload(b""),
        send(1, EVENT, name("ev"), peer_id(0), payload(b"hi")),
        send(1, BROADCAST, name("ev"), NO_PEER, payload(b"all")),
        read(0),
        send(0, RPC_REQUEST, req(3), name("echo"), slot_peer(1), bytes([10]), payload(b"q")),
        op(1, RESET),
        read(0, 8),
    ])
    yield "signaling", b"".join([
        connect(0, ("id", 0)),
        connect(1, ("id", 1)),
        send(0, JOIN, req(1), topic("room")),
        send(1, JOIN, req(2), topic("room")),
        send(0, SIGNAL, req(3), topic("room"), bytes([0]), NO_PEER, payload(b"sdp-offer")),
        read(1),
        send(1, SIGNAL, req(4), topic("room"), bytes([1]), peer_id(0), payload(b"sdp-answer")),
        send(1, SIGNAL, req(5), topic("room"), bytes([2]), peer_id(0), payload(b"cand")),
        send(1, SIGNAL, req(6), topic("room"), bytes([3]), peer_id(0), payload(b"")),
        read(0),
    ])
    yield "split-and-garbage", b"".join([
        connect(0, ("id", 0)),
        send(0, JOIN, req(1), topic("t1"), split=5),
        read(0, 2),
        op(0, FLUSH),
        read(0, 2),
        send(0, PING, req(9), split=9),
        op(0, RAW) + bytes([4]) + b"\xff\xff\xff\xff",
        read(0, 8),
        connect(1, ("none",)),
        op(1, RAW_FRAME) + bytes([0x01, 0, 3]) + b"abc",
        read(1, 8),
    ])
    yield "takeover-and-timers", b"".join([
        connect(0, ("id", 2)),
        connect(1, ("takeover", 2)),
        read(0, 4),
        connect(2, ("id", 1)),
        connect(3, ("id", 1)),
        connect(2, ("none",)),
        sleep(2, 80),
        sleep(2, 80),
        sleep(2, 80),
        read(2),
        read(1),
        op(1, ANSWER) + bytes([2]) + payload(b""),
    ])
    yield "flood-slow-consumer", b"".join([
        connect(0, ("id", 0)),
        connect(1, ("id", 1)),
        send(1, JOIN, req(0), topic("t2")),
        send(0, PUBLISH, req(0), topic("t2"), bytes([0]), big(90)),
        op(0, REPEAT) + bytes([200]),
        op(0, REPEAT) + bytes([200]),
        read(0, 8),
        op(1, SHUTDOWN),
        read(1, 8),
    ])


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds-server")
    os.makedirs(out, exist_ok=True)
    for name_, data in seeds():
        with open(os.path.join(out, name_ + ".bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
