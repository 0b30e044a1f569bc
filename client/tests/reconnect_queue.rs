//! The reconnect queue against the real server (`peerd_server::listen`): what the client
//! sends while its server is down waits for the next server on the same address, within
//! its bounds in time and size, and fails with a typed error past them or when the peer
//! closes for good.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use peerd_client::{
    connect, CallError, Code, Peer, PeerOptions, ReconnectPolicy, RequestError, State,
};
use peerd_server::{listen, Endpoint, ListenOptions, PeerServer};

const WAIT: Duration = Duration::from_secs(10);

/// What the server saw, in the order its peer's frames were acted on: events named `seq`
/// (their payload) and calls to `record` (`call:` and their params).
type Log = mpsc::Receiver<String>;

/// A server on `addr` (port 0: any) that logs `seq` events and `record` calls, in order.
fn server(addr: &str) -> (PeerServer, Log) {
    let (tx, log) = mpsc::channel::<String>();
    let tx = Arc::new(Mutex::new(tx));
    let on_call = tx.clone();
    let mut o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(1)
        .handle("record", move |_p, r| {
            // Logged when the call is dispatched, in frame order with the events.
            let params = String::from_utf8_lossy(&r.params).into_owned();
            let _ = on_call.lock().unwrap().send(format!("call:{params}"));
            async move { Ok(r.params) }
        })
        .on_connection(move |peer| {
            let tx = tx.clone();
            peer.events().on("seq", move |e| {
                let _ = tx
                    .lock()
                    .unwrap()
                    .send(String::from_utf8_lossy(e.payload).into_owned());
            });
        });
    o.endpoints = vec![Endpoint::Tcp(addr.into())];
    o.pin = false;
    (listen(o).expect("listen"), log)
}

/// The next `n` entries of the server's log.
fn logged(log: &Log, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            log.recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("log entry {i}"))
        })
        .collect()
}

/// Quick retries, so a test does not wait on the backoff once the next server is up.
fn fast() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(100))
}

/// Wait until `cond` holds; a bounded poll of something the test can observe.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::park_timeout(Duration::from_millis(2));
    }
}

/// Wait until `states` reports `want` (or `p` is already there).
fn wait_state(p: &Peer, states: &flume::Receiver<State>, want: State) {
    let deadline = Instant::now() + WAIT;
    while p.state() != want {
        let left = deadline.saturating_duration_since(Instant::now());
        match states.recv_timeout(left) {
            Ok(s) if s == want => return,
            Ok(_) => {}
            Err(_) => panic!("waiting for {want}; state {}", p.state()),
        }
    }
}

/// Close `srv` and wait until `p` knows: from then on its sends are queued.
fn take_down(srv: PeerServer, p: &Peer) {
    let states = p.state_changes();
    srv.close();
    wait_state(p, &states, State::Reconnecting);
}

fn spawn_call(p: &Peer, params: &'static str) -> thread::JoinHandle<Result<Vec<u8>, CallError>> {
    let p = p.clone();
    thread::spawn(move || {
        p.rpc()
            .call("record", params.as_bytes())
            .map(|b| b.to_vec())
    })
}

#[test]
fn sends_made_while_the_server_is_down_reach_the_next_one_in_order() {
    let (srv, _) = server("127.0.0.1:0");
    let addr: SocketAddr = srv.local_addr().unwrap();
    let p = connect(
        addr,
        PeerOptions::new().peer_id("patient").reconnect(fast()),
    )
    .unwrap();
    take_down(srv, &p);

    // Not NotConnected: queued, in the order they were made.
    p.events().emit("seq", b"1").expect("queued");
    let call = spawn_call(&p, "2");
    wait_until("the call to be queued", || p.queued_frames() == 2);
    p.events().emit("seq", b"3").expect("queued");
    p.publish("nobody-here", b"x").expect("queued");
    assert_eq!(p.queued_frames(), 4);
    assert!(p.queued_bytes() > 0);

    // The next server on the same address, well within the 10 s bound.
    let (_srv2, log) = server(&addr.to_string());
    assert_eq!(call.join().unwrap().unwrap(), b"2");
    assert_eq!(logged(&log, 3), ["1", "call:2", "3"]);
    p.when_ready(WAIT).unwrap();
    assert_eq!(p.peer_id().as_deref(), Some("patient"));
    assert_eq!((p.queued_frames(), p.queued_bytes()), (0, 0));
    // And what is sent now goes straight out, after them.
    p.events().emit("seq", b"4").unwrap();
    assert_eq!(logged(&log, 1), ["4"]);
}

#[test]
fn past_the_time_bound_queued_sends_fail_typed_and_are_not_sent() {
    let (srv, _) = server("127.0.0.1:0");
    let addr = srv.local_addr().unwrap();
    let bound = Duration::from_millis(300);
    let p = connect(
        addr,
        PeerOptions::new()
            .peer_id("impatient")
            .reconnect(fast())
            .reconnect_queue_timeout(bound),
    )
    .unwrap();
    let errors = p.errors();
    take_down(srv, &p);

    // A fire-and-forget frame is accepted, then reported through on_error when dropped.
    p.events().emit("seq", b"expired").expect("queued");
    // A call keeps its own deadline when it is the shorter one...
    let t0 = Instant::now();
    assert_eq!(
        p.rpc()
            .call_with_timeout("record", b"x", Duration::from_millis(50)),
        Err(CallError::Timeout)
    );
    // ... and fails with QueueTimeout at the queue's bound otherwise (not at its 30 s).
    let t0_queue = Instant::now();
    assert_eq!(
        p.rpc().call("record", b"expired"),
        Err(CallError::QueueTimeout)
    );
    let waited = t0_queue.elapsed();
    assert!(
        waited >= bound - Duration::from_millis(50) && waited < Duration::from_secs(5),
        "failed after {waited:?}, bound {bound:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let e = errors
        .recv_timeout(WAIT)
        .expect("the dropped event is reported");
    assert_eq!(e.known_code(), Some(Code::Timeout), "{e}");
    assert!(e.message.contains("Event"), "{e}");
    wait_until("the queue to empty", || p.queued_frames() == 0);

    // None of it reaches the next server: its first entry is what is sent after.
    let (_srv2, log) = server(&addr.to_string());
    p.when_ready(WAIT).unwrap();
    p.events().emit("seq", b"after").unwrap();
    assert_eq!(logged(&log, 1), ["after"]);
}

#[test]
fn past_the_size_bound_the_new_send_fails_typed_and_the_queued_ones_stay() {
    let (srv, _) = server("127.0.0.1:0");
    let addr = srv.local_addr().unwrap();
    let p = connect(
        addr,
        PeerOptions::new()
            .peer_id("crowded")
            .reconnect(fast())
            .reconnect_queue_limits(2, 1 << 20),
    )
    .unwrap();
    take_down(srv, &p);

    p.events().emit("seq", b"1").unwrap();
    p.events().emit("seq", b"2").unwrap();
    // Frames: full. The newcomer fails at once; the oldest are not dropped for it.
    assert_eq!(p.events().emit("seq", b"3"), Err(RequestError::QueueFull));
    assert_eq!(p.rpc().call("record", b"4"), Err(CallError::QueueFull));
    assert_eq!(p.queued_frames(), 2);

    // Bytes: one frame of ~600 bytes fits 1,000, a second does not.
    let (srv_b, _) = server("127.0.0.1:0");
    let addr_b = srv_b.local_addr().unwrap();
    let q = connect(
        addr_b,
        PeerOptions::new()
            .peer_id("heavy")
            .reconnect(fast())
            .reconnect_queue_limits(100, 1000),
    )
    .unwrap();
    take_down(srv_b, &q);
    let big = vec![b'x'; 600];
    q.events().emit("seq", &big).unwrap();
    assert_eq!(q.events().emit("seq", &big), Err(RequestError::QueueFull));
    assert_eq!(q.queued_frames(), 1);
    assert!(q.queued_bytes() > 600 && q.queued_bytes() <= 1000);
    q.disconnect();

    let (_srv2, log) = server(&addr.to_string());
    p.when_ready(WAIT).unwrap();
    p.events().emit("seq", b"after").unwrap();
    assert_eq!(logged(&log, 3), ["1", "2", "after"]);
}

#[test]
fn a_final_close_fails_what_is_queued() {
    // disconnect() while queued.
    let (srv, _) = server("127.0.0.1:0");
    let addr = srv.local_addr().unwrap();
    let p = connect(addr, PeerOptions::new().peer_id("leaver").reconnect(fast())).unwrap();
    take_down(srv, &p);
    let call = spawn_call(&p, "never");
    wait_until("the call to be queued", || p.queued_frames() == 1);
    p.events().emit("seq", b"never").unwrap();
    p.disconnect();
    assert_eq!(call.join().unwrap(), Err(CallError::Closed));
    assert_eq!(p.queued_frames(), 0);
    assert_eq!(p.events().emit("seq", b"x"), Err(RequestError::Closed));

    // Reconnect gives up while something is queued.
    let (srv, _) = server("127.0.0.1:0");
    let addr = srv.local_addr().unwrap();
    let once = ReconnectPolicy::default()
        .initial_backoff(Duration::from_millis(300))
        .jitter(false)
        .max_attempts(1);
    let p = connect(addr, PeerOptions::new().peer_id("quitter").reconnect(once)).unwrap();
    let states = p.state_changes();
    take_down(srv, &p);
    let call = spawn_call(&p, "never");
    wait_until("the call to be queued", || p.queued_frames() == 1);
    assert_eq!(call.join().unwrap(), Err(CallError::Closed));
    wait_state(&p, &states, State::Closed);
    let close = p.last_close().unwrap();
    assert!(close.reason.contains("gave up"), "{close:?}");

    // No reconnect at all: nothing is queued, sends fail at once as before.
    let (srv, _) = server("127.0.0.1:0");
    let addr = srv.local_addr().unwrap();
    let p = connect(addr, PeerOptions::new().no_reconnect()).unwrap();
    let states = p.state_changes();
    srv.close();
    wait_state(&p, &states, State::Closed);
    assert_eq!(p.rpc().call("record", b""), Err(CallError::Closed));
}
