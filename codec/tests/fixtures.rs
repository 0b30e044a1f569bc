//! Golden wire fixtures for other implementations (the TypeScript client decodes and
//! re-encodes them byte for byte): `fixtures/wire/{valid,lenient,invalid}.json` at the
//! repository root, written from the Rust codec. See `fixtures/wire/README.md` for the format.
//!
//! The fixtures are generated here, in memory, from messages (valid) and hand-built bodies
//! (lenient, invalid). `fixtures_are_current` fails when the committed files differ from
//! what this file generates; `PEERD_BLESS=1 cargo test -p peerd-codec --test fixtures`
//! rewrites them. The other tests read the committed files, the way another implementation
//! does, and check them against the Rust codec: every valid frame decodes (validated access)
//! to its `message` and re-encodes to the same bytes, every lenient frame decodes to its
//! `message` and re-encodes to `canonical`, every invalid frame is refused with its `code`.

mod common;

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::PathBuf;

use common::{raw_frame, AnyMsg, Body};
use peerd_codec::*;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

const GENERATED_BY: &str = "codec/tests/fixtures.rs";
const BLESS_HINT: &str = "PEERD_BLESS=1 cargo test -p peerd-codec --test fixtures";

// ---- JSON with a fixed field order ----
//
// serde_json's own `Value` sorts object keys (the workspace does not enable its
// `preserve_order` feature, and enabling it would change every other crate's output), so the
// files are written through this small tree, whose objects keep the order they are built in:
// the §5 field order, which keeps the files readable and their diffs stable.

enum J {
    Null,
    Bool(bool),
    Num(u64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Num(n) => s.serialize_u64(*n),
            J::Str(v) => s.serialize_str(v),
            J::Arr(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for e in v {
                    seq.serialize_element(e)?;
                }
                seq.end()
            }
            J::Obj(v) => {
                let mut m = s.serialize_map(Some(v.len()))?;
                for (k, e) in v {
                    m.serialize_entry(k, e)?;
                }
                m.end()
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex");
    assert!(
        s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "hex must be lowercase"
    );
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Builds a message object field by field, in §5 order.
struct Obj(Vec<(&'static str, J)>);

impl Obj {
    fn new(frame_kind: FrameKind) -> Obj {
        Obj(vec![("frame_kind", J::Str(frame_kind.name().to_string()))])
    }
    fn field(mut self, name: &'static str, v: J) -> Obj {
        self.0.push((name, v));
        self
    }
    /// u64 as a decimal string: a JavaScript number cannot hold every u64.
    fn u64(self, name: &'static str, v: u64) -> Obj {
        self.field(name, J::Str(v.to_string()))
    }
    fn num(self, name: &'static str, v: impl Into<u64>) -> Obj {
        self.field(name, J::Num(v.into()))
    }
    fn bool(self, name: &'static str, v: bool) -> Obj {
        self.field(name, J::Bool(v))
    }
    fn str(self, name: &'static str, v: &str) -> Obj {
        self.field(name, J::Str(v.to_string()))
    }
    fn bytes(self, name: &'static str, v: &[u8]) -> Obj {
        self.field(name, J::Str(hex(v)))
    }
    fn opt_str(self, name: &'static str, v: &Option<Cow<'_, str>>) -> Obj {
        self.field(
            name,
            v.as_deref().map_or(J::Null, |s| J::Str(s.to_string())),
        )
    }
    fn opt_bytes(self, name: &'static str, v: &Option<Cow<'_, [u8]>>) -> Obj {
        self.field(name, v.as_deref().map_or(J::Null, |b| J::Str(hex(b))))
    }
    fn strs(self, name: &'static str, v: &[String]) -> Obj {
        self.field(name, J::Arr(v.iter().map(|s| J::Str(s.clone())).collect()))
    }
    fn done(self) -> J {
        J::Obj(self.0)
    }
}

/// The `message` object of a fixture: the frame kind's name, then every field under its §5
/// name, in §5 order.
fn message_json(m: &AnyMsg) -> J {
    let o = Obj::new(m.kind());
    match m {
        AnyMsg::Hello(v) => o
            .num("version", v.version)
            .opt_str("peer_id", &v.peer_id)
            .opt_bytes("credentials", &v.credentials)
            .opt_bytes("resume_token", &v.resume_token)
            .str("client", &v.client),
        AnyMsg::Welcome(v) => {
            let l = &v.limits;
            let limits = J::Obj(vec![
                ("max_frame_len", J::Num(l.max_frame_len.into())),
                ("max_topics_per_peer", J::Num(l.max_topics_per_peer.into())),
                (
                    "max_members_per_topic",
                    J::Num(l.max_members_per_topic.into()),
                ),
                ("max_topic_len", J::Num(l.max_topic_len.into())),
                (
                    "outbound_queue_bytes",
                    J::Num(l.outbound_queue_bytes.into()),
                ),
            ]);
            o.num("version", v.version)
                .str("peer_id", &v.peer_id)
                .u64("session_id", v.session_id)
                .bytes("resume_token", &v.resume_token)
                .field("limits", limits)
                .num("heartbeat_ms", v.heartbeat_ms)
        }
        AnyMsg::Reject(v) => o.num("code", v.code).str("reason", &v.reason),
        AnyMsg::Refresh(v) => o.u64("req", v.req).bytes("credentials", &v.credentials),
        AnyMsg::RpcRequest(v) => o
            .u64("id", v.id)
            .str("method", &v.method)
            .opt_str("peer", &v.peer)
            .num("timeout_ms", v.timeout_ms)
            .bytes("params", &v.params),
        AnyMsg::RpcResponse(v) => o.u64("id", v.id).bytes("result", &v.result),
        AnyMsg::RpcError(v) => o
            .u64("id", v.id)
            .num("code", v.code)
            .str("message", &v.message),
        AnyMsg::Event(v) => o
            .str("name", &v.name)
            .opt_str("peer", &v.peer)
            .bytes("payload", &v.payload),
        AnyMsg::Broadcast(v) => o
            .str("name", &v.name)
            .opt_str("peer", &v.peer)
            .bytes("payload", &v.payload),
        AnyMsg::Join(v) => o.u64("req", v.req).str("topic", &v.topic),
        AnyMsg::Leave(v) => o.u64("req", v.req).str("topic", &v.topic),
        AnyMsg::Publish(v) => o
            .u64("req", v.req)
            .str("topic", &v.topic)
            .bool("echo", v.echo)
            .bytes("payload", &v.payload),
        AnyMsg::TopicSend(v) => o
            .u64("req", v.req)
            .str("topic", &v.topic)
            .str("to", &v.to)
            .bytes("payload", &v.payload),
        AnyMsg::TopicMessage(v) => o
            .str("topic", &v.topic)
            .str("from", &v.from)
            .bool("direct", v.direct)
            .bytes("payload", &v.payload),
        AnyMsg::Watch(v) => o.u64("req", v.req).opt_str("topic", &v.topic),
        AnyMsg::Unwatch(v) => o.u64("req", v.req).opt_str("topic", &v.topic),
        AnyMsg::PresenceSnapshot(v) => o.opt_str("topic", &v.topic).strs("peers", &v.peers),
        AnyMsg::Presence(v) => o.opt_str("topic", &v.topic).str("peer", &v.peer).str(
            "change",
            match v.change {
                PresenceChange::Join => "join",
                PresenceChange::Leave => "leave",
            },
        ),
        AnyMsg::ListPeers(v) => o.u64("req", v.req).opt_str("topic", &v.topic),
        AnyMsg::PeerList(v) => o.u64("req", v.req).strs("peers", &v.peers),
        AnyMsg::Signal(v) => o
            .u64("req", v.req)
            .str("room", &v.room)
            .str(
                "kind",
                match v.kind {
                    SignalKind::Offer => "offer",
                    SignalKind::Answer => "answer",
                    SignalKind::Candidate => "candidate",
                    SignalKind::Bye => "bye",
                },
            )
            .opt_str("peer", &v.peer)
            .bytes("payload", &v.payload),
        AnyMsg::Status(v) => o
            .u64("req", v.req)
            .num("code", v.code)
            .str("message", &v.message),
        AnyMsg::Ping(v) => o.u64("nonce", v.nonce),
        AnyMsg::Pong(v) => o.u64("nonce", v.nonce),
        AnyMsg::Close(v) => o.num("code", v.code).str("reason", &v.reason),
    }
    .done()
}

// ---- the fixtures ----

struct Valid {
    name: &'static str,
    note: &'static str,
    msg: AnyMsg,
}

struct Lenient {
    name: &'static str,
    note: &'static str,
    frame: Vec<u8>,
    msg: AnyMsg,
}

struct Invalid {
    name: &'static str,
    note: &'static str,
    frame: Vec<u8>,
    code: Code,
    /// The rule broken, as named in docs/PROTOCOL.md §2 and §3.
    check: &'static str,
    /// The reader's body limit for this fixture.
    max_body_len: u32,
}

fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_string())
}

fn b(v: &[u8]) -> Cow<'static, [u8]> {
    Cow::Owned(v.to_vec())
}

/// `n` bytes that are not all alike (a run of one value would hide a misplaced offset).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn limits() -> Limits {
    Limits {
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        max_topics_per_peer: 1024,
        max_members_per_topic: 100_000,
        max_topic_len: DEFAULT_MAX_TOPIC_LEN,
        outbound_queue_bytes: 8 << 20,
    }
}

fn valid() -> Vec<Valid> {
    use AnyMsg as M;
    let v = |name, note, msg| Valid { name, note, msg };
    vec![
        // Hello: every option shape (None, Some inline/out-of-line str, Some empty/non-empty bytes).
        v("hello-alice", "PROTOCOL.md §10 example: Some inline str, None bytes, an 8-byte (inline, no filler) str",
            M::Hello(Hello { version: 1, peer_id: Some(s("alice")), credentials: None, resume_token: None, client: s("peerd-rs") })),
        v("hello-anonymous", "every option None, empty client string (eight 0xff)",
            M::Hello(Hello { version: 1, peer_id: None, credentials: None, resume_token: None, client: s("") })),
        v("hello-full", "every option Some: out-of-line peer id, 16-byte credentials and resume token, long client",
            M::Hello(Hello { version: 1, peer_id: Some(s("node-7.eu:1@example")), credentials: Some(b(b"token-0123456789")),
                resume_token: Some(b(&[0x5a; 16])), client: s("peerd-client/0.1") })),
        v("hello-some-empty-bytes", "Some(empty bytes) before Some(3 bytes): two targets at the same position, the empty one first",
            M::Hello(Hello { version: u16::MAX, peer_id: Some(s("")), credentials: Some(b(&[])), resume_token: Some(b(&[1, 2, 3])), client: s("x") })),
        // Welcome
        v("welcome", "peerd's defaults, a 16-byte resume token",
            M::Welcome(Welcome { version: 1, peer_id: s("alice"), session_id: 17, resume_token: b(&pattern(16)), limits: limits(), heartbeat_ms: 15_000 })),
        v("welcome-max", "u64::MAX session id, u32::MAX limits and heartbeat, empty resume token after an out-of-line peer id",
            M::Welcome(Welcome { version: u16::MAX, peer_id: s("18446744073709551615"), session_id: u64::MAX, resume_token: b(&[]),
                limits: Limits { max_frame_len: u32::MAX, max_topics_per_peer: u32::MAX, max_members_per_topic: u32::MAX,
                    max_topic_len: u32::MAX, outbound_queue_bytes: u32::MAX }, heartbeat_ms: u32::MAX })),
        v("welcome-zero", "zero everywhere: session id 0, empty peer id and token",
            M::Welcome(Welcome { version: 0, peer_id: s(""), session_id: 0, resume_token: b(&[]),
                limits: Limits { max_frame_len: 0, max_topics_per_peer: 0, max_members_per_topic: 0, max_topic_len: 0, outbound_queue_bytes: 0 }, heartbeat_ms: 0 })),
        // Reject
        v("reject", "out-of-line reason",
            M::Reject(Reject { code: Code::PeerIdTaken.as_u16(), reason: s("peer id alice is taken") })),
        v("reject-code-max", "u16::MAX code (unknown codes are kept as numbers), empty reason",
            M::Reject(Reject { code: u16::MAX, reason: s("") })),
        // Refresh (protocol v2)
        v("refresh", "a compact JWT as credentials, req 1",
            M::Refresh(Refresh { req: 1, credentials: b(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln") })),
        v("refresh-empty", "req 0, empty credentials: the empty vector points at the root start",
            M::Refresh(Refresh { req: 0, credentials: b(&[]) })),
        // RpcRequest
        v("rpc-request-1k", "the TS benchmark's call: 1 KiB params to a peer",
            M::RpcRequest(RpcRequest { id: 1, method: s("echo"), peer: Some(s("bob")), timeout_ms: 30_000, params: b(&pattern(1024)) })),
        v("rpc-request-empty", "id 0, peer None, timeout 0, empty params: the empty vector's target is the root start",
            M::RpcRequest(RpcRequest { id: 0, method: s("ping"), peer: None, timeout_ms: 0, params: b(&[]) })),
        v("rpc-request-max", "u64::MAX id, u32::MAX timeout, 9-byte (first out-of-line) method, out-of-line peer, empty params after two targets",
            M::RpcRequest(RpcRequest { id: u64::MAX, method: s("math.add2"), peer: Some(s("bob-the-builder")), timeout_ms: u32::MAX, params: b(&[]) })),
        // RpcResponse
        v("rpc-response-1b", "1-byte result",
            M::RpcResponse(RpcResponse { id: 1, result: b(&[0x2a]) })),
        v("rpc-response-empty", "empty result, the only target: points at body offset 0, which is the root start",
            M::RpcResponse(RpcResponse { id: 1, result: b(&[]) })),
        v("rpc-response-4k", "4096-byte result",
            M::RpcResponse(RpcResponse { id: 2, result: b(&pattern(4096)) })),
        v("rpc-response-64k", "65536-byte result: the length needs the third byte of the u32",
            M::RpcResponse(RpcResponse { id: 3, result: b(&pattern(65_536)) })),
        // RpcError
        v("rpc-error-unicode", "application code, multi-byte UTF-8 message (11 bytes, out-of-line)",
            M::RpcError(RpcError { id: 42, code: 4000, message: s("ünïcødé") })),
        v("rpc-error-method-not-found", "protocol code",
            M::RpcError(RpcError { id: 7, code: Code::MethodNotFound.as_u16(), message: s("no such method: math.sub") })),
        // Event
        v("event-direct", "peer Some, empty payload",
            M::Event(Event { name: s("typing"), peer: Some(s("bob")), payload: b(&[]) })),
        v("event-server", "peer None, long name, empty payload after the name's bytes",
            M::Event(Event { name: s("server.announcement"), peer: None, payload: b(&[]) })),
        v("event-emoji", "4-byte UTF-8 (an emoji) inline, and a 9-byte name with an emoji out-of-line",
            M::Event(Event { name: s("room 🎉"), peer: Some(s("🎉")), payload: b(b"{}") })),
        // Broadcast
        v("broadcast-server", "peer None (from the server)",
            M::Broadcast(Broadcast { name: s("announcement"), peer: None, payload: b(b"hello everyone") })),
        v("broadcast-relayed", "peer Some (relayed from a peer), 8-byte multi-byte UTF-8 name (inline, no filler)",
            M::Broadcast(Broadcast { name: s("ünïcø"), peer: Some(s("alice")), payload: b(&[0xff; 9]) })),
        // Join / Leave: string lengths around the inline limit
        v("join-1-byte-topic", "1-byte string", M::Join(Join { req: 1, topic: s("t") })),
        v("join-8-byte-topic", "8 bytes: the longest inline string", M::Join(Join { req: 2, topic: s("abcdefgh") })),
        v("join-9-byte-topic", "9 bytes: the shortest out-of-line string", M::Join(Join { req: 3, topic: s("abcdefghi") })),
        v("join-long-topic", "128-byte topic: a length word with bits above the low 6", M::Join(Join { req: 4, topic: s(&"x".repeat(128)) })),
        v("join-empty-topic", "empty string (the server answers invalid_argument, the codec accepts it)", M::Join(Join { req: 5, topic: s("") })),
        v("leave", "req 0", M::Leave(Leave { req: 0, topic: s("chat") })),
        // Publish
        v("publish-64b", "the TS benchmark's publish: 64-byte payload",
            M::Publish(Publish { req: 0, topic: s("chat"), echo: false, payload: b(&pattern(64)) })),
        v("publish-echo", "echo true, out-of-line topic",
            M::Publish(Publish { req: 9, topic: s("chat/general"), echo: true, payload: b(b"hello world!") })),
        v("publish-empty", "empty payload after an inline topic",
            M::Publish(Publish { req: u64::MAX, topic: s("chat"), echo: false, payload: b(&[]) })),
        // TopicSend / TopicMessage
        v("topic-send", "three targets in field order",
            M::TopicSend(TopicSend { req: 4, topic: s("chat/general"), to: s("carol-the-second"), payload: b(b"psst") })),
        v("topic-message", "published (direct false)",
            M::TopicMessage(TopicMessage { topic: s("chat"), from: s("alice"), direct: false, payload: b(b"hi all") })),
        v("topic-message-direct", "direct true, out-of-line topic and from",
            M::TopicMessage(TopicMessage { topic: s("chat/general"), from: s("alice@example"), direct: true, payload: b(&[0]) })),
        // Watch / Unwatch / ListPeers: opt str None, Some inline, Some out-of-line
        v("watch-global", "topic None (nine zero bytes)", M::Watch(Watch { req: 1, topic: None })),
        v("watch-topic", "topic Some, inline", M::Watch(Watch { req: 2, topic: Some(s("chat")) })),
        v("unwatch-topic", "topic Some, out-of-line", M::Unwatch(Unwatch { req: 3, topic: Some(s("chat/general")) })),
        v("unwatch-global", "topic None", M::Unwatch(Unwatch { req: 0, topic: None })),
        v("list-peers-global", "topic None", M::ListPeers(ListPeers { req: 7, topic: None })),
        v("list-peers-topic", "topic Some(empty string)", M::ListPeers(ListPeers { req: 8, topic: Some(s("")) })),
        // PresenceSnapshot / PeerList: Vec<String> empty, short-only, mixed
        v("presence-snapshot-empty", "empty Vec<String> after an out-of-line topic: its target is the root start",
            M::PresenceSnapshot(PresenceSnapshot { topic: Some(s("chat/general")), peers: vec![] })),
        v("presence-snapshot-short", "only inline elements: the element array is the only target",
            M::PresenceSnapshot(PresenceSnapshot { topic: None, peers: vec!["alice".into(), "bob".into()] })),
        v("presence-snapshot-mixed", "out-of-line topic, then elements short and long: the long elements' bytes after the topic's, before the array",
            M::PresenceSnapshot(PresenceSnapshot { topic: Some(s("room 🎉")), peers: vec!["a".into(), "a-much-longer-peer-id".into(), "bob".into(), "carol-the-second".into()] })),
        v("peer-list-empty", "empty Vec<String> as the only target", M::PeerList(PeerList { req: 1, peers: vec![] })),
        v("peer-list-mixed", "elements of 0, 1, 8, 9 bytes and multi-byte UTF-8",
            M::PeerList(PeerList { req: 2, peers: vec!["".into(), "1".into(), "abcdefgh".into(), "abcdefghi".into(), "ünïcødé".into(), "🎉".into()] })),
        // Presence: both changes
        v("presence-join", "change join, global watch", M::Presence(Presence { topic: None, peer: s("alice"), change: PresenceChange::Join })),
        v("presence-leave", "change leave, topic watch, out-of-line peer",
            M::Presence(Presence { topic: Some(s("chat")), peer: s("alice@example"), change: PresenceChange::Leave })),
        // Signal: every kind
        v("signal-offer", "kind offer, peer None (to the whole room)",
            M::Signal(Signal { req: 8, room: s("room-1"), kind: SignalKind::Offer, peer: None, payload: b(b"v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\n") })),
        v("signal-answer", "kind answer, peer Some",
            M::Signal(Signal { req: 9, room: s("room-1"), kind: SignalKind::Answer, peer: Some(s("alice")), payload: b(b"v=0\r\n") })),
        v("signal-candidate", "kind candidate, out-of-line room and peer",
            M::Signal(Signal { req: 0, room: s("video-call-42"), kind: SignalKind::Candidate, peer: Some(s("bob-the-builder")), payload: b(b"candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host") })),
        v("signal-bye", "kind bye, empty payload", M::Signal(Signal { req: 0, room: s("r"), kind: SignalKind::Bye, peer: Some(s("bob")), payload: b(&[]) })),
        // Status
        v("status-ok", "success: code 0, empty message", M::Status(Status { req: 1, code: 0, message: s("") })),
        v("status-error", "failure with an out-of-line message",
            M::Status(Status { req: 0, code: Code::NotMember.as_u16(), message: s("carol is not a member of chat") })),
        // Ping / Pong
        v("ping", "PROTOCOL.md §10 example", M::Ping(Ping { nonce: 1 })),
        v("ping-zero", "nonce 0", M::Ping(Ping { nonce: 0 })),
        v("pong-max", "nonce u64::MAX (not representable as a JavaScript number)", M::Pong(Pong { nonce: u64::MAX })),
        // Close
        v("close-inline", "PROTOCOL.md §10 example: inline reason", M::Close(Close { code: 1000, reason: s("bye") })),
        v("close-out-of-line", "PROTOCOL.md §10 example: out-of-line reason", M::Close(Close { code: 1001, reason: s("server shutting down") })),
    ]
}

fn lenient() -> Vec<Lenient> {
    use AnyMsg as M;
    let l = |name, note, frame, msg| Lenient {
        name,
        note,
        frame,
        msg,
    };
    let mut out = Vec::new();

    // Inline strings: only the bytes before the first 0xff are the string.
    let mut x = Body::new();
    x.u16(1000).raw(b"bye\xff\x00A\xc3\xfe");
    out.push(l(
        "inline-filler-not-ff",
        "bytes after the first 0xff of an inline string are ignored, even non-UTF-8 ones",
        x.frame(FrameKind::Close),
        M::Close(Close {
            code: 1000,
            reason: s("bye"),
        }),
    ));
    let mut x = Body::new();
    x.u64(5).u16(0).raw(&[0xff, 0, 0, 0, 0, 0, 0, 0]);
    out.push(l(
        "inline-empty-zero-filler",
        "an empty inline string is 0xff then anything (here zeros)",
        x.frame(FrameKind::Status),
        M::Status(Status {
            req: 5,
            code: 0,
            message: s(""),
        }),
    ));
    let mut x = Body::new();
    x.u64(1).u8(1).raw(b"t\xff\x01\x02\x03\x04\x05\x06");
    out.push(l(
        "inline-filler-in-option",
        "the filler rule inside Some",
        x.frame(FrameKind::Watch),
        M::Watch(Watch {
            req: 1,
            topic: Some(s("t")),
        }),
    ));
    let mut x = Body::new();
    let elems = x.pos();
    x.raw(b"a\xff\xffjunk\x00")
        .raw(b"bc\xff\x80\x80\x80\x80\x80");
    x.u64(2).vec(elems as isize, 2);
    out.push(l(
        "inline-filler-in-vec-element",
        "the filler rule inside a Vec<String> element",
        x.frame(FrameKind::PeerList),
        M::PeerList(PeerList {
            req: 2,
            peers: vec!["a".into(), "bc".into()],
        }),
    ));

    // None: the bytes of the absent value are ignored.
    let mut x = Body::new();
    x.u64(1).u8(0).raw(&[0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    out.push(l(
        "none-opt-str-junk",
        "bytes after a None tag are ignored, even ones that would be an invalid out-of-line string",
        x.frame(FrameKind::Watch),
        M::Watch(Watch {
            req: 1,
            topic: None,
        }),
    ));
    let mut x = Body::new();
    x.u16(1).u8(1).inline(b"alice");
    x.u8(0)
        .raw(&[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff]);
    x.u8(0).raw(&[0xaa; 8]);
    x.inline(b"peerd-rs");
    out.push(l(
        "none-opt-bytes-junk",
        "bytes after a None tag are ignored, even a pointer far outside the body",
        x.frame(FrameKind::Hello),
        M::Hello(Hello {
            version: 1,
            peer_id: Some(s("alice")),
            credentials: None,
            resume_token: None,
            client: s("peerd-rs"),
        }),
    ));

    // Gaps: bytes no pointer reaches.
    let mut x = Body::new();
    x.raw(&[0xee, 0xee]);
    let t = x.put(&[1, 2, 3]);
    x.u64(1).vec(t as isize, 3);
    out.push(l(
        "gap-before-target",
        "unreferenced bytes at the start of the body",
        x.frame(FrameKind::RpcResponse),
        M::RpcResponse(RpcResponse {
            id: 1,
            result: b(&[1, 2, 3]),
        }),
    ));
    let mut x = Body::new();
    let topic = x.put(b"chat/general");
    x.raw(&[0; 3]);
    let to = x.put(b"carol-the-second");
    x.raw(&[0xff]);
    let payload = x.put(b"psst");
    x.u64(4)
        .ool(12, topic as isize)
        .ool(16, to as isize)
        .vec(payload as isize, 4);
    out.push(l(
        "gap-between-targets",
        "unreferenced bytes between sibling targets",
        x.frame(FrameKind::TopicSend),
        M::TopicSend(TopicSend {
            req: 4,
            topic: s("chat/general"),
            to: s("carol-the-second"),
            payload: b(b"psst"),
        }),
    ));
    let mut x = Body::new();
    let topic = x.put(b"chat/general");
    x.raw(b"junk!");
    x.u64(1).ool(12, topic as isize);
    out.push(l(
        "gap-before-root",
        "unreferenced bytes between the last target and the root",
        x.frame(FrameKind::Join),
        M::Join(Join {
            req: 1,
            topic: s("chat/general"),
        }),
    ));
    let mut x = Body::new();
    x.raw(&[0x11; 2]);
    let long = x.put(b"bbbbbbbbbbbb");
    x.raw(&[0x22; 3]);
    let elems = x.pos();
    x.inline(b"a").ool(12, long as isize);
    x.raw(&[0x33; 4]);
    x.u64(2).vec(elems as isize, 2);
    out.push(l(
        "gaps-in-vec-of-strings",
        "unreferenced bytes before an element's bytes, between them and the element array, and between the array and the root",
        x.frame(FrameKind::PeerList),
        M::PeerList(PeerList { req: 2, peers: vec!["a".into(), "bbbbbbbbbbbb".into()] }),
    ));

    // Empty vectors: any target in the window (end of the previous sibling's target ..= start
    // of the enclosing object) is accepted; writers put it at the end of the previous target.
    let mut x = Body::new();
    x.raw(&[0; 4]);
    x.u64(1).vec(2, 0);
    out.push(l(
        "empty-vec-in-gap",
        "an empty vector pointing into a gap, not at the end of the previous target",
        x.frame(FrameKind::RpcResponse),
        M::RpcResponse(RpcResponse {
            id: 1,
            result: b(&[]),
        }),
    ));
    let mut x = Body::new();
    let name = x.put(b"announcement");
    x.raw(&[0; 3]);
    let root = x.pos();
    x.ool(12, name as isize)
        .u8(0)
        .raw(&[0; 8])
        .vec(root as isize, 0);
    out.push(l(
        "empty-vec-at-root-start",
        "an empty vector pointing exactly at the start of the root (the window's inclusive upper end)",
        x.frame(FrameKind::Event),
        M::Event(Event { name: s("announcement"), peer: None, payload: b(&[]) }),
    ));
    let mut x = Body::new();
    x.raw(&[0; 4]);
    x.u64(1).vec(1, 0);
    out.push(l(
        "empty-vec-of-strings-in-gap",
        "an empty Vec<String> pointing into a gap",
        x.frame(FrameKind::PeerList),
        M::PeerList(PeerList {
            req: 1,
            peers: vec![],
        }),
    ));
    let mut x = Body::new();
    x.raw(&[0; 2]);
    let token = x.put(&[1, 2, 3]);
    x.u16(1).u8(0).raw(&[0; 8]);
    x.u8(1).vec(1, 0);
    x.u8(1).vec(token as isize, 3);
    x.inline(b"x");
    out.push(l(
        "empty-vec-before-sibling",
        "an empty vector inside the gap before the next sibling's target",
        x.frame(FrameKind::Hello),
        M::Hello(Hello {
            version: 1,
            peer_id: None,
            credentials: Some(b(&[])),
            resume_token: Some(b(&[1, 2, 3])),
            client: s("x"),
        }),
    ));
    out
}

fn invalid() -> Vec<Invalid> {
    let bad = |name, note, frame, check| Invalid {
        name,
        note,
        frame,
        code: Code::BadFrame,
        check,
        max_body_len: DEFAULT_MAX_FRAME_LEN,
    };
    let mut out = Vec::new();
    let ping_body = 1u64.to_le_bytes();

    // Header (§2).
    out.push(bad(
        "header-unknown-kind",
        "kind 0x05 is not assigned (0x04 is Refresh since protocol v2)",
        raw_frame(8, 0x05, 0, 0, &ping_body),
        "known frame kind",
    ));
    out.push(bad(
        "header-kind-zero",
        "kind 0x00 is not assigned",
        raw_frame(8, 0x00, 0, 0, &ping_body),
        "known frame kind",
    ));
    out.push(bad(
        "header-flags",
        "flags 0x01 in a Ping",
        raw_frame(8, 0x70, 0x01, 0, &ping_body),
        "flags are zero",
    ));
    out.push(bad(
        "header-reserved",
        "reserved 0x0100 in a Ping",
        raw_frame(8, 0x70, 0, 0x0100, &ping_body),
        "reserved is zero",
    ));
    out.push(Invalid {
        name: "header-too-large",
        note: "a header announcing 1 MiB + 1 to a reader whose limit is 1 MiB: refused from the 8 header bytes alone (the frame is only the header)",
        frame: raw_frame(DEFAULT_MAX_FRAME_LEN + 1, 0x32, 0, 0, &[]),
        code: Code::TooLarge,
        check: "body within the limit",
        max_body_len: DEFAULT_MAX_FRAME_LEN,
    });
    out.push(Invalid {
        name: "header-hello-too-large",
        note: "a Hello of 16 KiB + 1 to a server reading the Hello with its 16 KiB cap (MAX_HELLO_LEN)",
        frame: raw_frame(MAX_HELLO_LEN + 1, 0x01, 0, 0, &[]),
        code: Code::TooLarge,
        check: "body within the limit",
        max_body_len: MAX_HELLO_LEN,
    });

    // The root.
    out.push(bad(
        "empty-body",
        "a zero-length body: no message has an empty root",
        raw_frame(0, 0x70, 0, 0, &[]),
        "root fits in the body",
    ));
    out.push(bad(
        "short-body",
        "a Close body of 9 bytes (the root is 10)",
        raw_frame(
            9,
            0x7f,
            0,
            0,
            &[0xe8, 0x03, b'b', b'y', b'e', 0xff, 0xff, 0xff, 0xff],
        ),
        "root fits in the body",
    ));

    // Scalars.
    let mut x = Body::new();
    x.u64(0).inline(b"chat").u8(2).vec(0, 0);
    out.push(bad(
        "bool-2",
        "Publish.echo = 0x02",
        x.frame(FrameKind::Publish),
        "bool is 0 or 1",
    ));
    let mut x = Body::new();
    x.u64(1).u8(2).inline(b"t");
    out.push(bad(
        "option-tag-2",
        "Watch.topic with tag 0x02",
        x.frame(FrameKind::Watch),
        "option tag is 0 or 1",
    ));
    let mut x = Body::new();
    x.u64(0).inline(b"r").u8(4).u8(1).inline(b"bob").vec(0, 0);
    out.push(bad(
        "signal-kind-4",
        "SignalKind 0x04 (Bye is 0x03)",
        x.frame(FrameKind::Signal),
        "known enum tag",
    ));
    let mut x = Body::new();
    x.u8(0).raw(&[0; 8]).inline(b"a").u8(2);
    out.push(bad(
        "presence-change-2",
        "PresenceChange 0x02",
        x.frame(FrameKind::Presence),
        "known enum tag",
    ));

    // Strings.
    let mut x = Body::new();
    x.u16(1000).raw(b"b\xc3\x28\xff\xff\xff\xff\xff");
    out.push(bad(
        "inline-invalid-utf8",
        "0xc3 0x28 is not UTF-8 (a lead byte without its continuation)",
        x.frame(FrameKind::Close),
        "valid UTF-8",
    ));
    let mut x = Body::new();
    let t = x.put(b"server \xed\xa0\x80 down");
    x.u16(1001).ool(14, t as isize);
    out.push(bad(
        "out-of-line-invalid-utf8",
        "0xed 0xa0 0x80 encodes a UTF-16 surrogate, which UTF-8 forbids",
        x.frame(FrameKind::Close),
        "valid UTF-8",
    ));
    let mut x = Body::new();
    let t = x.put(b"bye");
    x.u16(1000).ool(3, t as isize);
    out.push(bad(
        "out-of-line-3-byte-string",
        "\"bye\" written out of line: a string of at most 8 bytes must be inline",
        x.frame(FrameKind::Close),
        "short strings inline",
    ));
    let mut x = Body::new();
    let t = x.put(b"12345678");
    x.u16(1000).ool(8, t as isize);
    out.push(bad(
        "out-of-line-8-byte-string",
        "an 8-byte string written out of line (the boundary: 8 is still inline)",
        x.frame(FrameKind::Close),
        "short strings inline",
    ));
    let mut x = Body::new();
    x.u16(1000).ool(0, 0);
    out.push(bad(
        "out-of-line-empty-string",
        "the empty string written out of line",
        x.frame(FrameKind::Close),
        "short strings inline",
    ));

    // Pointer targets.
    let mut x = Body::new();
    x.raw(&[1, 2, 3]);
    x.u64(1).vec(-1, 3);
    out.push(bad(
        "target-before-body",
        "RpcResponse.result points one byte before the body",
        x.frame(FrameKind::RpcResponse),
        "target inside the body",
    ));
    let mut x = Body::new();
    x.u64(1).vec(1 << 20, 3);
    out.push(bad(
        "target-after-body",
        "RpcResponse.result points past the end of the body",
        x.frame(FrameKind::RpcResponse),
        "target inside the body",
    ));
    let mut x = Body::new();
    x.raw(&[1, 2, 3]);
    x.u64(1).vec(0, u32::MAX);
    out.push(bad(
        "vec-len-overflow",
        "RpcResponse.result with length 0xffffffff",
        x.frame(FrameKind::RpcResponse),
        "target inside the body",
    ));
    let mut x = Body::new();
    let root = x.pos();
    x.u64(1)
        .raw(b"echo\xff\xff\xff\xff")
        .u8(0)
        .raw(&[0; 8])
        .u32(0)
        .vec(root as isize, 8);
    out.push(bad("target-in-root-before-field", "RpcRequest.params (8 bytes) points at the root start, before the params field itself: inside the root, not before it", x.frame(FrameKind::RpcRequest), "target before the enclosing object"));
    let mut x = Body::new();
    let t = x.put(b"server shutting dow");
    x.u16(4193).ool(20, t as isize);
    out.push(bad("target-overlaps-root", "a 20-byte reason whose last byte is the root's first (code 4193 = 0x1061, so that byte is 'a' and the text is still UTF-8)", x.frame(FrameKind::Close), "target before the enclosing object"));
    let mut x = Body::new();
    x.u64(1).vec(8, 0);
    out.push(bad(
        "empty-vec-own-position",
        "an empty RpcResponse.result pointing at itself (offset 0): past the root start",
        x.frame(FrameKind::RpcResponse),
        "target before the enclosing object",
    ));
    let mut x = Body::new();
    let name = x.put(b"announcement");
    x.ool(12, name as isize).u8(0).raw(&[0; 8]).vec(5, 0);
    out.push(bad("empty-vec-inside-previous-target", "an empty Event.payload pointing into the bytes of Event.name, the previous sibling's target", x.frame(FrameKind::Event), "targets in order"));
    let mut x = Body::new();
    let to = x.put(b"carol-the-second");
    let topic = x.put(b"chat/general");
    let payload = x.put(b"psst");
    x.u64(4)
        .ool(12, topic as isize)
        .ool(16, to as isize)
        .vec(payload as isize, 4);
    out.push(bad(
        "targets-out-of-order",
        "TopicSend.to's bytes placed before TopicSend.topic's",
        x.frame(FrameKind::TopicSend),
        "targets in order",
    ));
    let mut x = Body::new();
    let t = x.put(b"chat/general");
    x.u64(4)
        .ool(12, t as isize)
        .ool(12, t as isize)
        .vec((t + 12) as isize, 0);
    out.push(bad("targets-shared", "TopicSend.topic and TopicSend.to pointing at the same bytes (sharing is not allowed: targets must not overlap)", x.frame(FrameKind::TopicSend), "targets in order"));
    let mut x = Body::new();
    let elems = x.pos();
    x.inline(b"a").ool(12, 0);
    x.u64(2).vec(elems as isize, 2);
    out.push(bad(
        "element-target-in-array",
        "a PeerList element's out-of-line bytes inside the element array itself",
        x.frame(FrameKind::PeerList),
        "target before the enclosing object",
    ));
    let mut x = Body::new();
    let elem_text = x.put(b"a-much-longer-peer-id");
    let topic = x.put(b"chat/general");
    let elems = x.pos();
    x.ool(21, elem_text as isize);
    x.u8(1).ool(12, topic as isize).vec(elems as isize, 1);
    out.push(bad("element-target-before-previous-target", "a PresenceSnapshot element's bytes placed before the topic's bytes: the elements' window starts at the end of the previous sibling's target", x.frame(FrameKind::PresenceSnapshot), "targets in order"));
    out
}

// ---- files ----

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/wire")
}

fn bless() -> bool {
    std::env::var_os("PEERD_BLESS").is_some_and(|v| v == "1")
}

fn file(entries: Vec<J>) -> String {
    let top = J::Obj(vec![
        ("protocol", J::Num(PROTOCOL_VERSION.into())),
        ("generated_by", J::Str(GENERATED_BY.into())),
        ("fixtures", J::Arr(entries)),
    ]);
    serde_json::to_string_pretty(&top).unwrap() + "\n"
}

fn frame_of(m: &AnyMsg) -> Vec<u8> {
    m.frame()
}

fn generate() -> Vec<(&'static str, String)> {
    let valid = valid()
        .into_iter()
        .map(|f| {
            J::Obj(vec![
                ("name", J::Str(f.name.into())),
                ("note", J::Str(f.note.into())),
                ("frame", J::Str(hex(&frame_of(&f.msg)))),
                ("message", message_json(&f.msg)),
            ])
        })
        .collect();
    let lenient = lenient()
        .into_iter()
        .map(|f| {
            J::Obj(vec![
                ("name", J::Str(f.name.into())),
                ("note", J::Str(f.note.into())),
                ("frame", J::Str(hex(&f.frame))),
                ("message", message_json(&f.msg)),
                ("canonical", J::Str(hex(&frame_of(&f.msg)))),
            ])
        })
        .collect();
    let invalid = invalid()
        .into_iter()
        .map(|f| {
            J::Obj(vec![
                ("name", J::Str(f.name.into())),
                ("note", J::Str(f.note.into())),
                ("frame", J::Str(hex(&f.frame))),
                ("code", J::Num(f.code.as_u16().into())),
                ("check", J::Str(f.check.into())),
                ("max_body_len", J::Num(f.max_body_len.into())),
            ])
        })
        .collect();
    vec![
        ("valid.json", file(valid)),
        ("lenient.json", file(lenient)),
        ("invalid.json", file(invalid)),
    ]
}

/// A committed file's fixtures, parsed. Under `PEERD_BLESS=1` the generated text is used,
/// so the checks below never read a file another test is rewriting.
fn committed(name: &str) -> Vec<serde_json::Value> {
    let text = if bless() {
        generate().into_iter().find(|(n, _)| *n == name).unwrap().1
    } else {
        let path = dir().join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with {BLESS_HINT}", path.display()))
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["protocol"], PROTOCOL_VERSION);
    assert_eq!(v["generated_by"], GENERATED_BY);
    v["fixtures"].as_array().unwrap().clone()
}

fn str_field<'a>(f: &'a serde_json::Value, key: &str) -> &'a str {
    f[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no string {key}", f["name"]))
}

/// Decode one whole frame the way a receiver does (header, limit, validated access).
fn decode_whole(frame: &[u8], max_body_len: u32) -> Result<AnyMsg, WireError> {
    match split_frame(frame, max_body_len)? {
        Some((raw, n)) => {
            assert_eq!(n, frame.len(), "a fixture frame is exactly one frame");
            Ok(AnyMsg::from_frame(raw.decode()?))
        }
        None => panic!("a fixture frame is complete"),
    }
}

fn json_of(m: &AnyMsg) -> serde_json::Value {
    serde_json::to_value(message_json(m)).unwrap()
}

#[test]
fn fixtures_are_current() {
    let dir = dir();
    if bless() {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, text) in generate() {
        let path = dir.join(name);
        if bless() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with {BLESS_HINT}", path.display()));
        assert!(
            on_disk == text,
            "fixtures/wire/{name} differs from what codec/tests/fixtures.rs generates; \
             if the change is intended, regenerate with {BLESS_HINT} and commit the result"
        );
    }
}

#[test]
fn valid_fixtures_decode_to_their_message_and_reencode_byte_for_byte() {
    for f in committed("valid.json") {
        let name = str_field(&f, "name");
        let frame = unhex(str_field(&f, "frame"));
        let msg = decode_whole(&frame, DEFAULT_MAX_FRAME_LEN)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        assert_eq!(json_of(&msg), f["message"], "{name}");
        assert_eq!(frame_of(&msg), frame, "{name}: re-encoding differs");
    }
}

#[test]
fn lenient_fixtures_decode_to_their_message() {
    for f in committed("lenient.json") {
        let name = str_field(&f, "name");
        let frame = unhex(str_field(&f, "frame"));
        let canonical = unhex(str_field(&f, "canonical"));
        assert_ne!(frame, canonical, "{name}: a lenient frame is not canonical");
        let msg = decode_whole(&frame, DEFAULT_MAX_FRAME_LEN)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        assert_eq!(json_of(&msg), f["message"], "{name}");
        assert_eq!(frame_of(&msg), canonical, "{name}: canonical re-encoding");
        let again = decode_whole(&canonical, DEFAULT_MAX_FRAME_LEN).unwrap();
        assert_eq!(again, msg, "{name}: canonical decodes to the same message");
    }
}

#[test]
fn invalid_fixtures_are_refused_with_their_code_naming_their_check() {
    for f in committed("invalid.json") {
        let name = str_field(&f, "name");
        let frame = unhex(str_field(&f, "frame"));
        let max = f["max_body_len"].as_u64().unwrap() as u32;
        let code = f["code"].as_u64().unwrap();
        let err = match decode_whole(&frame, max) {
            Ok(m) => panic!("{name}: accepted as {m:?}"),
            Err(e) => e,
        };
        assert_eq!(u64::from(err.code().as_u16()), code, "{name}: {err}");
        // The Rust codec names the same rule: its error (and with it the reason of the
        // server's Close or Reject) says which check failed.
        assert_eq!(err.check(), f["check"].as_str(), "{name}: {err}");
    }
}

#[test]
fn fixtures_cover_the_protocol() {
    let valid = valid();
    let kinds: HashSet<FrameKind> = valid.iter().map(|f| f.msg.kind()).collect();
    for k in FrameKind::ALL {
        assert!(kinds.contains(k), "no valid fixture for {k:?}");
    }
    let signal_kinds: HashSet<_> = valid
        .iter()
        .filter_map(|f| match &f.msg {
            AnyMsg::Signal(s) => Some(s.kind as u8),
            _ => None,
        })
        .collect();
    assert_eq!(signal_kinds.len(), 4, "every SignalKind");
    let changes: HashSet<_> = valid
        .iter()
        .filter_map(|f| match &f.msg {
            AnyMsg::Presence(p) => Some(p.change as u8),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 2, "both PresenceChanges");

    let by_name = |n: &str| valid.iter().find(|f| f.name == n).map(|f| &f.msg);
    assert!(matches!(by_name("publish-64b"), Some(AnyMsg::Publish(p)) if p.payload.len() == 64));
    assert!(
        matches!(by_name("rpc-request-1k"), Some(AnyMsg::RpcRequest(r)) if r.params.len() == 1024)
    );

    let mut names = HashSet::new();
    let lenient = lenient();
    let invalid = invalid();
    for n in valid
        .iter()
        .map(|f| f.name)
        .chain(lenient.iter().map(|f| f.name))
        .chain(invalid.iter().map(|f| f.name))
    {
        assert!(names.insert(n), "duplicate fixture name {n}");
    }
}
