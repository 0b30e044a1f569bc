//! A restart without losses, end to end (PROTOCOL.md §6.10): server A drains to server B,
//! which listens on A's very sockets, while the client keeps calling and sending. Every
//! call is answered (by A before, by B after), every event is acted on exactly once and
//! in order, and the client keeps its peer id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerd_client::{connect_endpoint, Code, Peer, PeerOptions, State};
use peerd_server::{listen, DrainOptions, ListenOptions, PeerServer};

const WAIT: Duration = Duration::from_secs(20);

/// `(server, caller, n)` for every `seq` event a server acted on, in the order it did.
type Log = Arc<Mutex<Vec<(&'static str, u32, u32)>>>;

/// A server named `name` on `endpoint`, A's sockets when `inherit` is A. Its `who` method
/// answers its name after the milliseconds its params say, so that calls are in flight
/// when the drain notice comes; its `seq` events (payload: caller, n) go to `log`.
fn server(
    endpoint: &str,
    name: &'static str,
    inherit: Option<&PeerServer>,
    log: &Log,
) -> PeerServer {
    let log = log.clone();
    let mut o = ListenOptions::new(endpoint)
        .unwrap()
        .shards(2)
        .handover(true)
        .handle("who", move |_p, r| async move {
            let ms: u64 = std::str::from_utf8(&r.params).unwrap().parse().unwrap();
            glommio::timer::sleep(Duration::from_millis(ms)).await;
            Ok(Bytes::from(name))
        })
        .on_connection(move |peer| {
            let log = log.clone();
            peer.events().on("seq", move |e| {
                let caller = u32::from_le_bytes(e.payload[..4].try_into().unwrap());
                let n = u32::from_le_bytes(e.payload[4..].try_into().unwrap());
                log.lock().unwrap().push((name, caller, n));
            });
        });
    o.pin = false;
    if let Some(prev) = inherit {
        o = o.inherit(prev.listener_fds().unwrap());
    }
    listen(o).unwrap()
}

/// One caller: emit `seq` (caller, n), then call `who`, for n = 0, 1, ... until it has
/// been answered by B `after` times. Returns who answered each call.
fn caller(p: Peer, id: u32, after: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut answers = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut from_b = 0;
    for n in 0u32.. {
        assert!(Instant::now() < deadline, "caller {id} never reached B");
        let mut payload = id.to_le_bytes().to_vec();
        payload.extend_from_slice(&n.to_le_bytes());
        p.events()
            .emit("seq", &payload)
            .unwrap_or_else(|e| panic!("caller {id}, event {n}: {e}"));
        // Slow enough that calls are in flight at the notice, quick enough to be many.
        let who = p
            .rpc()
            .call("who", format!("{}", 2 + n % 5).as_bytes())
            .unwrap_or_else(|e| panic!("caller {id}, call {n}: {e}"));
        let who = String::from_utf8(who.to_vec()).unwrap();
        if who == "B" {
            from_b += 1;
        }
        answers.push(who);
        if from_b >= after && stop.load(Ordering::SeqCst) {
            break;
        }
    }
    answers
}

#[test]
fn a_client_drained_to_a_successor_loses_nothing_and_keeps_its_id() {
    drained_to_a_successor(|port| format!("127.0.0.1:{port}"));
}

/// Over WebSocket the client's half-close is one binary message carrying its Close: no
/// WebSocket Close until the server's.
#[test]
fn the_same_over_websocket() {
    drained_to_a_successor(|port| format!("ws://127.0.0.1:{port}/peerd"));
}

/// The test, on the endpoint `at(port)` names (port 0 for A: any).
fn drained_to_a_successor(at: fn(u16) -> String) {
    let log: Log = Arc::default();
    let a = Arc::new(server(&at(0), "A", None, &log));
    let endpoint = at(a.local_addr().unwrap().port());
    let p = connect_endpoint(endpoint.as_str(), PeerOptions::new().peer_id("steady")).unwrap();
    let states = p.state_changes();

    // Four callers, calling and sending without pause from before the drain to after it.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|id| {
            let (p, stop) = (p.clone(), stop.clone());
            thread::spawn(move || caller(p, id, 5, stop))
        })
        .collect();
    // Under way on A first.
    let deadline = Instant::now() + WAIT;
    while log.lock().unwrap().len() < 8 {
        assert!(Instant::now() < deadline, "the callers did not start");
        thread::park_timeout(Duration::from_millis(2));
    }

    // B listens on A's sockets, then A drains: notice, our Close, A answers what it was
    // sent, A's Close{reconnect}, and the client is on B at once.
    let b = server(&endpoint, "B", Some(&a), &log);
    let drain = {
        let a = a.clone();
        thread::spawn(move || {
            a.drain(DrainOptions {
                window: Duration::ZERO,
                grace: Duration::from_secs(5),
            })
        })
    };
    let report = drain.join().unwrap();
    assert_eq!((report.connections, report.remaining), (1, 0), "{report:?}");
    stop.store(true, Ordering::SeqCst);
    let answers: Vec<Vec<String>> = callers.into_iter().map(|c| c.join().unwrap()).collect();

    // Every call was answered: by A, then (once the client moved) by B, never A again.
    for (id, a) in answers.iter().enumerate() {
        let first_b = a.iter().position(|w| w == "B").expect("answered by B");
        assert!(first_b > 0, "caller {id} was never answered by A: {a:?}");
        assert!(a[first_b..].iter().all(|w| w == "B"), "caller {id}: {a:?}");
    }
    // Every event was acted on exactly once and in order: by A, then by B. The notice may
    // come between an event and the call after it, so event n may be A's and call n B's,
    // but never the other way round (the event was sent first).
    let log = log.lock().unwrap().clone();
    for (id, a) in answers.iter().enumerate() {
        let seen: Vec<(&str, u32)> = log
            .iter()
            .filter(|(_, c, _)| *c == id as u32)
            .map(|(s, _, n)| (*s, *n))
            .collect();
        let numbers: Vec<u32> = seen.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            numbers,
            (0..a.len() as u32).collect::<Vec<_>>(),
            "caller {id}: {seen:?}"
        );
        let first_b = seen.iter().position(|(s, _)| *s == "B").expect("some on B");
        assert!(
            seen[first_b..].iter().all(|(s, _)| *s == "B"),
            "caller {id}: {seen:?}"
        );
        for ((server, n), who) in seen.iter().zip(a) {
            assert!(
                *server == "A" || who == "B",
                "caller {id}: event {n} acted on by B, but the call after it answered by A"
            );
        }
    }

    // The same session: its id, the drain's close recorded, connected to B.
    assert_eq!(p.peer_id().as_deref(), Some("steady"));
    assert_eq!(p.state(), State::Active);
    assert_eq!(p.queued_frames(), 0);
    let close = p.last_close().expect("the drain's close");
    assert_eq!(close.known_code(), Some(Code::Reconnect), "{close:?}");
    assert!(b.connections().iter().any(|c| c.peer_id == "steady"));
    // Reconnecting, then Active again: no Closed in between.
    let seen: Vec<State> = states.try_iter().collect();
    assert!(!seen.contains(&State::Closed), "{seen:?}");
    assert!(seen.contains(&State::Reconnecting), "{seen:?}");
}
