//! The Rust client (`peerd-client`) against the real server: RPC both ways, peer-to-peer
//! calls, topics, presence, a connection drop and a reconnect with resume.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::server;
use peerd_client::{connect, CallError, PeerOptions, PresenceEvent, ReconnectPolicy, State};
use peerd_server::{listen, ListenOptions};

fn opts() -> ListenOptions {
    ListenOptions::new("127.0.0.1:0")
        .shards(2)
        .handle("echo", |_p, r| async move { Ok(r.params) })
}

#[test]
fn rpc_both_ways_and_peer_to_peer() {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let srv = server(opts().on_connection(move |peer| {
        if peer.peer_id() != "asked" {
            return;
        }
        let tx = tx.clone();
        let fut = peer.rpc().call("client.version", b"?");
        glommio::spawn_local(async move {
            let r = fut.await.map(|b| b.to_vec());
            tx.lock().unwrap().send(r).unwrap();
        })
        .detach();
    }));
    let addr = srv.local_addr().unwrap();

    let asked = peerd_client::Peer::new(addr, PeerOptions::new().peer_id("asked")).unwrap();
    asked.rpc().handle("client.version", |req| {
        assert_eq!(req.from, None, "the server itself calls");
        Ok(b"1.0".to_vec())
    });
    asked.connect().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap(),
        b"1.0"
    );

    assert_eq!(&asked.rpc().call("echo", b"ping").unwrap()[..], b"ping");
    let err = asked.rpc().call("missing", b"").unwrap_err();
    assert_eq!(err.code(), Some(peerd_codec::Code::MethodNotFound.as_u16()));

    let other = connect(addr, PeerOptions::new().peer_id("other")).unwrap();
    other.rpc().handle("mul", |req| {
        assert_eq!(req.from.as_deref(), Some("asked"));
        let n: u32 = std::str::from_utf8(&req.params).unwrap().parse().unwrap();
        Ok((n * 3).to_string().into_bytes())
    });
    assert_eq!(
        &asked.rpc().call_peer("other", "mul", b"14").unwrap()[..],
        b"42"
    );
    let e = asked.rpc().call_peer("nobody", "mul", b"1").unwrap_err();
    assert_eq!(e.code(), Some(peerd_codec::Code::UnknownPeer.as_u16()));
}

#[test]
fn topics_and_presence_through_the_client() {
    let srv = server(opts());
    let addr = srv.local_addr().unwrap();
    let a = connect(addr, PeerOptions::new().peer_id("alice")).unwrap();
    let b = connect(addr, PeerOptions::new().peer_id("bob")).unwrap();
    let w = a.watch(Some("chat")).unwrap();
    let msgs = b.subscribe("chat");
    b.join("chat").unwrap();
    assert_eq!(
        w.recv_timeout(Duration::from_secs(5)),
        Some(PresenceEvent::Join("bob".into()))
    );
    a.publish_confirmed("chat", b"hello", false).unwrap();
    let m = msgs.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((m.from.as_str(), &m.payload[..]), ("alice", &b"hello"[..]));
    assert_eq!(a.list_peers(Some("chat")).unwrap(), vec!["bob".to_string()]);
    b.disconnect();
    assert_eq!(
        w.recv_timeout(Duration::from_secs(5)),
        Some(PresenceEvent::Leave("bob".into()))
    );
}

#[test]
fn server_disconnect_fails_pending_calls_and_client_reconnects_with_resume() {
    let srv = server(opts().handle("hang", |_p, _r| async move {
        glommio::timer::sleep(Duration::from_secs(30)).await;
        Ok(Bytes::new())
    }));
    let addr = srv.local_addr().unwrap();
    let policy = ReconnectPolicy::default()
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(200));
    let p = connect(
        addr,
        PeerOptions::new().peer_id("phoenix").reconnect(policy),
    )
    .unwrap();
    let caller = p.clone();
    let pending = std::thread::spawn(move || {
        caller
            .rpc()
            .call_with_timeout("hang", b"", Duration::from_secs(20))
    });
    std::thread::sleep(Duration::from_millis(200));

    // Restart the server on the same port: the client sees the drop, fails the pending
    // call at once, and reconnects to the new server with the same peer id.
    srv.close();
    let r = pending.join().unwrap();
    assert!(
        matches!(
            r,
            Err(CallError::ConnectionLost) | Err(CallError::Remote { .. })
        ),
        "{r:?}"
    );
    let mut o = opts();
    o.endpoint = peerd_server::Endpoint::Tcp(addr.to_string());
    o.pin = false;
    let srv2 = listen(o).unwrap();
    p.when_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(p.state(), State::Active);
    assert_eq!(p.peer_id().as_deref(), Some("phoenix"));
    assert_eq!(&p.rpc().call("echo", b"back").unwrap()[..], b"back");
    assert_eq!(srv2.connections()[0].peer_id, "phoenix");
}
