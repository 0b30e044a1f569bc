#!/usr/bin/env python3
"""A peerd session over ws:// or wss:// with a WebSocket client no one here wrote.

The WebSocket layer is the PyPI package `websockets` (pinned in requirements.txt next to
this file). The peerd layer (frame header, rkyv archive layout) is written by hand from
docs/PROTOCOL.md (sections 2, 4 and 5) and nothing else: no peerd code is imported or
generated. What it does, against the URL on the command line:

1. a refused upgrade: a wrong subprotocol, and none at all, must get HTTP 400
   (websockets' InvalidStatus);
2. peer A: Hello -> Welcome; an RPC to the server's builtin `echo` (a small and a 70 000
   byte payload, the second needing a 64-bit WebSocket length both ways) -> RpcResponse
   with the same bytes; Join -> Status ok;
3. peer B (a second connection): Hello -> Welcome, Join the same topic;
4. A publishes with echo: A gets its own TopicMessage, B gets it too, A gets Status ok;
5. B and A close cleanly: a peerd Close{normal} as a binary message, then the WebSocket
   close handshake; the server's close status must be 1000.

Exits 0 and prints `interop OK <url>` on success; on any mismatch prints `FAIL: ...` to
stderr and exits 1. Every wait is bounded (and the whole run by an alarm).

    python3 peerd_ws_client.py ws://127.0.0.1:7401/
    python3 peerd_ws_client.py wss://127.0.0.1:7402/ --ca testdata/tls/ca.pem
"""

import argparse
import contextlib
import os
import signal
import ssl
import struct
import sys

try:
    import websockets
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
except ImportError as e:  # pragma: no cover - reported, not hidden
    sys.stderr.write(
        "FAIL: the Python package `websockets` is missing (%s): "
        "pip install -r cli/tests/interop/requirements.txt\n" % e
    )
    sys.exit(2)

SUBPROTOCOL = "peerd.v1"
# How long any single receive, handshake or close may take.
WAIT = 5.0
# The whole run.
DEADLINE = 60


class Mismatch(Exception):
    """The server said something other than what PROTOCOL.md says it must."""


def fail(msg):
    raise Mismatch(msg)


# ---------------------------------------------------------------------------------------
# PROTOCOL.md §2: the 8-byte header. body_len u32 LE, kind u8, flags u8 (0), reserved u16 (0).

HEADER = struct.Struct("<IBBH")

KIND = {
    "Hello": 0x01,
    "Welcome": 0x02,
    "Reject": 0x03,
    "RpcRequest": 0x10,
    "RpcResponse": 0x11,
    "RpcError": 0x12,
    "Join": 0x30,
    "Publish": 0x32,
    "TopicMessage": 0x34,
    "Status": 0x60,
    "Ping": 0x70,
    "Pong": 0x71,
    "Close": 0x7F,
}
KIND_NAME = {v: k for k, v in KIND.items()}

# PROTOCOL.md "Codes" (the few this client names).
CODE_OK = 0
CODE_NORMAL = 1000

# ---------------------------------------------------------------------------------------
# PROTOCOL.md §4/§5: field types and message layouts. Types: u16, u32, u64, bool, str, bytes,
# opt_str, opt_bytes, limits (five u32). Sizes per §4's table.

SIZE = {
    "u16": 2,
    "u32": 4,
    "u64": 8,
    "bool": 1,
    "str": 8,
    "bytes": 8,
    "opt_str": 9,
    "opt_bytes": 9,
    "limits": 20,
}

# Field lists in declaration order (the offsets in §5 follow from the sizes; checked below).
LAYOUT = {
    "Hello": [
        ("version", "u16"),
        ("peer_id", "opt_str"),
        ("credentials", "opt_bytes"),
        ("resume_token", "opt_bytes"),
        ("client", "str"),
    ],
    "Welcome": [
        ("version", "u16"),
        ("peer_id", "str"),
        ("session_id", "u64"),
        ("resume_token", "bytes"),
        ("limits", "limits"),
        ("heartbeat_ms", "u32"),
    ],
    "Reject": [("code", "u16"), ("reason", "str")],
    "RpcRequest": [
        ("id", "u64"),
        ("method", "str"),
        ("peer", "opt_str"),
        ("timeout_ms", "u32"),
        ("params", "bytes"),
    ],
    "RpcResponse": [("id", "u64"), ("result", "bytes")],
    "RpcError": [("id", "u64"), ("code", "u16"), ("message", "str")],
    "Join": [("req", "u64"), ("topic", "str")],
    "Publish": [
        ("req", "u64"),
        ("topic", "str"),
        ("echo", "bool"),
        ("payload", "bytes"),
    ],
    "TopicMessage": [
        ("topic", "str"),
        ("from", "str"),
        ("direct", "bool"),
        ("payload", "bytes"),
    ],
    "Status": [("req", "u64"), ("code", "u16"), ("message", "str")],
    "Ping": [("nonce", "u64")],
    "Pong": [("nonce", "u64")],
    "Close": [("code", "u16"), ("reason", "str")],
}

# Root sizes as §5 states them: the layouts above must add up to them.
ROOT_SIZE = {
    "Hello": 37,
    "Welcome": 50,
    "Reject": 10,
    "RpcRequest": 37,
    "RpcResponse": 16,
    "RpcError": 18,
    "Join": 16,
    "Publish": 25,
    "TopicMessage": 25,
    "Status": 18,
    "Ping": 8,
    "Pong": 8,
    "Close": 10,
}
for _name, _fields in LAYOUT.items():
    assert sum(SIZE[t] for _, t in _fields) == ROOT_SIZE[_name], _name

LIMITS_FIELDS = (
    "max_frame_len",
    "max_topics_per_peer",
    "max_members_per_topic",
    "max_topic_len",
    "outbound_queue_bytes",
)

# ---------------------------------------------------------------------------------------
# Encoding (§4 "Writing an archive"): out-of-line data first, in field order; then the root.


def _utf8(s):
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def encode(name, **values):
    """One whole frame (header + body) of message `name`."""
    fields = LAYOUT[name]
    body = bytearray()
    targets = {}  # field -> position of its out-of-line data
    # 1. Out-of-line data, in declaration order.
    for field, typ in fields:
        v = values[field]
        if typ in ("opt_str", "opt_bytes"):
            if v is None:
                continue
            typ = typ[4:]
        if typ == "str":
            b = _utf8(v)
            if len(b) > 8:
                targets[field] = len(body)
                body += b
        elif typ == "bytes":
            # An empty vector appends nothing; its position is the current length.
            targets[field] = len(body)
            body += bytes(v)
    # 2. The root, each field at its offset; pointers are target - position of the 8-byte
    # string/vector object.
    root_start = len(body)
    for field, typ in fields:
        v = values[field]
        if typ in ("opt_str", "opt_bytes"):
            if v is None:
                body += b"\x00" * SIZE[typ]  # tag 0, then ignored bytes (written as zeros)
                continue
            body += b"\x01"
            typ = typ[4:]
        pos = len(body)
        if typ == "u16":
            body += struct.pack("<H", v)
        elif typ == "u32":
            body += struct.pack("<I", v)
        elif typ == "u64":
            body += struct.pack("<Q", v)
        elif typ == "bool":
            body += b"\x01" if v else b"\x00"
        elif typ == "str":
            b = _utf8(v)
            if len(b) <= 8:
                body += b + b"\xff" * (8 - len(b))  # inline, 0xFF filler
            else:
                n = len(b)
                assert n < (1 << 30)
                w = (n & 0x3F) | 0x80 | ((n & ~0x3F) << 2)
                body += struct.pack("<Ii", w, targets[field] - pos)
        elif typ == "bytes":
            body += struct.pack("<iI", targets[field] - pos, len(v))
        else:
            raise AssertionError("no encoder for %s" % typ)
    assert len(body) - root_start == ROOT_SIZE[name]
    return HEADER.pack(len(body), KIND[name], 0, 0) + bytes(body)


# ---------------------------------------------------------------------------------------
# Decoding (§4 "Reading an archive" and §3 "Validation").


class Reader:
    """Validated reads of one archive body, tracking sibling target order (§3)."""

    def __init__(self, body, name):
        self.body = body
        self.name = name
        root_size = ROOT_SIZE[name]
        if len(body) < root_size:
            fail("%s body of %d bytes is shorter than its root (%d)" % (name, len(body), root_size))
        self.root = len(body) - root_size
        # Targets reached from the root must lie in [self.floor, self.root), increasing.
        self.floor = 0

    def _target(self, field, obj_pos, offset, length):
        start = obj_pos + offset
        end = start + length
        if start < self.floor or end > self.root or start > end:
            fail(
                "%s.%s: relative pointer %d (length %d) from body offset %d lands outside "
                "[%d, %d)" % (self.name, field, offset, length, obj_pos, self.floor, self.root)
            )
        self.floor = end
        return self.body[start:end]

    def str_at(self, field, pos):
        obj = self.body[pos : pos + 8]
        if obj[0] & 0xC0 != 0x80:  # inline
            n = obj.find(b"\xff")
            raw = bytes(obj if n < 0 else obj[:n])
            if n >= 0 and any(c != 0xFF for c in obj[n:]):
                fail("%s.%s: inline string filler is not all 0xFF: %s" % (self.name, field, obj.hex()))
        else:
            w, offset = struct.unpack_from("<Ii", self.body, pos)
            n = (w & 0x3F) | ((w & ~0xFF) >> 2)
            raw = bytes(self._target(field, pos, offset, n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            fail("%s.%s: string is not UTF-8: %r" % (self.name, field, raw))

    def bytes_at(self, field, pos):
        offset, n = struct.unpack_from("<iI", self.body, pos)
        return bytes(self._target(field, pos, offset, n))

    def read(self):
        out = {}
        pos = self.root
        for field, typ in LAYOUT[self.name]:
            at = pos
            pos += SIZE[typ]
            if typ in ("opt_str", "opt_bytes"):
                tag = self.body[at]
                if tag == 0:
                    out[field] = None
                    continue
                if tag != 1:
                    fail("%s.%s: Option tag 0x%02x" % (self.name, field, tag))
                at += 1
                typ = typ[4:]
            if typ == "u16":
                out[field] = struct.unpack_from("<H", self.body, at)[0]
            elif typ == "u32":
                out[field] = struct.unpack_from("<I", self.body, at)[0]
            elif typ == "u64":
                out[field] = struct.unpack_from("<Q", self.body, at)[0]
            elif typ == "bool":
                b = self.body[at]
                if b not in (0, 1):
                    fail("%s.%s: bool byte 0x%02x" % (self.name, field, b))
                out[field] = b == 1
            elif typ == "str":
                out[field] = self.str_at(field, at)
            elif typ == "bytes":
                out[field] = self.bytes_at(field, at)
            elif typ == "limits":
                out[field] = dict(zip(LIMITS_FIELDS, struct.unpack_from("<5I", self.body, at)))
        return out


def decode(message):
    """(kind name, fields) of one WebSocket message, which must be exactly one frame."""
    if not isinstance(message, (bytes, bytearray)):
        fail("the server sent a text message %r; peerd frames travel in binary messages" % (message,))
    if len(message) < HEADER.size:
        fail("binary message of %d bytes is shorter than a peerd header" % len(message))
    body_len, kind, flags, reserved = HEADER.unpack_from(message)
    if flags or reserved:
        fail("frame header flags 0x%02x reserved 0x%04x, must be zero" % (flags, reserved))
    if HEADER.size + body_len != len(message):
        fail(
            "binary message of %d bytes holds a frame of %d: one message must carry exactly "
            "one frame" % (len(message), HEADER.size + body_len)
        )
    name = KIND_NAME.get(kind)
    if name is None or name not in LAYOUT:
        fail("unexpected frame kind 0x%02x" % kind)
    return name, Reader(bytes(message[HEADER.size :]), name).read()


# The worked examples of PROTOCOL.md §10, byte for byte: checked before every run, so a
# mismatch later is the server's or the doc's, not this encoder's.

WORKED_EXAMPLES = [
    ("Ping", dict(nonce=1), "08000000 70000000 0100000000000000"),
    ("Close", dict(code=1000, reason="bye"), "0a000000 7f000000 e803 627965ffffffffff"),
    (
        "Close",
        dict(code=1001, reason="server shutting down"),
        "1e000000 7f000000 736572766572207368757474696e6720646f776e e903 94000000 eaffffff",
    ),
    ("RpcResponse", dict(id=1, result=b"\x01\x02\x03"), "13000000 11000000 010203 0100000000000000 f5ffffff03000000"),
    (
        "Hello",
        dict(version=1, peer_id="alice", credentials=None, resume_token=None, client="peerd-rs"),
        "25000000 01000000 0100 01616c696365ffffff 000000000000000000 000000000000000000 70656572642d7273",
    ),
]


def self_test():
    for name, values, hexbytes in WORKED_EXAMPLES:
        want = bytes.fromhex(hexbytes.replace(" ", ""))
        got = encode(name, **values)
        if got != want:
            fail("encoder disagrees with PROTOCOL.md §10 for %s: %s != %s" % (name, got.hex(), want.hex()))
        dname, fields = decode(want)
        if dname != name or fields != values:
            fail("decoder disagrees with PROTOCOL.md §10 for %s: %r" % (name, fields))


# ---------------------------------------------------------------------------------------
# A peer over one WebSocket.


class Peer:
    def __init__(self, stack, url, ssl_ctx, label):
        self.label = label
        # websockets wants its connection used as a context manager: the stack closes it
        # (abruptly, if a check failed before the clean close) when the session ends.
        self.ws = stack.enter_context(
            connect(
            url,
            ssl=ssl_ctx,
            subprotocols=[SUBPROTOCOL],
            open_timeout=WAIT,
            close_timeout=WAIT,
            ping_interval=None,  # the peerd heartbeat is enough; keep the exchange exact
            proxy=None,  # loopback only, whatever the environment says
            max_size=4 << 20,
            )
        )
        if self.ws.subprotocol != SUBPROTOCOL:
            fail("%s: server selected subprotocol %r, want %r" % (label, self.ws.subprotocol, SUBPROTOCOL))
        self.peer_id = None

    def send(self, name, **values):
        self.ws.send(encode(name, **values))

    def recv(self, what):
        """The next frame that is not a Ping (answered with a Pong, as §6.6 requires)."""
        while True:
            try:
                msg = self.ws.recv(timeout=WAIT)
            except TimeoutError:
                fail("%s: no %s within %.0f s" % (self.label, what, WAIT))
            except websockets.exceptions.ConnectionClosed as e:
                fail("%s: connection closed while waiting for %s: %s" % (self.label, what, e))
            name, f = decode(msg)
            if name == "Ping":
                self.send("Pong", nonce=f["nonce"])
                continue
            return name, f

    def expect(self, want, what=None):
        name, f = self.recv(what or want)
        if name != want:
            fail("%s: expected %s, got %s %r" % (self.label, what or want, name, f))
        return f

    def hello(self, peer_id):
        self.send(
            "Hello",
            version=1,
            peer_id=peer_id,
            credentials=None,
            resume_token=None,
            client="python-websockets/%s peerd-interop" % websockets.__version__,
        )
        name, w = self.recv("Welcome")
        if name == "Reject":
            fail("%s: Hello rejected: code %d %s" % (self.label, w["code"], w["reason"]))
        if name != "Welcome":
            fail("%s: expected Welcome, got %s %r" % (self.label, name, w))
        if w["version"] != 1:
            fail("%s: Welcome.version %d, want 1" % (self.label, w["version"]))
        if w["peer_id"] != peer_id:
            fail("%s: Welcome.peer_id %r, declared %r" % (self.label, w["peer_id"], peer_id))
        if len(w["resume_token"]) != 16:
            fail("%s: resume token of %d bytes, PROTOCOL.md says 16" % (self.label, len(w["resume_token"])))
        if w["heartbeat_ms"] == 0 or w["limits"]["max_frame_len"] < 1024:
            fail("%s: implausible Welcome %r" % (self.label, w))
        self.peer_id = peer_id
        return w

    def status(self, req):
        s = self.expect("Status", "Status %d" % req)
        if s["req"] != req:
            fail("%s: Status for req %d, expected req %d" % (self.label, s["req"], req))
        if s["code"] != CODE_OK:
            fail("%s: request %d failed: code %d %s" % (self.label, req, s["code"], s["message"]))

    def call_echo(self, call_id, params):
        self.send("RpcRequest", id=call_id, method="echo", peer=None, timeout_ms=5000, params=params)
        name, r = self.recv("RpcResponse %d" % call_id)
        if name == "RpcError":
            fail("%s: echo failed: code %d %s" % (self.label, r["code"], r["message"]))
        if name != "RpcResponse" or r["id"] != call_id:
            fail("%s: expected RpcResponse %d, got %s %r" % (self.label, call_id, name, r))
        if r["result"] != params:
            fail(
                "%s: echo returned %d bytes that differ from the %d sent"
                % (self.label, len(r["result"]), len(params))
            )

    def close(self):
        """peerd Close{normal}, then the WebSocket close handshake; the server's status must
        be 1000."""
        self.send("Close", code=CODE_NORMAL, reason="bye")
        self.ws.close(1000, "bye")
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is None:
            fail("%s: the server ended the connection without a WebSocket Close" % self.label)
        if rcvd.code != 1000:
            fail("%s: server's WebSocket close status %d (%r), want 1000" % (self.label, rcvd.code, rcvd.reason))


def refused(url, ssl_ctx, subprotocols, what):
    """An upgrade the server must refuse with HTTP 400."""
    try:
        with connect(
            url,
            ssl=ssl_ctx,
            subprotocols=subprotocols,
            open_timeout=WAIT,
            close_timeout=WAIT,
            proxy=None,
        ) as ws:
            accepted = ws.subprotocol
    except InvalidStatus as e:
        status = e.response.status_code
        body = (e.response.body or b"").decode("utf-8", "replace")
        if status != 400:
            fail("%s: HTTP %d, want 400 (body %r)" % (what, status, body))
        if SUBPROTOCOL not in body:
            fail("%s: the 400 body does not say to use %s: %r" % (what, SUBPROTOCOL, body))
        return
    fail("%s: the server accepted the upgrade (subprotocol %r)" % (what, accepted))


def session(url, ssl_ctx):
    with contextlib.ExitStack() as stack:
        peers(stack, url, ssl_ctx)


def peers(stack, url, ssl_ctx):
    refused(url, ssl_ctx, ["chat", "peerd.v0"], "wrong subprotocol")
    refused(url, ssl_ctx, None, "no subprotocol")

    tag = "%d" % os.getpid()
    topic = "interop/topic-%s" % tag  # longer than 8 bytes: an out-of-line string

    a = Peer(stack, url, ssl_ctx, "A")
    a.hello("py-interop-a-%s" % tag)  # out-of-line Option<str>
    a.call_echo(1, b"hi")
    # 70 000 bytes, bytes 0x00 and 0xff included: a 64-bit WebSocket length both ways.
    big = bytes(range(256)) * 273 + b"\x00\xff" * 56
    assert len(big) == 70000
    a.call_echo(2, big)
    a.send("Join", req=3, topic=topic)
    a.status(3)

    b = Peer(stack, url, ssl_ctx, "B")
    b.hello("pyb%s" % tag[-5:])  # at most 8 bytes: an inline Option<str>
    b.send("Join", req=1, topic=topic)
    b.status(1)

    payload = b"published over websockets \x00\x01\xfe\xff"
    a.send("Publish", req=4, topic=topic, echo=True, payload=payload)
    # A gets its own copy (echo, and it is a member) and the Status, in either order.
    got_own, got_status = False, False
    while not (got_own and got_status):
        name, f = a.recv("its own TopicMessage and Status 4")
        if name == "TopicMessage" and not got_own:
            if (f["topic"], f["from"], f["direct"], f["payload"]) != (topic, a.peer_id, False, payload):
                fail("A: wrong TopicMessage %r" % f)
            got_own = True
        elif name == "Status" and f["req"] == 4 and not got_status:
            if f["code"] != CODE_OK:
                fail("A: Publish failed: code %d %s" % (f["code"], f["message"]))
            got_status = True
        else:
            fail("A: unexpected %s %r" % (name, f))
    m = b.expect("TopicMessage")
    if (m["topic"], m["from"], m["direct"], m["payload"]) != (topic, a.peer_id, False, payload):
        fail("B: wrong TopicMessage %r" % m)

    b.close()
    a.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="ws://host:port/path or wss://host:port/path")
    ap.add_argument("--ca", help="PEM file of the CA that signed the server's certificate (wss://)")
    args = ap.parse_args()

    def timed_out(*_):
        sys.stderr.write("FAIL: the session did not finish within %d s\n" % DEADLINE)
        os._exit(1)

    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(DEADLINE)

    ssl_ctx = None
    if args.url.startswith("wss://"):
        ssl_ctx = ssl.create_default_context(cafile=args.ca)
    elif not args.url.startswith("ws://"):
        sys.stderr.write("FAIL: not a ws:// or wss:// URL: %s\n" % args.url)
        return 2
    try:
        self_test()
        session(args.url, ssl_ctx)
    except Mismatch as e:
        sys.stderr.write("FAIL: %s: %s\n" % (args.url, e))
        return 1
    except (OSError, websockets.exceptions.WebSocketException) as e:
        sys.stderr.write("FAIL: %s: %s: %s\n" % (args.url, type(e).__name__, e))
        return 1
    print("interop OK %s" % args.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
