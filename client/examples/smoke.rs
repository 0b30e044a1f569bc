//! Exercise the client against a running `peerd serve` (address in argv[1]).
use std::time::{Duration, Instant};

use peerd_client::{
    connect, CallError, Code, Peer, PeerOptions, PresenceEvent, RequestError, SignalKind, State,
};

type R = Result<(), Box<dyn std::error::Error>>;

fn main() -> R {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7411".into());
    let t = Duration::from_secs(2);

    // bob registers before connecting.
    let bob = Peer::new(addr.as_str(), PeerOptions::new().peer_id("bob"))?;
    bob.rpc().handle("echo", |r| Ok(r.params.to_vec()));
    let weak = bob.downgrade();
    bob.rpc().handle("nested", move |r| {
        // A handler making a blocking call back to the caller.
        let p = weak.upgrade().unwrap();
        let from = r.from.clone().unwrap();
        p.rpc()
            .call_peer(&from, "whoami", b"")
            .map(|b| b.to_vec())
            .map_err(|e| peerd_client::RpcFailure::internal(e.to_string()))
    });
    let states = bob.state_changes();
    bob.connect()?;
    println!(
        "bob: {:?} {:?} {:?}",
        bob.state(),
        bob.peer_id(),
        bob.limits()
    );
    println!(
        "bob states: {:?}",
        states.try_iter().collect::<Vec<State>>()
    );

    let alice = connect(addr.as_str(), PeerOptions::new().peer_id("alice"))?;
    alice.rpc().handle("whoami", |_| Ok(b"alice".to_vec()));
    let anon = connect(addr.as_str(), PeerOptions::new())?;
    println!("anon id: {:?}", anon.peer_id());

    // RPC.
    let r = alice.rpc().call_peer("bob", "echo", b"hi")?;
    assert_eq!(&r[..], b"hi");
    let r = alice.rpc().call_peer("bob", "nested", b"")?;
    assert_eq!(&r[..], b"alice");
    let e = alice.rpc().call_peer("bob", "nope", b"").unwrap_err();
    println!("missing method: {e}");
    assert_eq!(e.known_code(), Some(Code::MethodNotFound));
    let e = alice.rpc().call_peer("nobody", "echo", b"").unwrap_err();
    println!("unknown peer: {e}");
    let e = alice.rpc().call("server.nothing", b"").unwrap_err();
    println!("server call: {e}");
    let f = alice.rpc().call_peer_async("bob", "echo", b"async");
    println!("async: {:?}", futures_block_on(f));
    let start = Instant::now();
    let n = 2000;
    for _ in 0..n {
        alice.rpc().call_peer("bob", "echo", b"x")?;
    }
    println!("p2p call rtt avg {:?}", start.elapsed() / n);
    println!("ping: {:?}", alice.ping(t)?);
    println!("ping async: {:?}", futures_block_on(alice.ping_async(t)));

    // Events.
    // A listener for a name gets both events and broadcasts of that name.
    let ev = bob.events().subscribe("news");
    let errs = alice.errors();
    alice.events().emit_to("bob", "news", b"n1")?;
    println!("event: {:?}", ev.recv_timeout(t)?);
    alice.events().broadcast("news", b"all")?;
    println!("broadcast: {:?}", ev.recv_timeout(t)?);
    alice.events().emit_to("ghost", "news", b"n1")?;
    println!("async error: {:?}", errs.recv_timeout(t));

    // Topics & presence.
    let w = alice.watch(Some("room")).map_err(|e| format!("watch: {e}"));
    match &w {
        Ok(_) => println!("watch ok"),
        Err(e) => println!("{e}"),
    }
    match bob.join("room") {
        Ok(()) => {
            alice.join("room")?;
            let msgs = bob.subscribe("room");
            alice.publish("room", b"m1")?;
            println!("topic msg: {:?}", msgs.recv_timeout(t));
            alice.send_confirmed("room", "bob", b"direct")?;
            println!("topic direct: {:?}", msgs.recv_timeout(t));
            println!("list room: {:?}", alice.list_peers(Some("room")));
            println!("list all: {:?}", alice.list_peers(None));
            let sig = bob.subscribe_signals();
            alice.signal("room", SignalKind::Offer, None, b"sdp")?;
            println!("signal: {:?}", sig.recv_timeout(t));
            println!(
                "send to non-member: {:?}",
                alice.send_confirmed("room", "ghost", b"x")
            );
            if let Ok(w) = &w {
                while let Some(e) = w.recv_timeout(Duration::from_millis(300)) {
                    println!("presence: {e:?}");
                }
                bob.leave("room")?;
                println!("presence after leave: {:?}", w.recv_timeout(t));
                assert!(matches!(
                    w.recv_timeout(Duration::from_millis(1)),
                    None | Some(PresenceEvent::Join(_))
                ));
            }
            // Not joined: discarded.
            alice.publish("room", b"after-leave")?;
            println!(
                "after leave (expect timeout): {:?}",
                msgs.recv_timeout(Duration::from_millis(300))
            );
        }
        Err(e) => println!("join: {e} (topics not implemented?)"),
    }
    let _ = RequestError::Timeout;

    // Takeover: a second "bob" without token is refused; bob's own reconnect works.
    let e = connect(addr.as_str(), PeerOptions::new().peer_id("bob")).unwrap_err();
    println!("duplicate id: {e}");

    // Disconnect fails nothing pending and is idempotent.
    bob.disconnect();
    bob.disconnect();
    assert_eq!(bob.state(), State::Closed);
    let e = alice.rpc().call_peer("bob", "echo", b"x").unwrap_err();
    println!("call to gone bob: {e}");
    assert!(matches!(e, CallError::Remote { .. }));
    println!("last_close bob: {:?}", bob.last_close());
    // Idle across several heartbeats: keepalive must not drop a healthy connection.
    std::thread::sleep(Duration::from_secs(7));
    println!(
        "after idle: {:?} {:?} ping {:?}",
        alice.state(),
        alice.last_close(),
        alice.ping(t)
    );
    println!("OK");
    Ok(())
}

fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct W(std::thread::Thread);
    impl Wake for W {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(W(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
