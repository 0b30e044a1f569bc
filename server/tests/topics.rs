//! Topics, direct messages, peer-to-peer RPC, presence and signaling across two shards,
//! through real sockets.

// `Some(assert!(..))` inside recv_until closures reads best here: check and stop.
#![allow(clippy::unit_arg)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use peerd_codec::{self as codec, Code, Frame, PresenceChange, SignalKind};
use peerd_server::{ListenOptions, PeerServer};

fn srv() -> PeerServer {
    server(ListenOptions::new("127.0.0.1:0").unwrap().shards(2))
}

fn status(p: &mut RawPeer, req: u64) -> u16 {
    p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == req => Some(s.code.to_native()),
        _ => None,
    })
}

fn join(p: &mut RawPeer, topic: &str, req: u64) {
    p.send(&codec::Join {
        req,
        topic: topic.into(),
    });
    assert_eq!(status(p, req), 0, "join {topic}");
}

fn shard_of(srv: &PeerServer, id: &str) -> usize {
    srv.connections()
        .into_iter()
        .find(|c| c.peer_id == id)
        .unwrap()
        .shard
}

/// Two peers on different shards.
fn cross_shard_pair(srv: &PeerServer) -> (RawPeer, RawPeer, Vec<RawPeer>) {
    let addr = srv.local_addr().unwrap();
    let a = RawPeer::connect(addr, Some("pa"));
    let sa = shard_of(srv, "pa");
    let mut spare = Vec::new();
    for i in 0..64 {
        let id = format!("pb{i}");
        let b = RawPeer::connect(addr, Some(&id));
        if shard_of(srv, &id) != sa {
            return (a, b, spare);
        }
        spare.push(b);
    }
    panic!("no second shard used");
}

#[test]
fn fan_out_reaches_every_member_once_in_order() {
    let srv = srv();
    let addr = srv.local_addr().unwrap();
    let mut subs: Vec<RawPeer> = (0..12)
        .map(|i| RawPeer::connect(addr, Some(&format!("s{i}"))))
        .collect();
    for (i, s) in subs.iter_mut().enumerate() {
        join(s, "news", i as u64 + 1);
    }
    let shards: HashSet<usize> = (0..12).map(|i| shard_of(&srv, &format!("s{i}"))).collect();
    assert_eq!(shards.len(), 2, "members on both shards");
    assert_eq!(srv.topic_members("news").len(), 12);
    let mut publisher = RawPeer::connect(addr, Some("pub"));
    join(&mut publisher, "news", 99);
    for n in 0..50u32 {
        publisher.send(&codec::Publish {
            req: 0,
            topic: "news".into(),
            echo: false,
            payload: n.to_le_bytes().to_vec().into(),
        });
    }
    for s in subs.iter_mut() {
        for n in 0..50u32 {
            let (from, payload) = s.recv_until(|f| match f {
                Frame::TopicMessage(m) => {
                    assert_eq!(m.topic.as_str(), "news");
                    assert!(!m.direct);
                    Some((m.from.as_str().to_string(), m.payload.as_slice().to_vec()))
                }
                _ => None,
            });
            assert_eq!(from, "pub");
            assert_eq!(payload, n.to_le_bytes(), "in publish order");
        }
    }
    // The publisher is excluded unless it asks for echo.
    assert!(publisher.sync(1).iter().all(|b| !matches!(
        codec::codec::decode_bytes(b).unwrap(),
        Frame::TopicMessage(_)
    )));
    publisher.send(&codec::Publish {
        req: 5,
        topic: "news".into(),
        echo: true,
        payload: b"e"[..].into(),
    });
    publisher.recv_until(|f| matches!(f, Frame::TopicMessage(_)).then_some(()));
    // After leaving, a subscriber gets nothing more; the others still do.
    subs[0].send(&codec::Leave {
        req: 7,
        topic: "news".into(),
    });
    assert_eq!(status(&mut subs[0], 7), 0);
    // Drain the echo publish from everyone first.
    for s in subs.iter_mut().skip(1) {
        s.recv_until(|f| matches!(f, Frame::TopicMessage(_)).then_some(()));
    }
    srv.publish("news", b"after").unwrap();
    for s in subs.iter_mut().skip(1) {
        s.recv_until(|f| match f {
            Frame::TopicMessage(m) => Some(assert_eq!(m.payload.as_slice(), b"after")),
            _ => None,
        });
    }
    let leftovers = subs[0].sync(2);
    let late: Vec<_> = leftovers
        .iter()
        .filter_map(|b| match codec::codec::decode_bytes(b).unwrap() {
            Frame::TopicMessage(m) => Some(m.payload.as_slice().to_vec()),
            _ => None,
        })
        .collect();
    assert!(
        !late.contains(&b"after".to_vec()),
        "left member got a later publish"
    );
}

#[test]
fn topic_limits_and_errors() {
    let mut o = ListenOptions::new("127.0.0.1:0").unwrap().shards(2);
    o.limits.max_topics_per_peer = 2;
    o.limits.max_members_per_topic = 2;
    o.limits.max_topic_len = 8;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut a = RawPeer::connect(addr, Some("a"));
    join(&mut a, "t1", 1);
    join(&mut a, "t2", 2);
    a.send(&codec::Join {
        req: 3,
        topic: "t3".into(),
    });
    assert_eq!(status(&mut a, 3), Code::LimitExceeded.as_u16());
    a.send(&codec::Join {
        req: 4,
        topic: "much-too-long".into(),
    });
    assert_eq!(status(&mut a, 4), Code::InvalidArgument.as_u16());
    let mut b = RawPeer::connect(addr, Some("b"));
    let mut c = RawPeer::connect(addr, Some("c"));
    join(&mut b, "t1", 1);
    c.send(&codec::Join {
        req: 2,
        topic: "t1".into(),
    });
    assert_eq!(
        status(&mut c, 2),
        Code::LimitExceeded.as_u16(),
        "topic full"
    );
    // TopicSend to a non-member and to nobody.
    a.send(&codec::TopicSend {
        req: 5,
        topic: "t1".into(),
        to: "c".into(),
        payload: b""[..].into(),
    });
    assert_eq!(status(&mut a, 5), Code::NotMember.as_u16());
    a.send(&codec::TopicSend {
        req: 6,
        topic: "t1".into(),
        to: "zz".into(),
        payload: b""[..].into(),
    });
    assert_eq!(status(&mut a, 6), Code::UnknownPeer.as_u16());
    a.send(&codec::Leave {
        req: 7,
        topic: "nope".into(),
    });
    assert_eq!(status(&mut a, 7), Code::NotMember.as_u16());
}

#[test]
fn direct_messages_and_p2p_rpc_across_shards() {
    let srv = srv();
    let (mut a, mut b, _spare) = cross_shard_pair(&srv);
    let bid = b.peer_id.clone();
    assert_ne!(shard_of(&srv, "pa"), shard_of(&srv, &bid));

    // Direct event.
    a.send(&codec::Event {
        name: "dm".into(),
        peer: Some(bid.clone().into()),
        payload: b"hey"[..].into(),
    });
    let (from, payload) = b.recv_until(|f| match f {
        Frame::Event(e) => Some((
            codec::opt_str(&e.peer).map(str::to_string),
            e.payload.as_slice().to_vec(),
        )),
        _ => None,
    });
    assert_eq!(
        (from.as_deref(), payload.as_slice()),
        (Some("pa"), &b"hey"[..])
    );

    // Topic send to one member.
    join(&mut a, "room", 1);
    join(&mut b, "room", 2);
    a.send(&codec::TopicSend {
        req: 3,
        topic: "room".into(),
        to: bid.clone().into(),
        payload: b"one"[..].into(),
    });
    assert_eq!(status(&mut a, 3), 0);
    b.recv_until(|f| match f {
        Frame::TopicMessage(m) => Some(assert!(
            m.direct && m.from.as_str() == "pa" && m.payload.as_slice() == b"one"
        )),
        _ => None,
    });

    // Peer-to-peer RPC: a calls b through the server.
    a.send(&codec::RpcRequest {
        id: 41,
        method: "add".into(),
        peer: Some(bid.clone().into()),
        timeout_ms: 5000,
        params: b"2+2"[..].into(),
    });
    let (sid, caller) = b.recv_until(|f| match f {
        Frame::RpcRequest(r) => Some((
            r.id.to_native(),
            codec::opt_str(&r.peer).map(str::to_string),
        )),
        _ => None,
    });
    assert_eq!(caller.as_deref(), Some("pa"));
    b.send(&codec::RpcResponse {
        id: sid,
        result: b"4"[..].into(),
    });
    let got = a.recv_until(|f| match f {
        Frame::RpcResponse(r) if r.id.to_native() == 41 => Some(r.result.as_slice().to_vec()),
        Frame::RpcError(e) => panic!("{}", e.message.as_str()),
        _ => None,
    });
    assert_eq!(got, b"4");

    // Errors from the callee are relayed with their code.
    a.send(&codec::RpcRequest {
        id: 42,
        method: "x".into(),
        peer: Some(bid.clone().into()),
        timeout_ms: 5000,
        params: b""[..].into(),
    });
    let sid = b.recv_until(|f| match f {
        Frame::RpcRequest(r) => Some(r.id.to_native()),
        _ => None,
    });
    b.send(&codec::RpcError {
        id: sid,
        code: Code::MethodNotFound.as_u16(),
        message: "no".into(),
    });
    assert_eq!(
        a.recv_until(|f| match f {
            Frame::RpcError(e) if e.id.to_native() == 42 => Some(e.code.to_native()),
            _ => None,
        }),
        Code::MethodNotFound.as_u16()
    );

    // Unknown peer.
    assert_eq!(a_call_err(&mut a, 43, "ghost"), Code::UnknownPeer.as_u16());
    a.send(&codec::Event {
        name: "dm".into(),
        peer: Some("ghost".into()),
        payload: b""[..].into(),
    });
    assert_eq!(status(&mut a, 0), Code::UnknownPeer.as_u16());

    // Deadline: the callee never answers.
    a.send(&codec::RpcRequest {
        id: 44,
        method: "slow".into(),
        peer: Some(bid.clone().into()),
        timeout_ms: 200,
        params: b""[..].into(),
    });
    b.recv_until(|f| matches!(f, Frame::RpcRequest(_)).then_some(()));
    assert_eq!(
        a.recv_until(|f| match f {
            Frame::RpcError(e) if e.id.to_native() == 44 => Some(e.code.to_native()),
            _ => None,
        }),
        Code::Timeout.as_u16()
    );

    // Callee vanishes mid-call: PeerGone, promptly.
    a.send(&codec::RpcRequest {
        id: 45,
        method: "slow".into(),
        peer: Some(bid.clone().into()),
        timeout_ms: 30000,
        params: b""[..].into(),
    });
    b.recv_until(|f| matches!(f, Frame::RpcRequest(_)).then_some(()));
    let t = Instant::now();
    drop(b);
    assert_eq!(
        a.recv_until(|f| match f {
            Frame::RpcError(e) if e.id.to_native() == 45 => Some(e.code.to_native()),
            _ => None,
        }),
        Code::PeerGone.as_u16()
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

fn a_call_err(a: &mut RawPeer, id: u64, to: &str) -> u16 {
    a.send(&codec::RpcRequest {
        id,
        method: "m".into(),
        peer: Some(to.into()),
        timeout_ms: 1000,
        params: b""[..].into(),
    });
    a.recv_until(|f| match f {
        Frame::RpcError(e) if e.id.to_native() == id => Some(e.code.to_native()),
        _ => None,
    })
}

fn presence(p: &mut RawPeer) -> (String, PresenceChange) {
    p.recv_until(|f| match f {
        Frame::Presence(e) => Some((
            e.peer.as_str().to_string(),
            match e.change {
                codec::ArchivedPresenceChange::Join => PresenceChange::Join,
                codec::ArchivedPresenceChange::Leave => PresenceChange::Leave,
            },
        )),
        _ => None,
    })
}

fn snapshot(p: &mut RawPeer) -> Vec<String> {
    p.recv_until(|f| match f {
        Frame::PresenceSnapshot(s) => {
            Some(s.peers.iter().map(|x| x.as_str().to_string()).collect())
        }
        _ => None,
    })
}

#[test]
fn presence_snapshot_then_live_changes() {
    let srv = srv();
    let addr = srv.local_addr().unwrap();
    let early: Vec<RawPeer> = (0..4)
        .map(|i| RawPeer::connect(addr, Some(&format!("e{i}"))))
        .collect();
    let mut w = RawPeer::connect(addr, Some("watcher"));
    w.send(&codec::Watch {
        req: 1,
        topic: None,
    });
    let snap = snapshot(&mut w);
    assert_eq!(snap, vec!["e0", "e1", "e2", "e3", "watcher"]);
    assert_eq!(status(&mut w, 1), 0);
    let late = RawPeer::connect(addr, Some("late"));
    assert_eq!(presence(&mut w), ("late".to_string(), PresenceChange::Join));
    drop(late);
    assert_eq!(
        presence(&mut w),
        ("late".to_string(), PresenceChange::Leave)
    );
    drop(early);
    let mut left = HashSet::new();
    for _ in 0..4 {
        let (p, c) = presence(&mut w);
        assert_eq!(c, PresenceChange::Leave);
        assert!(left.insert(p), "each leave once");
    }
    // Resume/takeover: leave then join, never a duplicate join.
    let r1 = RawPeer::connect(addr, Some("res"));
    assert_eq!(presence(&mut w), ("res".to_string(), PresenceChange::Join));
    let mut r2 = RawPeer::tcp(addr);
    r2.send(&hello(Some("res"), Some(&r1.token)));
    r2.expect_welcome();
    assert_eq!(presence(&mut w), ("res".to_string(), PresenceChange::Leave));
    assert_eq!(presence(&mut w), ("res".to_string(), PresenceChange::Join));
    let extra = w.sync(5);
    assert!(
        extra
            .iter()
            .all(|b| !matches!(codec::codec::decode_bytes(b).unwrap(), Frame::Presence(_))),
        "no duplicate events"
    );

    // Topic watch: members only.
    let mut m = RawPeer::connect(addr, Some("member"));
    join(&mut m, "chat", 1);
    w.send(&codec::Watch {
        req: 2,
        topic: Some("chat".into()),
    });
    assert_eq!(snapshot(&mut w), vec!["member"]);
    let mut m2 = RawPeer::connect(addr, Some("member2"));
    let _ = presence(&mut w); // global join of member2
    join(&mut m2, "chat", 1);
    let ev = w.recv_until(|f| match f {
        Frame::Presence(e) if codec::opt_str(&e.topic) == Some("chat") => {
            Some(e.peer.as_str().to_string())
        }
        _ => None,
    });
    assert_eq!(ev, "member2");
}

#[test]
fn signaling_relay() {
    let srv = srv();
    let addr = srv.local_addr().unwrap();
    let mut peers: Vec<RawPeer> = (0..4)
        .map(|i| RawPeer::connect(addr, Some(&format!("w{i}"))))
        .collect();
    for (i, p) in peers.iter_mut().enumerate() {
        join(p, "call", i as u64 + 1);
    }
    let mut outsider = RawPeer::connect(addr, Some("out"));
    outsider.send(&codec::Signal {
        req: 1,
        room: "call".into(),
        kind: SignalKind::Offer,
        peer: None,
        payload: b"sdp"[..].into(),
    });
    assert_eq!(status(&mut outsider, 1), Code::NotMember.as_u16());

    peers[0].send(&codec::ListPeers {
        req: 9,
        topic: Some("call".into()),
    });
    let listed = peers[0].recv_until(|f| match f {
        Frame::PeerList(l) if l.req.to_native() == 9 => Some(
            l.peers
                .iter()
                .map(|s| s.as_str().to_string())
                .collect::<Vec<_>>(),
        ),
        _ => None,
    });
    assert_eq!(listed, vec!["w0", "w1", "w2", "w3"]);

    let sdp = b"v=0 o=- 1 2 IN IP4 127.0.0.1 opaque".to_vec();
    peers[0].send(&codec::Signal {
        req: 2,
        room: "call".into(),
        kind: SignalKind::Offer,
        peer: None,
        payload: sdp.clone().into(),
    });
    assert_eq!(status(&mut peers[0], 2), 0);
    for p in peers.iter_mut().skip(1) {
        let (from, payload) = p.recv_until(|f| match f {
            Frame::Signal(s) => {
                assert_eq!(s.kind, codec::ArchivedSignalKind::Offer);
                Some((
                    codec::opt_str(&s.peer).unwrap().to_string(),
                    s.payload.as_slice().to_vec(),
                ))
            }
            _ => None,
        });
        assert_eq!(
            (from.as_str(), payload.as_slice()),
            ("w0", sdp.as_slice()),
            "payload relayed untouched"
        );
    }
    // Answer back to the offerer only; candidate to one peer.
    peers[2].send(&codec::Signal {
        req: 3,
        room: "call".into(),
        kind: SignalKind::Answer,
        peer: Some("w0".into()),
        payload: b"ans"[..].into(),
    });
    assert_eq!(status(&mut peers[2], 3), 0);
    peers[0].recv_until(|f| match f {
        Frame::Signal(s) => Some(assert!(
            s.kind == codec::ArchivedSignalKind::Answer && codec::opt_str(&s.peer) == Some("w2")
        )),
        _ => None,
    });
    peers[0].send(&codec::Signal {
        req: 4,
        room: "call".into(),
        kind: SignalKind::Candidate,
        peer: Some("w2".into()),
        payload: b"cand"[..].into(),
    });
    peers[2].recv_until(|f| match f {
        Frame::Signal(s) => Some(assert!(
            s.kind == codec::ArchivedSignalKind::Candidate && s.payload.as_slice() == b"cand"
        )),
        _ => None,
    });
    for i in [1usize, 3] {
        let stray = peers[i].sync(7);
        assert!(
            stray
                .iter()
                .all(|b| !matches!(codec::codec::decode_bytes(b).unwrap(), Frame::Signal(_))),
            "w{i} got a signal not meant for it"
        );
    }
    // Answers may not be sent to the whole room.
    peers[1].send(&codec::Signal {
        req: 5,
        room: "call".into(),
        kind: SignalKind::Answer,
        peer: None,
        payload: b""[..].into(),
    });
    assert_eq!(status(&mut peers[1], 5), Code::InvalidArgument.as_u16());
}

#[test]
fn churn_leaves_no_state_behind() {
    let srv = srv();
    let addr = srv.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            std::thread::spawn(move || {
                let mut round = 0u64;
                while Instant::now() < deadline && round < 200 {
                    let mut p = RawPeer::connect(addr, Some(&format!("churn{t}-{round}")));
                    let topic = format!("t{}", round % 3);
                    p.send(&codec::Join {
                        req: 0,
                        topic: topic.clone().into(),
                    });
                    p.send(&codec::Watch {
                        req: 0,
                        topic: Some(topic.clone().into()),
                    });
                    if round % 2 == 0 {
                        p.send(&codec::Watch {
                            req: 0,
                            topic: None,
                        });
                    }
                    p.send(&codec::Publish {
                        req: 0,
                        topic: topic.clone().into(),
                        echo: true,
                        payload: b"x"[..].into(),
                    });
                    if round % 3 == 0 {
                        p.send(&codec::Leave {
                            req: 0,
                            topic: topic.into(),
                        });
                    }
                    p.sync(round);
                    round += 1;
                    // Drop: disconnect without a Close, the rudest way.
                }
                round
            })
        })
        .collect();
    let rounds: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(rounds > 12, "the churn ran ({rounds} rounds)");
    wait_until("all state released", || {
        let s = srv.stats();
        s.connections == 0 && s.peers == 0 && s.topics == 0
    });
}

#[test]
fn subscriber_that_never_reads_is_closed_as_slow_consumer() {
    let (gone_tx, gone) = std::sync::mpsc::channel::<(String, u16)>();
    let gone_tx = std::sync::Mutex::new(gone_tx);
    let mut o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .on_connection(move |peer| {
            let tx = gone_tx.lock().unwrap().clone();
            let id = peer.peer_id().to_string();
            peer.on_disconnected(move |code| {
                let _ = tx.send((id, code));
            });
        });
    o.limits.outbound_queue_bytes = 256 * 1024;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut slow = RawPeer::connect(addr, Some("slow"));
    join(&mut slow, "firehose", 1);
    // Make the slow peer's kernel buffers small so the server-side queue fills quickly.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&slow.s);
    let small: libc::c_int = 4096;
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            4,
        );
    }
    let mut fast = RawPeer::connect(addr, Some("fast"));
    join(&mut fast, "firehose", 2);
    const N: usize = 20_000;
    let (progress_tx, progress) = std::sync::mpsc::channel::<usize>();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < N {
            let b = fast.recv().expect("fast subscriber keeps receiving");
            if let Frame::TopicMessage(_) = codec::codec::decode_bytes(&b).unwrap() {
                got += 1;
                if got % 50 == 0 {
                    let _ = progress_tx.send(got);
                }
            }
        }
        got
    });
    let mut publisher = RawPeer::connect(addr, Some("pub"));
    let payload = vec![0u8; 1024];
    let mut acked = 0;
    for i in 0..N {
        // Keep the fast subscriber within 100 KiB of the publisher (well under its 256 KiB
        // queue limit, however slow this machine is) while the slow one falls ever behind.
        while i >= acked + 100 {
            acked = progress
                .recv_timeout(Duration::from_secs(10))
                .expect("fast subscriber progresses");
        }
        publisher.send(&codec::Publish {
            req: 0,
            topic: "firehose".into(),
            echo: false,
            payload: payload.clone().into(),
        });
    }
    assert_eq!(
        reader.join().unwrap(),
        N,
        "the fast subscriber got every message"
    );
    // The slow peer was closed with slow_consumer (its unread backlog is not drained here:
    // through a 4 KiB receive window that would take minutes).
    let (id, code) = gone
        .recv_timeout(Duration::from_secs(10))
        .expect("a peer was closed");
    assert_eq!((id.as_str(), code), ("slow", Code::SlowConsumer.as_u16()));
    drop(slow);
}

#[test]
fn embedding_code_sees_presence() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let srv = server(
        ListenOptions::new("127.0.0.1:0")
            .unwrap()
            .shards(2)
            .on_presence(move |n| tx.lock().unwrap().send(n).unwrap()),
    );
    let addr = srv.local_addr().unwrap();
    let mut p = RawPeer::connect(addr, Some("seen"));
    join(&mut p, "lobby", 1);
    drop(p);
    let got: Vec<(Option<String>, String, bool)> = (0..4)
        .map(|_| {
            let n = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            (n.topic, n.peer_id, n.joined)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (None, "seen".into(), true),
            (Some("lobby".into()), "seen".into(), true),
            (Some("lobby".into()), "seen".into(), false),
            (None, "seen".into(), false),
        ]
    );
}

/// What a request makes the server send to the requester itself comes before the request's
/// Status (PROTOCOL.md §6.4): the publisher's echoed TopicMessage, and a TopicSend to
/// itself. The other member is on the other shard, so its copy travels between shards while
/// the publisher's stays on its own.
#[test]
fn the_requesters_own_copy_arrives_before_its_status() {
    let srv = srv();
    let (mut a, mut b, _spare) = cross_shard_pair(&srv);
    join(&mut a, "room", 1);
    join(&mut b, "room", 2);
    let next = |p: &mut RawPeer| {
        let f = p.recv().expect("a frame");
        match codec::codec::decode_bytes(&f).unwrap() {
            Frame::TopicMessage(m) => (
                "TopicMessage",
                m.from.as_str().to_string(),
                m.direct,
                m.payload.as_slice().to_vec(),
            ),
            Frame::Status(s) => (
                "Status",
                s.req.to_native().to_string(),
                s.code.to_native() == 0,
                Vec::new(),
            ),
            other => panic!("unexpected {other:?}"),
        }
    };
    for n in 0..20u64 {
        let req = 100 + n;
        a.send(&codec::Publish {
            req,
            topic: "room".into(),
            echo: true,
            payload: n.to_le_bytes().to_vec().into(),
        });
        assert_eq!(
            next(&mut a),
            ("TopicMessage", "pa".into(), false, n.to_le_bytes().to_vec()),
            "publish {n}: the echo first"
        );
        assert_eq!(next(&mut a), ("Status", req.to_string(), true, vec![]));
        let (kind, from, _, payload) = next(&mut b);
        assert_eq!((kind, from.as_str()), ("TopicMessage", "pa"));
        assert_eq!(payload, n.to_le_bytes());
    }
    a.send(&codec::TopicSend {
        req: 200,
        topic: "room".into(),
        to: "pa".into(),
        payload: b"to myself".to_vec().into(),
    });
    assert_eq!(
        next(&mut a),
        ("TopicMessage", "pa".into(), true, b"to myself".to_vec())
    );
    assert_eq!(next(&mut a), ("Status", "200".into(), true, vec![]));
}
