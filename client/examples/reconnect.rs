//! Reconnect check against `peerd serve`: restart the server while this runs.
use std::time::Duration;

use peerd_client::{connect, PeerOptions, ReconnectPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7411".into());
    let opts = |id: &str| {
        PeerOptions::new()
            .peer_id(id)
            .reconnect(ReconnectPolicy::default().max_backoff(Duration::from_millis(500)))
    };
    let a = connect(addr.as_str(), opts("ra"))?;
    println!("connected before start: {:?}", a.list_peers(None));
    let states = a.state_changes();
    a.join("t")?;
    let msgs = a.subscribe("t");
    let w = a.watch(None)?;
    let errs = a.errors();
    let mut seen = vec![];
    while let Some(e) = w.recv_timeout(Duration::from_millis(200)) {
        seen.push(e);
    }
    println!("initial presence: {seen:?}");
    let pending = {
        let a = a.clone();
        a.rpc().handle("slow", |_| {
            std::thread::sleep(Duration::from_secs(2));
            Ok(vec![])
        });
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let r = a.rpc().call_peer("ra", "slow", b"");
            (r, t.elapsed())
        })
    };
    println!("READY_FOR_RESTART");
    // Wait for the drop.
    let s = states.recv_timeout(Duration::from_secs(30))?;
    println!("state: {s:?} last_close {:?}", a.last_close());
    println!("pending call: {:?}", pending.join().unwrap());
    // Queued until the server is back (or reconnect_queue_timeout), then answered by it.
    println!("call while reconnecting: {:?}", a.rpc().call("x", b""));
    a.when_ready(Duration::from_secs(30))?;
    println!(
        "state: {:?}, session {:?}, last_close {:?}",
        a.state(),
        a.session_id(),
        a.last_close()
    );
    let b = connect(addr.as_str(), opts("rb"))?;
    b.publish("t", b"after-restart")?;
    println!(
        "msg after reconnect: {:?}",
        msgs.recv_timeout(Duration::from_secs(2))
    );
    let mut seen = vec![];
    while let Some(e) = w.recv_timeout(Duration::from_millis(300)) {
        seen.push(e);
    }
    println!("presence after reconnect: {seen:?}");
    println!("errors: {:?}", errs.try_iter().collect::<Vec<_>>());
    println!("joined: {:?}", a.joined_topics());
    println!("server says members of t: {:?}", b.list_peers(Some("t")));
    println!("server says connected: {:?}", b.list_peers(None));
    Ok(())
}
