//! A cluster of three `peerd serve --cluster` nodes on one real nats-server (Debian's,
//! installed by `.ci/deps`), all on loopback: peers on different nodes reach each other as
//! on one node (topics, presence, ids, calls, events, broadcasts, signaling); a node killed
//! with SIGKILL is noticed within the documented bound (3 heartbeat intervals, checked every
//! quarter) and its ids are reaped; a node paused past that bound rejoins without ghosts;
//! churn leaves every table and the id bucket empty; NATS going away is survived.
//!
//! Each test has its own NATS, so that a failure cannot leak into another.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerd_codec::codec::decode_bytes;
use peerd_codec::handshake::HandshakeError;
use peerd_codec::{self as codec, Code, Frame, PresenceChange};
use peerd_testkit::nats::Nats;
use peerd_testkit::{call_answer, hello, RawPeer, Recv, WAIT};

mod common;
use common::{peerd, Served};

const LIMIT: Duration = Duration::from_secs(30);
/// The nodes' heartbeat in these tests: a node is dead after 3 of them.
const HEARTBEAT_MS: u64 = 250;

struct Node {
    served: Served,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Node {
    fn start(nats: &Nats, cluster: &str, name: &str) -> Node {
        Node::start_with(nats, cluster, name, &[])
    }

    /// With more `peerd serve` arguments (`--shards N` replaces the default 2).
    fn start_with(nats: &Nats, cluster: &str, name: &str, extra: &[&str]) -> Node {
        let mut cmd = peerd();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-pin"]);
        if !extra.contains(&"--shards") {
            cmd.args(["--shards", "2"]);
        }
        cmd.args(["--cluster", &nats.url(), "--node-id", name])
            .args(["--cluster-name", cluster])
            .args(["--cluster-heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--admin", "127.0.0.1:0"])
            .args(extra);
        let served = Served::start(cmd, LIMIT, |l| {
            l.last().is_some_and(|l| l.starts_with("peerd admin on "))
        });
        let addr = served.endpoint().parse().expect("a TCP endpoint");
        let admin = served
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("peerd admin on http://"))
            .and_then(|r| r.split('/').next())
            .expect("admin line")
            .parse()
            .expect("admin address");
        Node {
            served,
            addr,
            admin,
        }
    }

    /// One sample of the node's /metrics.
    fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).expect("admin");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }
}

/// Three nodes, started one after the other (each joins the ones before).
fn three(nats: &Nats, cluster: &str) -> Vec<Node> {
    three_with(nats, cluster, &[])
}

fn three_with(nats: &Nats, cluster: &str, extra: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start_with(nats, cluster, n, extra))
        .collect();
    let last = &nodes[2].served.lines;
    assert!(
        last.iter().any(|l| l.contains("nodes=3")),
        "the third node sees three: {last:?}"
    );
    nodes
}

fn status(p: &mut RawPeer, req: u64) -> (u16, String) {
    p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == req => {
            Some((s.code.to_native(), s.message.as_str().to_string()))
        }
        _ => None,
    })
}

fn join(p: &mut RawPeer, req: u64, topic: &str) {
    p.send(&codec::Join {
        req,
        topic: topic.into(),
    });
    assert_eq!(status(p, req).0, Code::Ok.as_u16(), "join {topic}");
}

fn publish(p: &mut RawPeer, topic: &str, payload: &[u8]) {
    p.send(&codec::Publish {
        req: 0,
        topic: topic.into(),
        payload: Cow::Borrowed(payload),
        echo: false,
    });
}

/// Topic payloads received until (and without) `end`.
fn messages_until(p: &mut RawPeer, topic: &str, end: &[u8]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let payload = p.recv_until(|f| match f {
            Frame::TopicMessage(m) if m.topic.as_str() == topic => Some(m.payload.to_vec()),
            _ => None,
        });
        if payload == end {
            return got;
        }
        got.push(payload);
    }
}

fn peer_list(p: &mut RawPeer, req: u64, topic: Option<&str>) -> Vec<String> {
    p.send(&codec::ListPeers {
        req,
        topic: topic.map(Cow::Borrowed),
    });
    p.recv_until(|f| match f {
        Frame::PeerList(l) if l.req.to_native() == req => {
            Some(l.peers.iter().map(|s| s.as_str().to_string()).collect())
        }
        _ => None,
    })
}

/// Watch presence (of `topic`, or global); the snapshot's peers.
fn watch(p: &mut RawPeer, req: u64, topic: Option<&str>) -> Vec<String> {
    p.send(&codec::Watch {
        req,
        topic: topic.map(Cow::Borrowed),
    });
    p.recv_until(|f| match f {
        Frame::PresenceSnapshot(s) => Some(s.peers.iter().map(|p| p.to_string()).collect()),
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

/// Connect as `id`, retrying while the node refuses with `overloaded` (not in its cluster
/// yet, or rejoining), as clients do.
fn connect_when_admitted(addr: SocketAddr, id: &str) -> RawPeer {
    let mut admitted = None;
    peerd_testkit::wait_until("the node admits peers", || {
        let mut p = RawPeer::tcp(addr);
        match p.handshake(&hello(Some(id), None)) {
            Ok(_) => {
                admitted = Some(p);
                true
            }
            Err(HandshakeError::Refused { code, .. }) if code == Code::Overloaded.as_u16() => false,
            Err(e) => panic!("{id} refused: {e:?}"),
        }
    });
    admitted.expect("admitted")
}

fn refused(addr: SocketAddr, id: &str, token: Option<&[u8]>) -> u16 {
    let mut p = RawPeer::tcp(addr);
    match p.handshake(&hello(Some(id), token)) {
        Err(HandshakeError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_publish_reaches_every_member_on_every_node_once_and_in_order() {
    let nats = Nats::start();
    let nodes = three(&nats, "pubsub");
    let mut ma = RawPeer::connect(nodes[0].addr, Some("ma"));
    let mut mb = RawPeer::connect(nodes[1].addr, Some("mb"));
    let mut mb2 = RawPeer::connect(nodes[1].addr, Some("mb2"));
    join(&mut ma, 1, "t");
    join(&mut mb, 1, "t");
    join(&mut mb2, 1, "t");
    // Publishers on A and on C (which has no member): each one's order is kept.
    let mut pa = RawPeer::connect(nodes[0].addr, Some("pa"));
    let mut pc = RawPeer::connect(nodes[2].addr, Some("pc"));
    for i in 0u32..500 {
        publish(&mut pa, "t", &[b"a".as_slice(), &i.to_le_bytes()].concat());
        publish(&mut pc, "t", &[b"c".as_slice(), &i.to_le_bytes()].concat());
    }
    // Everything either sent before its marker arrives before it (per-publisher order).
    publish(&mut pa, "t", b"end-a");
    publish(&mut pc, "t", b"end-c");
    let want = |tag: u8| -> Vec<Vec<u8>> {
        (0u32..500)
            .map(|i| [&[tag][..], &i.to_le_bytes()].concat())
            .collect()
    };
    for m in [&mut ma, &mut mb, &mut mb2] {
        let mut got = messages_until(m, "t", b"end-a");
        match got.iter().position(|p| p == b"end-c") {
            Some(i) => {
                got.remove(i);
            }
            None => got.extend(messages_until(m, "t", b"end-c")),
        }
        for tag in [b'a', b'c'] {
            let from: Vec<Vec<u8>> = got.iter().filter(|p| p[0] == tag).cloned().collect();
            assert_eq!(
                from,
                want(tag),
                "{}'s publishes, once each, in order",
                tag as char
            );
        }
    }
    // C has no member of `t`: NATS brought it none of the topic's messages (interest),
    // while B, with two members, got each publish of A and C once (one message per node,
    // not per member): 2 x 501.
    assert_eq!(
        nodes[2].metric("peerd_cluster_topic_messages_in_total"),
        0.0
    );
    assert_eq!(
        nodes[1].metric("peerd_cluster_topic_messages_in_total"),
        1002.0
    );
    assert_eq!(nodes[0].metric("peerd_cluster_nodes"), 3.0);
}

#[test]
fn a_join_answered_means_publishes_from_other_nodes_reach_the_member() {
    let nats = Nats::start();
    let nodes = three(&nats, "barrier");
    let mut publisher = RawPeer::connect(nodes[0].addr, Some("pub"));
    let mut member = RawPeer::connect(nodes[1].addr, Some("member"));
    for i in 0..30u64 {
        // A topic new to node B each time: the join makes B subscribe to it.
        let topic = format!("fresh-{i}");
        join(&mut member, i + 1, &topic);
        publish(&mut publisher, &topic, b"first");
        publish(&mut publisher, &topic, b"end");
        assert_eq!(
            messages_until(&mut member, &topic, b"end"),
            vec![b"first".to_vec()],
            "round {i}"
        );
    }
}

#[test]
fn peers_and_presence_span_the_nodes() {
    let nats = Nats::start();
    let nodes = three(&nats, "presence");
    let mut w = RawPeer::connect(nodes[0].addr, Some("watcher"));
    watch(&mut w, 1, None);
    let x = RawPeer::connect(nodes[1].addr, Some("x"));
    let mut y = RawPeer::connect(nodes[2].addr, Some("y"));
    let mut seen = vec![presence(&mut w), presence(&mut w)];
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            ("x".to_string(), PresenceChange::Join),
            ("y".to_string(), PresenceChange::Join)
        ]
    );
    join(&mut y, 2, "room");
    // Every node lists everyone, once the changes have crossed (one NATS hop).
    for (i, n) in nodes.iter().enumerate() {
        let mut lister = RawPeer::connect(n.addr, Some(&format!("lister{i}")));
        let mut req = 0;
        peerd_testkit::wait_until("every node lists every peer", || {
            req += 2;
            let all = peer_list(&mut lister, req, None);
            ["watcher", "x", "y"]
                .iter()
                .all(|id| all.contains(&id.to_string()))
                && peer_list(&mut lister, req + 1, Some("room")) == vec!["y"]
        });
    }
    drop(x);
    drop(y);
    let mut left: Vec<(String, PresenceChange)> = Vec::new();
    while left.len() < 2 {
        let e = presence(&mut w);
        if e.1 == PresenceChange::Leave && (e.0 == "x" || e.0 == "y") {
            left.push(e);
        }
    }
}

#[test]
fn an_id_is_unique_in_the_cluster_and_resumes_on_another_node() {
    let nats = Nats::start();
    let nodes = three(&nats, "ids");
    let mut alice = RawPeer::connect(nodes[0].addr, Some("alice"));
    assert_eq!(
        refused(nodes[1].addr, "alice", None),
        Code::PeerIdTaken.as_u16()
    );
    assert_eq!(
        refused(nodes[2].addr, "alice", Some(b"not-the-token-at-all")),
        Code::PeerIdTaken.as_u16()
    );
    // With the token, on another node: the new session takes over, the old is replaced.
    let mut again = RawPeer::tcp(nodes[1].addr);
    again
        .handshake(&hello(Some("alice"), Some(&alice.token)))
        .expect("resume on another node");
    alice.expect_close(Code::Replaced);
    let mut lister = RawPeer::connect(nodes[2].addr, None);
    peerd_testkit::wait_until("alice listed once, on B", || {
        peer_list(&mut lister, 1, None)
            .iter()
            .filter(|p| *p == "alice")
            .count()
            == 1
    });
    // Assigned ids never collide across nodes.
    let mut ids = std::collections::HashSet::new();
    let mut keep = Vec::new();
    for n in &nodes {
        for _ in 0..10 {
            let p = RawPeer::connect(n.addr, None);
            assert!(
                p.peer_id.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                p.peer_id
            );
            assert!(
                ids.insert(p.peer_id.clone()),
                "{} assigned twice",
                p.peer_id
            );
            keep.push(p);
        }
    }
}

#[test]
fn calls_and_events_cross_nodes() {
    let nats = Nats::start();
    let nodes = three(&nats, "rpc");
    let mut caller = RawPeer::connect(nodes[0].addr, Some("caller"));
    let mut bob = RawPeer::connect(nodes[1].addr, Some("bob"));
    // A peer of another node is known here once its node's change arrived (one NATS hop;
    // README "Run a cluster").
    let mut req = 100;
    peerd_testkit::wait_until("node a knows bob", || {
        req += 1;
        peer_list(&mut caller, req, None).contains(&"bob".to_string())
    });
    let call = |p: &mut RawPeer, id: u64, to: &str| {
        p.send(&codec::RpcRequest {
            id,
            method: "m".into(),
            peer: Some(to.into()),
            timeout_ms: 5_000,
            params: Cow::Borrowed(b"params"),
        });
    };
    let incoming = |p: &mut RawPeer| {
        p.recv_until(|f| match f {
            Frame::RpcRequest(r) => Some((
                r.id.to_native(),
                codec::opt_str(&r.peer).map(str::to_string),
                r.params.to_vec(),
            )),
            _ => None,
        })
    };
    call(&mut caller, 7, "bob");
    let (id, from, params) = incoming(&mut bob);
    assert_eq!(
        (from.as_deref(), params.as_slice()),
        (Some("caller"), &b"params"[..])
    );
    bob.send(&codec::RpcResponse {
        id,
        result: Cow::Borrowed(b"answer"),
    });
    assert_eq!(
        caller.recv_until(|f| call_answer(f, 7)),
        Ok(b"answer".to_vec())
    );
    // An error answer goes back with its code.
    call(&mut caller, 8, "bob");
    let (id, _, _) = incoming(&mut bob);
    bob.send(&codec::RpcError {
        id,
        code: 4321,
        message: "no".into(),
    });
    assert_eq!(
        caller.recv_until(|f| call_answer(f, 8)),
        Err((4321, "no".into()))
    );
    // A direct event, with its sender.
    caller.send(&codec::Event {
        name: "hi".into(),
        peer: Some("bob".into()),
        payload: Cow::Borrowed(b"e"),
    });
    let from = bob.recv_until(|f| match f {
        Frame::Event(e) => Some(codec::opt_str(&e.peer).map(str::to_string)),
        _ => None,
    });
    assert_eq!(from.as_deref(), Some("caller"));
    // Nobody by that id anywhere.
    call(&mut caller, 9, "nobody");
    let code = caller.recv_until(|f| call_answer(f, 9)).unwrap_err().0;
    assert_eq!(code, Code::UnknownPeer.as_u16());
    // The callee leaves before answering: peer_gone, promptly.
    call(&mut caller, 10, "bob");
    incoming(&mut bob);
    let t = Instant::now();
    drop(bob);
    let code = caller.recv_until(|f| call_answer(f, 10)).unwrap_err().0;
    assert_eq!(code, Code::PeerGone.as_u16());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn a_killed_node_s_peers_leave_within_three_heartbeats() {
    let nats = Nats::start();
    let mut nodes = three(&nats, "sigkill");
    let mut carol = RawPeer::connect(nodes[2].addr, Some("carol"));
    join(&mut carol, 1, "t");
    let _dave = RawPeer::connect(nodes[2].addr, Some("dave"));
    let mut w = RawPeer::connect(nodes[0].addr, Some("watcher"));
    let mut req = 10;
    peerd_testkit::wait_until("node a knows carol's membership", || {
        req += 1;
        peer_list(&mut w, req, Some("t")) == vec!["carol"]
    });
    assert_eq!(watch(&mut w, 1, Some("t")), vec!["carol"]);
    // A call to carol waits when her node dies.
    let mut caller = RawPeer::connect(nodes[1].addr, Some("caller"));
    peerd_testkit::wait_until("node b knows carol", || {
        req += 1;
        peer_list(&mut caller, req, None).contains(&"carol".to_string())
    });
    caller.send(&codec::RpcRequest {
        id: 5,
        method: "m".into(),
        peer: Some("carol".into()),
        timeout_ms: 30_000,
        params: Cow::Borrowed(b""),
    });
    carol.recv_until(|f| matches!(f, Frame::RpcRequest(_)).then_some(()));
    let t = Instant::now();
    nodes[2].served.child.kill().expect("SIGKILL node c");
    assert_eq!(
        presence(&mut w),
        ("carol".to_string(), PresenceChange::Leave)
    );
    let took = t.elapsed();
    // 3 intervals of silence, noticed at the next quarter tick; the rest is slack for a
    // loaded 2-core machine.
    let bound = Duration::from_millis(HEARTBEAT_MS * 13 / 4 + 750);
    assert!(took < bound, "leave after {took:?}, bound {bound:?}");
    let code = caller.recv_until(|f| call_answer(f, 5)).unwrap_err().0;
    assert_eq!(code, Code::PeerGone.as_u16());
    // Her id is free again at once.
    let again = RawPeer::connect(nodes[0].addr, Some("carol"));
    assert_eq!(again.peer_id, "carol");
    let _ = nodes[2].served.child.wait();
    assert!(matches!(carol.recv_within(WAIT), Recv::Eof | Recv::Reset));
    // The dead node's ids do not stay in the bucket: node a (its name sorts first among
    // the live) deletes the entries that still name it.
    peerd_testkit::wait_until("dave's id is reaped", || {
        !ids_in_bucket(&nats, "sigkill").contains(&"dave".to_string())
    });
    assert!(nodes[0].metric("peerd_cluster_ids_reaped_total") >= 1.0);
    assert_eq!(nodes[1].metric("peerd_cluster_ids_reaped_total"), 0.0);
}

#[test]
fn nats_down_keeps_local_service_and_the_cluster_resyncs_when_it_returns() {
    let mut nats = Nats::start();
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|n| Node::start(&nats, "outage", n))
        .collect();
    let mut bob = RawPeer::connect(nodes[1].addr, Some("bob"));
    join(&mut bob, 1, "chat");
    let z = RawPeer::connect(nodes[1].addr, Some("z"));
    let mut la = RawPeer::connect(nodes[0].addr, Some("la"));
    let mut lb = RawPeer::connect(nodes[0].addr, Some("lb"));
    join(&mut la, 1, "local");
    let mut w = RawPeer::connect(nodes[0].addr, Some("watcher"));
    let mut req = 10;
    peerd_testkit::wait_until("node a knows z", || {
        req += 1;
        peer_list(&mut w, req, None).contains(&"z".to_string())
    });
    watch(&mut w, 1, None);

    nats.kill();
    // Node a's own peers are still served.
    publish(&mut lb, "local", b"still here");
    publish(&mut lb, "local", b"end");
    assert_eq!(
        messages_until(&mut la, "local", b"end"),
        vec![b"still here".to_vec()]
    );
    // A new peer is refused, retryably, once the node noticed the link is gone.
    peerd_testkit::wait_until("a refuses new peers while NATS is down", || {
        let mut p = RawPeer::tcp(nodes[0].addr);
        matches!(p.handshake(&hello(None, None)),
            Err(HandshakeError::Refused { code, .. }) if code == Code::Overloaded.as_u16())
    });
    // Meanwhile z leaves node b; a cannot hear it yet.
    drop(z);

    nats.restart();
    // Cross-node publishes flow again.
    let mut n = 0u32;
    peerd_testkit::wait_until("a publish from a reaches bob on b again", || {
        n += 1;
        publish(&mut la, "chat", format!("probe-{n}").as_bytes());
        match bob.recv_within(Duration::from_millis(50)) {
            Recv::Frame(b) => matches!(decode_bytes(&b), Ok(Frame::TopicMessage(_))),
            _ => false,
        }
    });
    // And a's view of b was resynchronised: z's leave is reported.
    loop {
        let (peer, change) = presence(&mut w);
        if peer == "z" {
            assert_eq!(change, PresenceChange::Leave);
            break;
        }
    }
}

#[test]
fn a_node_stops_on_sigterm_while_nats_is_down() {
    let mut nats = Nats::start();
    let mut node = Node::start(&nats, "stop", "a");
    let _peer = RawPeer::connect(node.addr, Some("p"));
    nats.kill();
    // It must not wait for NATS to say goodbye (the drain itself takes under a second here:
    // the one peer is asked to reconnect and the raw peer does not answer, so at most the
    // drain window and grace).
    let (status, stderr) = node.served.terminate(Duration::from_secs(25));
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The peer ids held in cluster `cluster`'s id bucket (deleted keys are not listed).
fn ids_in_bucket(nats: &Nats, cluster: &str) -> Vec<String> {
    bucket_ids(nats, cluster).expect("the id bucket")
}

/// [`ids_in_bucket`], or why they cannot be read (no bucket, NATS not back).
fn bucket_ids(nats: &Nats, cluster: &str) -> Result<Vec<String>, String> {
    use base64::Engine;
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let client = async_nats::connect(nats.url()).await.map_err(|e| err(&e))?;
        let js = async_nats::jetstream::new(client);
        let kv = js
            .get_key_value(format!("peerd_{cluster}_ids"))
            .await
            .map_err(|e| err(&e))?;
        let mut keys = kv.keys().await.map_err(|e| err(&e))?;
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k.map_err(|e| err(&e))?)
                .expect("keys are base64url");
            ids.push(String::from_utf8(k).expect("ids are UTF-8"));
        }
        ids.sort();
        Ok(ids)
    })
}

fn signal(p: &mut RawPeer, room: &str, kind: codec::SignalKind, to: Option<&str>, body: &[u8]) {
    p.send(&codec::Signal {
        req: 0,
        room: room.into(),
        kind,
        peer: to.map(Cow::Borrowed),
        payload: Cow::Borrowed(body),
    });
}

#[test]
fn broadcasts_and_signaling_cross_nodes_once_and_in_order() {
    let nats = Nats::start();
    // One shard each: pa, pb and pc, each its node's first peer, then have the same shard
    // and session numbers on their nodes, and a message for one must not reach another.
    let nodes = three_with(&nats, "signal", &["--shards", "1"]);
    let mut peers: Vec<RawPeer> = ["pa", "pb", "pc"]
        .iter()
        .zip(&nodes)
        .map(|(id, n)| RawPeer::connect(n.addr, Some(id)))
        .collect();
    let mut req = 10;
    for p in peers.iter_mut() {
        peerd_testkit::wait_until("every node knows every peer", || {
            req += 1;
            let all = peer_list(p, req, None);
            ["pa", "pb", "pc"]
                .iter()
                .all(|id| all.contains(&id.to_string()))
        });
    }
    // A broadcast reaches every other peer on every node exactly once, marked as from its
    // sender. A second one is the fence: one publisher's messages keep their order on the
    // broadcast subject, so a copy of the first would arrive before it.
    for n in [b"1", b"2"] {
        peers[0].send(&codec::Broadcast {
            name: "news".into(),
            peer: None,
            payload: Cow::Borrowed(n),
        });
    }
    for p in &mut peers[1..] {
        let mut got = Vec::new();
        loop {
            let (payload, from) = p.recv_until(|f| match f {
                Frame::Broadcast(b) => Some((
                    b.payload.to_vec(),
                    codec::opt_str(&b.peer).map(str::to_string),
                )),
                _ => None,
            });
            assert_eq!(from.as_deref(), Some("pa"));
            if payload == b"2" {
                break;
            }
            got.push(payload);
        }
        assert_eq!(got, vec![b"1".to_vec()]);
    }
    // Signaling in a room across nodes: pa (node a) offers to the room, pb (node b)
    // answers and trickles candidates; each arrives once, in order, with its sender.
    for (i, p) in peers.iter_mut().enumerate() {
        join(p, 100 + i as u64, "call");
    }
    let mut members = 0;
    peerd_testkit::wait_until("node a knows the room", || {
        members += 1;
        peer_list(&mut peers[0], 200 + members, Some("call")).len() == 3
    });
    let (pa, rest) = peers.split_first_mut().unwrap();
    let (pb, pc) = rest.split_first_mut().unwrap();
    let pc = &mut pc[0];
    peerd_testkit::wait_until("node b knows the room", || {
        members += 1;
        peer_list(pb, 200 + members, Some("call")).len() == 3
    });
    let got = |p: &mut RawPeer| {
        p.recv_until(|f| match f {
            Frame::Signal(s) => Some((
                s.payload.to_vec(),
                codec::opt_str(&s.peer).map(str::to_string),
            )),
            _ => None,
        })
    };
    signal(pa, "call", codec::SignalKind::Offer, None, b"offer");
    assert_eq!(got(pb), (b"offer".to_vec(), Some("pa".into())));
    assert_eq!(got(pc), (b"offer".to_vec(), Some("pa".into())));
    signal(pb, "call", codec::SignalKind::Answer, Some("pa"), b"answer");
    for i in 0..20 {
        let c = format!("cand-{i}");
        signal(
            pb,
            "call",
            codec::SignalKind::Candidate,
            Some("pa"),
            c.as_bytes(),
        );
    }
    assert_eq!(got(pa), (b"answer".to_vec(), Some("pb".into())));
    for i in 0..20 {
        let c = format!("cand-{i}");
        assert_eq!(
            got(pa),
            (c.into_bytes(), Some("pb".into())),
            "candidate {i}"
        );
    }
    // Signals addressed to pa went to pa only (node c gets them, as a member of the room,
    // and must not give them to its own session of pa's number).
    let extra = pc.sync(9);
    assert!(
        !extra
            .iter()
            .any(|b| matches!(decode_bytes(b), Ok(Frame::Signal(_)))),
        "pc got a signal addressed to pa"
    );
}

#[test]
fn a_paused_node_rejoins_and_an_id_taken_meanwhile_is_closed_there_without_ghosts() {
    let nats = Nats::start();
    let nodes = three(&nats, "rejoin");
    let mut carol = RawPeer::connect(nodes[2].addr, Some("carol"));
    let mut dave = RawPeer::connect(nodes[2].addr, Some("dave"));
    join(&mut dave, 1, "room");
    let mut lister = RawPeer::connect(nodes[1].addr, Some("lister"));
    let mut req = 10;
    peerd_testkit::wait_until("node b knows carol and dave", || {
        req += 1;
        let all = peer_list(&mut lister, req, None);
        all.contains(&"carol".to_string()) && all.contains(&"dave".to_string())
    });
    // Node c stops for longer than the cluster allows (3 heartbeats): the others declare
    // it gone, and carol's id is taken on node a meanwhile.
    let c = nodes[2].served.child.id() as libc::pid_t;
    unsafe { libc::kill(c, libc::SIGSTOP) };
    struct Cont(libc::pid_t);
    impl Drop for Cont {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let cont = Cont(c);
    let mut lister_a = RawPeer::connect(nodes[0].addr, Some("lister-a"));
    peerd_testkit::wait_until("nodes a and b drop node c's peers", || {
        req += 2;
        !peer_list(&mut lister, req, None).contains(&"dave".to_string())
            && !peer_list(&mut lister_a, req + 1, None).contains(&"carol".to_string())
    });
    let mut carol2 = RawPeer::connect(nodes[0].addr, Some("carol"));
    drop(cont);
    // Node c finds out, rejoins under a new epoch, and closes its carol.
    carol.expect_close(Code::Replaced);
    // Dave is back on every node; carol is on node a, for every node. (Node c admits no
    // one until it has rejoined: `overloaded`, which clients retry.)
    for (i, n) in nodes.iter().enumerate() {
        let mut p = connect_when_admitted(n.addr, &format!("probe{i}"));
        peerd_testkit::wait_until("dave and carol are listed again", || {
            req += 1;
            let all = peer_list(&mut p, req, None);
            all.contains(&"carol".to_string())
                && all.contains(&"dave".to_string())
                && peer_list(&mut p, req + 1000, Some("room")) == vec!["dave"]
        });
        p.send(&codec::Event {
            name: "where".into(),
            peer: Some("carol".into()),
            payload: Cow::Owned(vec![i as u8]),
        });
        let (from, payload) = carol2.recv_until(|f| match f {
            Frame::Event(e) => Some((
                codec::opt_str(&e.peer).map(str::to_string),
                e.payload.to_vec(),
            )),
            _ => None,
        });
        assert_eq!((from, payload), (Some(format!("probe{i}")), vec![i as u8]));
    }
    // Dave kept his id: nobody else may take it.
    assert_eq!(
        refused(nodes[0].addr, "dave", None),
        Code::PeerIdTaken.as_u16()
    );
    assert!(nodes[2].metric("peerd_cluster_rejoins_total") >= 1.0);
    assert_eq!(nodes[2].metric("peerd_cluster_ids_lost_total"), 1.0);
    let ids = ids_in_bucket(&nats, "rejoin");
    for id in ["carol", "dave", "lister", "lister-a"] {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }
}

#[test]
fn after_churn_across_the_nodes_every_table_is_empty_on_every_node() {
    let nats = Nats::start();
    let nodes = three(&nats, "churn");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    // Three clients, one per node, each for 12 rounds: peers connect (declared and assigned
    // ids), join topics, watch presence, publish, call peers of the next node, resume on
    // the next node (a cross-node takeover), and go.
    let workers: Vec<_> = (0..3)
        .map(|k| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let next = addrs[(k + 1) % 3];
                for round in 0..12 {
                    let mut peers: Vec<RawPeer> = (0..3)
                        .map(|i| RawPeer::connect(addrs[k], Some(&format!("c{k}-{round}-{i}"))))
                        .collect();
                    peers.push(RawPeer::connect(addrs[k], None));
                    for (i, p) in peers.iter_mut().enumerate() {
                        join(p, 1, &format!("t{}", (round + i) % 4));
                    }
                    watch(&mut peers[3], 2, None);
                    publish(&mut peers[0], &format!("t{}", round % 4), b"x");
                    peers[1].send(&codec::RpcRequest {
                        id: 1,
                        method: "m".into(),
                        peer: Some(format!("c{}-{round}-1", (k + 1) % 3).into()),
                        timeout_ms: 200,
                        params: Cow::Borrowed(b""),
                    });
                    let mut moved = RawPeer::tcp(next);
                    moved
                        .handshake(&hello(
                            Some(&format!("c{k}-{round}-2")),
                            Some(&peers[2].token),
                        ))
                        .expect("resume on the next node");
                    join(&mut moved, 3, "moved");
                    peers[2].expect_close(Code::Replaced);
                    drop(peers);
                    drop(moved);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a churn client");
    }
    for (i, n) in nodes.iter().enumerate() {
        peerd_testkit::wait_until("every table of every node empties", || {
            [
                "peerd_peers",
                "peerd_topics",
                "peerd_cluster_remote_peers",
                "peerd_cluster_remote_members",
                "peerd_cluster_subscriptions",
                "peerd_cluster_claims",
            ]
            .iter()
            .all(|m| n.metric(m) == 0.0)
        });
        assert_eq!(n.metric("peerd_cluster_nodes"), 3.0, "node {i}");
    }
    peerd_testkit::wait_until("no id is left in the bucket", || {
        ids_in_bucket(&nats, "churn").is_empty()
    });
}

#[test]
fn an_id_bucket_in_memory_is_made_again_with_the_live_ids_after_nats_restarts() {
    let mut nats = Nats::start();
    let node = Node::start_with(&nats, "memory", "a", &["--cluster-kv-memory"]);
    let _keep = RawPeer::connect(node.addr, Some("keep"));
    assert_eq!(ids_in_bucket(&nats, "memory"), vec!["keep"]);
    // A restart loses a bucket held in memory, and with it every claim.
    nats.restart();
    peerd_testkit::wait_until("the node claims its peer's id again", || {
        bucket_ids(&nats, "memory") == Ok(vec!["keep".to_string()])
    });
    // The id is held again: nobody else gets it, and new peers are admitted.
    assert_eq!(refused(node.addr, "keep", None), Code::PeerIdTaken.as_u16());
    let _new = RawPeer::connect(node.addr, Some("new"));
}

#[test]
fn a_node_joins_over_tls_with_a_password_and_never_logs_it() {
    let testdata = |f: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/tls")
            .join(f)
            .display()
            .to_string()
    };
    let (cert, key, ca) = (
        testdata("server.pem"),
        testdata("server.key"),
        testdata("ca.pem"),
    );
    let nats = Nats::start_with(&[
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--user",
        "peerd",
        "--pass",
        "s3cret-pass",
    ]);
    let url = |pass: &str| format!("tls://peerd:{pass}@127.0.0.1:{}", nats.port);
    let mut cmd = peerd();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--no-pin",
    ])
    .args(["--cluster", &url("s3cret-pass"), "--cluster-ca", &ca])
    .args(["--node-id", "a", "--cluster-heartbeat-ms", "250"]);
    let served = Served::start(cmd, LIMIT, |l| {
        l.iter().any(|l| l.starts_with("peerd cluster node=a"))
    });
    let addr: SocketAddr = served.endpoint().parse().expect("a TCP endpoint");
    let p = RawPeer::connect(addr, Some("over-tls"));
    assert_eq!(p.peer_id, "over-tls");
    // A wrong password: the node says why it cannot join, without the password.
    let out = peerd()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--no-pin",
        ])
        .args(["--cluster", &url("wrong-pass"), "--cluster-ca", &ca])
        .output()
        .expect("run peerd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    assert!(stderr.contains("tls://***@127.0.0.1"), "{stderr}");
    assert!(
        !stderr.contains("wrong-pass"),
        "the password was logged: {stderr}"
    );
}
