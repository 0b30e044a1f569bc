//! `cargo bench -p peerd-benches`: end-to-end latency through an in-process server on
//! loopback, reported as percentiles (not means).
//!
//! These are *closed-loop* round trips (send, wait, repeat): the right tool for "how long
//! does one exchange take on an idle server". Throughput and tail latency under load are the
//! loadgen's job (open loop, coordinated-omission corrected): see results/README.md.
//!
//! The server runs one shard pinned to core 0; the bench's threads are pinned to the other
//! cores when there are any. `PEERD_BENCH_ITERS` overrides the sample count (default 20000).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use peerd_benches::report::line;
use peerd_codec::{self as codec, Frame};
use peerd_server::{listen, ListenOptions};
use peerd_testkit::RawPeer;

fn pin_to(core: usize) {
    // SAFETY: plain sched_setaffinity on the calling thread with a cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn iters() -> usize {
    std::env::var("PEERD_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn rpc_echo(w: &mut RawPeer, payload: &[u8], n: usize) -> Histogram<u64> {
    let mut h = hist();
    for i in 0..(n + n / 10) {
        let t = Instant::now();
        w.send(&codec::RpcRequest {
            id: i as u64,
            method: Cow::Borrowed("echo"),
            peer: None,
            timeout_ms: 0,
            params: Cow::Borrowed(payload),
        });
        loop {
            let f = w.recv_blocking();
            if let Frame::RpcResponse(r) = codec::codec::decode_bytes(&f).unwrap() {
                assert_eq!(r.id.to_native(), i as u64);
                break;
            }
        }
        if i >= n / 10 {
            // The first 10% are warm-up.
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    h
}

fn p2p(caller: &mut RawPeer, callee_id: &str, n: usize, payload: &[u8]) -> Histogram<u64> {
    let mut h = hist();
    for i in 0..(n + n / 10) {
        let t = Instant::now();
        caller.send(&codec::RpcRequest {
            id: i as u64,
            method: Cow::Borrowed("echo"),
            peer: Some(Cow::Borrowed(callee_id)),
            timeout_ms: 5000,
            params: Cow::Borrowed(payload),
        });
        loop {
            let f = caller.recv_blocking();
            match codec::codec::decode_bytes(&f).unwrap() {
                Frame::RpcResponse(r) if r.id.to_native() == i as u64 => break,
                Frame::RpcError(e) => panic!("p2p error {}", e.message.as_str()),
                _ => {}
            }
        }
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    h
}

/// A peer that answers every relayed call with its params.
fn spawn_callee(
    addr: std::net::SocketAddr,
    id: &str,
    core: Option<usize>,
) -> std::thread::JoinHandle<()> {
    let mut w = RawPeer::connect(addr, Some(id));
    std::thread::spawn(move || {
        if let Some(c) = core {
            pin_to(c);
        }
        loop {
            let f = w.recv_blocking();
            let Ok(frame) = codec::codec::decode_bytes(&f) else {
                return;
            };
            match frame {
                Frame::RpcRequest(r) => {
                    let id = r.id.to_native();
                    let params = r.params.as_slice().to_vec();
                    w.send(&codec::RpcResponse {
                        id,
                        result: Cow::Owned(params),
                    });
                }
                Frame::Close(_) => return,
                _ => {}
            }
        }
    })
}

/// Publisher-to-receipt latency per recipient: `subs` subscribers each on its own thread,
/// the send time in the payload (one process, one clock).
fn fanout(
    addr: std::net::SocketAddr,
    subs: usize,
    msgs: usize,
    bench_cores: &[usize],
) -> Histogram<u64> {
    let base = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<Histogram<u64>>();
    let mut ready = Vec::new();
    for s in 0..subs {
        let mut w = RawPeer::connect(addr, Some(&format!("sub{s}")));
        w.send(&codec::Join {
            req: 1,
            topic: Cow::Borrowed("bench"),
        });
        loop {
            if let Frame::Status(_) = codec::codec::decode_bytes(&w.recv_blocking()).unwrap() {
                break;
            }
        }
        let tx = tx.clone();
        let core = bench_cores.get(s % bench_cores.len().max(1)).copied();
        ready.push(std::thread::spawn(move || {
            if let Some(c) = core {
                pin_to(c);
            }
            let mut h = hist();
            let mut got = 0;
            while got < msgs {
                let f = w.recv_blocking();
                if let Frame::TopicMessage(m) = codec::codec::decode_bytes(&f).unwrap() {
                    let p = m.payload.as_slice();
                    let sent = u64::from_le_bytes(p[..8].try_into().unwrap());
                    let seq = u64::from_le_bytes(p[8..16].try_into().unwrap()) as usize;
                    let now = base.elapsed().as_nanos() as u64;
                    if seq >= msgs / 10 {
                        h.record(now.saturating_sub(sent).max(1)).unwrap();
                    }
                    got += 1;
                }
            }
            tx.send(h).unwrap();
        }));
    }
    let mut publisher = RawPeer::connect(addr, Some("publisher"));
    let mut payload = vec![0u8; 64];
    for i in 0..msgs {
        let now = base.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&now.to_le_bytes());
        payload[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        publisher.send(&codec::Publish {
            req: 0,
            topic: Cow::Borrowed("bench"),
            echo: false,
            payload: Cow::Borrowed(&payload),
        });
        // Paced: one publish per 200 us, so this measures delivery latency, not a queue.
        let until = Instant::now() + Duration::from_micros(200);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    drop(tx);
    let mut total = hist();
    for h in rx {
        total.add(&h).unwrap();
    }
    for t in ready {
        t.join().unwrap();
    }
    total
}

fn srv_spin() -> Duration {
    std::env::var("PEERD_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros)
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: only run
    // when asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let bench_cores: Vec<usize> = (1..cores).collect();
    let mut o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(1)
        .handle("echo", |_p, r| async move { Ok(r.params) });
    o.cores = vec![0];
    // PEERD_BENCH_SPIN_US: let the shard spin before parking (lower latency, more CPU).
    if let Some(us) = std::env::var("PEERD_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.spin_before_park = Duration::from_micros(us);
    }
    let srv = listen(o).expect("listen");
    let addr = srv.local_addr().unwrap();
    if let Some(c) = bench_cores.first() {
        pin_to(*c);
    }
    let n = iters();
    println!(
        "peerd end-to-end (closed loop, loopback, server: 1 shard on core 0, spin {:?}, bench threads on cores {bench_cores:?})",
        srv_spin()
    );
    let mut w = RawPeer::connect(addr, Some("bench"));
    println!(
        "{}",
        line("rpc echo 64 B", &rpc_echo(&mut w, &[7u8; 64], n))
    );
    println!(
        "{}",
        line("rpc echo 4 KiB", &rpc_echo(&mut w, &[7u8; 4096], n / 2))
    );
    let callee = spawn_callee(
        addr,
        "callee",
        bench_cores.get(1).or(bench_cores.first()).copied(),
    );
    println!(
        "{}",
        line(
            "p2p rpc via server 64 B",
            &p2p(&mut w, "callee", n, &[1u8; 64])
        )
    );
    println!(
        "{}",
        line(
            "fan-out 1 -> 10, per recipient",
            &fanout(addr, 10, n / 10, &bench_cores)
        )
    );
    srv.close();
    let _ = callee.join();
}
