//! Where does io_uring's zero-copy send (`IORING_OP_SEND_ZC`) cost the sender less CPU per
//! byte than a copying send? Issue 14 asks for SEND_ZC "where it pays for large payloads (it
//! does not for small ones: measure the crossover)"; this measures it, on loopback TCP.
//!
//! ```sh
//! cargo run --release -p peerd-server --example send_zc                  # the full grid
//! cargo run --release -p peerd-server --example send_zc -- --help
//! ```
//!
//! For every payload size and method, a cell: a fresh loopback TCP connection, a sender
//! thread pinned to one core sending one payload-sized buffer at a time for a bounded time
//! (or byte count), a receiver thread pinned to the other core reading with a 4 MiB buffer
//! and discarding. Each thread reads its own CPU time (`CLOCK_THREAD_CPUTIME_ID`) around its
//! loop. The methods:
//!
//! * `send(2)`: blocking `send` of the whole payload (std's `write_all`, which is `send`).
//! * `SEND`: io_uring `IORING_OP_SEND`, copying; a buffer is free again at its completion.
//! * `SEND_ZC`: io_uring `IORING_OP_SEND_ZC`: a first completion with the result (and
//!   `IORING_CQE_F_MORE`), then a notification (`IORING_CQE_F_NOTIF`) once the kernel holds
//!   no reference to the pages; only then is the buffer free again.
//! * `SEND_ZC fixed`: the same from a registered buffer (`IORING_RECVSEND_FIXED_BUF`), which
//!   saves pinning the user pages on every send.
//!
//! The io_uring methods submit at most `--batch` sends (8) per `io_uring_enter`, alike, so
//! that both pay the same for system calls and the difference is the send itself. A copying
//! SEND's buffer is free again at its completion, so `--batch` buffers suffice. A zero-copy
//! buffer is not free until its notification, and for TCP that is when the data is
//! *acknowledged* (the skb kept for retransmission holds the pages), a round trip later. So
//! the zero-copy methods get a pool of `--inflight-kib` (1 MiB) worth of buffers (at least
//! `--batch`, at most 16384), enough to cover the round trip, so that notifications do not
//! stall the pipe. Buffers are packed (64-byte aligned) in one page-aligned region, as
//! frames are in peerd's buffers. Every io_uring send carries `MSG_WAITALL`: io_uring then
//! retries a short send itself, so each request sends its whole buffer (several requests in
//! flight on one stream may interleave their bytes; the receiver discards them, so it does
//! not matter here, but peerd would need one send in flight per socket or linked requests).
//!
//! What the numbers include on loopback: with `CONFIG_IRQ_TIME_ACCOUNTING` off (as on the
//! development VM), softirq work done in a thread's context counts as that thread's CPU time.
//! Loopback transmit runs the receive path (the softirq) on the sending core, inline, so the
//! sender's CPU holds its TCP transmit *and* the TCP receive processing, and, for zero-copy,
//! the copy the kernel makes when a zero-copy skb is delivered to a local socket
//! (`skb_orphan_frags_rx`: loopback never stays zero-copy). The notification reports that
//! copy (`IORING_SEND_ZC_REPORT_USAGE`: `IORING_NOTIF_USAGE_ZC_COPIED`); the table counts it.
//! softirq work that overflows its budget goes to `ksoftirqd/N`, in no thread's time: each
//! side's CPU is therefore its thread's time plus that of its core's `ksoftirqd`
//! (/proc/PID/schedstat, ns), which is then the loopback receive work (and copies) of that
//! core; the checks say how much of it there was.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

/// `IORING_SEND_ZC_REPORT_USAGE` (uapi io_uring.h, 6.2): the notification says whether the
/// data was copied after all. Not exported by the io-uring crate.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the kernel copied.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const DEFAULT_SIZES: [usize; 8] = [64, 256, KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB];
/// The receiver's buffer: large, so that its per-call cost does not hide the copy cost.
const RECV_BUF: usize = 4 * MIB;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Send,
    UringSend,
    UringSendZc,
    UringSendZcFixed,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Send,
        Method::UringSend,
        Method::UringSendZc,
        Method::UringSendZcFixed,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Send => "send(2)",
            Method::UringSend => "SEND",
            Method::UringSendZc => "SEND_ZC",
            Method::UringSendZcFixed => "SEND_ZC fixed",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Method::Send => "send",
            Method::UringSend => "uring-send",
            Method::UringSendZc => "send-zc",
            Method::UringSendZcFixed => "send-zc-fixed",
        }
    }

    fn zc(self) -> bool {
        matches!(self, Method::UringSendZc | Method::UringSendZcFixed)
    }
}

struct Config {
    sizes: Vec<usize>,
    methods: Vec<Method>,
    reps: usize,
    time: Duration,
    max_bytes: u64,
    batch: usize,
    inflight_bytes: usize,
    sender_core: usize,
    receiver_core: usize,
    csv: Option<String>,
}

const USAGE: &str = "\
usage: send_zc [--sizes 64,256,1k,...] [--methods send,uring-send,send-zc,send-zc-fixed]
               [--reps 3] [--time-ms 700] [--max-mib 4096] [--batch 8]
               [--inflight-kib 1024]
               [--sender-core 0] [--receiver-core 1] [--csv PATH]
A cell (size x method) ends after --time-ms or --max-mib sent, whichever comes first.";

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = s.strip_suffix('k') {
        (n, KIB)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, MIB)
    } else {
        (s.as_str(), 1)
    };
    let n: usize = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    Ok(n * mult)
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        sizes: DEFAULT_SIZES.to_vec(),
        methods: Method::ALL.to_vec(),
        reps: 3,
        time: Duration::from_millis(700),
        max_bytes: 4 << 30,
        batch: 8,
        inflight_bytes: MIB,
        sender_core: 0,
        receiver_core: 1,
        csv: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = args
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("bad value for {a}: {v:?}"))
        };
        match a.as_str() {
            "--sizes" => cfg.sizes = v.split(',').map(parse_size).collect::<Result<_, _>>()?,
            "--methods" => {
                cfg.methods = v
                    .split(',')
                    .map(|m| {
                        Method::ALL
                            .into_iter()
                            .find(|x| x.key() == m)
                            .ok_or_else(|| format!("unknown method {m:?}\n{USAGE}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--reps" => cfg.reps = num(&v)?.max(1) as usize,
            "--time-ms" => cfg.time = Duration::from_millis(num(&v)?),
            "--max-mib" => cfg.max_bytes = num(&v)? << 20,
            "--batch" => cfg.batch = num(&v)?.clamp(1, 256) as usize,
            "--inflight-kib" => cfg.inflight_bytes = (num(&v)? as usize).clamp(1, 1 << 20) * KIB,
            "--sender-core" => cfg.sender_core = num(&v)? as usize,
            "--receiver-core" => cfg.receiver_core = num(&v)? as usize,
            "--csv" => cfg.csv = Some(v),
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    if cfg.sizes.iter().any(|&s| s == 0 || s > 64 * MIB) {
        return Err("sizes must be 1 B ..= 64 MiB".into());
    }
    Ok(cfg)
}

/// CPU time of `clock` in ns (the calling thread's, or the process's).
fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn thread_cpu_ns() -> u64 {
    cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Pin the calling thread to `core`, so that sender and receiver never share one.
fn pin(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "core out of range",
        ));
    }
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` < CPU_SETSIZE (checked above), so the bit lies inside `set`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of `ksoftirqd/N` for `core` (none if not found): the softirq work it does is
/// nobody's thread time.
fn ksoftirqd_pids(core: usize) -> Vec<u32> {
    let want = [format!("ksoftirqd/{core}")];
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                if want.iter().any(|w| w == comm.trim()) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

/// Time on CPU of the given tasks, in ns (/proc/PID/schedstat, first field).
fn schedstat_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Idle (with iowait) and steal time of the two cores, in /proc/stat's units: how much of
/// the cores' time went to nothing, and how much the hypervisor took. Idle time is measured
/// (NO_HZ), unlike the busy columns, which are sampled at each tick and so miss or
/// over-count tasks that sleep and wake often, as these do. Noise indicators only.
fn core_idle(cores: [usize; 2]) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let mut idle = 0;
    let mut steal = 0;
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        if !cores.iter().any(|c| name == format!("cpu{c}")) {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        if v.len() >= 8 {
            idle += v[3] + v[4];
            steal += v[7];
        }
    }
    (idle, steal)
}

fn jiffy_ns() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / hz.max(1) as u64
}

/// One measured cell.
#[derive(Clone, Default)]
struct Cell {
    bytes: u64,
    sends: u64,
    short: u64,
    wall_ns: u64,
    /// The sender thread's CPU over its measured loop.
    snd_thread_ns: u64,
    /// `ksoftirqd` of the sender's core over the cell.
    snd_softirqd_ns: u64,
    rcv_thread_ns: u64,
    rcv_softirqd_ns: u64,
    rcv_bytes: u64,
    /// Process CPU outside the two threads (io-wq workers, if any; the main thread).
    other_cpu_ns: i64,
    notifs: u64,
    copied: u64,
    /// Time of the two cores neither idle, nor stolen, nor spent by our threads and
    /// ksoftirqd: other processes (/proc/stat, 10 ms units: coarse).
    foreign_ns: i64,
    steal_ns: u64,
    /// The whole cell, setup and teardown included (what the /proc/stat figures cover).
    cell_ns: u64,
}

impl Cell {
    fn per_kib(&self, ns: u64) -> f64 {
        ns as f64 / (self.bytes as f64 / KIB as f64)
    }
    /// The sending side: its thread, and the softirq work its core deferred to ksoftirqd.
    fn snd_ns(&self) -> u64 {
        self.snd_thread_ns + self.snd_softirqd_ns
    }
    fn rcv_ns(&self) -> u64 {
        self.rcv_thread_ns + self.rcv_softirqd_ns
    }
    fn snd_ns_kib(&self) -> f64 {
        self.per_kib(self.snd_ns())
    }
    fn rcv_ns_kib(&self) -> f64 {
        self.per_kib(self.rcv_ns())
    }
    fn both_ns_kib(&self) -> f64 {
        self.per_kib(self.snd_ns() + self.rcv_ns())
    }
    fn snd_busy_pct(&self) -> f64 {
        100.0 * self.snd_thread_ns as f64 / self.wall_ns as f64
    }
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.wall_ns as f64
    }
}

/// What the sender measured.
#[derive(Default)]
struct SendOutcome {
    bytes: u64,
    sends: u64,
    short: u64,
    wall_ns: u64,
    cpu_ns: u64,
    notifs: u64,
    copied: u64,
    /// The thread's CPU over its whole life, setup included.
    thread_total_ns: u64,
}

/// Bytes each sender buffer is filled with (anything but zero: no shared zero page).
const FILL: u8 = 0xa5;

/// Page-aligned storage for the in-flight buffers, one page-aligned slot each.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; 4096]);

fn send_blocking(stream: &mut TcpStream, size: usize, cfg: &Config) -> io::Result<SendOutcome> {
    let buf = vec![FILL; size];
    // Read the clock every ~16 KiB: often enough to end on time, rarely enough not to show.
    let check_every = (16 * KIB / size).max(1) as u64;
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut out = SendOutcome::default();
    while out.bytes < cfg.max_bytes {
        stream.write_all(&buf)?;
        out.bytes += size as u64;
        out.sends += 1;
        if out.sends % check_every == 0 && start.elapsed() >= cfg.time {
            break;
        }
    }
    out.cpu_ns = thread_cpu_ns() - cpu0;
    out.wall_ns = start.elapsed().as_nanos() as u64;
    Ok(out)
}

/// How many buffers a method cycles through (see the module doc).
fn buffers(method: Method, size: usize, cfg: &Config) -> usize {
    if method.zc() {
        (cfg.inflight_bytes / size).clamp(cfg.batch, 16384)
    } else {
        cfg.batch
    }
}

fn send_uring(
    stream: &TcpStream,
    size: usize,
    method: Method,
    report_usage: bool,
    cfg: &Config,
) -> io::Result<SendOutcome> {
    let nbufs = buffers(method, size, cfg);
    let stride = size.next_multiple_of(64);
    let region: Vec<Page> = vec![Page([FILL; 4096]); (stride * nbufs).div_ceil(4096)];
    let base = region.as_ptr() as *const u8;
    let entries = (cfg.batch as u32).next_power_of_two().max(8);
    // Two completions per buffer at most (result, notification), all of which may be
    // waiting at once (one ACK frees many buffers): size the CQ for them, so that it never
    // overflows (the kernel would keep them, but on a slower path).
    let cq = (2 * nbufs as u32).next_power_of_two().max(2 * entries);
    // As peerd's SendRing (server/src/uring.rs): one submitter thread, no interrupts needed.
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(entries)
        .or_else(|_| IoUring::builder().setup_cqsize(cq).build(entries))?;
    let fixed = method == Method::UringSendZcFixed;
    if fixed {
        let iov = libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: region.len() * 4096,
        };
        // SAFETY: `region` is allocated for `iov_len` bytes and is dropped only after `ring`
        // (explicit `drop(ring)` below), so the registration never outlives the memory.
        unsafe { ring.submitter().register_buffers(&[iov]) }?;
    }
    let fd = types::Fd(stream.as_raw_fd());
    let zc_flags = if report_usage {
        SEND_ZC_REPORT_USAGE
    } else {
        0
    };

    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut out = SendOutcome::default();
    let mut free: Vec<usize> = (0..nbufs).rev().collect();
    let mut busy = 0usize;
    let mut stop = false;
    let mut error: Option<io::Error> = None;
    let mut submitted = 0u64;
    loop {
        if !stop {
            let mut queued = 0;
            while let Some(i) = free.pop() {
                // Bound what is submitted, not only what completed: ends near --max-mib.
                if queued == cfg.batch || submitted >= cfg.max_bytes {
                    free.push(i);
                    break;
                }
                // SAFETY: slot i lies inside `region` (i < nbufs; stride * nbufs bytes).
                let ptr = unsafe { base.add(i * stride) };
                let entry = if method.zc() {
                    let mut op = opcode::SendZc::new(fd, ptr, size as u32)
                        .flags(libc::MSG_WAITALL)
                        .zc_flags(zc_flags);
                    if fixed {
                        op = op.buf_index(Some(0));
                    }
                    op.build()
                } else {
                    opcode::Send::new(fd, ptr, size as u32)
                        .flags(libc::MSG_WAITALL)
                        .build()
                };
                // SAFETY: the entry points at slot i of `region`, which nobody writes and
                // which stays allocated until the kernel is done with it: the slot goes back
                // to `free` only at its last completion (the result for SEND, the
                // notification for SEND_ZC), and this loop returns only with no slot busy.
                let pushed = unsafe { ring.submission().push(&entry.user_data(i as u64)) };
                if pushed.is_err() {
                    // The SQ is full (a submit that took only part of it): next round.
                    free.push(i);
                    break;
                }
                queued += 1;
                busy += 1;
                submitted += size as u64;
            }
        }
        if busy == 0 {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => continue,
            Err(e) => {
                // Requests may still reference `region`: never free it.
                std::mem::forget(region);
                return Err(e);
            }
        }
        for cqe in ring.completion() {
            let slot = cqe.user_data() as usize;
            let res = cqe.result();
            if cqueue::notif(cqe.flags()) {
                out.notifs += 1;
                if res as u32 & NOTIF_USAGE_ZC_COPIED != 0 {
                    out.copied += 1;
                }
                free.push(slot);
                busy -= 1;
                continue;
            }
            if res < 0 {
                error.get_or_insert(io::Error::from_raw_os_error(-res));
                stop = true;
            } else {
                out.bytes += res as u64;
                out.sends += 1;
                if res as usize != size {
                    out.short += 1;
                }
            }
            // F_MORE: a notification follows, and until then the kernel may read the slot.
            if !cqueue::more(cqe.flags()) {
                free.push(slot);
                busy -= 1;
            }
        }
        if !stop && (out.bytes >= cfg.max_bytes || start.elapsed() >= cfg.time) {
            stop = true;
        }
    }
    out.cpu_ns = thread_cpu_ns() - cpu0;
    out.wall_ns = start.elapsed().as_nanos() as u64;
    drop(ring);
    drop(region);
    match error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn run_cell(
    listener: &TcpListener,
    method: Method,
    size: usize,
    report_usage: bool,
    softirqd: &[Vec<u32>; 2],
    cfg: &Config,
) -> io::Result<Cell> {
    let cores = [cfg.sender_core, cfg.receiver_core];
    let addr = listener.local_addr()?;
    let accept = listener.try_clone()?;
    let proc0 = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    let soft0 = softirqd.each_ref().map(|p| schedstat_ns(p));
    let (idle0, steal0) = core_idle(cores);
    let cell_start = Instant::now();
    let rcv_core = cfg.receiver_core;
    // (bytes received, CPU over the receive loop, CPU over the thread's life)
    // Named, so that a profile (`perf record -a`) can tell them apart from other tasks.
    let receiver = std::thread::Builder::new()
        .name("zc-receiver".into())
        .spawn(move || -> io::Result<(u64, u64, u64)> {
            pin(rcv_core)?;
            // Touched before the clock starts: page faults are not the receive path's cost.
            let mut buf = vec![1u8; RECV_BUF];
            let (mut s, _) = accept.accept()?;
            let cpu0 = thread_cpu_ns();
            let mut n = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let cpu1 = thread_cpu_ns();
            Ok((n, cpu1 - cpu0, cpu1))
        })?;
    let snd_core = cfg.sender_core;
    let sent = std::thread::scope(|sc| {
        std::thread::Builder::new()
            .name("zc-sender".into())
            .spawn_scoped(sc, || -> io::Result<SendOutcome> {
                pin(snd_core)?;
                let mut s = TcpStream::connect(addr)?;
                // As peerd's sockets: frames go out when sent, not when Nagle allows.
                s.set_nodelay(true)?;
                let out = match method {
                    Method::Send => send_blocking(&mut s, size, cfg),
                    _ => send_uring(&s, size, method, report_usage, cfg),
                };
                let _ = s.shutdown(Shutdown::Write);
                drop(s);
                out.map(|o| SendOutcome {
                    thread_total_ns: thread_cpu_ns(),
                    ..o
                })
            })
            .expect("spawn the sender")
            .join()
            .expect("sender thread panicked")
    });
    let received = receiver.join().expect("receiver thread panicked");
    let sent = sent?;
    let (rcv_bytes, rcv_thread_ns, rcv_total_ns) = received?;
    let proc_ns = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - proc0;
    let soft1 = softirqd.each_ref().map(|p| schedstat_ns(p));
    let (snd_softirqd_ns, rcv_softirqd_ns) = (soft1[0] - soft0[0], soft1[1] - soft0[1]);
    let (idle1, steal1) = core_idle(cores);
    let cell_ns = cell_start.elapsed().as_nanos() as u64;
    let jns = jiffy_ns();
    let ours = sent.thread_total_ns + rcv_total_ns + snd_softirqd_ns + rcv_softirqd_ns;
    Ok(Cell {
        bytes: sent.bytes,
        sends: sent.sends,
        short: sent.short,
        wall_ns: sent.wall_ns,
        snd_thread_ns: sent.cpu_ns,
        snd_softirqd_ns,
        rcv_thread_ns,
        rcv_softirqd_ns,
        rcv_bytes,
        other_cpu_ns: proc_ns as i64 - (sent.thread_total_ns + rcv_total_ns) as i64,
        notifs: sent.notifs,
        copied: sent.copied,
        foreign_ns: (2 * cell_ns) as i64
            - ((idle1 - idle0 + steal1 - steal0) * jns) as i64
            - ours as i64,
        steal_ns: (steal1 - steal0) * jns,
        cell_ns,
    })
}

/// What the kernel offers, and whether a real zero-copy send works.
struct ZcSupport {
    send_zc: bool,
    sendmsg_zc: bool,
    /// `IORING_SEND_ZC_REPORT_USAGE` accepted (6.2).
    report_usage: bool,
    /// A real SEND_ZC on a loopback TCP socket completed, with its notification.
    works: bool,
    /// The probe send's notification said "copied".
    probe_copied: Option<bool>,
    note: String,
}

fn probe_zc(listener: &TcpListener) -> io::Result<ZcSupport> {
    let mut ring: IoUring = IoUring::new(8)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let mut sup = ZcSupport {
        send_zc: probe.is_supported(opcode::SendZc::CODE),
        sendmsg_zc: probe.is_supported(opcode::SendMsgZc::CODE),
        report_usage: false,
        works: false,
        probe_copied: None,
        note: String::new(),
    };
    if !sup.send_zc {
        sup.note = "the io_uring probe has no IORING_OP_SEND_ZC (needs Linux 6.0)".into();
        return Ok(sup);
    }
    // A real send: the probe says the opcode exists, not that this socket type takes it
    // (AF_UNIX refuses zero-copy, hence TCP) or that REPORT_USAGE is known (6.2).
    let accept = listener.try_clone()?;
    let drain = std::thread::spawn(move || {
        if let Ok((mut s, _)) = accept.accept() {
            let _ = io::copy(&mut s, &mut io::sink());
        }
    });
    let s = TcpStream::connect(listener.local_addr()?)?;
    // Static: it outlives any request, even one left in flight by an error return below.
    static PROBE_BUF: [u8; 4096] = [FILL; 4096];
    let buf = &PROBE_BUF;
    for zc_flags in [SEND_ZC_REPORT_USAGE, 0] {
        let e = opcode::SendZc::new(types::Fd(s.as_raw_fd()), buf.as_ptr(), buf.len() as u32)
            .zc_flags(zc_flags)
            .build();
        // SAFETY: `buf` is static, so valid for as long as the kernel may read it, and
        // nothing writes it.
        unsafe { ring.submission().push(&e) }.expect("empty SQ");
        ring.submit_and_wait(1)?;
        let cqe = ring.completion().next().expect("one completion");
        let (res, more) = (cqe.result(), cqueue::more(cqe.flags()));
        if more {
            // The notification: buf is the kernel's until it comes.
            ring.submit_and_wait(1)?;
            let n = ring.completion().next().expect("the notification");
            assert!(
                cqueue::notif(n.flags()),
                "second completion is a notification"
            );
            if zc_flags != 0 {
                sup.probe_copied = Some(n.result() as u32 & NOTIF_USAGE_ZC_COPIED != 0);
            }
        }
        if res == buf.len() as i32 {
            sup.works = true;
            sup.report_usage = zc_flags != 0;
            break;
        }
        let _ = write!(
            sup.note,
            "SEND_ZC (zc_flags {zc_flags:#x}) on loopback TCP: {}; ",
            if res < 0 {
                io::Error::from_raw_os_error(-res).to_string()
            } else {
                format!("sent {res} of {}", buf.len())
            }
        );
    }
    drop(s);
    let _ = drain.join();
    Ok(sup)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (v[0], med, v[v.len() - 1])
}

fn fmt_size(s: usize) -> String {
    if s >= MIB && s % MIB == 0 {
        format!("{} MiB", s / MIB)
    } else if s >= KIB && s % KIB == 0 {
        format!("{} KiB", s / KIB)
    } else {
        format!("{s} B")
    }
}

/// `median (min–max)` with a precision suited to the magnitude.
fn fmt_spread((lo, med, hi): (f64, f64, f64)) -> String {
    let f = |x: f64| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else if x >= 10.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        }
    };
    format!("{} ({}–{})", f(med), f(lo), f(hi))
}

type Results = Vec<(usize, Method, Vec<Cell>)>;

fn table(
    out: &mut String,
    title: &str,
    res: &Results,
    cfg: &Config,
    methods: &[Method],
    metric: fn(&Cell) -> f64,
) {
    let _ = writeln!(out, "{title}\n");
    let _ = write!(out, "| payload |");
    for m in methods {
        let _ = write!(out, " {} |", m.name());
    }
    let _ = write!(out, "\n|---|");
    for _ in methods {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out);
    for &size in &cfg.sizes {
        let _ = write!(out, "| {} |", fmt_size(size));
        for &m in methods {
            match res.iter().find(|(s, mm, _)| *s == size && *mm == m) {
                Some((_, _, cells)) if !cells.is_empty() => {
                    let _ = write!(
                        out,
                        " {} |",
                        fmt_spread(stats(cells.iter().map(metric).collect()))
                    );
                }
                _ => {
                    let _ = write!(out, " – |");
                }
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

/// Where `zc`'s sender CPU per KiB drops below `base`'s: the smallest size from which its
/// median stays below, and per size the ratio of medians and whether the runs' ranges are
/// apart ("clearly") or overlap (within this machine's noise).
fn crossover(res: &Results, cfg: &Config, zc: Method, base: Method) -> String {
    let mut from: Option<usize> = None;
    let mut below_somewhere = Vec::new();
    let mut ratios = Vec::new();
    let mut last = None;
    for &size in &cfg.sizes {
        let cells = |m: Method| {
            res.iter()
                .find(|(s, mm, _)| *s == size && *mm == m)
                .filter(|r| !r.2.is_empty())
                .map(|r| stats(r.2.iter().map(Cell::snd_ns_kib).collect()))
        };
        let (Some((alo, a, ahi)), Some((blo, b, bhi))) = (cells(zc), cells(base)) else {
            continue;
        };
        let apart = if ahi < blo {
            ", clearly lower"
        } else if alo > bhi {
            ", clearly higher"
        } else {
            ", ranges overlap"
        };
        ratios.push(format!("{} {:.2}{apart}", fmt_size(size), a / b));
        if a < b {
            from.get_or_insert(size);
            below_somewhere.push(fmt_size(size));
        } else {
            from = None;
        }
        last = Some(size);
    }
    let verdict = match (from, last) {
        (Some(s), _) => format!("**below from {} up**", fmt_size(s)),
        (None, Some(l)) if below_somewhere.is_empty() => {
            format!(
                "**higher at every size up to {}: no crossover**",
                fmt_size(l)
            )
        }
        (None, Some(l)) => format!(
            "**below only at {}, not at {}: no crossover that holds**",
            below_somewhere.join(", "),
            fmt_size(l)
        ),
        (None, None) => "not measured".into(),
    };
    format!(
        "{} vs {}: {verdict}. Ratio of medians {} ÷ {}: {}",
        zc.name(),
        base.name(),
        zc.name(),
        base.name(),
        ratios.join("; ")
    )
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cfg) {
        eprintln!("send_zc: {e}");
        std::process::exit(1);
    }
}

fn run(mut cfg: Config) -> io::Result<()> {
    // A core that cannot be pinned would leave a cell's other thread waiting forever.
    for core in [cfg.sender_core, cfg.receiver_core] {
        std::thread::spawn(move || pin(core))
            .join()
            .expect("pin thread panicked")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot pin to core {core}: {e}")))?;
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let sup = probe_zc(&listener)?;
    let mut out = String::new();
    let _ = writeln!(out, "## SEND_ZC support\n");
    let _ = writeln!(
        out,
        "- io_uring probe: IORING_OP_SEND_ZC {}, IORING_OP_SENDMSG_ZC {}",
        if sup.send_zc {
            "supported"
        } else {
            "**absent**"
        },
        if sup.sendmsg_zc {
            "supported"
        } else {
            "**absent**"
        },
    );
    if sup.works {
        let _ = writeln!(
            out,
            "- a real 4 KiB SEND_ZC on loopback TCP: sent, notification received{}",
            match sup.probe_copied {
                Some(true) => "; the notification says **copied** (IORING_NOTIF_USAGE_ZC_COPIED)",
                Some(false) => "; the notification says not copied",
                None => " (IORING_SEND_ZC_REPORT_USAGE refused: copies not reported)",
            }
        );
    } else {
        let _ = writeln!(
            out,
            "- **SEND_ZC unavailable: the zero-copy methods are skipped.** {}",
            sup.note
        );
        cfg.methods.retain(|m| !m.zc());
    }
    let _ = writeln!(out);
    eprint!("{out}");

    let softirqd = [
        ksoftirqd_pids(cfg.sender_core),
        ksoftirqd_pids(cfg.receiver_core),
    ];
    let mut res: Results = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut csv = String::from(
        "size,method,rep,bytes,sends,short,wall_ns,snd_thread_ns,snd_ksoftirqd_ns,rcv_thread_ns,\
         rcv_ksoftirqd_ns,rcv_bytes,other_cpu_ns,notifs,copied,foreign_ns,steal_ns,cell_ns\n",
    );
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_start = loadavg();
    let t0 = Instant::now();
    // Size outermost, the methods of one repetition back to back: a burst of noise from the
    // machine's other tenants then lands on every method of a size alike, not on one.
    for &size in &cfg.sizes {
        for rep in 0..cfg.reps {
            for &m in &cfg.methods.clone() {
                let cell = match run_cell(&listener, m, size, sup.report_usage, &softirqd, &cfg) {
                    Ok(c) => c,
                    Err(e) if m == Method::UringSendZcFixed => {
                        // Registering buffers may be refused (RLIMIT_MEMLOCK): say so and go on.
                        skipped.push(format!("{} skipped: {e}", m.name()));
                        cfg.methods.retain(|x| *x != m);
                        continue;
                    }
                    Err(e) => return Err(io::Error::new(e.kind(), format!("{m:?} {size}: {e}"))),
                };
                if cell.rcv_bytes != cell.bytes {
                    eprintln!(
                        "warning: {} {}: sent {} but received {}",
                        m.name(),
                        size,
                        cell.bytes,
                        cell.rcv_bytes
                    );
                }
                eprintln!(
                    "{:>8} {:<14} rep {rep}: {:>6.2} GB/s  sender {:>8.1} ns/KiB (busy {:>3.0} %)  \
                     receiver {:>7.1} ns/KiB  notifs {} copied {}  ksoftirqd {:.1}+{:.1} ms  \
                     other {:.1} ms  foreign {:.0} ms  steal {:.0} ms",
                    fmt_size(size),
                    m.name(),
                    cell.gbps(),
                    cell.snd_ns_kib(),
                    cell.snd_busy_pct(),
                    cell.rcv_ns_kib(),
                    cell.notifs,
                    cell.copied,
                    cell.snd_softirqd_ns as f64 / 1e6,
                    cell.rcv_softirqd_ns as f64 / 1e6,
                    cell.other_cpu_ns as f64 / 1e6,
                    cell.foreign_ns as f64 / 1e6,
                    cell.steal_ns as f64 / 1e6,
                );
                let _ = writeln!(
                    csv,
                    "{size},{},{rep},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    m.key(),
                    cell.bytes,
                    cell.sends,
                    cell.short,
                    cell.wall_ns,
                    cell.snd_thread_ns,
                    cell.snd_softirqd_ns,
                    cell.rcv_thread_ns,
                    cell.rcv_softirqd_ns,
                    cell.rcv_bytes,
                    cell.other_cpu_ns,
                    cell.notifs,
                    cell.copied,
                    cell.foreign_ns,
                    cell.steal_ns,
                    cell.cell_ns
                );
                match res.iter_mut().find(|(s, mm, _)| *s == size && *mm == m) {
                    Some((_, _, v)) => v.push(cell),
                    None => res.push((size, m, vec![cell])),
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    if let Some(path) = &cfg.csv {
        std::fs::write(path, &csv)?;
    }

    let methods: Vec<Method> = Method::ALL
        .into_iter()
        .filter(|m| res.iter().any(|(_, mm, _)| mm == m))
        .collect();
    let _ = writeln!(
        out,
        "## Results\n\n{} cells ({} repetitions of each), {:.0} s; per cell at most {} ms or {} MiB; \
         io_uring: {} sends per io_uring_enter, zero-copy buffers in the pool: {}; \
         sender on core {}, receiver on core {}.\n\
         Load average at the start: {}; at the end: {}.\n",
        res.iter().map(|r| r.2.len()).sum::<usize>(),
        cfg.reps,
        elapsed.as_secs_f64(),
        cfg.time.as_millis(),
        cfg.max_bytes >> 20,
        cfg.batch,
        cfg.sizes
            .iter()
            .map(|&z| format!("{} {}", fmt_size(z), buffers(Method::UringSendZc, z, &cfg)))
            .collect::<Vec<_>>()
            .join(", "),
        cfg.sender_core,
        cfg.receiver_core,
        load_start.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        loadavg().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    for s in &skipped {
        let _ = writeln!(out, "- {s}\n");
    }
    table(
        &mut out,
        "### Sender CPU (its thread + ksoftirqd of its core), ns per KiB sent: median (min–max)",
        &res,
        &cfg,
        &methods,
        Cell::snd_ns_kib,
    );
    table(
        &mut out,
        "### Sender CPU per send, ns (the same, per payload sent): median (min–max)",
        &res,
        &cfg,
        &methods,
        |c| c.snd_ns() as f64 / c.sends.max(1) as f64,
    );
    table(
        &mut out,
        "### Throughput, GB/s (bytes sent ÷ sender wall time): median (min–max)",
        &res,
        &cfg,
        &methods,
        Cell::gbps,
    );
    table(
        &mut out,
        "### Sender busy, % (its CPU ÷ its wall time; below 100: it waited for the socket or \
         for notifications): median (min–max)",
        &res,
        &cfg,
        &methods,
        Cell::snd_busy_pct,
    );
    table(
        &mut out,
        "### Receiver CPU (its thread + ksoftirqd of its core), ns per KiB: median (min–max)",
        &res,
        &cfg,
        &methods,
        Cell::rcv_ns_kib,
    );
    table(
        &mut out,
        "### Sender + receiver CPU, ns per KiB: median (min–max)",
        &res,
        &cfg,
        &methods,
        Cell::both_ns_kib,
    );
    let _ = writeln!(
        out,
        "### Crossover (sender CPU per KiB; the first is the one asked about)\n"
    );
    for zc in [Method::UringSendZc, Method::UringSendZcFixed] {
        for base in [Method::UringSend, Method::Send] {
            if methods.contains(&zc) && methods.contains(&base) {
                let _ = writeln!(out, "- {}", crossover(&res, &cfg, zc, base));
            }
        }
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "### Checks\n");
    let all = || res.iter().flat_map(|(_, _, c)| c.iter());
    let (notifs, copied): (u64, u64) = res
        .iter()
        .filter(|(_, m, _)| m.zc())
        .flat_map(|(_, _, c)| c.iter())
        .fold((0, 0), |(n, c), x| (n + x.notifs, c + x.copied));
    if notifs > 0 {
        let _ = writeln!(
            out,
            "- zero-copy notifications: {notifs}, of which flagged copied \
             (IORING_NOTIF_USAGE_ZC_COPIED): {copied} ({:.1} %){}",
            100.0 * copied as f64 / notifs as f64,
            if sup.report_usage {
                ""
            } else {
                " (usage reporting unavailable)"
            }
        );
    }
    let short: u64 = all().map(|c| c.short).sum();
    let mismatched = all().filter(|c| c.rcv_bytes != c.bytes).count();
    let _ = writeln!(
        out,
        "- short sends: {short}; cells where the receiver did not get every byte: {mismatched}"
    );
    let stat_ms = |f: fn(&Cell) -> f64| stats(all().map(f).collect());
    // Where ksoftirqd did a large share, the thread times alone would mislead.
    let _ = write!(
        out,
        "- ksoftirqd's part of the CPU above (softirq work deferred out of the threads), \
         max over the cells of a method, sender side / receiver side:"
    );
    for &m in &methods {
        let cells = || res.iter().filter(|r| r.1 == m).flat_map(|r| r.2.iter());
        let max = |f: fn(&Cell) -> f64| cells().map(f).fold(0.0f64, f64::max);
        let _ = write!(
            out,
            " {} {:.0} % / {:.0} %;",
            m.name(),
            max(|c| 100.0 * c.snd_softirqd_ns as f64 / c.snd_ns().max(1) as f64),
            max(|c| 100.0 * c.rcv_softirqd_ns as f64 / c.rcv_ns().max(1) as f64),
        );
    }
    let _ = writeln!(out);
    let (_, omed, ohi) = stat_ms(|c| c.other_cpu_ns as f64 / 1e6);
    let _ = writeln!(
        out,
        "- process CPU outside the sender and receiver threads (io-wq workers would show here), \
         per cell: median {omed:.1} ms, max {ohi:.1} ms"
    );
    // Shares of the two cores' time over each cell (2 x the cell's wall time).
    let (flo, fmed, fhi) = stat_ms(|c| 100.0 * c.foreign_ns as f64 / (2 * c.cell_ns) as f64);
    let (slo, smed, shi) = stat_ms(|c| 100.0 * c.steal_ns as f64 / (2 * c.cell_ns) as f64);
    let _ = writeln!(
        out,
        "- noise: share of the two cores' time, per cell, taken by other processes (/proc/stat's \
         busy time less our threads and ksoftirqd, in 10 ms units: ± a few %) median {fmed:.0} % \
         (min {flo:.0}, max {fhi:.0}); by the hypervisor (steal) median {smed:.1} % (min {slo:.1}, \
         max {shi:.1})"
    );
    print!("{out}");
    Ok(())
}
