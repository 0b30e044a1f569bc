//! A cluster of three `peerd serve --cluster` nodes on one real nats-server (Debian's,
//! installed by `.ci/deps`), all on loopback: peers on different nodes reach each other as
//! on one node (topics, presence, ids, calls, events), and a node killed with SIGKILL is
//! noticed within the documented bound (3 heartbeat intervals, checked every quarter).
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
        let mut cmd = peerd();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--no-pin",
        ])
        .args(["--cluster", &nats.url(), "--node-id", name])
        .args(["--cluster-name", cluster])
        .args(["--cluster-heartbeat-ms", &HEARTBEAT_MS.to_string()])
        .args(["--admin", "127.0.0.1:0"]);
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
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(nats, cluster, n))
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
    w.send(&codec::Watch {
        req: 1,
        topic: None,
    });
    w.recv_until(|f| matches!(f, Frame::PresenceSnapshot(_)).then_some(()));
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
    let mut w = RawPeer::connect(nodes[0].addr, Some("watcher"));
    let mut req = 10;
    peerd_testkit::wait_until("node a knows carol's membership", || {
        req += 1;
        peer_list(&mut w, req, Some("t")) == vec!["carol"]
    });
    w.send(&codec::Watch {
        req: 1,
        topic: Some("t".into()),
    });
    let snapshot = w.recv_until(|f| match f {
        Frame::PresenceSnapshot(s) => {
            Some(s.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        }
        _ => None,
    });
    assert_eq!(snapshot, vec!["carol"]);
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
    w.send(&codec::Watch {
        req: 1,
        topic: None,
    });
    w.recv_until(|f| matches!(f, Frame::PresenceSnapshot(_)).then_some(()));

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
