//! Bad input on the WebSocket and TLS transports (issue 10, "Bad input"), each through real
//! sockets against an in-process server: the documented HTTP status or WebSocket close,
//! never a hang, and never a cost to other peers: every test connects well-behaved
//! bystanders (TCP and `ws://`; on the same, single, shard as the bad input except in the
//! two-shard full-session test) before the bad input and checks they still get answers
//! after it.
//!
//! Requests, frames and TLS records are made by hand over std sockets (client frames with
//! `peerd_ws::write_masked_frame`; server frames parsed in `transport`). No sleeps: every
//! wait is a read with a deadline.

mod transport;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use peerd_codec::codec::decode_bytes;
use peerd_codec::{self as codec, Code, Frame, PresenceChange};
use peerd_ws::frame::Opcode;
use transport::*;

/// Well-behaved peers connected before the bad input: a TCP peer watching every peer
/// (global presence), and a `ws://` peer.
struct Bystanders {
    tcp: Peer,
    ws: Peer,
    n: u64,
}

impl Bystanders {
    fn new(s: &Servers) -> Bystanders {
        let mut tcp = s.peer(Kind::Tcp, "bystander-tcp");
        tcp.send(&codec::Watch {
            req: 1,
            topic: None,
        });
        assert_eq!(tcp.status(1), 0);
        let ws = s.peer(Kind::Ws, "bystander-ws");
        let mut b = Bystanders { tcp, ws, n: 100 };
        b.check();
        b
    }

    /// Both still get answers.
    fn check(&mut self) {
        self.n += 1;
        let n = self.n;
        self.tcp.echo(n, format!("tcp {n}").as_bytes());
        self.ws.echo(n, format!("ws {n}").as_bytes());
    }

    /// The watcher sees `peer` `change`.
    fn sees(&mut self, peer: &str, change: PresenceChange) {
        self.tcp.recv_until(|f| match f {
            Frame::Presence(p) if p.peer.as_str() == peer && p.change == change => Some(()),
            _ => None,
        });
    }
}

fn one_shard() -> Servers {
    server(1, |_| {})
}

// ---------------------------------------------------------------------------------------
// The upgrade request.

/// Send `request` to the `ws://` endpoint: the answer must be a complete HTTP response
/// with `status` and a body saying what was wrong, then the end of the stream.
fn refused(s: &Servers, request: &[u8], status: u16) -> HttpResponse {
    let mut io = tcp(s.ws);
    io.write_all(request).unwrap();
    let r = read_response(&mut io)
        .unwrap_or_else(|| panic!("no HTTP answer to {:?}", String::from_utf8_lossy(request)));
    assert_eq!(
        r.status,
        status,
        "{:?}: {r:?}",
        String::from_utf8_lossy(request)
    );
    assert!(!r.body.trim().is_empty(), "a body that says what to do");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.rest.is_empty(), "bytes after the response: {:?}", r.rest);
    let mut p = Peer::plain(Box::new(io));
    p.expect_end();
    r
}

fn request(lines: &[&str]) -> Vec<u8> {
    let mut r = lines.join("\r\n");
    r.push_str("\r\n\r\n");
    r.into_bytes()
}

const GET: &str = "GET / HTTP/1.1";
const HOST: &str = "Host: 127.0.0.1";
const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const VERSION: &str = "Sec-WebSocket-Version: 13";
const PROTOCOL: &str = "Sec-WebSocket-Protocol: peerd.v1";

#[test]
fn upgrade_with_a_missing_or_wrong_key_gets_400() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for key in [
        None,
        Some("Sec-WebSocket-Key: not base64!"),
        // base64 of 15 bytes, and of 17.
        Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"),
        Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="),
        Some("Sec-WebSocket-Key:"),
    ] {
        let mut lines = vec![GET, HOST, UPGRADE, CONNECTION, VERSION, PROTOCOL];
        lines.extend(key);
        let r = refused(&s, &request(&lines), 400);
        assert!(r.body.contains("Sec-WebSocket-Key"), "{key:?}: {}", r.body);
    }
    // Two keys.
    refused(
        &s,
        &request(&[GET, HOST, UPGRADE, CONNECTION, VERSION, PROTOCOL, KEY, KEY]),
        400,
    );
    by.check();
}

#[test]
fn upgrade_with_a_missing_or_wrong_version_gets_426_naming_13() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for version in [
        None,
        Some("Sec-WebSocket-Version: 8"),
        Some("Sec-WebSocket-Version: 14"),
        Some("Sec-WebSocket-Version: thirteen"),
    ] {
        let mut lines = vec![GET, HOST, UPGRADE, CONNECTION, KEY, PROTOCOL];
        lines.extend(version);
        let r = refused(&s, &request(&lines), 426);
        assert_eq!(r.header("sec-websocket-version"), Some("13"), "{version:?}");
    }
    by.check();
}

#[test]
fn upgrade_without_the_peerd_subprotocol_gets_400_saying_which() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for protocol in [
        None,
        Some("Sec-WebSocket-Protocol: chat"),
        Some("Sec-WebSocket-Protocol: peerd.v2, peerd"),
        Some("Sec-WebSocket-Protocol: PEERD.V1"),
    ] {
        let mut lines = vec![GET, HOST, UPGRADE, CONNECTION, KEY, VERSION];
        lines.extend(protocol);
        let r = refused(&s, &request(&lines), 400);
        assert!(r.body.contains("peerd.v1"), "{protocol:?}: {}", r.body);
    }
    // Offered among others, it is selected.
    let mut io = tcp(s.ws);
    io.write_all(&request(&[
        GET,
        HOST,
        UPGRADE,
        CONNECTION,
        KEY,
        VERSION,
        "Sec-WebSocket-Protocol: chat, peerd.v1",
    ]))
    .unwrap();
    let r = read_response(&mut io).unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("peerd.v1"));
    by.check();
}

#[test]
fn plain_http_gets_a_short_http_answer_426_for_get_405_for_post() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    let r = refused(
        &s,
        &request(&[GET, HOST, "User-Agent: curl/8", "Accept: */*"]),
        426,
    );
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(r.body.contains("peerd.v1"), "{}", r.body);
    let r = refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi",
        405,
    );
    assert_eq!(r.header("allow"), Some("GET"));
    // Another path, and HTTP/1.0.
    refused(
        &s,
        &request(&[
            "GET /favicon.ico HTTP/1.1",
            HOST,
            UPGRADE,
            CONNECTION,
            KEY,
            VERSION,
            PROTOCOL,
        ]),
        404,
    );
    refused(
        &s,
        &request(&["GET / HTTP/1.0", HOST, UPGRADE, CONNECTION, KEY, VERSION]),
        505,
    );
    // A peerd Hello on the WebSocket port is not HTTP: 400, not binary frames.
    let hello = peerd_testkit::frame(&peerd_testkit::hello(Some("lost"), None));
    refused(&s, &hello, 400);
    by.check();
}

/// Bytes of an upgrade request head the server reads before answering 431 (its bound).
const MAX_HEAD: usize = 8 * 1024;

#[test]
fn at_the_connection_limit_a_websocket_client_gets_503_and_a_tls_client_the_end() {
    let s = server(1, |o| o.limits.max_connections = 1);
    // Hold the one slot with a connection that has not said Hello yet.
    let _hold = tcp(s.tcp);
    peerd_testkit::wait_until("the held connection is counted", || {
        s.srv.connection_count() == 1
    });
    let r = refused(&s, &upgrade_request("/", "peerd.v1"), 503);
    assert!(r.body.contains("max connections"), "{}", r.body);
    // A TLS client gets no plaintext: at most a TLS alert record (type 21), then the end.
    let mut io = tcp(s.tls);
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = read_some(&mut io, deadline, &mut buf);
    while got == Got::Data {
        got = read_some(&mut io, deadline, &mut buf);
    }
    assert!(
        buf.is_empty() || buf[0] == 21,
        "nothing but an alert: {buf:?}"
    );
    assert!(
        matches!(got, Got::Eof | Got::Reset),
        "the connection ends at once, not {got:?}"
    );
}

#[test]
fn oversized_headers_get_431_at_the_bound_without_waiting_for_their_end() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    // One header line longer than the bound, never ended: the answer comes once the bound
    // is passed (the head is not complete, so it cannot come from parsing it).
    let mut io = tcp(s.ws);
    let mut head = request(&[GET, HOST, UPGRADE, CONNECTION, KEY, VERSION, PROTOCOL]);
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"X-Padding: ");
    head.resize(MAX_HEAD + 1, b'a');
    io.write_all(&head).unwrap();
    let r = read_response(&mut io).expect("431 before the head ends");
    assert_eq!(r.status, 431);
    Peer::plain(Box::new(io)).expect_end();
    // A complete head just over the bound, too.
    let mut lines = vec![GET, HOST, UPGRADE, CONNECTION, KEY, VERSION, PROTOCOL];
    let pad = format!("X-Padding: {}", "b".repeat(MAX_HEAD));
    lines.push(&pad);
    refused(&s, &request(&lines), 431);
    by.check();
}

#[test]
fn endless_headers_get_431_and_the_connection_is_cut() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    let mut io = tcp(s.ws);
    let mut writer = io.try_clone().unwrap();
    // Header lines for as long as the server takes them (bounded here at 64 MiB or 20 s).
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let feeder = thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0usize;
        let mut line = 0u64;
        let _ = writer.write_all(format!("{GET}\r\n{HOST}\r\n").as_bytes());
        while !stop2.load(Ordering::Relaxed)
            && sent < 64 << 20
            && start.elapsed() < Duration::from_secs(20)
        {
            line += 1;
            let l = format!("X-Endless-{line}: {}\r\n", "z".repeat(40));
            match writer.write_all(l.as_bytes()) {
                Ok(()) => sent += l.len(),
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    });
    let r = read_response(&mut io).expect("an answer while the headers keep coming");
    assert_eq!(r.status, 431);
    let mut p = Peer::plain(Box::new(io));
    // The server stops reading: the stream ends (it resets the connection on the bytes it
    // did not read), and the feeder's writes start failing.
    p.expect_end();
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = feeder.join().unwrap();
    assert!(
        failed || sent < 1 << 20,
        "the server kept taking headers: {sent} bytes"
    );
    by.check();
}

#[test]
fn a_slowloris_upgrade_is_cut_at_the_handshake_deadline() {
    let deadline = Duration::from_millis(500);
    let s = server(1, |o| o.handshake_timeout = deadline);
    let mut by = Bystanders::new(&s);
    let io = tcp(s.ws);
    let mut writer = io.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let start = Instant::now();
    // A byte every 20 ms: the whole request would take seconds.
    let dribbler = thread::spawn(move || {
        let req = upgrade_request("/", "peerd.v1");
        for b in req {
            if stop2.load(Ordering::Relaxed) || writer.write_all(&[b]).is_err() {
                return;
            }
            // The attack's pace, not a synchronisation: nothing waits on this sleep.
            thread::sleep(Duration::from_millis(20));
        }
    });
    let mut p = Peer::plain(Box::new(io));
    // What the server sends before it cuts: an HTTP 408 (or nothing, should a reset
    // overtake it). The connection never became a WebSocket: a peerd or WebSocket frame
    // here would be garbage to an HTTP client (it was a peerd Close before the fix).
    let mut got = Vec::new();
    let end = loop {
        match read_some(&mut *p.io, start + deadline + WAIT, &mut got) {
            Got::Data => continue,
            other => break other,
        }
    };
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    dribbler.join().unwrap();
    assert!(
        matches!(end, Got::Eof | Got::Reset),
        "not cut: {end:?} after {elapsed:?}"
    );
    assert!(
        elapsed >= deadline - Duration::from_millis(50),
        "cut before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < deadline + Duration::from_secs(2),
        "cut late: {elapsed:?}"
    );
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408 "),
        "not HTTP: {:?}",
        String::from_utf8_lossy(&got)
    );
    by.check();
}

// ---------------------------------------------------------------------------------------
// WebSocket frames from the client.

/// A `ws://` peer past its Hello.
fn active(s: &Servers, id: &str) -> Peer {
    s.peer(Kind::Ws, id)
}

#[test]
fn an_unmasked_client_frame_is_closed_with_1002() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    // After the handshake: a peerd Close{bad_frame} in a binary message, then close 1002.
    let mut p = active(&s, "unmasked");
    let ping = peerd_testkit::frame(&codec::Ping { nonce: 1 });
    let mut v = Vec::new();
    peerd_ws::write_frame(Opcode::Binary, true, &ping, &mut v);
    p.write_lossy(&v);
    assert_eq!(p.expect_ws_close(), (Some(Code::BadFrame.as_u16()), 1002));
    by.sees("unmasked", PresenceChange::Leave);
    // Before the Hello: only the WebSocket Close (there is no session to close).
    let mut p = s.open(Kind::Ws);
    p.write_lossy(&v);
    assert_eq!(p.expect_ws_close(), (None, 1002));
    by.check();
}

#[test]
fn reserved_bits_are_closed_with_1002() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut p = active(&s, "rsv");
        let mut v = Vec::new();
        peerd_ws::write_masked_frame(
            Opcode::Binary,
            true,
            &peerd_testkit::frame(&codec::Ping { nonce: 1 }),
            [1, 2, 3, 4],
            &mut v,
        );
        v[0] |= rsv;
        p.write_lossy(&v);
        assert_eq!(
            p.expect_ws_close(),
            (Some(Code::BadFrame.as_u16()), 1002),
            "rsv {rsv:#x}"
        );
        by.sees("rsv", PresenceChange::Leave);
    }
    by.check();
}

#[test]
fn reserved_opcodes_are_closed_with_1002() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for opcode in [0x3u8, 0x7, 0xB, 0xF] {
        let mut p = active(&s, "opcode");
        // A well-formed masked frame with the reserved opcode.
        let mut v = Vec::new();
        peerd_ws::write_masked_frame(Opcode::Binary, true, b"x", [9, 9, 9, 9], &mut v);
        v[0] = 0x80 | opcode;
        p.write_lossy(&v);
        assert_eq!(
            p.expect_ws_close(),
            (Some(Code::BadFrame.as_u16()), 1002),
            "opcode {opcode:#x}"
        );
        by.sees("opcode", PresenceChange::Leave);
    }
    by.check();
}

#[test]
fn a_control_frame_over_125_bytes_is_closed_with_1002() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for opcode in [Opcode::Ping, Opcode::Pong, Opcode::Close] {
        let mut p = active(&s, "big-control");
        let mut payload = vec![b'p'; 126];
        if opcode == Opcode::Close {
            payload[..2].copy_from_slice(&1000u16.to_be_bytes());
        }
        p.ws_frame(opcode, true, &payload);
        assert_eq!(
            p.expect_ws_close(),
            (Some(Code::BadFrame.as_u16()), 1002),
            "{opcode:?}"
        );
        by.sees("big-control", PresenceChange::Leave);
    }
    // 125 is allowed: the ping is answered.
    let mut p = active(&s, "max-control");
    p.ws_frame(Opcode::Ping, true, &[b'q'; 125]);
    match p.recv_ws(WAIT) {
        WsIn::Frame(f) => assert_eq!((f.opcode, f.payload), (0xA, vec![b'q'; 125])),
        other => panic!("no pong: {other:?}"),
    }
    by.check();
}

#[test]
fn a_fragmented_control_frame_is_closed_with_1002() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for opcode in [Opcode::Ping, Opcode::Pong, Opcode::Close] {
        let mut p = active(&s, "fragmented-control");
        p.ws_frame(opcode, false, b"");
        assert_eq!(
            p.expect_ws_close(),
            (Some(Code::BadFrame.as_u16()), 1002),
            "{opcode:?}"
        );
        by.sees("fragmented-control", PresenceChange::Leave);
    }
    by.check();
}

#[test]
fn a_text_message_on_the_peer_endpoint_is_closed_with_1003() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    let mut p = active(&s, "texter");
    p.ws_frame(Opcode::Text, true, b"{\"hello\": \"world\"}");
    assert_eq!(p.expect_ws_close(), (Some(Code::BadFrame.as_u16()), 1003));
    by.sees("texter", PresenceChange::Leave);
    by.check();
}

#[test]
fn a_message_declared_over_max_frame_len_is_closed_with_1009_before_its_payload() {
    let max = 4096u32;
    let s = server(1, |o| o.limits.max_frame_len = max);
    let mut by = Bystanders::new(&s);
    // The largest message is one frame of max bytes of body: header + max.
    let largest = codec::HEADER_LEN + max as usize;
    let header_only = |declared: u64, opcode: Opcode, fin: bool| -> Vec<u8> {
        // A masked frame header declaring `declared` payload bytes; none follow.
        let mut v = vec![opcode.as_u8() | if fin { 0x80 } else { 0 }];
        if declared < 126 {
            v.push(0x80 | declared as u8);
        } else if declared <= 0xFFFF {
            v.push(0x80 | 126);
            v.extend_from_slice(&(declared as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&declared.to_be_bytes());
        }
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    };
    for declared in [largest as u64 + 1, 1 << 30, (1 << 63) - 1] {
        let mut p = active(&s, "too-big");
        p.write(&header_only(declared, Opcode::Binary, true));
        // The close comes with no payload sent: the server refused on the header alone,
        // holding nothing for it.
        assert_eq!(
            p.expect_ws_close(),
            (Some(Code::TooLarge.as_u16()), 1009),
            "declared {declared}"
        );
        by.sees("too-big", PresenceChange::Leave);
    }
    // Fragments add up: a first fragment within the limit, then one that passes it.
    // (The first fragment is the start of a valid frame: the peerd framer reads a message's
    // bytes as they are deframed, and would refuse a bad header first.)
    let call = |n: usize| {
        peerd_testkit::frame(&codec::RpcRequest {
            id: 7,
            method: "echo".into(),
            peer: None,
            timeout_ms: 0,
            params: vec![5u8; n].into(),
        })
    };
    let envelope = call(0).len();
    let f = call(largest - envelope);
    assert_eq!(f.len(), largest);
    let mut p = active(&s, "too-big-fragments");
    p.ws_frame(Opcode::Binary, false, &f[..largest - 10]);
    p.write(&header_only(11, Opcode::Continuation, true));
    assert_eq!(p.expect_ws_close(), (Some(Code::TooLarge.as_u16()), 1009));
    by.sees("too-big-fragments", PresenceChange::Leave);
    // Exactly the largest message is a frame like any other: an echo of max - envelope.
    let mut p = active(&s, "largest");
    p.send_frame(&f);
    p.recv_until(|f| match f {
        Frame::RpcResponse(r) if r.id.to_native() == 7 => Some(()),
        Frame::RpcError(e) => panic!("echo failed: {}", e.message.as_str()),
        _ => None,
    });
    by.check();
}

#[test]
fn a_message_with_two_peerd_frames_or_half_a_frame_is_closed_with_1002() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    let ping = |nonce| peerd_testkit::frame(&codec::Ping { nonce });
    // Two whole frames in one message.
    let mut p = active(&s, "two-frames");
    let two = [ping(1), ping(2)].concat();
    p.ws_frame(Opcode::Binary, true, &two);
    // Refused before any of it is acted on: the Close comes first, no Pong before it (the
    // first frame is whole long before the message is found wrong).
    assert_close_first(&mut p, Code::BadFrame, 1002);
    by.sees("two-frames", PresenceChange::Leave);
    // The same with the first frame whole in a fragment of its own.
    let mut p = active(&s, "two-frames-fragmented");
    p.ws_frame(Opcode::Binary, false, &ping(5));
    p.ws_frame(Opcode::Continuation, true, &ping(6));
    assert_close_first(&mut p, Code::BadFrame, 1002);
    by.sees("two-frames-fragmented", PresenceChange::Leave);
    // Half a frame, whole header and not.
    for cut in [4, 12] {
        let mut p = active(&s, "half-frame");
        p.ws_frame(Opcode::Binary, true, &ping(3)[..cut]);
        assert_eq!(
            p.expect_ws_close(),
            (Some(Code::BadFrame.as_u16()), 1002),
            "cut at {cut}"
        );
        by.sees("half-frame", PresenceChange::Leave);
    }
    // One frame split over a message's fragments is fine.
    let mut p = active(&s, "fragments");
    let f = ping(4);
    p.ws_frame(Opcode::Binary, false, &f[..3]);
    p.ws_frame(Opcode::Continuation, false, &f[3..11]);
    p.ws_frame(Opcode::Continuation, true, &f[11..]);
    let nonce = p.recv_until(|f| match f {
        Frame::Pong(p) => Some(p.nonce.to_native()),
        _ => None,
    });
    assert_eq!(nonce, 4);
    by.check();
}

/// The first thing `p` receives is the peerd Close with `code`, then the WebSocket Close
/// with `status`, then the end.
fn assert_close_first(p: &mut Peer, code: Code, status: u16) {
    let first = p
        .recv_within(WAIT)
        .expect("a peerd Close before the WebSocket Close");
    match decode_bytes(&first).expect("decodable") {
        Frame::Close(c) => assert_eq!(c.code.to_native(), code.as_u16()),
        other => panic!("{}: {other:?} before the Close", p.peer_id),
    }
    assert_eq!(p.expect_ws_close(), (None, status));
}

#[test]
fn a_ping_gets_a_pong_with_the_same_payload_even_between_fragments() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    let mut p = active(&s, "pinger");
    for payload in [&b""[..], b"hello", &[0xFF; 125]] {
        p.ws_frame(Opcode::Ping, true, payload);
        match p.recv_ws(WAIT) {
            WsIn::Frame(f) => assert_eq!(
                f,
                WsFrame {
                    fin: true,
                    opcode: 0xA,
                    payload: payload.to_vec()
                }
            ),
            other => panic!("no pong: {other:?}"),
        }
    }
    // Between the fragments of a message: the pong first, then the answer to the message.
    let call = peerd_testkit::frame(&codec::RpcRequest {
        id: 1,
        method: "echo".into(),
        peer: None,
        timeout_ms: 0,
        params: b"between"[..].into(),
    });
    p.ws_frame(Opcode::Binary, false, &call[..10]);
    p.ws_frame(Opcode::Ping, true, b"mid");
    match p.recv_ws(WAIT) {
        WsIn::Frame(f) => assert_eq!((f.opcode, f.payload), (0xA, b"mid".to_vec())),
        other => panic!("no pong: {other:?}"),
    }
    p.ws_frame(Opcode::Continuation, true, &call[10..]);
    let got = p.recv_until(|f| match f {
        Frame::RpcResponse(r) => Some(r.result.as_slice().to_vec()),
        _ => None,
    });
    assert_eq!(got, b"between");
    // An unsolicited pong is ignored.
    p.ws_frame(Opcode::Pong, true, b"unsolicited");
    p.echo(2, b"still here");
    by.check();
}

#[test]
fn a_close_from_the_client_is_echoed_with_its_status() {
    let s = one_shard();
    let mut by = Bystanders::new(&s);
    for (sent, echoed) in [
        (Some(1000u16), 1000u16),
        (Some(1001), 1001),
        (Some(4321), 4321),
        (None, 1000),
    ] {
        let mut p = active(&s, "closer");
        let payload = sent.map_or(Vec::new(), |st| peerd_ws::close_payload(st, "bye"));
        p.ws_frame(Opcode::Close, true, &payload);
        // The answer is the WebSocket Close alone (the peer closed: no peerd Close back).
        assert_eq!(p.expect_ws_close(), (None, echoed), "sent {sent:?}");
        by.sees("closer", PresenceChange::Leave);
    }
    // A status that must never be sent (1005: "no status") is a protocol error.
    let mut p = active(&s, "closer");
    p.ws_frame(Opcode::Close, true, &1005u16.to_be_bytes());
    assert_eq!(p.expect_ws_close(), (Some(Code::BadFrame.as_u16()), 1002));
    by.sees("closer", PresenceChange::Leave);
    // The peerd Close, then the WebSocket close handshake (what a polite client does).
    let mut p = active(&s, "polite");
    p.send(&codec::Close {
        code: 1000,
        reason: "bye".into(),
    });
    p.ws_frame(Opcode::Close, true, &peerd_ws::close_payload(1000, ""));
    assert_eq!(p.expect_ws_close(), (None, 1000));
    by.sees("polite", PresenceChange::Leave);
    by.check();
}

#[test]
fn a_close_from_the_server_is_a_peerd_frame_then_the_mapped_status() {
    let s = server(1, |o| o.handshake_timeout = Duration::from_millis(300));
    let mut by = Bystanders::new(&s);
    // An invalid peer id: Reject{invalid_argument} as a binary message, then 4016.
    let mut p = s.open(Kind::Ws);
    p.send(&peerd_testkit::hello(Some("not a valid id!"), None));
    let b = p.recv();
    assert_eq!(close_code(&b), Some(Code::InvalidArgument));
    assert!(matches!(decode_bytes(&b).unwrap(), Frame::Reject(_)));
    match p.recv_within(WAIT) {
        Err(Some((status, _))) => {
            assert_eq!(status, peerd_ws::status_for(Code::InvalidArgument.as_u16()))
        }
        other => panic!("expected the WebSocket Close, got {other:?}"),
    }
    assert_eq!(peerd_ws::status_for(Code::InvalidArgument.as_u16()), 4016);
    p.expect_end();
    // A second Hello: Close{bad_frame}, then 1002.
    let mut p = active(&s, "twice");
    p.send(&peerd_testkit::hello(Some("twice"), None));
    assert_eq!(p.expect_ws_close(), (Some(Code::BadFrame.as_u16()), 1002));
    // Upgraded but no Hello before the deadline: Close{handshake_timeout}, then 4014.
    let mut p = s.open(Kind::Ws);
    assert_eq!(
        p.expect_ws_close(),
        (Some(Code::HandshakeTimeout.as_u16()), 4014)
    );
    // The server shutting down: Close{shutdown}, then 1001.
    let mut last = active(&s, "last");
    by.check();
    s.srv.close();
    assert_eq!(
        last.expect_ws_close(),
        (Some(Code::Shutdown.as_u16()), 1001)
    );
}

// ---------------------------------------------------------------------------------------
// TLS.

#[test]
fn a_tls_client_hello_that_never_completes_is_cut_at_the_deadline() {
    let deadline = Duration::from_millis(500);
    let s = server(1, |o| o.handshake_timeout = deadline);
    let mut by = Bystanders::new(&s);
    for addr in [s.tls, s.wss] {
        let start = Instant::now();
        let mut io = tcp(addr);
        // The start of a ClientHello record: a handshake record header announcing 512 bytes,
        // and the first few of them.
        io.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03,
        ])
        .unwrap();
        let mut got = Vec::new();
        let end = loop {
            match read_some(&mut io, start + deadline + WAIT, &mut got) {
                Got::Data => continue,
                other => break other,
            }
        };
        let elapsed = start.elapsed();
        assert!(
            matches!(end, Got::Eof | Got::Reset),
            "{addr}: not cut: {end:?}"
        );
        assert!(
            elapsed >= deadline - Duration::from_millis(50),
            "{addr}: cut before the deadline: {elapsed:?}"
        );
        assert!(
            elapsed < deadline + Duration::from_secs(2),
            "{addr}: cut late: {elapsed:?}"
        );
        // Nothing in the clear: no peerd frame, no HTTP (TLS records or nothing).
        assert!(
            got.is_empty() || got[0] == 0x15 || got[0] == 0x16,
            "{addr}: {got:?}"
        );
        by.check();
    }
}

#[test]
fn garbage_on_a_tls_port_fails_promptly() {
    // A long deadline: a prompt end cannot be the deadline's.
    let s = server(1, |o| o.handshake_timeout = Duration::from_secs(30));
    let mut by = Bystanders::new(&s);
    let hello = peerd_testkit::frame(&peerd_testkit::hello(Some("plaintext"), None)).to_vec();
    let get = upgrade_request("/", "peerd.v1");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for (addr, what) in [
        (s.tls, &hello),
        (s.tls, &get),
        (s.tls, &noise),
        (s.wss, &get),
        (s.wss, &hello),
    ] {
        let start = Instant::now();
        let mut io = tcp(addr);
        let _ = io.write_all(what);
        let mut got = Vec::new();
        let end = loop {
            match read_some(&mut io, start + WAIT, &mut got) {
                Got::Data => continue,
                other => break other,
            }
        };
        assert!(
            matches!(end, Got::Eof | Got::Reset),
            "{addr} {:?}: no end: {end:?}",
            String::from_utf8_lossy(&what[..8])
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "not prompt: {:?}",
            start.elapsed()
        );
        // At most a TLS alert record: never plaintext.
        assert!(got.is_empty() || got[0] == 0x15, "{addr}: {got:?}");
        by.check();
    }
}

#[test]
fn a_full_peerd_session_over_tls_and_wss_with_rustls() {
    let s = server(2, |_| {});
    let mut by = Bystanders::new(&s);
    let mut a = s.peer(Kind::Tls, "over-tls");
    let mut b = s.peer(Kind::Wss, "over-wss");
    for p in [&mut a, &mut b] {
        // A call small and large (several TLS records, a 64-bit WebSocket length).
        p.echo(1, b"hi");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        p.echo(2, &big);
        p.join(3, "secure");
    }
    a.send(&codec::Publish {
        req: 4,
        topic: "secure".into(),
        echo: true,
        payload: b"over TLS"[..].into(),
    });
    // The publisher gets its own copy (echo) and the Status, in either order.
    let (mut own, mut status) = (None, None);
    while own.is_none() || status.is_none() {
        a.recv_until(|f| match f {
            Frame::TopicMessage(m) if own.is_none() => {
                own = Some((m.from.as_str().to_string(), m.payload.to_vec()));
                Some(())
            }
            Frame::Status(s) if s.req.to_native() == 4 && status.is_none() => {
                status = Some(s.code.to_native());
                Some(())
            }
            _ => None,
        });
    }
    assert_eq!(status, Some(0));
    let theirs = b.recv_until(|f| match f {
        Frame::TopicMessage(m) => Some((m.from.as_str().to_string(), m.payload.to_vec())),
        _ => None,
    });
    for got in [own.unwrap(), theirs] {
        assert_eq!(got, ("over-tls".to_string(), b"over TLS".to_vec()));
    }
    // Peer to peer, both ways.
    b.send(&codec::RpcRequest {
        id: 5,
        method: "greet".into(),
        peer: Some("over-tls".into()),
        timeout_ms: 5000,
        params: b"from wss"[..].into(),
    });
    let (id, params) = a.recv_until(|f| match f {
        Frame::RpcRequest(r) => Some((r.id.to_native(), r.params.to_vec())),
        _ => None,
    });
    assert_eq!(params, b"from wss");
    a.send(&codec::RpcResponse {
        id,
        result: b"hello wss"[..].into(),
    });
    let got = b.recv_until(|f| match f {
        Frame::RpcResponse(r) if r.id.to_native() == 5 => Some(r.result.to_vec()),
        _ => None,
    });
    assert_eq!(got, b"hello wss");
    // Clean close: TLS peer with Close{normal} (the server ends the stream), WSS peer with
    // the peerd Close and the WebSocket close handshake.
    a.send(&codec::Close {
        code: 1000,
        reason: "bye".into(),
    });
    a.expect_end();
    by.sees("over-tls", PresenceChange::Leave);
    b.send(&codec::Close {
        code: 1000,
        reason: "bye".into(),
    });
    b.ws_frame(Opcode::Close, true, &peerd_ws::close_payload(1000, ""));
    assert_eq!(b.expect_ws_close(), (None, 1000));
    by.sees("over-wss", PresenceChange::Leave);
    by.check();
}
