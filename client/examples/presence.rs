//! Presence after disconnects, against `peerd serve`.
use std::time::Duration;

use peerd_client::{connect, PeerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7411".into());
    let w = connect(addr.as_str(), PeerOptions::new().peer_id("watcher"))?;
    let bob = connect(addr.as_str(), PeerOptions::new().peer_id("pbob"))?;
    bob.join("room")?;
    let g = w.watch(None)?;
    let r = w.watch(Some("room"))?;
    std::thread::sleep(Duration::from_millis(200));
    println!("global: {:?}", g.receiver().try_iter().collect::<Vec<_>>());
    println!("room: {:?}", r.receiver().try_iter().collect::<Vec<_>>());
    bob.disconnect();
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "global after disconnect: {:?}",
        g.receiver().try_iter().collect::<Vec<_>>()
    );
    println!(
        "room after disconnect: {:?}",
        r.receiver().try_iter().collect::<Vec<_>>()
    );
    println!(
        "list: {:?} room {:?}",
        w.list_peers(None),
        w.list_peers(Some("room"))
    );
    drop(bob);
    let w2 = connect(addr.as_str(), PeerOptions::new().peer_id("watcher2"))?;
    let g2 = w2.watch(None)?;
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "fresh global snapshot: {:?}",
        g2.receiver().try_iter().collect::<Vec<_>>()
    );
    // A second watcher of the same topic on the same peer shares the watch.
    let g3 = w2.watch(None)?;
    std::thread::sleep(Duration::from_millis(100));
    println!(
        "second watcher catch-up: {:?}",
        g3.receiver().try_iter().collect::<Vec<_>>()
    );
    // A rejected duplicate must not leave a phantom in presence.
    let dup = connect(addr.as_str(), PeerOptions::new().peer_id("watcher2"));
    println!("dup: {:?}", dup.err().map(|e| e.to_string()));
    drop(w2);
    std::thread::sleep(Duration::from_millis(300));
    let w4 = connect(addr.as_str(), PeerOptions::new().peer_id("watcher4"))?;
    println!("list after dup+drop: {:?}", w4.list_peers(None));
    let g4 = w4.watch(None)?;
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "snapshot after dup+drop: {:?}",
        g4.receiver().try_iter().collect::<Vec<_>>()
    );
    drop(g);
    drop(r);
    Ok(())
}
