//! The server's connection and dispatch logic under frame sequences from several peers.
//!
//! One real server (`peerd_server::listen`, 2 shards, short timers, small limits) runs in the
//! fuzzing process for its whole life. Each input is a script: operations by up to four
//! peers, each on its own TCP connection: connect (with or without a Hello), send a valid
//! frame built from the input, send it split at an input-chosen offset, send raw bytes or a
//! frame with a raw body, repeat a frame, read, answer the server's calls and pings,
//! half-close, close, reset, sleep. `docs/FUZZING.md` lists the operations byte by byte.
//!
//! What counts as a crash:
//! - any panic in the process, server shards included (libfuzzer-sys aborts on every panic,
//!   whatever thread it is on);
//! - a frame from the server that does not decode, a frame after the server's Close or
//!   Reject, a second Welcome, or no answer to a Hello within [`BOUND`];
//! - after every socket of the input is closed: connections, directory entries or topics
//!   still held after [`TEARDOWN`];
//! - then a control peer on *each* shard must complete the handshake and a Ping/Pong round
//!   trip within [`BOUND`] (a shard that died or hangs fails this; see [`alive`]).
//!
//! Every socket operation is bounded (read deadlines, write timeouts) and the time an input
//! may spend reading, sleeping and repeating is capped, so no input can hang the run.

#![no_main]

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerd_codec::codec::decode_bytes;
use peerd_codec::handshake::hello_frame;
use peerd_codec::{self as codec, Code, Frame, PresenceChange, SignalKind, PROTOCOL_VERSION};
use peerd_server::{listen, ListenOptions, PeerServer, RpcFailure};
use peerd_testkit::{frame, hello, RawPeer, Recv};

/// Shards of the server under test; the liveness check reaches every one of them.
const SHARDS: usize = 2;
/// Peers (connections) one input can hold at once.
const SLOTS: usize = 4;
/// Any answer the server owes (to a Hello, to a control peer's Ping) must come within this.
const BOUND: Duration = Duration::from_secs(2);
/// Once every socket of an input is closed, the server must have torn everything down
/// within this. Generous: the machine may be busy building or running other fuzzers.
const TEARDOWN: Duration = Duration::from_secs(5);
/// Time one input may spend in READ and SLEEP operations together.
const WAIT_BUDGET: Duration = Duration::from_millis(400);
/// Bytes one input may send through REPEAT.
const REPEAT_BUDGET: usize = 2 << 20;

/// Declared peer ids the scripts use: few, so that ids collide and take each other over.
const IDS: [&str; SLOTS] = ["p0", "p1", "p2", "p3"];
/// Method and event names: the server's handlers, a per-peer handler, and names nobody
/// handles.
const NAMES: [&str; 9] = [
    "echo", "later", "back", "kick", "fail", "emit", "mine", "nope", "ev",
];
/// Topics and rooms.
const TOPICS: [&str; 4] = ["t0", "t1", "t2", "room"];

/// `PEERD_FUZZ_TRACE=1`: print every operation and every frame received (to read what an
/// input does, e.g. a crash: `cargo fuzz run server <file>`).
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PEERD_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($t:tt)*) => {
        if tracing() {
            eprintln!($($t)*);
        }
    };
}

/// The server, started on the first input and shared by all.
fn server() -> &'static PeerServer {
    static SERVER: OnceLock<PeerServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        // A Rust `main` ignores SIGPIPE before it starts; libFuzzer's C++ `main` does not.
        // Without this, a write to a socket the peer has reset would kill the process:
        // a property of this harness, not of the server.
        // SAFETY: setting a signal disposition to SIG_IGN, before any thread of ours runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let mut o = ListenOptions::new("127.0.0.1:0")
            .unwrap()
            .shards(SHARDS)
            // Answered inline.
            .handle("echo", |_p, r| async move { Ok(r.params) })
            // Answered later, from a task: the connection may be gone by then.
            .handle("later", |_p, r| async move {
                let ms = r.params.first().copied().unwrap_or(1) % 64;
                glommio::timer::sleep(Duration::from_millis(ms.into())).await;
                Ok(r.params)
            })
            // The server calls the caller back; the script answers (ANSWER) or not.
            .handle("back", |p, r| async move {
                p.rpc()
                    .call_with_timeout("back", &r.params, Duration::from_millis(50))
                    .await
                    .map_err(RpcFailure::from)
            })
            // The server closes the caller while answering it.
            .handle("kick", |p, _r| async move {
                p.disconnect();
                Ok(Bytes::new())
            })
            .handle("fail", |_p, r| async move {
                Err(RpcFailure::new(4000, format!("{} bytes", r.params.len())))
            })
            .handle("emit", |p, r| async move {
                p.events()
                    .emit("ev", &r.params)
                    .map_err(|e| RpcFailure::new(4001, e.to_string()))?;
                Ok(Bytes::new())
            })
            .on_connection(|p| {
                p.rpc().handle("mine", |r| async move { Ok(r.params) });
                p.events().on("ev", |_e| {});
            })
            .on_presence(|_n| {})
            // Credentials starting with 'x' are refused: the Unauthorized path.
            .authenticate(|_id, cred| match cred {
                Some([b'x', ..]) => Err("refused by the fuzz authenticator".into()),
                _ => Ok(()),
            });
        o.pin = false;
        // Short timers, so that scripts that SLEEP reach them.
        // (The handshake timeout is longer: the control peers must never hit it, even when
        // a busy machine stalls a shard for a while.)
        o.handshake_timeout = Duration::from_millis(200);
        o.heartbeat = Duration::from_millis(50);
        o.default_call_timeout = Duration::from_millis(50);
        o.close_linger = Duration::from_millis(50);
        // Small limits, so that scripts reach them.
        let l = &mut o.limits;
        l.max_frame_len = 4096;
        l.max_connections = 8;
        l.outbound_queue_bytes = 32 << 10;
        l.max_inflight_per_conn = 4;
        l.max_topics_per_peer = 3;
        l.max_members_per_topic = 3;
        l.max_topic_len = 16;
        listen(o).expect("the fuzz server must start (io_uring enabled? `ulimit -l`?)")
    })
}

/// The input, read front to back. Past the end every byte reads as 0.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Mostly small (ids that collide), sometimes any u64.
    fn id(&mut self) -> u64 {
        match self.u8() {
            0xff => {
                let mut b = [0u8; 8];
                let t = self.take(8);
                b[..t.len()].copy_from_slice(t);
                u64::from_le_bytes(b)
            }
            b => (b % 16) as u64,
        }
    }

    /// One of `dict` (high bit clear) or up to 127 bytes of the input as text.
    fn text(&mut self, dict: &[&str]) -> String {
        let b = self.u8();
        if b & 0x80 == 0 {
            dict[b as usize % dict.len()].to_string()
        } else {
            String::from_utf8_lossy(self.take((b & 0x7f) as usize)).into_owned()
        }
    }

    /// Up to 127 bytes of the input, or (high bit set) one byte repeated up to 5080 times:
    /// frames above the server's 4096-byte limit, and floods toward slow consumers.
    fn payload(&mut self) -> Vec<u8> {
        let b = self.u8();
        if b & 0x80 == 0 {
            self.take(b as usize).to_vec()
        } else {
            vec![self.u8(); (b & 0x7f) as usize * 40]
        }
    }

    fn flag(&mut self) -> bool {
        self.u8() & 1 == 1
    }
}

/// One peer of the script.
struct Slot {
    peer: RawPeer,
    /// The rest of a frame sent split (SEND_SPLIT), written before the next bytes.
    pending: Vec<u8>,
    /// The last frame built for this peer, for REPEAT.
    last: Bytes,
    /// The peer id the server's Welcome gave.
    peer_id: Option<String>,
    welcomed: bool,
    /// The server sent Close or Reject: nothing may follow.
    closed_by_server: bool,
    /// The stream ended (EOF or reset): nothing more to read.
    ended: bool,
    /// The id of the last RpcRequest the server sent us, and the last Ping's nonce.
    call: Option<u64>,
    ping: Option<u64>,
}

impl Slot {
    /// Write `pending` then `data`. Errors are ignored: the server may have closed on us.
    fn write(&mut self, data: &[u8]) {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            self.peer.send_raw(&p);
        }
        self.peer.send_raw(data);
    }

    /// Check one frame from the server and remember what later operations need.
    fn received(&mut self, b: &Bytes, tokens: &mut HashMap<String, Vec<u8>>) {
        let f = decode_bytes(b)
            .unwrap_or_else(|e| panic!("the server sent an invalid frame: {e} ({b:02x?})"));
        match f {
            Frame::Status(x) => trace!("    <- Status req {} code {}", x.req, x.code),
            Frame::Close(x) => trace!("    <- Close {} {:?}", x.code, x.reason.as_str()),
            Frame::Reject(x) => trace!("    <- Reject {} {:?}", x.code, x.reason.as_str()),
            Frame::RpcError(x) => trace!("    <- RpcError id {} code {}", x.id, x.code),
            _ => trace!("    <- {:?} ({} bytes)", f.kind(), b.len()),
        }
        assert!(
            !self.closed_by_server,
            "the server sent {:?} after its Close/Reject",
            f.kind()
        );
        match f {
            Frame::Welcome(w) => {
                assert!(!self.welcomed, "a second Welcome on one connection");
                self.welcomed = true;
                let id = w.peer_id.as_str().to_string();
                tokens.insert(id.clone(), w.resume_token.as_slice().to_vec());
                self.peer_id = Some(id);
            }
            Frame::Reject(_) | Frame::Close(_) => self.closed_by_server = true,
            Frame::RpcRequest(r) => self.call = Some(r.id.to_native()),
            Frame::Ping(p) => self.ping = Some(p.nonce.to_native()),
            _ => {}
        }
    }

    /// Read and check frames until `deadline`, 1 ms of quiet after a frame, the end of the
    /// stream, or 256 frames.
    fn read_until(&mut self, mut deadline: Instant, tokens: &mut HashMap<String, Vec<u8>>) {
        for _ in 0..256 {
            if self.ended {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.peer.recv_within(left.max(Duration::from_millis(1))) {
                Recv::Frame(b) => {
                    self.received(&b, tokens);
                    deadline = deadline.min(Instant::now() + Duration::from_millis(1));
                }
                end @ (Recv::Eof | Recv::Reset) => {
                    trace!("    <- {end:?}");
                    self.ended = true
                }
                Recv::Timeout => return,
            }
        }
    }
}

/// One input being played.
struct Script<'a> {
    input: Input<'a>,
    addr: SocketAddr,
    slots: [Option<Slot>; SLOTS],
    /// Resume tokens from every Welcome of this input, by peer id.
    tokens: HashMap<String, Vec<u8>>,
    waited: Duration,
    repeated: usize,
}

impl Script<'_> {
    /// An optional peer reference: a declared id, the id some slot was given (assigned
    /// numeric ids included), or text from the input.
    fn peer_ref(&mut self) -> Option<String> {
        let b = self.input.u8();
        match b % 4 {
            0 => None,
            1 => Some(IDS[(b >> 2) as usize % SLOTS].to_string()),
            2 => Some(
                self.slots[(b >> 2) as usize % SLOTS]
                    .as_ref()
                    .and_then(|s| s.peer_id.clone())
                    .unwrap_or_else(|| IDS[0].to_string()),
            ),
            _ => Some(self.input.text(&IDS)),
        }
    }

    fn opt_topic(&mut self) -> Option<String> {
        if self.input.flag() {
            Some(self.input.text(&TOPICS))
        } else {
            None
        }
    }

    fn opt_bytes(&mut self) -> Option<Vec<u8>> {
        if self.input.flag() {
            Some(self.input.payload())
        } else {
            None
        }
    }

    /// A Hello with every field from the input.
    fn fuzz_hello(&mut self) -> codec::Hello<'static> {
        let version = if self.input.flag() {
            PROTOCOL_VERSION
        } else {
            self.input.u16()
        };
        codec::Hello {
            version,
            peer_id: self.peer_ref().map(Cow::Owned),
            credentials: self.opt_bytes().map(Cow::Owned),
            resume_token: self.opt_bytes().map(Cow::Owned),
            client: Cow::Owned(self.input.text(&["fuzz"])),
        }
    }

    /// A valid frame (as the codec encodes it, no size limit) of a kind and with fields
    /// from the input: every frame a client may send, a Hello after the handshake, and the
    /// kinds only servers may send.
    fn build_frame(&mut self) -> Bytes {
        let i = &mut self.input;
        match i.u8() % 18 {
            0 => {
                let (id, method) = (i.id(), i.text(&NAMES));
                let peer = self.peer_ref().map(Cow::Owned);
                let i = &mut self.input;
                frame(&codec::RpcRequest {
                    id,
                    method: method.into(),
                    peer,
                    timeout_ms: i.u8() as u32 * 4,
                    params: i.payload().into(),
                })
            }
            1 => frame(&codec::RpcResponse {
                id: i.id(),
                result: i.payload().into(),
            }),
            2 => frame(&codec::RpcError {
                id: i.id(),
                code: i.u16(),
                message: i.text(&["no"]).into(),
            }),
            k @ (3 | 4) => {
                let name = i.text(&NAMES);
                let peer = self.peer_ref().map(Cow::Owned);
                let payload = self.input.payload().into();
                if k == 3 {
                    frame(&codec::Event {
                        name: name.into(),
                        peer,
                        payload,
                    })
                } else {
                    frame(&codec::Broadcast {
                        name: name.into(),
                        peer,
                        payload,
                    })
                }
            }
            5 => frame(&codec::Join {
                req: i.id(),
                topic: i.text(&TOPICS).into(),
            }),
            6 => frame(&codec::Leave {
                req: i.id(),
                topic: i.text(&TOPICS).into(),
            }),
            7 => frame(&codec::Publish {
                req: i.id(),
                topic: i.text(&TOPICS).into(),
                echo: i.flag(),
                payload: i.payload().into(),
            }),
            8 => {
                let (req, topic) = (i.id(), i.text(&TOPICS));
                let to = self.peer_ref().unwrap_or_default();
                frame(&codec::TopicSend {
                    req,
                    topic: topic.into(),
                    to: to.into(),
                    payload: self.input.payload().into(),
                })
            }
            k @ (9..=11) => {
                let req = i.id();
                let topic = self.opt_topic().map(Cow::Owned);
                match k {
                    9 => frame(&codec::Watch { req, topic }),
                    10 => frame(&codec::Unwatch { req, topic }),
                    _ => frame(&codec::ListPeers { req, topic }),
                }
            }
            12 => {
                let (req, room) = (i.id(), i.text(&TOPICS));
                let kind = [
                    SignalKind::Offer,
                    SignalKind::Answer,
                    SignalKind::Candidate,
                    SignalKind::Bye,
                ][i.u8() as usize % 4];
                let peer = self.peer_ref().map(Cow::Owned);
                frame(&codec::Signal {
                    req,
                    room: room.into(),
                    kind,
                    peer,
                    payload: self.input.payload().into(),
                })
            }
            13 => frame(&codec::Ping { nonce: i.id() }),
            14 => frame(&codec::Pong { nonce: i.id() }),
            15 => frame(&codec::Close {
                code: i.u16(),
                reason: i.text(&["bye"]).into(),
            }),
            16 => {
                let h = self.fuzz_hello();
                frame(&h)
            }
            _ => self.server_only_frame(),
        }
    }

    /// A frame of a kind only servers send (the server must refuse it and close).
    fn server_only_frame(&mut self) -> Bytes {
        let i = &mut self.input;
        let topic = Some(Cow::Borrowed("t0"));
        match i.u8() % 7 {
            0 => frame(&codec::Welcome {
                version: PROTOCOL_VERSION,
                peer_id: "p0".into(),
                session_id: i.id(),
                resume_token: i.payload().into(),
                limits: codec::Limits {
                    max_frame_len: 1,
                    max_topics_per_peer: 1,
                    max_members_per_topic: 1,
                    max_topic_len: 1,
                    outbound_queue_bytes: 1,
                },
                heartbeat_ms: 1,
            }),
            1 => frame(&codec::Reject {
                code: i.u16(),
                reason: "no".into(),
            }),
            2 => frame(&codec::TopicMessage {
                topic: "t0".into(),
                from: "p0".into(),
                direct: i.flag(),
                payload: i.payload().into(),
            }),
            3 => frame(&codec::PresenceSnapshot {
                topic,
                peers: vec!["p0".into()],
            }),
            4 => frame(&codec::Presence {
                topic,
                peer: "p0".into(),
                change: PresenceChange::Join,
            }),
            5 => frame(&codec::PeerList {
                req: i.id(),
                peers: vec![],
            }),
            _ => frame(&codec::Status {
                req: i.id(),
                code: i.u16(),
                message: "".into(),
            }),
        }
    }

    /// CONNECT: a new connection in slot `n` (closing the one there), then, depending on the
    /// next byte (bits 0-2 the kind, bits 3-4 the declared id), no Hello, or a Hello
    /// (declared id, assigned id, takeover with the id's last resume token, or every field
    /// from the input) and the server's answer to it.
    fn connect(&mut self, n: usize) {
        let how = self.input.u8();
        let hello = match how & 7 {
            0 => None,
            1 => Some(hello(Some(IDS[(how >> 3) as usize % SLOTS]), None)),
            2 => Some(hello(None, None)),
            3 => {
                // The id's last token if this input saw one, else bytes from the input
                // (read either way, so the input's meaning does not depend on state).
                let id = IDS[(how >> 3) as usize % SLOTS];
                let fallback = self.input.payload();
                let token = self.tokens.get(id).cloned().unwrap_or(fallback);
                Some(hello(Some(id), Some(&token)))
            }
            _ => Some(self.fuzz_hello()),
        };
        self.slots[n] = None;
        let peer = RawPeer::tcp(self.addr);
        // Bound every write; a small receive buffer makes the server's queue toward a
        // peer that does not read fill up sooner (slow consumers).
        peer.s.set_write_timeout(Some(BOUND)).unwrap();
        let _ = socket2::SockRef::from(&peer.s).set_recv_buffer_size(4096);
        let mut slot = Slot {
            peer,
            pending: Vec::new(),
            last: Bytes::new(),
            peer_id: None,
            welcomed: false,
            closed_by_server: false,
            ended: false,
            call: None,
            ping: None,
        };
        if let Some(h) = hello {
            // hello_frame refuses a Hello above the handshake cap; send it anyway.
            let f = hello_frame(&h).unwrap_or_else(|_| frame(&h));
            trace!(
                "    -> Hello {:?} (token: {})",
                h.peer_id,
                h.resume_token.is_some()
            );
            slot.write(&f);
            slot.last = f;
            match slot.peer.recv_within(BOUND) {
                Recv::Frame(b) => {
                    let kind = decode_bytes(&b).map(|f| f.kind());
                    slot.received(&b, &mut self.tokens);
                    assert!(
                        slot.welcomed || slot.closed_by_server,
                        "the server answered a Hello with {kind:?}"
                    );
                }
                end @ (Recv::Eof | Recv::Reset) => {
                    trace!("    <- {end:?}");
                    slot.ended = true
                }
                Recv::Timeout => panic!("no answer to a Hello within {BOUND:?}"),
            }
        }
        self.slots[n] = Some(slot);
    }

    /// Play one operation. The operation byte: bits 0-1 the slot, bits 2-5 the operation
    /// (bits 6-7 are ignored). SEND also takes the three spare values 13-15: it is the
    /// operation that reaches dispatch.
    /// Arguments are read from the input whether or not the slot holds a connection, so
    /// an input means the same whatever state it meets.
    fn step(&mut self) {
        let b = self.input.u8();
        let n = (b & 3) as usize;
        const OPS: [&str; 16] = [
            "CONNECT",
            "SEND",
            "SEND_SPLIT",
            "FLUSH",
            "RAW",
            "RAW_FRAME",
            "REPEAT",
            "READ",
            "ANSWER",
            "SHUTDOWN",
            "CLOSE",
            "RESET",
            "SLEEP",
            "SEND",
            "SEND",
            "SEND",
        ];
        let open = if self.slots[n].is_some() {
            ""
        } else {
            " (no connection)"
        };
        trace!("peer {n}: {}{open}", OPS[((b >> 2) % 16) as usize]);
        match (b >> 2) % 16 {
            // CONNECT
            0 => self.connect(n),
            // SEND: a valid frame, whole.
            1 | 13.. => {
                let f = self.build_frame();
                if let Some(s) = &mut self.slots[n] {
                    s.write(&f);
                    s.last = f;
                }
            }
            // SEND_SPLIT: a valid frame cut at an offset from the input; the rest waits in
            // `pending` for the next write of this slot (FLUSH, or any send), or for a close.
            2 => {
                let f = self.build_frame();
                let cut = self.input.u16() as usize % f.len().max(1);
                if let Some(s) = &mut self.slots[n] {
                    s.write(&f[..cut]);
                    s.pending = f[cut..].to_vec();
                    s.last = f;
                }
            }
            // FLUSH: write what SEND_SPLIT held back.
            3 => {
                if let Some(s) = &mut self.slots[n] {
                    s.write(&[]);
                }
            }
            // RAW: up to 63 bytes of the input as they are.
            4 => {
                let len = (self.input.u8() % 64) as usize;
                let raw = self.input.take(len);
                if let Some(s) = &mut self.slots[n] {
                    s.write(raw);
                }
            }
            // RAW_FRAME: a header with any kind byte and a body of input bytes; the length
            // is the body's (or, with the flag, any u32 from the input).
            5 => {
                let kind = self.input.u8();
                let lie = self.input.flag();
                let len = (self.input.u8() % 128) as usize;
                let body = self.input.take(len);
                let declared = if lie {
                    u32::from_le_bytes([self.input.u8(), self.input.u8(), 0, self.input.u8()])
                } else {
                    body.len() as u32
                };
                let mut f = Vec::with_capacity(8 + body.len());
                f.extend_from_slice(&declared.to_le_bytes());
                f.extend_from_slice(&[kind, 0, 0, 0]);
                f.extend_from_slice(body);
                if let Some(s) = &mut self.slots[n] {
                    s.write(&f);
                    s.last = f.into();
                }
            }
            // REPEAT: the slot's last frame again, 2 to 512 times in one write.
            6 => {
                let times = (self.input.u8() as usize + 1) * 2;
                if let Some(s) = &mut self.slots[n] {
                    let bytes = (s.last.len() * times).min(REPEAT_BUDGET - self.repeated);
                    let times = bytes / s.last.len().max(1);
                    self.repeated += s.last.len() * times;
                    let all = s.last.repeat(times);
                    s.write(&all);
                }
            }
            // READ: read and check frames for up to 1 to 8 ms (1 ms once the wait budget is
            // spent), and no longer than 1 ms after the last frame.
            7 => {
                let mut t =
                    Duration::from_millis([1, 1, 2, 2, 3, 4, 6, 8][self.input.u8() as usize % 8]);
                if self.waited >= WAIT_BUDGET {
                    t = Duration::from_millis(1);
                }
                if let Some(s) = &mut self.slots[n] {
                    let start = Instant::now();
                    s.read_until(start + t, &mut self.tokens);
                    self.waited += start.elapsed();
                }
            }
            // ANSWER: the last call the server sent us (RpcResponse or RpcError), or its
            // last Ping (Pong).
            8 => {
                let what = self.input.u8();
                let payload = self.input.payload();
                if let Some(s) = &mut self.slots[n] {
                    let f = match what % 3 {
                        0 => frame(&codec::RpcResponse {
                            id: s.call.unwrap_or(what as u64),
                            result: payload.into(),
                        }),
                        1 => frame(&codec::RpcError {
                            id: s.call.unwrap_or(what as u64),
                            code: 4000 + what as u16,
                            message: "fuzz".into(),
                        }),
                        _ => frame(&codec::Pong {
                            nonce: s.ping.unwrap_or(what as u64),
                        }),
                    };
                    s.write(&f);
                    s.last = f;
                }
            }
            // SHUTDOWN: half-close (FIN); the slot can still read.
            9 => {
                if let Some(s) = &mut self.slots[n] {
                    let _ = s.peer.s.shutdown(Shutdown::Write);
                }
            }
            // CLOSE: close the socket (FIN, or RST if unread data is left in it).
            10 => self.slots[n] = None,
            // RESET: SO_LINGER 0 and close: RST.
            11 => {
                if let Some(s) = self.slots[n].take() {
                    let _ = socket2::SockRef::from(&s.peer.s).set_linger(Some(Duration::ZERO));
                }
            }
            // 12, SLEEP: 0 to 80 ms (timers: handshake timeout, heartbeat, call deadlines).
            _ => {
                let ms = [0, 1, 2, 5, 10, 20, 40, 80][self.input.u8() as usize % 8];
                let t = Duration::from_millis(ms);
                if self.waited < WAIT_BUDGET {
                    std::thread::sleep(t);
                    self.waited += t;
                }
            }
        }
    }
}

/// Wait until the server holds no connection, directory entry or topic.
fn settled(srv: &PeerServer, after: &str) {
    let deadline = Instant::now() + TEARDOWN;
    loop {
        let s = srv.stats();
        if s.connections == 0 && s.peers == 0 && s.topics == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{TEARDOWN:?} after {after}, the server still holds {s:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A connection that sent the Hello of a server-assigned id.
fn control_peer(addr: SocketAddr) -> RawPeer {
    let mut p = RawPeer::tcp(addr);
    p.send_raw(&hello_frame(&hello(None, None)).unwrap());
    p
}

/// The answer to a control peer's Hello: its peer id, or `None` if the server refused it as
/// Overloaded. Anything else, or nothing within `deadline`, fails the input.
fn welcomed(p: &mut RawPeer, deadline: Instant) -> Option<String> {
    match p.recv_within(deadline.saturating_duration_since(Instant::now())) {
        Recv::Frame(b) => match decode_bytes(&b) {
            Ok(Frame::Welcome(w)) => Some(w.peer_id.as_str().to_string()),
            Ok(Frame::Reject(r)) if r.code == Code::Overloaded.as_u16() => None,
            Ok(Frame::Reject(r)) => panic!(
                "control peer refused: Reject {} {:?}",
                r.code,
                r.reason.as_str()
            ),
            other => panic!(
                "control peer: expected Welcome, got {:?}",
                other.map(|f| f.kind())
            ),
        },
        other => panic!("control peer: no Welcome within {BOUND:?} ({other:?})"),
    }
}

/// A control peer on each shard: handshake and a Ping/Pong round trip, each within
/// [`BOUND`]. A new connection lands on a shard by the kernel's SO_REUSEPORT hash, so
/// control peers connect in batches of four (in parallel, to keep this cheap) until every
/// shard has been seen.
///
/// A control peer refused as Overloaded tries again until [`TEARDOWN`] has passed:
/// connections of the input that were still in the kernel's accept queue when [`settled`]
/// looked are accepted (and counted against `max_connections`) only now. A server that is
/// still full after that has lost track of its connections, and fails the input.
fn alive(srv: &PeerServer, addr: SocketAddr) {
    let mut seen = [false; SHARDS];
    let full_until = Instant::now() + TEARDOWN;
    for batch in 0..16 {
        let mut peers: Vec<RawPeer> = (0..4).map(|_| control_peer(addr)).collect();
        let deadline = Instant::now() + BOUND;
        for (i, p) in peers.iter_mut().enumerate() {
            let id = loop {
                if let Some(id) = welcomed(p, deadline.max(Instant::now() + BOUND)) {
                    break id;
                }
                assert!(
                    Instant::now() < full_until,
                    "the server still refuses connections as Overloaded {TEARDOWN:?} after \
                     every socket of the input closed: {:?}",
                    srv.stats()
                );
                trace!("    control peer refused as Overloaded; again");
                std::thread::sleep(Duration::from_millis(1));
                *p = control_peer(addr);
            };
            let deadline = Instant::now() + BOUND;
            let shard = loop {
                if let Some(c) = srv.connections().into_iter().find(|c| c.peer_id == id) {
                    break c.shard;
                }
                assert!(
                    Instant::now() < deadline,
                    "control peer {id} welcomed but not listed"
                );
                std::thread::sleep(Duration::from_micros(100));
            };
            seen[shard] = true;
            p.send(&codec::Ping {
                nonce: (batch * 4 + i) as u64,
            });
        }
        let deadline = Instant::now() + BOUND;
        for (i, p) in peers.iter_mut().enumerate() {
            let nonce = (batch * 4 + i) as u64;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match p.recv_within(left) {
                    Recv::Frame(b) => match decode_bytes(&b) {
                        Ok(Frame::Pong(x)) if x.nonce.to_native() == nonce => break,
                        Ok(_) => {}
                        Err(e) => panic!("control peer: invalid frame: {e}"),
                    },
                    other => panic!(
                        "control peer {}: no Pong within {BOUND:?} ({other:?})",
                        p.peer_id
                    ),
                }
            }
        }
        if seen.iter().all(|&s| s) {
            return;
        }
    }
    panic!("64 control connections never reached every shard: seen {seen:?}");
}

fuzz_target!(|data: &[u8]| {
    let srv = server();
    let addr = srv.local_addr().expect("a TCP server");
    let mut script = Script {
        input: Input(data),
        addr,
        slots: Default::default(),
        tokens: HashMap::new(),
        waited: Duration::ZERO,
        repeated: 0,
    };
    let start = Instant::now();
    while !script.input.is_empty() {
        script.step();
    }
    let t0 = Instant::now();
    trace!(
        "script: {:?}, of which READ and SLEEP {:?}",
        t0 - start,
        script.waited
    );
    drop(script);
    settled(srv, "the input's sockets closed");
    let t1 = Instant::now();
    alive(srv, addr);
    let t2 = Instant::now();
    settled(srv, "the control peers closed");
    trace!(
        "checks: teardown {:?}, control peers {:?}, their teardown {:?}",
        t1 - t0,
        t2 - t1,
        t2.elapsed()
    );
});
