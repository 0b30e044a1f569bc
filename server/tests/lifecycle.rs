//! Starting and stopping a server: option checks before anything starts, pinning that
//! follows the process's CPU affinity, `close()` from inside a handler, Unix listeners
//! closed under concurrent connects, and the server's logs.
//!
//! Some tests here count this process's threads; they hold `SERIAL` so that no other test
//! in this file starts shards meanwhile (each test file is its own process).

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::{wait_until, RawPeer};
use peerd_codec::Frame;
use peerd_server::{listen, Code, ListenError, ListenOptions, PeerServer};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn shard_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("peerd-shard"))
        .count()
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: plain data filled by the kernel for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) },
        0
    );
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The option `listen(o)` refuses, after checking its reason names it too (the field for
/// programs, the reason for people).
fn invalid(o: ListenOptions, says: &str) -> &'static str {
    match listen(o) {
        Err(ListenError::InvalidOptions { option, reason }) => {
            assert!(reason.contains(says), "{option}: {reason}");
            option
        }
        other => panic!("expected InvalidOptions, got {other:?}"),
    }
}

#[test]
fn invalid_options_are_refused_before_any_shard_starts() {
    let _g = serial();
    let before = shard_threads();
    let base = || ListenOptions::new("127.0.0.1:0").unwrap().shards(1);

    // More shards than cores with pinning on used to start the first shards, then fail,
    // leaving them running.
    let mut o = base().shards(allowed_cpus().len() + 1);
    o.pin = true;
    assert_eq!(invalid(o, "shards"), "shards");
    let mut o = base();
    o.pin = true;
    o.cores = vec![4096];
    assert_eq!(invalid(o, "core 4096"), "cores");

    let mut o = base();
    o.limits.max_frame_len = 0;
    assert_eq!(invalid(o, "max_frame_len"), "limits.max_frame_len");
    let mut o = base();
    o.limits.outbound_queue_bytes = 0;
    assert_eq!(
        invalid(o, "outbound_queue_bytes"),
        "limits.outbound_queue_bytes"
    );
    let mut o = base();
    o.limits.max_connections = 0;
    assert_eq!(invalid(o, "max_connections"), "limits.max_connections");
    let mut o = base();
    o.heartbeat = Duration::ZERO;
    assert_eq!(invalid(o, "heartbeat"), "heartbeat");
    assert_eq!(invalid(base().shards(0), "shards"), "shards");

    assert_eq!(shard_threads(), before, "no shard thread left running");
}

#[test]
fn default_pinning_uses_the_cores_this_process_may_run_on() {
    let _g = serial();
    let cpus = allowed_cpus();
    let last = *cpus.last().unwrap();
    // Restrict a thread to the last allowed core (what `taskset -c N` does to a process)
    // and start the server from it: its shard must run there, not on core 0.
    let srv = std::thread::spawn(move || {
        // SAFETY: plain data; pins this thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(last, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                0
            );
        }
        let mut o = ListenOptions::new("127.0.0.1:0").unwrap().shards(1).handle(
            "cpu",
            |_p, _r| async move {
                let cpu = unsafe { libc::sched_getcpu() };
                Ok(Bytes::from(cpu.to_string()))
            },
        );
        o.pin = true;
        listen(o).expect("listen")
    })
    .join()
    .unwrap();
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), None);
    let cpu = p.call(1, "cpu", b"").unwrap();
    assert_eq!(String::from_utf8(cpu).unwrap(), last.to_string());
}

#[test]
fn close_from_inside_a_handler_stops_the_server() {
    let _g = serial();
    let cell: Arc<OnceLock<PeerServer>> = Arc::new(OnceLock::new());
    let c = cell.clone();
    let mut o =
        ListenOptions::new("127.0.0.1:0")
            .unwrap()
            .shards(2)
            .handle("stop", move |_p, _r| {
                // Used to panic the shard thread: "failed to join thread: Resource deadlock
                // avoided".
                c.get().expect("server set").close();
                async { Ok(Bytes::from_static(b"stopping")) }
            });
    o.pin = false;
    o.close_linger = Duration::from_millis(200);
    let srv = cell.get_or_init(|| listen(o).expect("listen"));
    let addr = srv.local_addr().unwrap();
    let mut p = RawPeer::connect(addr, Some("stopper"));
    assert_eq!(p.call(1, "stop", b"").unwrap(), b"stopping");
    p.expect_close(Code::Shutdown);
    assert!(srv.is_closed());
    wait_until("the port to be free", || {
        std::net::TcpListener::bind(addr).is_ok()
    });
    wait_until("every shard to stop", || shard_threads() == 0);
}

/// At shutdown a peer that goes on sending after our Close is read until it ends, not left
/// waiting for a pass of the shard's loop (`fair`) that no longer comes: the service that
/// opens passes is stopped before the connections' tasks end. `close()` returns once the
/// peer is done, long before the close linger.
#[test]
fn shutdown_reads_a_peer_still_sending_until_it_ends() {
    let _g = serial();
    let mut o = ListenOptions::new("127.0.0.1:0").unwrap().shards(1);
    o.pin = false;
    o.close_linger = Duration::from_secs(20);
    let srv = Arc::new(listen(o).expect("listen"));
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), Some("uploader"));
    let closer = {
        let srv = srv.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            srv.close();
            started.elapsed()
        })
    };
    let code = p.recv_until(|f| match f {
        Frame::Close(c) => Some(c.code.to_native()),
        _ => None,
    });
    assert_eq!(code, Code::Shutdown.as_u16());
    // More than the kernel's buffers at both ends hold, so the write returns only once the
    // lingering server has read most of it; then the peer ends.
    p.send_raw(&vec![0u8; 64 << 20]);
    drop(p);
    let took = closer.join().unwrap();
    assert!(
        took < Duration::from_secs(10),
        "close() took {took:?}: the lingering reads waited for the close linger"
    );
}

#[test]
fn unix_listener_closes_cleanly_while_peers_connect() {
    let _g = serial();
    let path = std::env::temp_dir().join(format!("peerd-close-{}.sock", std::process::id()));
    for round in 0..20 {
        let mut o = ListenOptions::new(&format!("unix:{}", path.display()))
            .unwrap()
            .shards(2);
        o.pin = false;
        o.close_linger = Duration::from_millis(50);
        let srv = listen(o).expect("listen");
        let p = path.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        // Connections arriving while close() runs are what used to let the acceptor drop
        // the listener before close() shut its (by then possibly reused) fd down.
        let hammer = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::os::unix::net::UnixStream::connect(&p);
            }
        });
        srv.close();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hammer.join().unwrap();
        assert!(!path.exists(), "round {round}: socket file removed");
    }
}
