//! Restarts without losses (docs/PROTOCOL.md §6.10): the drain handshake as a client sees it
//! on the wire, a successor that inherits the listening sockets, and stopping to accept
//! while the connected peers stay.

mod common;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::RawPeer;
use peerd_codec::{self as codec, codec::decode_bytes, Frame};
use peerd_server::{listen, Code, DrainOptions, ListenOptions, PeerServer};
use peerd_testkit::{call_answer, hello, Recv};

/// A server whose `who` method answers `name`, and whose `slow` method answers after the
/// milliseconds its params say (as decimal text).
fn server(addr: &str, name: &'static str, inherit: Option<&PeerServer>) -> PeerServer {
    let mut o = ListenOptions::new(addr)
        .unwrap()
        .shards(2)
        .handover(true)
        .handle("who", move |_p, _r| async move { Ok(Bytes::from(name)) })
        .handle("slow", |_p, r| async move {
            let ms: u64 = std::str::from_utf8(&r.params).unwrap().parse().unwrap();
            glommio::timer::sleep(Duration::from_millis(ms)).await;
            Ok(r.params)
        });
    o.pin = false;
    if let Some(prev) = inherit {
        o = o.inherit(prev.listener_fds().unwrap());
    }
    listen(o).unwrap()
}

fn request(id: u64, method: &str, params: &[u8]) -> codec::RpcRequest<'static> {
    codec::RpcRequest {
        id,
        method: Cow::Owned(method.into()),
        peer: None,
        timeout_ms: 0,
        params: Cow::Owned(params.to_vec()),
    }
}

fn close(code: Code) -> codec::Close<'static> {
    codec::Close {
        code: code.as_u16(),
        reason: Cow::Borrowed(""),
    }
}

/// Wait for the drain notice: Status{req 0, reconnect}.
fn expect_notice(p: &mut RawPeer) {
    p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == 0 => {
            assert_eq!(
                s.code.to_native(),
                Code::Reconnect.as_u16(),
                "{}",
                s.message.as_str()
            );
            Some(())
        }
        _ => None,
    });
}

fn drain_in_background(s: Arc<PeerServer>, opts: DrainOptions) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let r = s.drain(opts);
        assert_eq!(r.remaining, 0, "{r:?}");
    })
}

#[test]
fn a_drained_peer_gets_every_answer_then_reconnects_to_the_successor() {
    let a = Arc::new(server("127.0.0.1:0", "A", None));
    let addr = a.local_addr().unwrap();
    let mut p = RawPeer::connect(addr, Some("alice"));
    assert_eq!(p.call(1, "who", b"").unwrap(), b"A");
    // The successor shares A's sockets: from here a connect may land on either.
    let b = server(&addr.to_string(), "B", Some(&a));
    let drain = drain_in_background(
        a.clone(),
        DrainOptions {
            window: Duration::ZERO,
            grace: Duration::from_secs(5),
        },
    );
    expect_notice(&mut p);
    // A slow call in flight, then our half-close: the answer must still come, and only
    // then A's Close{reconnect}.
    p.send(&request(2, "slow", b"200"));
    p.send(&close(Code::Reconnect));
    let answer = p.recv_until(|f| call_answer(f, 2));
    assert_eq!(answer.unwrap(), b"200");
    p.expect_close(Code::Reconnect);
    drain.join().unwrap();
    assert!(!a.is_ready());
    // A has stopped; the same address is B's alone now.
    let mut again = RawPeer::tcp(addr);
    again
        .handshake(&hello(Some("alice"), Some(&p.token)))
        .unwrap();
    assert_eq!(again.call(1, "who", b"").unwrap(), b"B");
    assert!(b.is_ready());
}

#[test]
fn after_its_close_a_draining_peer_is_not_acted_on_except_for_answers() {
    let a = Arc::new(server("127.0.0.1:0", "A", None));
    let addr = a.local_addr().unwrap();
    let mut p = RawPeer::connect(addr, Some("carol"));
    // A v1 member: sent no notice, it stays a member until the grace ends, so it would
    // see anything delivered meanwhile.
    let mut watcher = RawPeer::tcp(addr);
    let mut h = hello(Some("dave"), None);
    h.version = 1;
    watcher.handshake(&h).unwrap();
    watcher.send(&codec::Join {
        req: 1,
        topic: Cow::Borrowed("t"),
    });
    watcher.recv_until(|f| matches!(f, Frame::Status(s) if s.req.to_native() == 1).then_some(()));
    p.send(&codec::Join {
        req: 1,
        topic: Cow::Borrowed("t"),
    });
    p.recv_until(|f| matches!(f, Frame::Status(s) if s.req.to_native() == 1).then_some(()));
    let drain = drain_in_background(
        a.clone(),
        DrainOptions {
            window: Duration::ZERO,
            grace: Duration::from_secs(1),
        },
    );
    expect_notice(&mut p);
    // A call in flight keeps carol's connection open after her Close...
    p.send(&request(2, "slow", b"300"));
    p.send(&close(Code::Reconnect));
    // ...during which she breaks the rule: a publish after the Close. It must not reach the member.
    p.send(&codec::Publish {
        req: 0,
        topic: Cow::Borrowed("t"),
        payload: Cow::Borrowed(b"late"),
        echo: false,
    });
    assert_eq!(p.recv_until(|f| call_answer(f, 2)).unwrap(), b"300");
    p.expect_close(Code::Reconnect);
    // Everything dave receives up to his Close at the grace is checked.
    loop {
        match watcher.recv_within(Duration::from_secs(5)) {
            Recv::Frame(f) => match decode_bytes(&f).unwrap() {
                Frame::TopicMessage(m) => panic!(
                    "delivered after the sender's Close: {:?}",
                    m.payload.as_slice()
                ),
                Frame::Close(c) => {
                    assert_eq!(c.code.to_native(), Code::Shutdown.as_u16());
                    break;
                }
                _ => {}
            },
            other => panic!("dave's stream: {other:?}"),
        }
    }
    drain.join().unwrap();
}

#[test]
fn a_v1_client_and_a_client_that_never_finishes_get_shutdown_at_the_grace() {
    let a = Arc::new(server("127.0.0.1:0", "A", None));
    let addr = a.local_addr().unwrap();
    let mut v1 = RawPeer::tcp(addr);
    let mut h = hello(Some("old"), None);
    h.version = 1;
    v1.handshake(&h).unwrap();
    let mut silent = RawPeer::connect(addr, Some("silent"));
    let started = Instant::now();
    let grace = Duration::from_millis(300);
    let drain = drain_in_background(
        a.clone(),
        DrainOptions {
            window: Duration::ZERO,
            grace,
        },
    );
    // The v1 client is sent no notice (it would not know it): the first thing it gets is
    // the Close, after the grace.
    v1.expect_close(Code::Shutdown);
    assert!(started.elapsed() >= grace);
    expect_notice(&mut silent);
    silent.expect_close(Code::Shutdown);
    drain.join().unwrap();
}

#[test]
fn notices_are_spread_over_the_window() {
    let a = Arc::new(server("127.0.0.1:0", "A", None));
    let addr = a.local_addr().unwrap();
    let mut peers: Vec<RawPeer> = (0..6)
        .map(|i| RawPeer::connect(addr, Some(&format!("p{i}"))))
        .collect();
    let window = Duration::from_millis(600);
    let started = Instant::now();
    let drain = drain_in_background(
        a.clone(),
        DrainOptions {
            window,
            grace: Duration::from_secs(5),
        },
    );
    let mut at = Vec::new();
    for p in &mut peers {
        expect_notice(p);
        at.push(started.elapsed());
        p.send(&close(Code::Reconnect));
    }
    for p in &mut peers {
        p.expect_close(Code::Reconnect);
    }
    drain.join().unwrap();
    // Two shards spread three peers each over the window: the first notices come at
    // once, the last ones two thirds of the way in, not all in one burst.
    at.sort();
    assert!(at[0] < window / 3, "{at:?}");
    assert!(*at.last().unwrap() >= window / 2, "{at:?}");
}

#[test]
fn stop_accepting_keeps_connected_peers_and_frees_the_port() {
    let a = server("127.0.0.1:0", "A", None);
    let addr: SocketAddr = a.local_addr().unwrap();
    let mut p = RawPeer::connect(addr, Some("erin"));
    a.stop_accepting();
    assert!(!a.is_ready());
    // New connections are refused (the port is closed), the old peer is served.
    common::wait_until("the port to close", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    assert_eq!(p.call(1, "who", b"").unwrap(), b"A");
    // And the port can be bound again by another server meanwhile.
    let b = server(&addr.to_string(), "B", None);
    let mut q = RawPeer::connect(addr, Some("frank"));
    assert_eq!(q.call(1, "who", b"").unwrap(), b"B");
    assert_eq!(p.call(2, "who", b"").unwrap(), b"A");
    drop(b);
}

#[test]
fn a_successor_with_more_shards_than_its_predecessor_accepts_on_every_socket() {
    let a = Arc::new(server("127.0.0.1:0", "A", None));
    let addr = a.local_addr().unwrap();
    let fds = a.listener_fds().unwrap();
    assert_eq!(fds.len(), 2, "one socket per shard");
    let mut o = ListenOptions::new(&addr.to_string())
        .unwrap()
        .shards(3)
        .handover(true)
        .handle("who", |_p, _r| async move { Ok(Bytes::from("B")) })
        .inherit(fds);
    o.pin = false;
    let b = listen(o).unwrap();
    a.stop_accepting();
    // Every connect from now on lands on B, whichever socket of the group takes it.
    for i in 0..20 {
        let mut q = RawPeer::connect(addr, None);
        assert_eq!(q.call(1, "who", b"").unwrap(), b"B", "connection {i}");
    }
    drop(b);
}

#[test]
fn a_successor_takes_over_a_unix_socket_path_and_the_predecessor_leaves_it_alone() {
    let path = std::env::temp_dir().join(format!("peerd-restart-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let endpoints = |tcp: &str| {
        vec![
            peerd_server::Endpoint::parse(tcp).unwrap(),
            peerd_server::Endpoint::Unix(path.clone()),
        ]
    };
    let opts = |tcp: &str, name: &'static str| {
        let mut o = ListenOptions::default()
            .shards(2)
            .handover(true)
            .handle("who", move |_p, _r| async move { Ok(Bytes::from(name)) });
        o.endpoints = endpoints(tcp);
        o.pin = false;
        o
    };
    let a = listen(opts("127.0.0.1:0", "A")).unwrap();
    let addr = a.local_addr().unwrap();
    let b = listen(opts(&addr.to_string(), "B").inherit(a.listener_fds().unwrap())).unwrap();
    a.close();
    // The path is B's: A, closing, removed only a socket file of its own.
    let s = std::os::unix::net::UnixStream::connect(&path).expect("B's socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut q = RawPeer::tcp(addr);
    q.handshake(&hello(None, None)).unwrap();
    assert_eq!(q.call(1, "who", b"").unwrap(), b"B");
    drop(b);
    assert!(!path.exists(), "B removed its socket file");
}
