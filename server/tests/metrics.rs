//! `PeerServer::metrics()` after real traffic through real sockets: every counter moves by
//! exactly what the peers did (frames and bytes by kind, handshakes welcomed and rejected
//! by reason, closes by code, slow consumers, drops at the connection limit, the RPC
//! handler histogram), and readiness turns false for the whole of a graceful close.
//!
//! The Prometheus text of the same snapshots is checked by `promtool` in the `peerd`
//! binary's tests (cli/tests/admin.rs).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{hello, publish_until_cut, server, wait_until, RawPeer};
use peerd_codec::{self as codec, Code, Frame, FrameKind};
use peerd_server::{ListenOptions, Metrics, MetricsError, ShardMetrics, TransportKind};

fn metrics(srv: &peerd_server::PeerServer) -> Metrics {
    let m = srv.metrics().expect("metrics");
    assert!(m.missing_shards.is_empty(), "every shard answers");
    assert_eq!(m.shards.len(), srv.shards());
    m
}

/// Sum of one per-shard figure over every shard.
fn sum(m: &Metrics, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
    m.shards.iter().map(f).sum()
}

fn labelled(v: &[(String, u64)], label: &str) -> u64 {
    v.iter().find(|(l, _)| l == label).map_or(0, |(_, n)| *n)
}

fn transport(v: &[(TransportKind, u64)], t: TransportKind) -> u64 {
    v.iter().find(|(k, _)| *k == t).map_or(0, |(_, n)| *n)
}

fn received(m: &Metrics, k: FrameKind) -> u64 {
    sum(m, |s| {
        s.frames.iter().find(|f| f.kind == k).unwrap().received
    })
}

fn received_bytes(m: &Metrics, k: FrameKind) -> u64 {
    sum(m, |s| {
        s.frames
            .iter()
            .find(|f| f.kind == k)
            .unwrap()
            .received_bytes
    })
}

fn sent(m: &Metrics, k: FrameKind) -> u64 {
    sum(m, |s| s.frames.iter().find(|f| f.kind == k).unwrap().sent)
}

fn join(p: &mut RawPeer, topic: &str, req: u64) {
    p.send(&codec::Join {
        req,
        topic: topic.into(),
    });
    let code = p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == req => Some(s.code.to_native()),
        _ => None,
    });
    assert_eq!(code, 0, "join {topic}");
}

#[test]
fn counters_follow_real_traffic() {
    let opts = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .handle("echo", |_peer, req| async move { Ok(req.params) })
        .authenticate(|id, _credentials| match id {
            Some("mallory") => Err("not you".into()),
            _ => Ok(()),
        });
    let srv = server(opts);
    let addr = srv.local_addr().unwrap();
    let before = metrics(&srv);
    assert!(before.ready);
    assert_eq!(sum(&before, |s| s.rpc_handler_seconds.count()), 0);

    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));
    join(&mut alice, "chat", 1);
    join(&mut bob, "chat", 1);
    let payload = vec![7u8; 1000];
    for _ in 0..10 {
        alice.send(&codec::Publish {
            req: 0,
            topic: "chat".into(),
            echo: false,
            payload: payload.as_slice().into(),
        });
    }
    // Bob gets the ten messages (from alice's shard, maybe another one: a Ping of his
    // could be answered before they arrive, so count them).
    let mut got = 0;
    while got < 10 {
        got += bob.recv_until(|f| matches!(f, Frame::TopicMessage(_)).then_some(1));
    }
    bob.sync(1);
    for i in 0..5u64 {
        assert_eq!(alice.call(10 + i, "echo", b"hi").unwrap(), b"hi");
    }
    // Refused handshakes: credentials refused, an id held by a live session.
    let mut mallory = RawPeer::tcp(addr);
    let refused = mallory.handshake(&hello(Some("mallory"), None));
    assert!(refused.is_err(), "mallory is refused");
    let mut second = RawPeer::tcp(addr);
    assert!(second.handshake(&hello(Some("alice"), None)).is_err());
    // A frame that is not what its header says: closed with bad_frame.
    let mut bad = RawPeer::connect(addr, Some("bad"));
    let mut hdr = [0u8; 8];
    codec::Header {
        body_len: 40,
        kind: FrameKind::RpcRequest,
    }
    .write(&mut hdr);
    bad.send_raw(&hdr);
    bad.send_raw(&[0xAB; 40]);
    bad.expect_close(Code::BadFrame);
    drop((mallory, second, bad));

    // Refused sockets count as open until they have lingered out.
    wait_until("only alice and bob are open", || {
        let m = metrics(&srv);
        sum(&m, |s| transport(&s.connections, TransportKind::Tcp)) == 2
    });
    let m = metrics(&srv);
    assert!(m.ready);
    assert_eq!((m.peers, m.topics, m.connections), (2, 1, 2));
    assert_eq!(sum(&m, |s| s.topic_members), 2);
    // Sockets: five accepted, three welcomed, two rejected for their reasons.
    assert_eq!(sum(&m, |s| transport(&s.accepted, TransportKind::Tcp)), 5);
    assert_eq!(sum(&m, |s| transport(&s.welcomed, TransportKind::Tcp)), 3);
    assert_eq!(sum(&m, |s| labelled(&s.rejected, "unauthorized")), 1);
    assert_eq!(sum(&m, |s| labelled(&s.rejected, "peer_id_taken")), 1);
    assert_eq!(sum(&m, |s| labelled(&s.auth_failures, "unauthorized")), 1);
    assert_eq!(sum(&m, |s| labelled(&s.closes, "bad_frame")), 1);
    assert_eq!(sum(&m, |s| s.closes.iter().map(|c| c.1).sum()), 1);
    for t in [TransportKind::Ws, TransportKind::Tls, TransportKind::Unix] {
        assert_eq!(sum(&m, |s| transport(&s.accepted, t)), 0);
    }
    // Frames in, by kind: every Hello, both Joins, ten Publishes, five calls, the bad
    // frame (split whole, then refused), one Ping.
    assert_eq!(received(&m, FrameKind::Hello), 5);
    assert_eq!(received(&m, FrameKind::Join), 2);
    assert_eq!(received(&m, FrameKind::Publish), 10);
    assert_eq!(received(&m, FrameKind::RpcRequest), 6);
    assert_eq!(received(&m, FrameKind::Ping), 1);
    let publish_bytes = received_bytes(&m, FrameKind::Publish);
    assert!(
        publish_bytes > 10 * 1000 && publish_bytes < 10 * 1200,
        "{publish_bytes} bytes for ten 1000-byte publishes"
    );
    let ping_len = common::frame(&codec::Ping { nonce: 1 }).len();
    assert_eq!(received_bytes(&m, FrameKind::Ping) as usize, ping_len);
    // Frames out: one message per recipient (alice publishes without echo), an answer per
    // call, Welcome and Reject per handshake, one Close, a Status per Join.
    assert_eq!(sent(&m, FrameKind::TopicMessage), 10);
    assert_eq!(sent(&m, FrameKind::RpcResponse), 5);
    assert_eq!(sent(&m, FrameKind::Welcome), 3);
    assert_eq!(sent(&m, FrameKind::Reject), 2);
    assert_eq!(sent(&m, FrameKind::Close), 1);
    assert_eq!(sent(&m, FrameKind::Status), 2);
    assert_eq!(sent(&m, FrameKind::Pong), 1);
    // The server-side handler: five observations in cumulative buckets.
    let mut h = m.shards[0].rpc_handler_seconds.clone();
    h.merge(&m.shards[1].rpc_handler_seconds);
    assert_eq!(h.count(), 5);
    assert!(h.sum_seconds > 0.0 && h.sum_seconds < 5.0);
    let c = h.cumulative();
    assert!(c.windows(2).all(|w| w[0] <= w[1]), "cumulative: {c:?}");
    assert_eq!(*c.last().unwrap(), 5);
    assert_eq!(c.len(), h.bounds.len() + 1);
    // Nothing was dropped or cut; rate limits do not exist yet.
    assert_eq!(sum(&m, |s| s.dropped.iter().map(|d| d.1).sum()), 0);
    assert_eq!(
        sum(&m, |s| s.slow_consumer_closes.iter().map(|d| d.1).sum()),
        0
    );
    assert_eq!(sum(&m, |s| s.rate_limit_hits), 0);
    assert!(m.shards.iter().all(|s| s.memory_budget_bytes > 0));

    // Closes by the peers' own hand: alice says Close{normal}, bob just goes.
    alice.send(&codec::Close {
        code: Code::Normal.as_u16(),
        reason: "bye".into(),
    });
    drop(bob);
    wait_until("alice and bob torn down", || srv.connections().is_empty());
    let m = metrics(&srv);
    assert_eq!(sum(&m, |s| labelled(&s.closes, "normal")), 1);
    assert_eq!(sum(&m, |s| labelled(&s.closes, "peer_gone")), 1);
    assert_eq!(sum(&m, |s| s.topic_members), 0);
    assert_eq!(m.topics, 0);
}

#[test]
fn a_slow_consumer_is_counted_with_its_reason() {
    let mut o = ListenOptions::new("127.0.0.1:0").unwrap().shards(1);
    o.limits.outbound_queue_bytes = 256 * 1024;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut slow = RawPeer::connect(addr, Some("slow"));
    join(&mut slow, "t", 1);
    let mut publisher = RawPeer::connect(addr, Some("pub"));
    let payload = vec![1u8; 3001];
    let n = publish_until_cut(&srv, &mut publisher, "t", &payload, "slow");
    let m = metrics(&srv);
    let s = &m.shards[0];
    assert_eq!(labelled(&s.slow_consumer_closes, "queue_limit"), 1);
    assert_eq!(labelled(&s.slow_consumer_closes, "memory_budget"), 0);
    assert_eq!(labelled(&s.closes, "slow_consumer"), 1);
    // Frames dropped with the slow queue were never counted as sent past the limit: what
    // was sent is what fitted, each 3001 bytes of payload and a little envelope.
    let sent = s
        .frames
        .iter()
        .find(|f| f.kind == FrameKind::TopicMessage)
        .unwrap();
    assert!(sent.sent > 0 && sent.sent < n, "{} of {n}", sent.sent);
    assert!(sent.sent_bytes >= sent.sent * 3001);
}

#[test]
fn connections_past_the_limit_are_counted_as_dropped() {
    let mut o = ListenOptions::new("127.0.0.1:0").unwrap().shards(1);
    o.limits.max_connections = 2;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let _a = RawPeer::connect(addr, Some("a"));
    let _b = RawPeer::connect(addr, Some("b"));
    let mut c = RawPeer::tcp(addr);
    c.expect_close(Code::Overloaded);
    let m = metrics(&srv);
    let s = &m.shards[0];
    assert_eq!(labelled(&s.dropped, "max_connections"), 1);
    assert_eq!(transport(&s.accepted, TransportKind::Tcp), 3);
    assert_eq!(transport(&s.welcomed, TransportKind::Tcp), 2);
    assert_eq!(transport(&s.connections, TransportKind::Tcp), 2);
    assert_eq!(srv.dropped_connections(), 1);
    assert_eq!(m.max_connections, 2);
}

#[test]
fn not_ready_for_the_whole_of_a_graceful_close() {
    // A handler that takes its time, so the drain lasts; it says when it has started.
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = started.clone();
    let opts =
        ListenOptions::new("127.0.0.1:0")
            .unwrap()
            .shards(2)
            .handle("slow", move |_peer, _req| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                async move {
                    glommio::timer::sleep(Duration::from_millis(1500)).await;
                    Ok(Bytes::from_static(b"done"))
                }
            });
    let srv = std::sync::Arc::new(server(opts));
    assert!(srv.is_ready());
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), Some("p"));
    p.send(&codec::RpcRequest {
        id: 1,
        method: "slow".into(),
        peer: None,
        timeout_ms: 0,
        params: b"".as_slice().into(),
    });
    // The call has started on its shard before the close does.
    wait_until("the call started", || {
        started.load(std::sync::atomic::Ordering::SeqCst)
    });
    let closer = {
        let srv = srv.clone();
        std::thread::spawn(move || srv.close_graceful(Duration::from_secs(5)))
    };
    wait_until("not ready once the close starts", || !srv.is_ready());
    // Still draining: the shards answer a scrape, which says not ready.
    let m = srv.metrics().expect("metrics while draining");
    assert!(!m.ready);
    assert!(
        !closer.is_finished(),
        "the drain is still waiting for the handler"
    );
    // The handler's answer arrives before the Close.
    let answer = p.recv_until(|f| match f {
        Frame::RpcResponse(r) => Some(r.result.as_slice().to_vec()),
        _ => None,
    });
    assert_eq!(answer, b"done");
    closer.join().unwrap();
    assert!(!srv.is_ready());
    assert_eq!(srv.metrics(), Err(MetricsError::Closed));
}
