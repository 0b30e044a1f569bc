//! The server core through real sockets: handshake, RPC both ways, events, broadcast,
//! limits and lifecycle, with peers spread over two shards.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use peerd_codec::{self as codec, Code, Frame};
use peerd_server::{listen, CallError, ListenError, ListenOptions, RpcFailure};

fn opts() -> ListenOptions {
    ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .handle("echo", |_p, r| async move { Ok(r.params) })
}

#[test]
fn connections_span_shards_and_broadcast_reaches_each_peer_once() {
    let srv = server(opts());
    let addr = srv.local_addr().unwrap();
    let mut peers: Vec<RawPeer> = (0..24)
        .map(|i| RawPeer::connect(addr, Some(&format!("p{i}"))))
        .collect();
    wait_until("all registered", || srv.connections().len() == 24);
    let conns = srv.connections();
    let shards: HashSet<usize> = conns.iter().map(|c| c.shard).collect();
    assert_eq!(
        shards.len(),
        2,
        "24 peers over 2 SO_REUSEPORT shards use both: {conns:?}"
    );
    let ids: HashSet<String> = conns.iter().map(|c| c.peer_id.clone()).collect();
    assert!(ids.contains("p0") && ids.contains("p23"));
    assert_eq!(srv.connection_count(), 24);

    srv.broadcast("news", b"hello all").unwrap();
    for p in peers.iter_mut() {
        p.recv_until(|f| match f {
            Frame::Broadcast(x) => {
                assert_eq!(x.name.as_str(), "news");
                assert_eq!(x.payload.as_slice(), b"hello all");
                assert!(x.peer.is_none(), "server broadcasts carry no origin");
                Some(())
            }
            _ => None,
        });
    }
    // Exactly once: after a second, server-side marker broadcast arrives, nothing else did.
    srv.broadcast("marker", b"").unwrap();
    for (i, p) in peers.iter_mut().enumerate() {
        let b = p.recv().expect("marker");
        match codec::codec::decode_bytes(&b).unwrap() {
            Frame::Broadcast(x) => {
                assert_eq!(x.name.as_str(), "marker", "peer {i} got a duplicate")
            }
            other => panic!("peer {i}: unexpected {other:?}"),
        }
    }
}

#[test]
fn client_broadcast_is_relayed_to_every_other_peer() {
    let srv = server(opts());
    let addr = srv.local_addr().unwrap();
    let mut peers: Vec<RawPeer> = (0..8)
        .map(|i| RawPeer::connect(addr, Some(&format!("b{i}"))))
        .collect();
    peers[0].send(&codec::Broadcast {
        name: "chat".into(),
        peer: None,
        payload: b"hi"[..].into(),
    });
    for p in peers.iter_mut().skip(1) {
        let from = p.recv_until(|f| match f {
            Frame::Broadcast(b) => Some(b.peer.as_ref().map(|s| s.as_str().to_string())),
            _ => None,
        });
        assert_eq!(from.as_deref(), Some("b0"));
    }
    let echoed = peers[0].sync(9);
    assert!(
        echoed.is_empty(),
        "the sender does not get its own broadcast"
    );
}

#[test]
fn client_to_server_rpc_echo_and_method_not_found() {
    let srv = server(opts());
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), None);
    assert!(p.peer_id.parse::<u64>().is_ok(), "assigned ids are numeric");
    assert_eq!(p.call(1, "echo", b"abc").unwrap(), b"abc");
    let err = p.call(2, "nope", b"").unwrap_err();
    assert_eq!(err.0, Code::MethodNotFound.as_u16());
}

#[test]
fn handler_registered_in_on_connection_sees_the_first_frame() {
    let o = opts().on_connection(|peer| {
        let id = peer.peer_id().to_string();
        peer.rpc().handle("whoami", move |_r| {
            let id = id.clone();
            async move { Ok(Bytes::from(id)) }
        });
    });
    let srv = server(o);
    let mut p = RawPeer::tcp(srv.local_addr().unwrap());
    // Hello and the first request in one write: the request is in the same read as Hello.
    let mut bytes = frame(&hello(Some("first"), None)).to_vec();
    bytes.extend_from_slice(&frame(&codec::RpcRequest {
        id: 7,
        method: "whoami".into(),
        peer: None,
        timeout_ms: 0,
        params: b""[..].into(),
    }));
    p.send_raw(&bytes);
    p.expect_welcome();
    let got = p.recv_until(|f| match f {
        Frame::RpcResponse(r) => Some(r.result.as_slice().to_vec()),
        Frame::RpcError(e) => panic!("error {}", e.message.as_str()),
        _ => None,
    });
    assert_eq!(got, b"first");
}

#[test]
fn server_calls_client_and_events_flow_both_ways() {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, CallError>>();
    let tx = Arc::new(Mutex::new(tx));
    let o = opts().on_connection(move |peer| {
        let tx = tx.clone();
        let p2 = peer.clone();
        peer.events().on("ask", move |ev| {
            let tx = tx.clone();
            let fut = p2.rpc().call("client.info", ev.payload);
            glommio::spawn_local(async move {
                let r = fut.await.map(|b| b.to_vec());
                tx.lock().unwrap().send(r).unwrap();
            })
            .detach();
        });
        peer.events().emit("welcome", b"hi").unwrap();
    });
    let srv = server(o);
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), Some("c1"));
    let ev = p.recv_until(|f| match f {
        Frame::Event(e) => Some((e.name.as_str().to_string(), e.payload.as_slice().to_vec())),
        _ => None,
    });
    assert_eq!(ev, ("welcome".to_string(), b"hi".to_vec()));
    p.send(&codec::Event {
        name: "ask".into(),
        peer: None,
        payload: b"q"[..].into(),
    });
    let (id, params) = p.recv_until(|f| match f {
        Frame::RpcRequest(r) => {
            assert_eq!(r.method.as_str(), "client.info");
            assert!(r.peer.is_none(), "the server itself calls");
            Some((r.id.to_native(), r.params.as_slice().to_vec()))
        }
        _ => None,
    });
    assert_eq!(params, b"q");
    p.send(&codec::RpcResponse {
        id,
        result: b"v1.2"[..].into(),
    });
    let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(r.unwrap(), b"v1.2");
}

#[test]
fn vanished_client_fails_pending_server_call_with_peer_gone_fast() {
    let (tx, rx) = mpsc::channel::<(Result<Bytes, CallError>, Duration)>();
    let tx = Arc::new(Mutex::new(tx));
    let o = opts().on_connection(move |peer| {
        let tx = tx.clone();
        let fut = peer
            .rpc()
            .call_with_timeout("never.answers", b"", Duration::from_secs(30));
        glommio::spawn_local(async move {
            let t = Instant::now();
            let r = fut.await;
            tx.lock().unwrap().send((r, t.elapsed())).unwrap();
        })
        .detach();
    });
    let srv = server(o);
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), Some("gone"));
    p.recv_until(|f| matches!(f, Frame::RpcRequest(_)).then_some(()));
    drop(p);
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("call resolved");
    assert_eq!(r.unwrap_err(), CallError::PeerGone);
    assert!(
        took < Duration::from_secs(2),
        "failed promptly, took {took:?}"
    );
}

#[test]
fn handler_failure_codes_reach_the_caller() {
    let o = opts().handle("fail", |_p, _r| async move {
        Err(RpcFailure::new(4040, "custom"))
    });
    let srv = server(o);
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), None);
    assert_eq!(
        p.call(1, "fail", b"").unwrap_err(),
        (4040, "custom".to_string())
    );
}

#[test]
fn duplicate_id_rejected_and_resume_token_takes_over() {
    let srv = server(opts());
    let addr = srv.local_addr().unwrap();
    let mut a = RawPeer::connect(addr, Some("dup"));
    let mut b = RawPeer::tcp(addr);
    b.send(&hello(Some("dup"), Some(&[0u8; 16])));
    b.expect_close(Code::PeerIdTaken);
    let mut c = RawPeer::tcp(addr);
    c.send(&hello(Some("dup"), Some(&a.token)));
    c.expect_welcome();
    assert_ne!(c.session, a.session);
    a.expect_close(Code::Replaced);
    wait_until("directory points at the new session", || {
        srv.connections()
            .iter()
            .any(|i| i.peer_id == "dup" && i.session_id == c.session)
    });
    assert_eq!(c.call(1, "echo", b"still here").unwrap(), b"still here");
}

#[test]
fn close_is_idempotent_and_peers_get_shutdown() {
    let srv = server(opts());
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), Some("s"));
    srv.close();
    srv.close();
    assert!(srv.is_closed());
    p.expect_close(Code::Shutdown);
}

#[test]
fn second_listen_on_a_taken_port_is_a_typed_error() {
    let srv = server(opts());
    let addr = srv.local_addr().unwrap();
    let mut o = opts();
    o.endpoints = vec![peerd_server::Endpoint::Tcp(addr.to_string())];
    o.pin = false;
    match listen(o) {
        Err(ListenError::AddrInUse { addr: a }) => assert_eq!(a, addr.to_string()),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    let msg = ListenError::AddrInUse {
        addr: addr.to_string(),
    }
    .to_string();
    assert!(msg.contains(&addr.to_string()));
}

#[test]
fn max_connections_rejects_the_next_one_and_counts_it() {
    let mut o = opts();
    o.limits.max_connections = 3;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let _a: Vec<RawPeer> = (0..3).map(|_| RawPeer::connect(addr, None)).collect();
    let mut extra = RawPeer::tcp(addr);
    extra.expect_close(Code::Overloaded);
    assert_eq!(srv.dropped_connections(), 1);
    assert_eq!(srv.connection_count(), 3);
}

#[test]
fn oversized_and_garbage_frames_close_only_the_offender() {
    let mut o = opts();
    o.limits.max_frame_len = 1024;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut good = RawPeer::connect(addr, Some("good"));

    let mut big = RawPeer::connect(addr, Some("big"));
    let mut hdr = [0u8; 8];
    codec::Header {
        body_len: 1 << 30,
        kind: codec::FrameKind::Event,
    }
    .write(&mut hdr);
    big.send_raw(&hdr);
    big.expect_close(Code::TooLarge);

    let mut bad = RawPeer::connect(addr, Some("bad"));
    let mut hdr = [0u8; 8];
    codec::Header {
        body_len: 40,
        kind: codec::FrameKind::RpcRequest,
    }
    .write(&mut hdr);
    bad.send_raw(&hdr);
    bad.send_raw(&[0xAB; 40]);
    bad.expect_close(Code::BadFrame);

    let mut unknown = RawPeer::connect(addr, Some("unk"));
    unknown.send_raw(&[0, 0, 0, 0, 0xEE, 0, 0, 0]);
    unknown.expect_close(Code::BadFrame);

    assert_eq!(good.call(1, "echo", b"ok").unwrap(), b"ok");
    wait_until("offenders deregistered", || srv.connections().len() == 1);
}

#[test]
fn handshake_rules() {
    let mut o = opts();
    o.handshake_timeout = Duration::from_millis(300);
    let srv = server(o);
    let addr = srv.local_addr().unwrap();

    // Silent client (slowloris): rejected after the deadline.
    let t = Instant::now();
    let mut silent = RawPeer::tcp(addr);
    silent.expect_close(Code::HandshakeTimeout);
    assert!(t.elapsed() < Duration::from_secs(3));

    // One byte every 100 ms: each read is well within the deadline, so only a deadline on
    // the whole handshake (not one that every byte renews) closes this peer before its
    // Hello is complete. The 100 ms receive both paces the drip and watches for the answer.
    let mut slow = RawPeer::tcp(addr);
    let h = frame(&hello(Some("slow"), None));
    let mut sent = 0;
    let answer = loop {
        assert!(
            sent < h.len(),
            "the whole Hello trickled in: no handshake deadline"
        );
        slow.send_raw(&h[sent..=sent]);
        sent += 1;
        match slow.recv_within(Duration::from_millis(100)) {
            Recv::Timeout => {}
            other => break other,
        }
    };
    let f = answer.frame().expect("an answer before the stream ends");
    let code = match codec::codec::decode_bytes(&f).unwrap() {
        Frame::Reject(r) => r.code.to_native(),
        Frame::Close(c) => c.code.to_native(),
        other => panic!("expected handshake_timeout after {sent} bytes, got {other:?}"),
    };
    assert_eq!(code, Code::HandshakeTimeout.as_u16(), "after {sent} bytes");
    slow.expect_end(WAIT);

    // Something other than Hello first.
    let mut wrong = RawPeer::tcp(addr);
    wrong.send(&codec::Ping { nonce: 1 });
    wrong.expect_close(Code::BadFrame);

    // Version 0 is not spoken.
    let mut old = RawPeer::tcp(addr);
    let mut h = hello(None, None);
    h.version = 0;
    old.send(&h);
    old.expect_close(Code::UnsupportedVersion);

    // All-digit declared ids are reserved for the server.
    let mut digits = RawPeer::tcp(addr);
    digits.send(&hello(Some("123"), None));
    digits.expect_close(Code::InvalidArgument);

    // A Hello larger than the handshake limit.
    let mut huge = RawPeer::tcp(addr);
    let mut h = hello(Some("huge"), None);
    h.credentials = Some(vec![0u8; 64 * 1024].into());
    huge.send(&h);
    huge.expect_close(Code::TooLarge);

    // Still serving.
    let mut ok = RawPeer::connect(addr, Some("fine"));
    assert_eq!(ok.call(1, "echo", b"x").unwrap(), b"x");
}

#[test]
fn authenticator_rejects_bad_credentials() {
    let o = opts().authenticate(|_id, cred| match cred {
        Some(b"secret") => Ok(()),
        _ => Err("bad credentials".into()),
    });
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut bad = RawPeer::tcp(addr);
    let mut h = hello(Some("x"), None);
    h.credentials = Some(b"wrong"[..].into());
    bad.send(&h);
    bad.expect_close(Code::Unauthorized);
    let mut good = RawPeer::tcp(addr);
    let mut h = hello(Some("x"), None);
    h.credentials = Some(b"secret"[..].into());
    good.send(&h);
    good.expect_welcome();
}

#[test]
fn unix_socket_endpoint() {
    let dir = peerd_testkit::Scratch::new("unix-endpoint");
    let path = dir.join("s.sock");
    let mut o = opts();
    o.endpoints = vec![peerd_server::Endpoint::Unix(path.clone())];
    o.pin = false;
    let srv = listen(o).unwrap();
    assert_eq!(srv.endpoint_string(), format!("unix:{}", path.display()));
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.write_all(&frame(&hello(Some("u"), None))).unwrap();
    s.write_all(&frame(&codec::RpcRequest {
        id: 1,
        method: "echo".into(),
        peer: None,
        timeout_ms: 0,
        params: b"unix"[..].into(),
    }))
    .unwrap();
    let mut framer = codec::Framer::new(1 << 20);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::Read;
    while got.len() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        framer.extend(&buf[..n]);
        while let Some(f) = framer.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert!(matches!(
        codec::codec::decode_bytes(&got[0]).unwrap(),
        Frame::Welcome(_)
    ));
    match codec::codec::decode_bytes(&got[1]).unwrap() {
        Frame::RpcResponse(r) => assert_eq!(r.result.as_slice(), b"unix"),
        other => panic!("{other:?}"),
    }
    // A second server on the same live path is refused.
    let mut o = opts();
    o.endpoints = vec![peerd_server::Endpoint::Unix(path.clone())];
    assert!(matches!(listen(o), Err(ListenError::UnixPathInUse { .. })));
    srv.close();
    assert!(!path.exists(), "socket file removed on close");
}

/// The Pings a silent peer gets before the server's Close, and the Close's code.
fn pings_then_close(p: &mut RawPeer) -> (u32, Option<Code>) {
    let mut pings = 0;
    let code = p.recv_until(|f| match f {
        Frame::Ping(_) => {
            pings += 1;
            None
        }
        Frame::Close(c) => Some(c.code.to_native()),
        _ => None,
    });
    (pings, Code::from_u16(code))
}

#[test]
fn idle_peer_is_pinged_then_closed() {
    let mut o = opts();
    o.heartbeat = Duration::from_millis(100);
    let srv = server(o);
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), None);
    let silent_since = std::time::Instant::now();
    // The raw peer never answers: a Ping after each silent interval, then IdleTimeout once
    // three intervals have passed (docs/PROTOCOL.md §6.6), not before.
    let (pings, code) = pings_then_close(&mut p);
    assert_eq!(code, Some(Code::IdleTimeout));
    assert!(
        silent_since.elapsed() >= Duration::from_millis(300),
        "closed early"
    );
    assert_eq!(pings, 2, "one Ping per silent interval before the close");
}

/// More peers fall silent at once than a pass of the shard's loop sends to (128): the
/// heartbeat pings them, and later closes them, a pass's budget at a time with the shard's
/// other work in between (5,000 Pings in one flush held every other peer's answer for
/// 55 ms), and misses none.
#[test]
fn many_idle_peers_are_each_pinged_then_closed() {
    let mut o = opts().shards(1);
    o.heartbeat = Duration::from_millis(200);
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut peers: Vec<RawPeer> = (0..300).map(|_| RawPeer::connect(addr, None)).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let (pings, code) = pings_then_close(p);
        assert_eq!(code, Some(Code::IdleTimeout), "peer {i}");
        assert_eq!(
            pings, 2,
            "peer {i}: one Ping per silent interval before the close"
        );
    }
}

#[test]
fn assigned_ids_resume_only_with_their_token() {
    let srv = server(opts());
    let addr = srv.local_addr().unwrap();
    let mut a = RawPeer::connect(addr, None);
    let id = a.peer_id.clone();
    // A numeric id without a token: refused (numeric ids are the server's to assign).
    let mut thief = RawPeer::tcp(addr);
    thief.send(&hello(Some(&id), None));
    thief.expect_close(Code::InvalidArgument);
    // With a wrong token: not taken over; a fresh id is assigned instead.
    let mut wrong = RawPeer::tcp(addr);
    wrong.send(&hello(Some(&id), Some(&[1u8; 16])));
    wrong.expect_welcome();
    assert_ne!(wrong.peer_id, id);
    // With the right token: the session is resumed under the same id.
    let mut again = RawPeer::tcp(addr);
    again.send(&hello(Some(&id), Some(&a.token)));
    again.expect_welcome();
    assert_eq!(again.peer_id, id);
    a.expect_close(Code::Replaced);
}

#[test]
fn bad_method_and_event_names_get_invalid_argument() {
    let srv = server(opts());
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), None);
    let long = "m".repeat(129);
    assert_eq!(
        p.call(1, &long, b"").unwrap_err().0,
        Code::InvalidArgument.as_u16()
    );
    assert_eq!(
        p.call(2, "", b"").unwrap_err().0,
        Code::InvalidArgument.as_u16()
    );
    p.send(&codec::Event {
        name: "bad\nname".into(),
        peer: None,
        payload: b""[..].into(),
    });
    let code = p.recv_until(|f| match f {
        Frame::Status(s) => Some(s.code.to_native()),
        _ => None,
    });
    assert_eq!(code, Code::InvalidArgument.as_u16());
    assert_eq!(
        p.call(3, "echo", b"ok").unwrap(),
        b"ok",
        "the connection stays usable"
    );
}
