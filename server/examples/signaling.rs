//! A small WebRTC signaling server on peerd's traffic hooks, in the manner of Peero's
//! `on('offer')`, `on('answer')` and `on('error')`: it logs every offer, answer, ICE
//! candidate and bye relayed between the members of a room, refuses offers that are not SDP
//! (the sender gets `unauthorized` with the reason, nobody gets the offer), and logs the
//! signals the server cannot relay (to a peer that is not connected or not in the room,
//! from a peer that has not joined it).
//!
//! ```sh
//! cargo run -p peerd-server --example signaling            # listens on 127.0.0.1:7400
//! cargo run -p peerd-server --example signaling -- 127.0.0.1:7500
//! ```
//!
//! Then signal with `peerd signal` as in the README's "Hand a WebRTC offer" (an offer read
//! from stdin must start with `v=0`, as SDP does). Ctrl-C stops it.

use peerd_server::{listen, Denied, ListenOptions, SignalKind, Traffic};

/// Peero's `on('offer')`: see an offer, and refuse one that is not SDP.
fn on_offer(from: &str, room: &str, to: Option<&str>, sdp: &[u8]) -> Result<(), Denied> {
    if !sdp.starts_with(b"v=0") {
        println!("refused an offer from {from} in {room}: not SDP");
        return Err(Denied::new("an offer must be an SDP description (v=0 ...)"));
    }
    let to = to.unwrap_or("everyone else");
    println!("offer from {from} to {to} in {room} ({} bytes)", sdp.len());
    Ok(())
}

/// Peero's `on('answer')`.
fn on_answer(from: &str, room: &str, to: &str, sdp: &[u8]) {
    println!("answer from {from} to {to} in {room} ({} bytes)", sdp.len());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7400".into());
    let opts = ListenOptions::new(&addr)?
        // Runs on the sender's shard, before the signal is relayed: keep it quick.
        .on_traffic(|from, traffic| {
            let Traffic::Signal {
                room,
                kind,
                to,
                payload,
            } = *traffic
            else {
                // Topics, events and calls pass untouched.
                return Ok(());
            };
            match (kind, to) {
                (SignalKind::Offer, to) => return on_offer(from, room, to, payload),
                (SignalKind::Answer, Some(to)) => on_answer(from, room, to, payload),
                (kind, to) => println!("{kind:?} from {from} to {to:?} in {room}"),
            }
            Ok(())
        })
        // Peero's `on('error')`: the server refused to relay a signal; the sender got the
        // same code and reason.
        .on_traffic_error(|from, traffic, refusal| {
            if let Traffic::Signal { room, kind, to, .. } = *traffic {
                let to = to.unwrap_or("the room");
                println!("error: {kind:?} from {from} to {to} in {room}: {refusal}");
            }
        });
    let server = listen(opts)?;
    println!("signaling server on {}", server.endpoint_string());
    loop {
        std::thread::park();
    }
}
