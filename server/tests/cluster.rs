//! The library's server-side calls on a cluster node answer for the whole cluster: two
//! `listen()`ed nodes in this process on one real nats-server (`.ci/deps` installs it), a
//! peer on node B, and node A's `publish`, `send`, `emit_to`, `broadcast`,
//! `topic_members`, `connections` and `cluster()` reaching or listing it.

mod common;

use std::time::Duration;

use common::{server, wait_until, RawPeer};
use peerd_codec::{self as codec, Frame};
use peerd_server::{ClusterOptions, ListenOptions, PeerServer};
use peerd_testkit::nats::Nats;

fn node(nats: &Nats, name: &str) -> PeerServer {
    let mut c = ClusterOptions::new(vec![nats.url()]);
    c.node_id = Some(name.into());
    c.name = "library".into();
    c.heartbeat = Duration::from_millis(250);
    let mut opts = ListenOptions::default();
    opts.shards = 2;
    opts.cluster = Some(c);
    server(opts)
}

#[test]
fn server_side_calls_answer_for_the_whole_cluster() {
    let nats = Nats::start();
    let a = node(&nats, "a");
    let b = node(&nats, "b");
    let status = b.cluster().expect("a cluster node");
    assert_eq!(
        (status.node_id.as_str(), status.nodes, status.up),
        ("b", 2, true)
    );
    wait_until("node a hears node b", || {
        a.cluster().is_some_and(|c| c.nodes == 2)
    });

    let mut bob = RawPeer::connect(b.local_addr().unwrap(), Some("bob"));
    bob.send(&codec::Join {
        req: 1,
        topic: "room".into(),
    });
    wait_until("node a sees bob in room", || {
        a.topic_members("room") == vec!["bob".to_string()]
    });
    let listed = a.connections();
    let info = listed.iter().find(|p| p.peer_id == "bob").expect("bob");
    let on_b = b.connections();
    let at_b = on_b.iter().find(|p| p.peer_id == "bob").expect("bob on b");
    assert_eq!(at_b.node, None, "b's own peer");
    assert_eq!(
        (info.node.as_deref(), info.shard, info.session_id),
        (Some("b"), at_b.shard, at_b.session_id),
        "node a names bob's node, and where bob is there"
    );

    let mut recv = || -> (String, bool) {
        bob.recv_until(|f| match f {
            Frame::TopicMessage(m) => {
                Some((String::from_utf8(m.payload.to_vec()).unwrap(), m.direct))
            }
            Frame::Event(e) => Some((format!("event {}", e.name.as_str()), false)),
            Frame::Broadcast(e) => Some((format!("broadcast {}", e.name.as_str()), false)),
            _ => None,
        })
    };
    a.publish("room", b"to the room").unwrap();
    assert_eq!(recv(), ("to the room".into(), false));
    assert!(a.send("room", "bob", b"to bob").unwrap());
    assert_eq!(recv(), ("to bob".into(), true));
    assert!(!a.send("room", "nobody", b"x").unwrap());
    assert!(a.emit_to("bob", "ping", b"").unwrap());
    assert_eq!(recv(), ("event ping".into(), false));
    a.broadcast("all", b"").unwrap();
    assert_eq!(recv(), ("broadcast all".into(), false));
    drop(bob);
    wait_until("node a sees bob leave", || {
        a.topic_members("room").is_empty() && a.connections().iter().all(|p| p.peer_id != "bob")
    });
    assert!(!a.emit_to("bob", "ping", b"").unwrap());
}
