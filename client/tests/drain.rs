//! The client's side of the drain handshake (PROTOCOL.md §6.10) against a scripted server
//! on a real socket, frame by frame: what the client writes after the notice (its Close,
//! then answers only, with the socket still open), what it does with the server's Close
//! (fail what is left, reconnect at once with its resume token, re-join, then write what
//! was queued, in order), and a final close in the middle of a drain.
//!
//! The real server's drain is exercised end to end in `tests/restart.rs`; here the
//! script decides every frame, so each rule is checked on its own.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerd_client::{CallError, Code, Peer, PeerOptions, ReconnectPolicy, State};
use peerd_codec::codec::decode_bytes;
use peerd_codec::handshake::parse_hello;
use peerd_codec::{
    encode, Close, Encode, Frame, Framer, Limits, RpcRequest, RpcResponse, Status, Welcome,
};

const WAIT: Duration = Duration::from_secs(10);

/// One accepted connection, read frame by frame.
struct Conn {
    sock: TcpStream,
    framer: Framer,
}

/// What the scripted server read from a Hello.
struct Hello {
    peer_id: Option<String>,
    resume_token: Option<Vec<u8>>,
}

impl Conn {
    /// Accept, read the Hello, answer Welcome{version 2, `peer_id`, `token`}.
    fn accept(l: &TcpListener, peer_id: &str, token: &[u8]) -> (Conn, Hello) {
        let (sock, _) = l.accept().expect("accept");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = Conn {
            sock,
            framer: Framer::new(1 << 20),
        };
        let mut buf = Vec::new();
        let hello = loop {
            let mut chunk = [0u8; 4096];
            let n = conn.sock.read(&mut chunk).expect("read Hello");
            assert!(n > 0, "EOF before Hello");
            buf.extend_from_slice(&chunk[..n]);
            if let Some((h, used)) = parse_hello(&buf).expect("a valid Hello") {
                let hello = Hello {
                    peer_id: h.peer_id.map(str::to_string),
                    resume_token: h.resume_token.map(<[u8]>::to_vec),
                };
                conn.framer.extend(&buf[used..]);
                break hello;
            }
        };
        conn.send(&Welcome {
            version: 2,
            peer_id: Cow::Borrowed(peer_id),
            session_id: 1,
            resume_token: Cow::Borrowed(token),
            limits: Limits {
                max_frame_len: 1 << 20,
                max_topics_per_peer: 16,
                max_members_per_topic: 16,
                max_topic_len: 128,
                outbound_queue_bytes: 1 << 20,
            },
            // Long: no heartbeat traffic gets between the frames the script expects.
            heartbeat_ms: 60_000,
        });
        (conn, hello)
    }

    fn send<M: Encode>(&mut self, msg: &M) {
        let mut buf = BytesMut::new();
        encode(msg, &mut buf, u32::MAX).unwrap();
        self.sock.write_all(&buf).expect("write");
    }

    /// The next frame; `None` at EOF.
    fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.framer.next_frame().expect("valid frames") {
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).expect("read (timed out?)");
            if n == 0 {
                return None;
            }
            self.framer.extend(&chunk[..n]);
        }
    }

    /// The next frame, described: kind plus what the script checks.
    fn expect(&mut self) -> Seen {
        let f = self.next().expect("a frame, not EOF");
        match decode_bytes(&f).expect("decodes") {
            Frame::Close(c) => Seen::Close(c.code.to_native()),
            Frame::RpcRequest(r) => Seen::Call(
                r.id.to_native(),
                r.method.as_str().to_string(),
                r.params.to_vec(),
            ),
            Frame::RpcResponse(r) => Seen::Answer(r.id.to_native(), r.result.to_vec()),
            Frame::Event(e) => Seen::Event(e.name.as_str().to_string(), e.payload.to_vec()),
            Frame::Join(j) => Seen::Join(j.req.to_native(), j.topic.as_str().to_string()),
            other => Seen::Other(other.kind().name()),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Seen {
    Close(u16),
    Call(u64, String, Vec<u8>),
    Answer(u64, Vec<u8>),
    Event(String, Vec<u8>),
    Join(u64, String),
    Other(&'static str),
}

/// Wait until `cond` holds; a bounded poll of something the test can observe.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::park_timeout(Duration::from_millis(2));
    }
}

fn next_state(states: &flume::Receiver<State>) -> State {
    states.recv_timeout(WAIT).expect("a state change")
}

/// A client for the script: a backoff so long (10 s, no jitter) that a reconnect within a
/// couple of seconds can only be the drain's immediate one.
fn client(addr: std::net::SocketAddr) -> Peer {
    let policy = ReconnectPolicy::default()
        .initial_backoff(Duration::from_secs(10))
        .jitter(false);
    let p = Peer::new(addr, PeerOptions::new().peer_id("dora").reconnect(policy)).unwrap();
    p.rpc().handle("client.echo", |r| Ok(r.params.to_vec()));
    p
}

#[test]
fn drain_half_closes_answers_then_reconnects_at_once_and_flushes_in_order() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = client(l.local_addr().unwrap());
    let connecting = {
        let p = p.clone();
        thread::spawn(move || p.connect())
    };
    let (mut c1, hello) = Conn::accept(&l, "dora", b"token-1");
    assert_eq!(hello.peer_id.as_deref(), Some("dora"));
    assert_eq!(
        hello.resume_token, None,
        "a first connection resumes nothing"
    );
    connecting.join().unwrap().expect("connected");
    let states = p.state_changes();

    // A topic to re-join after the drain.
    let joining = {
        let p = p.clone();
        thread::spawn(move || p.join("room"))
    };
    let Seen::Join(req, topic) = c1.expect() else {
        panic!("expected Join")
    };
    assert_eq!(topic, "room");
    c1.send(&Status {
        req,
        code: 0,
        message: Cow::Borrowed(""),
    });
    joining.join().unwrap().expect("joined");

    // Two calls in flight when the notice comes: one the server answers before its Close
    // (the drain's promise), one it does not (a server breaking it: failed locally).
    let call = |method: &'static str| {
        let p = p.clone();
        thread::spawn(move || p.rpc().call(method, b"p"))
    };
    let answered = call("answered");
    let Seen::Call(answered_id, m, _) = c1.expect() else {
        panic!("expected the first call")
    };
    assert_eq!(m, "answered");
    let broken = call("broken");
    let Seen::Call(_, m, _) = c1.expect() else {
        panic!("expected the second call")
    };
    assert_eq!(m, "broken");

    // The notice. The client's Close{reconnect} comes at once.
    c1.send(&Status {
        req: 0,
        code: Code::Reconnect.as_u16(),
        message: Cow::Borrowed("draining"),
    });
    assert_eq!(c1.expect(), Seen::Close(Code::Reconnect.as_u16()));
    assert_eq!(next_state(&states), State::Reconnecting);

    // What the application sends now is queued, in order, not written on this link.
    p.events().emit("after", b"1").expect("queued, not failed");
    let queued_call = call("queued");
    wait_until("the call to be queued", || p.queued_frames() == 2);
    p.events().emit("after", b"2").expect("queued");
    assert_eq!(p.queued_frames(), 3);

    // Half-closed, not closed: the client still reads, and still answers calls (a call
    // from the server arriving after its Close). The answer is the very next frame:
    // nothing the application sent got in between.
    c1.send(&RpcRequest {
        id: 77,
        method: Cow::Borrowed("client.echo"),
        peer: None,
        timeout_ms: 5_000,
        params: Cow::Borrowed(b"still here"),
    });
    assert_eq!(c1.expect(), Seen::Answer(77, b"still here".to_vec()));
    c1.send(&RpcResponse {
        id: answered_id,
        result: Cow::Borrowed(b"done"),
    });
    assert_eq!(&answered.join().unwrap().unwrap()[..], b"done");

    // The server's Close{reconnect}. A call still pending fails locally, at once.
    let closed_at = Instant::now();
    c1.send(&Close {
        code: Code::Reconnect.as_u16(),
        reason: Cow::Borrowed("drained"),
    });
    assert_eq!(broken.join().unwrap(), Err(CallError::ConnectionLost));
    // The client ends its side only now (it wrote no FIN before: the answer above went
    // out after its Close).
    assert_eq!(c1.next(), None, "EOF after the server's Close");

    // It reconnects at once (its backoff would wait 10 s), with its id and token.
    let (mut c2, hello) = Conn::accept(&l, "dora", b"token-2");
    assert!(
        closed_at.elapsed() < Duration::from_secs(5),
        "reconnected after {:?}: that is the backoff, not the drain's immediate reconnect",
        closed_at.elapsed()
    );
    assert_eq!(hello.peer_id.as_deref(), Some("dora"));
    assert_eq!(hello.resume_token.as_deref(), Some(&b"token-1"[..]));

    // First the re-join, then the queue in order, then what is sent after.
    let Seen::Join(req, topic) = c2.expect() else {
        panic!("expected the re-join first")
    };
    assert_eq!(topic, "room");
    c2.send(&Status {
        req,
        code: 0,
        message: Cow::Borrowed(""),
    });
    assert_eq!(c2.expect(), Seen::Event("after".into(), b"1".to_vec()));
    let Seen::Call(id, m, _) = c2.expect() else {
        panic!("expected the queued call")
    };
    assert_eq!(m, "queued");
    assert_eq!(c2.expect(), Seen::Event("after".into(), b"2".to_vec()));
    c2.send(&RpcResponse {
        id,
        result: Cow::Borrowed(b"late but fine"),
    });
    assert_eq!(&queued_call.join().unwrap().unwrap()[..], b"late but fine");
    assert_eq!(next_state(&states), State::Active);
    assert_eq!(p.queued_frames(), 0);
    assert_eq!(
        p.last_close().and_then(|c| c.known_code()),
        Some(Code::Reconnect)
    );
    p.events().emit("after", b"3").unwrap();
    assert_eq!(c2.expect(), Seen::Event("after".into(), b"3".to_vec()));
    p.disconnect();
    assert_eq!(c2.expect(), Seen::Close(Code::Normal.as_u16()));
}

#[test]
fn a_final_close_during_a_drain_fails_what_was_queued() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = client(l.local_addr().unwrap());
    let connecting = {
        let p = p.clone();
        thread::spawn(move || p.connect())
    };
    let (mut c1, _) = Conn::accept(&l, "dora", b"token-1");
    connecting.join().unwrap().expect("connected");
    let states = p.state_changes();

    c1.send(&Status {
        req: 0,
        code: Code::Reconnect.as_u16(),
        message: Cow::Borrowed("draining"),
    });
    assert_eq!(c1.expect(), Seen::Close(Code::Reconnect.as_u16()));
    assert_eq!(next_state(&states), State::Reconnecting);
    let queued = {
        let p = p.clone();
        thread::spawn(move || p.rpc().call("queued", b""))
    };
    wait_until("the call to be queued", || p.queued_frames() == 1);
    p.events().emit("queued", b"").unwrap();

    // The server ends the session on purpose instead: no reconnect, and what was queued
    // fails with a typed error (it was never sent).
    c1.send(&Close {
        code: Code::Normal.as_u16(),
        reason: Cow::Borrowed("bye"),
    });
    assert_eq!(queued.join().unwrap(), Err(CallError::Closed));
    assert_eq!(next_state(&states), State::Closed);
    assert_eq!(p.queued_frames(), 0);
    assert_eq!(
        p.events().emit("later", b""),
        Err(peerd_client::RequestError::Closed)
    );
    assert_eq!(c1.next(), None, "nothing queued was written");
}
