//! The message engine: one mio (epoll) event loop per loadgen thread, non-blocking sockets,
//! connections spread over the threads, senders driven by a schedule of intended send times.
//!
//! Each loop iteration sends every message whose intended time has come (catching up in one
//! batched write when late), then sleeps in epoll until the next intended time. With
//! [`RunConfig::per_write`] > 1 (the batched pattern) the schedule is one of writes, each
//! carrying that many messages stamped with the write's intended time. epoll's own
//! timeout has millisecond resolution, so the wake-up comes from a timerfd armed at the exact
//! nanosecond (with 1 ns timer slack); `--spin` polls without sleeping instead. Latency is
//! always `receipt time - time stamped in the payload`; in open loop the stamp is the intended
//! send time, in closed loop (labelled as such) the actual send time.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::adapter::link::{self, Inbox};
use crate::adapter::{Adapter, Connected, Incoming, Link};
use crate::clock::{self, now_ns, TimerFd};
use crate::hist::{self, Hist};
use crate::payload;
use crate::schedule::{Pacer, Schedule, Windows};
use crate::sys;

/// What a sending connection sends.
#[derive(Debug, Clone)]
pub enum SendKind {
    /// A request echoed back: by the server (`None`) or by a peer (p2p).
    Request {
        /// Callee peer id for p2p.
        target: Option<String>,
    },
    /// Publish to topics, round-robin.
    Publish {
        /// Topics this publisher cycles through.
        topics: Vec<String>,
    },
    /// A direct message to one peer.
    Direct {
        /// Receiving peer id.
        target: String,
    },
    /// A broadcast to every other peer.
    Broadcast,
}

/// One connection of a run and its role.
#[derive(Debug)]
pub struct ConnSpec {
    /// The handshaken socket.
    pub conn: Connected,
    /// What it sends, and its index among the run's senders.
    pub send: Option<(SendKind, u32)>,
    /// Index of the target (server, cluster node) it is connected to; 0 with one target.
    pub target: usize,
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Fixed offered rate in messages per second over all senders.
    Open {
        /// Messages per second.
        rate: f64,
    },
    /// Each sender keeps `pipeline` requests in flight; a new one leaves when an answer
    /// arrives. Latency is then measured from the actual send.
    Closed {
        /// Requests in flight per connection.
        pipeline: u32,
    },
}

impl Mode {
    /// "open-loop" or "closed-loop".
    pub fn label(&self) -> &'static str {
        match self {
            Mode::Open { .. } => "open-loop",
            Mode::Closed { .. } => "closed-loop",
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Open or closed loop.
    pub mode: Mode,
    /// Messages each sender writes at once (open loop): 1 is the evenly spaced pattern;
    /// N > 1 sends N messages in one write every N / rate s at the same offered rate.
    pub per_write: u64,
    /// Payload bytes per message (>= 16).
    pub payload: usize,
    /// Warm-up, discarded.
    pub warmup: Duration,
    /// Length of one measured window.
    pub window: Duration,
    /// Number of measured windows (repetitions).
    pub reps: usize,
    /// How long to wait for answers after the last send.
    pub drain: Duration,
    /// Loadgen threads.
    pub threads: usize,
    /// Cores to pin loadgen threads to (thread i -> cores[i % len]).
    pub cores: Option<Vec<usize>>,
    /// Busy-poll instead of sleeping.
    pub spin: bool,
    /// Wake this long before each intended send time and busy-poll the rest.
    pub spin_before_ns: u64,
    /// Answers (responses or deliveries) each message should produce.
    pub answers_per_msg: u64,
    /// Keep the per-message maximum over receivers (fan-out scenarios).
    pub track_slowest: bool,
    /// Stop sending on a connection whose unsent bytes exceed this.
    pub max_unsent: usize,
    /// Time of the run's message 0 (the start of the warm-up), when the caller fixes it
    /// to line the run up with something else; default 150 ms after the call.
    pub start_ns: Option<u64>,
    /// The target the publishers are connected to (fan-out): deliveries are then also
    /// counted per target and their latency split into local (a receiver on this target)
    /// and remote (on another). `None`: no split.
    pub local_target: Option<usize>,
}

/// Readings taken at each window boundary.
pub trait Probe: Send {
    /// Server CPU seconds so far, if known.
    fn server_cpu_s(&mut self) -> Option<f64>;

    /// CPU seconds so far of each process reported on its own (every target's server,
    /// then the --extra-pid processes), in a fixed order; `None` where unreadable.
    fn named_cpu_s(&mut self) -> Vec<Option<f64>> {
        Vec::new()
    }
}

/// A probe that knows nothing.
pub struct NoProbe;

impl Probe for NoProbe {
    fn server_cpu_s(&mut self) -> Option<f64> {
        None
    }
}

/// Results of one measured window.
#[derive(Debug, Clone)]
pub struct RepOut {
    /// Latency of every answer to a message intended in this window (ns).
    pub hist: Hist,
    /// Per message, the slowest receiver's latency (fan-out scenarios).
    pub slowest: Option<Hist>,
    /// Messages intended in this window.
    pub sent: u64,
    /// Answers (responses or deliveries) to them.
    pub received: u64,
    /// Errors the server reported for them (or during this window).
    pub errors: u64,
    /// Server CPU seconds over the window.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds of the loadgen's worker threads over the window.
    pub loadgen_cpu_s: f64,
    /// Busiest loadgen worker thread's CPU use over the window, as a fraction of one core.
    pub loadgen_max_thread_util: f64,
    /// CPU seconds of the whole loadgen process (includes an in-process floor server).
    pub process_cpu_s: f64,
    /// CPU seconds over the window of each process of [`Probe::named_cpu_s`].
    pub named_cpu_s: Vec<Option<f64>>,
    /// Latency of the answers received on the publishers' target ([`RunConfig::local_target`]).
    pub local: Option<Hist>,
    /// Latency of the answers received on the other targets.
    pub remote: Option<Hist>,
    /// Answers received on each target (index = target).
    pub by_target: Vec<u64>,
}

/// Results of a run.
#[derive(Debug)]
pub struct RunOut {
    /// Per window.
    pub reps: Vec<RepOut>,
    /// How late messages were generated relative to their intended time (open loop).
    pub send_lag: Hist,
    /// Answers to warm-up messages (discarded).
    pub warmup_received: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// A connection's unsent bytes passed the limit: the server stopped reading.
    pub overloaded: bool,
    /// Connections that died during the run.
    pub dead_conns: usize,
    /// Length of one window, seconds.
    pub window_s: f64,
}

#[derive(Default)]
struct Shared {
    t0: u64,
    expected: AtomicU64,
    delivered: AtomicU64,
    senders_done: AtomicUsize,
    progress_sent: AtomicU64,
    progress_recv: AtomicU64,
    tids: Mutex<Vec<i32>>,
    released: std::sync::atomic::AtomicBool,
}

struct Sender {
    kind: SendKind,
    index: u32,
    pacer: Option<Pacer>,
    k: u64,
    rr: usize,
}

struct Conn {
    stream: mio::net::TcpStream,
    /// Index of the target it is connected to.
    target: usize,
    /// TLS session, if any.
    link: Link,
    /// Messages travel as WebSocket messages.
    ws: bool,
    inbox: Inbox,
    wbuf: BytesMut,
    wpos: usize,
    sender: Option<Sender>,
    outstanding: u64,
    dead: bool,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    intended: u64,
    max: u64,
    count: u32,
}

struct RepAcc {
    hist: Hist,
    sent: u64,
    received: u64,
    errors: u64,
    /// With a split (fan-out): local and remote latency, answers per target.
    local: Option<Hist>,
    remote: Option<Hist>,
    by_target: Vec<u64>,
}

struct WorkerOut {
    reps: Vec<RepAcc>,
    send_lag: Hist,
    warmup_received: u64,
    slowest: Vec<Vec<Slot>>,
    errors: Vec<String>,
    overloaded: bool,
    dead: usize,
}

struct Acc {
    windows: Windows,
    local_target: Option<usize>,
    reps: Vec<RepAcc>,
    send_lag: Hist,
    warmup_received: u64,
    slowest: Option<Vec<Vec<Slot>>>,
    errors: Vec<String>,
    delivered: u64,
    expected: u64,
    sent: u64,
}

impl Acc {
    fn error(&mut self, t: Option<u64>, msg: String) {
        let rep = match t {
            Some(t) => self.windows.index(t),
            None => self.windows.index(now_ns()),
        };
        if let Some(r) = rep {
            self.reps[r].errors += 1;
        }
        if self.errors.len() < 8 {
            self.errors.push(msg);
        }
    }

    /// One answer carrying payload `p`, received at `now` on a connection to `target`.
    #[inline]
    fn answer(&mut self, p: &[u8], now: u64, delivery: bool, target: usize) {
        let Some((t, seq)) = payload::read(p) else {
            self.delivered += 1;
            self.error(None, "answer without the loadgen's stamp".into());
            return;
        };
        let lat = now.saturating_sub(t);
        match self.windows.index(t) {
            Some(r) => {
                let rep = &mut self.reps[r];
                hist::record(&mut rep.hist, lat);
                rep.received += 1;
                if let Some(local) = self.local_target {
                    let h = if target == local {
                        &mut rep.local
                    } else {
                        &mut rep.remote
                    };
                    hist::record(h.get_or_insert_with(hist::new_hist), lat);
                    if rep.by_target.len() <= target {
                        rep.by_target.resize(target + 1, 0);
                    }
                    rep.by_target[target] += 1;
                }
            }
            None => {
                if t < self.windows.measure_start_ns {
                    self.warmup_received += 1;
                }
            }
        }
        self.delivered += 1;
        if delivery {
            if let Some(sl) = &mut self.slowest {
                let (s, k) = payload::split_seq(seq);
                let (s, k) = (s as usize, k as usize);
                if sl.len() <= s {
                    sl.resize_with(s + 1, Vec::new);
                }
                let v = &mut sl[s];
                if v.len() <= k {
                    v.resize(k + 1, Slot::default());
                }
                let slot = &mut v[k];
                slot.intended = t;
                slot.max = slot.max.max(lat);
                slot.count += 1;
            }
        }
    }
}

/// Run the engine over `specs` and return per-window results.
pub fn run(
    specs: Vec<ConnSpec>,
    cfg: &RunConfig,
    adapter: Arc<dyn Adapter>,
    probe: &mut dyn Probe,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<RunOut> {
    let threads = cfg.threads.max(1);
    // Spread senders evenly, then the rest.
    let mut per_thread: Vec<Vec<ConnSpec>> = (0..threads).map(|_| Vec::new()).collect();
    let (senders, others): (Vec<_>, Vec<_>) = specs.into_iter().partition(|s| s.send.is_some());
    for (i, s) in senders.into_iter().chain(others).enumerate() {
        per_thread[i % threads].push(s);
    }
    let n_senders: u64 = per_thread
        .iter()
        .flatten()
        .filter(|s| s.send.is_some())
        .count() as u64;

    let t0 = cfg.start_ns.unwrap_or_else(|| now_ns() + 150_000_000);
    let windows = Windows {
        measure_start_ns: t0 + cfg.warmup.as_nanos() as u64,
        window_ns: cfg.window.as_nanos() as u64,
        count: cfg.reps.max(1),
    };
    let shared = Arc::new(Shared {
        t0,
        ..Default::default()
    });

    let mut handles = Vec::new();
    for (ti, conns) in per_thread.into_iter().enumerate() {
        let (shared, cfg, adapter) = (shared.clone(), cfg.clone(), adapter.clone());
        let core = cfg.cores.as_ref().map(|c| c[ti % c.len()]);
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{ti}"))
            .spawn(move || {
                worker(
                    conns, shared, cfg, adapter, windows, n_senders, threads, core,
                )
            })?;
        handles.push(h);
    }

    let boundaries = watch_windows(
        &windows,
        t0,
        probe,
        &shared.tids,
        progress,
        &|| handles.iter().all(|h| h.is_finished()),
        &|| {
            format!(
                "sent {} answers {}",
                shared.progress_sent.load(Ordering::Relaxed),
                shared.progress_recv.load(Ordering::Relaxed)
            )
        },
    );

    shared.released.store(true, Ordering::SeqCst);
    let mut outs = Vec::new();
    for h in handles {
        outs.push(h.join().map_err(|_| anyhow!("loadgen thread panicked"))??);
    }

    let mut reps = rep_shells(&boundaries, cfg.track_slowest);
    let mut send_lag = hist::new_hist();
    let mut warmup_received = 0;
    let mut error_samples = Vec::new();
    let mut overloaded = false;
    let mut dead_conns = 0;
    let mut slowest: Vec<Vec<Slot>> = Vec::new();
    for o in outs {
        for (r, a) in reps.iter_mut().zip(o.reps) {
            r.hist.add(&a.hist).ok();
            r.sent += a.sent;
            r.received += a.received;
            r.errors += a.errors;
            for (mine, theirs) in [(&mut r.local, a.local), (&mut r.remote, a.remote)] {
                if let Some(h) = theirs {
                    mine.get_or_insert_with(hist::new_hist).add(&h).ok();
                }
            }
            if r.by_target.len() < a.by_target.len() {
                r.by_target.resize(a.by_target.len(), 0);
            }
            for (d, n) in r.by_target.iter_mut().zip(a.by_target) {
                *d += n;
            }
        }
        send_lag.add(&o.send_lag).ok();
        warmup_received += o.warmup_received;
        error_samples.extend(o.errors);
        overloaded |= o.overloaded;
        dead_conns += o.dead;
        if slowest.len() < o.slowest.len() {
            slowest.resize_with(o.slowest.len(), Vec::new);
        }
        for (dst, src) in slowest.iter_mut().zip(o.slowest) {
            if dst.len() < src.len() {
                dst.resize(src.len(), Slot::default());
            }
            for (d, s) in dst.iter_mut().zip(src) {
                if s.count > 0 {
                    d.intended = s.intended;
                    d.max = d.max.max(s.max);
                    d.count += s.count;
                }
            }
        }
    }
    if cfg.track_slowest {
        for slot in slowest.iter().flatten().filter(|s| s.count > 0) {
            if let Some(r) = windows.index(slot.intended) {
                if let Some(h) = &mut reps[r].slowest {
                    hist::record(h, slot.max);
                }
            }
        }
    }
    error_samples.truncate(8);
    Ok(RunOut {
        reps,
        send_lag,
        warmup_received,
        error_samples,
        overloaded,
        dead_conns,
        window_s: cfg.window.as_secs_f64(),
    })
}

/// CPU readings at one window boundary.
#[derive(Debug, Clone)]
pub struct Boundary {
    /// When (ns).
    pub at: u64,
    /// Server CPU seconds so far.
    pub server: Option<f64>,
    /// [`Probe::named_cpu_s`] so far.
    pub named: Vec<Option<f64>>,
    /// CPU seconds of each loadgen worker thread so far.
    pub threads: Vec<f64>,
    /// CPU seconds of the whole process so far.
    pub process: f64,
}

/// Sleep through the run, updating the progress bar, and take CPU readings at every window
/// boundary (start of the first window .. end of the last).
#[allow(clippy::too_many_arguments)]
pub fn watch_windows(
    windows: &Windows,
    t0: u64,
    probe: &mut dyn Probe,
    tids: &Mutex<Vec<i32>>,
    progress: Option<&indicatif::ProgressBar>,
    finished: &dyn Fn() -> bool,
    message: &dyn Fn() -> String,
) -> Vec<Boundary> {
    let mut out = Vec::new();
    let total_ns = windows.end_ns() - t0;
    for i in 0..=windows.count {
        let at = windows.measure_start_ns + i as u64 * windows.window_ns;
        loop {
            let now = now_ns();
            if let Some(pb) = progress {
                pb.set_position(now.saturating_sub(t0).min(total_ns) / 1_000_000);
                pb.set_message(message());
            }
            if now >= at || finished() {
                break;
            }
            clock::sleep_until(at.min(now + 100_000_000));
        }
        let tids = tids.lock().unwrap().clone();
        out.push(Boundary {
            at: now_ns(),
            server: probe.server_cpu_s(),
            named: probe.named_cpu_s(),
            threads: tids
                .iter()
                .map(|&t| sys::thread_cpu_s(t).unwrap_or(0.0))
                .collect(),
            process: sys::self_cpu_s(),
        });
    }
    out
}

/// Empty per-window results carrying the CPU deltas between boundaries.
pub fn rep_shells(b: &[Boundary], track_slowest: bool) -> Vec<RepOut> {
    b.windows(2)
        .map(|w| {
            let (a, z) = (&w[0], &w[1]);
            let wall = (z.at - a.at) as f64 / 1e9;
            let deltas: Vec<f64> = z
                .threads
                .iter()
                .zip(a.threads.iter().chain(std::iter::repeat(&0.0)))
                .map(|(b, a)| b - a)
                .collect();
            RepOut {
                hist: hist::new_hist(),
                slowest: track_slowest.then(hist::new_hist),
                sent: 0,
                received: 0,
                errors: 0,
                server_cpu_s: match (a.server, z.server) {
                    (Some(x), Some(y)) => Some(y - x),
                    _ => None,
                },
                loadgen_cpu_s: deltas.iter().sum(),
                loadgen_max_thread_util: if wall > 0.0 {
                    deltas.iter().cloned().fold(0.0, f64::max) / wall
                } else {
                    0.0
                },
                process_cpu_s: z.process - a.process,
                named_cpu_s: z
                    .named
                    .iter()
                    .zip(&a.named)
                    .map(|(y, x)| Some(y.as_ref()? - x.as_ref()?))
                    .collect(),
                local: None,
                remote: None,
                by_target: Vec::new(),
            }
        })
        .collect()
}

const TIMER: Token = Token(usize::MAX - 1);

#[allow(clippy::too_many_arguments)]
fn worker(
    specs: Vec<ConnSpec>,
    shared: Arc<Shared>,
    cfg: RunConfig,
    adapter: Arc<dyn Adapter>,
    windows: Windows,
    n_senders: u64,
    threads: usize,
    core: Option<usize>,
) -> Result<WorkerOut> {
    if let Some(c) = core {
        sys::set_affinity(0, &[c])
            .with_context(|| format!("pinning a loadgen thread to core {c}"))?;
    }
    clock::tight_timer_slack();
    shared.tids.lock().unwrap().push(sys::gettid());

    let end_send = windows.end_ns();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let timer = TimerFd::new()?;
    poll.registry()
        .register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)?;

    let mut conns = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let target = spec.target;
        let Connected {
            stream,
            leftover,
            link,
            ..
        } = spec.conn;
        stream.set_nonblocking(true)?;
        stream.set_read_timeout(None)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let inbox = link.inbox(256 * 1024, &leftover);
        let ws = link.is_ws();
        let sender = spec.send.map(|(kind, index)| Sender {
            kind,
            index,
            pacer: match cfg.mode {
                Mode::Open { rate } => Some(Pacer::new(
                    Schedule::new(shared.t0, rate, n_senders.max(1), index as u64)
                        .batched(cfg.per_write),
                    end_send,
                )),
                Mode::Closed { .. } => None,
            },
            k: 0,
            rr: 0,
        });
        conns.push(Conn {
            stream,
            target,
            link,
            ws,
            inbox,
            wbuf: BytesMut::with_capacity(64 * 1024),
            wpos: 0,
            sender,
            outstanding: 0,
            dead: false,
        });
    }

    let mut acc = Acc {
        windows,
        local_target: cfg.local_target,
        reps: (0..windows.count)
            .map(|_| RepAcc {
                hist: hist::new_hist(),
                sent: 0,
                received: 0,
                errors: 0,
                local: None,
                remote: None,
                by_target: Vec::new(),
            })
            .collect(),
        send_lag: hist::new_hist(),
        warmup_received: 0,
        slowest: cfg.track_slowest.then(Vec::new),
        errors: Vec::new(),
        delivered: 0,
        expected: 0,
        sent: 0,
    };
    let mut pbuf = Vec::with_capacity(cfg.payload.max(payload::MIN_PAYLOAD));
    let mut overloaded = false;

    clock::sleep_until(shared.t0);
    if let Mode::Closed { pipeline } = cfg.mode {
        let now = now_ns();
        for c in conns.iter_mut() {
            for _ in 0..pipeline {
                generate(c, &*adapter, &cfg, &mut acc, &mut pbuf, now, now)?;
            }
            flush(c, &mut acc);
        }
    }

    let mut sending = true;
    let mut drain_deadline = u64::MAX;
    let mut published = (0u64, 0u64, 0u64);
    let mut announced_done = false;
    let mut armed_at = 0u64;
    loop {
        let now = now_ns();
        if sending {
            if let Mode::Open { .. } = cfg.mode {
                for c in conns.iter_mut() {
                    if c.dead {
                        continue;
                    }
                    let mut any = false;
                    // The pacer hands out writes: one message each, or --batch messages
                    // that all carry the write's intended time (k numbers the messages).
                    let per_write = cfg.per_write.max(1);
                    while let Some((w, t)) = c
                        .sender
                        .as_mut()
                        .and_then(|s| s.pacer.as_mut().and_then(|p| p.pop_due(now)))
                    {
                        for j in 0..per_write {
                            if let Some(s) = c.sender.as_mut() {
                                s.k = w * per_write + j;
                            }
                            generate(c, &*adapter, &cfg, &mut acc, &mut pbuf, t, now)?;
                        }
                        any = true;
                    }
                    if any {
                        flush(c, &mut acc);
                        if c.wbuf.len() - c.wpos > cfg.max_unsent {
                            overloaded = true;
                            c.sender = None;
                            acc.error(None, format!(
                                "more than {} bytes unsent on one connection: the server stopped reading; stopped sending on it",
                                cfg.max_unsent
                            ));
                        }
                    }
                }
            }
        }
        // Only after sending what was due: a late wake-up past the end still owes the
        // messages intended before it.
        if sending && now >= end_send {
            sending = false;
            drain_deadline = now + cfg.drain.as_nanos() as u64;
        }
        // Publish counters (cheap, batched per iteration).
        if acc.expected != published.0 {
            shared
                .expected
                .fetch_add(acc.expected - published.0, Ordering::SeqCst);
            published.0 = acc.expected;
        }
        if acc.delivered != published.1 {
            shared
                .delivered
                .fetch_add(acc.delivered - published.1, Ordering::SeqCst);
            shared
                .progress_recv
                .fetch_add(acc.delivered - published.1, Ordering::Relaxed);
            published.1 = acc.delivered;
        }
        if acc.sent != published.2 {
            shared
                .progress_sent
                .fetch_add(acc.sent - published.2, Ordering::Relaxed);
            published.2 = acc.sent;
        }
        if !sending {
            if !announced_done {
                // First time here (counters above already published): tell the others
                // this thread has sent everything.
                shared.senders_done.fetch_add(1, Ordering::SeqCst);
                announced_done = true;
            }
            let all_done = shared.senders_done.load(Ordering::SeqCst) >= threads;
            let delivered_all =
                shared.delivered.load(Ordering::SeqCst) >= shared.expected.load(Ordering::SeqCst);
            if (all_done && delivered_all) || now >= drain_deadline {
                break;
            }
        }

        // Sleep until the next intended send time (or poll without sleeping).
        let timeout = if cfg.spin {
            Some(Duration::ZERO)
        } else if sending {
            let next = match cfg.mode {
                Mode::Open { .. } => conns
                    .iter()
                    .filter(|c| !c.dead)
                    .filter_map(|c| c.sender.as_ref()?.pacer.as_ref()?.next_time())
                    .min()
                    .unwrap_or(end_send)
                    .min(end_send),
                Mode::Closed { .. } => end_send,
            };
            // Wake --spin-us early and poll without sleeping for the rest: a sleeping
            // thread's wake-up latency (tens of µs on a VM) would otherwise delay the send.
            let wake = next.saturating_sub(cfg.spin_before_ns);
            if wake <= now_ns() + 2_000 {
                Some(Duration::ZERO)
            } else {
                if wake != armed_at {
                    timer.arm_at(wake)?;
                    armed_at = wake;
                }
                None
            }
        } else {
            Some(Duration::from_millis(2))
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            if ev.token() == TIMER {
                timer.clear();
                continue;
            }
            let c = &mut conns[ev.token().0];
            if c.dead {
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                on_readable(c, &*adapter, &cfg, &mut acc, &mut pbuf, sending)?;
            }
            if ev.is_writable() {
                flush(c, &mut acc);
            }
        }
    }
    // Stay alive until the coordinator has read this thread's CPU time at the last window
    // boundary (a finished thread's /proc entry is gone).
    while !shared.released.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(WorkerOut {
        reps: acc.reps,
        send_lag: acc.send_lag,
        warmup_received: acc.warmup_received,
        slowest: acc.slowest.unwrap_or_default(),
        errors: acc.errors,
        overloaded,
        dead: conns.iter().filter(|c| c.dead).count(),
    })
}

/// Encode one message stamped `intended` into `c`'s write buffer.
fn generate(
    c: &mut Conn,
    adapter: &dyn Adapter,
    cfg: &RunConfig,
    acc: &mut Acc,
    pbuf: &mut Vec<u8>,
    intended: u64,
    now: u64,
) -> Result<()> {
    let Some(s) = c.sender.as_mut() else {
        return Ok(());
    };
    let k = match cfg.mode {
        Mode::Open { .. } => s.k,
        Mode::Closed { .. } => {
            s.k += 1;
            s.k - 1
        }
    };
    payload::fill(pbuf, cfg.payload, intended, payload::seq(s.index, k));
    let out = &mut c.wbuf;
    match &s.kind {
        SendKind::Request { target } => {
            link::frame(c.ws, out, |o| {
                adapter.encode_request(o, k, target.as_deref(), pbuf)
            })?;
            c.outstanding += 1;
        }
        SendKind::Publish { topics } => {
            let t = &topics[s.rr % topics.len()];
            s.rr = s.rr.wrapping_add(1);
            link::frame(c.ws, out, |o| adapter.encode_publish(o, t, pbuf))?;
        }
        SendKind::Direct { target } => {
            link::frame(c.ws, out, |o| adapter.encode_direct(o, target, pbuf))?
        }
        SendKind::Broadcast => link::frame(c.ws, out, |o| adapter.encode_broadcast(o, pbuf))?,
    }
    // Requests and deliveries alike: the run drains until every thread has seen every
    // expected answer (a p2p callee's thread must keep answering until the callers are done).
    acc.expected += cfg.answers_per_msg;
    acc.sent = acc.sent.wrapping_add(1);
    if let Some(r) = acc.windows.index(intended) {
        acc.reps[r].sent += 1;
    }
    if let Mode::Open { .. } = cfg.mode {
        hist::record(&mut acc.send_lag, now.saturating_sub(intended).max(1));
    }
    Ok(())
}

/// Write as much of the write buffer as the socket takes.
fn flush(c: &mut Conn, acc: &mut Acc) {
    while c.wpos < c.wbuf.len() {
        match c.link.write(&mut c.stream, &c.wbuf[c.wpos..]) {
            Ok(0) => {
                kill(c, acc, "write returned 0".into());
                return;
            }
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                kill(c, acc, format!("write: {e}"));
                return;
            }
        }
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
    } else if c.wpos > 1 << 20 {
        let _ = c.wbuf.split_to(c.wpos);
        c.wpos = 0;
    }
    if c.link.is_tls() && !c.dead {
        // Records rustls still holds (the socket was full, or it wrote on its own).
        match c.link.flush_tls(&mut c.stream) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => kill(c, acc, format!("write: {e}")),
        }
    }
}

fn kill(c: &mut Conn, acc: &mut Acc, why: String) {
    if !c.dead {
        c.dead = true;
        // Its pending answers will never come: stop waiting for them.
        acc.delivered += c.outstanding;
        c.outstanding = 0;
        acc.error(None, format!("connection lost: {why}"));
    }
}

fn on_readable(
    c: &mut Conn,
    adapter: &dyn Adapter,
    cfg: &RunConfig,
    acc: &mut Acc,
    pbuf: &mut Vec<u8>,
    sending: bool,
) -> Result<()> {
    let mut eof = false;
    loop {
        let spare = c.inbox.spare(16 * 1024);
        match c.link.read(&mut c.stream, spare) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                c.inbox.filled(n);
                let short = !c.inbox.full();
                process(c, adapter, cfg, acc, pbuf, sending)?;
                // A short read drained the socket; anything arriving later raises a new
                // edge, so skip the read that would only return EAGAIN (one syscall less
                // per message at low rates). Not over TLS: a short read of plaintext says
                // nothing about the ciphertext left in the socket.
                if (short && !c.link.is_tls()) || c.dead {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                kill(c, acc, format!("read: {e}"));
                return Ok(());
            }
        }
    }
    if eof {
        kill(c, acc, "the server closed the connection".into());
    }
    flush(c, acc);
    Ok(())
}

fn process(
    c: &mut Conn,
    adapter: &dyn Adapter,
    cfg: &RunConfig,
    acc: &mut Acc,
    pbuf: &mut Vec<u8>,
    sending: bool,
) -> Result<()> {
    let now = now_ns();
    let mut reissue = 0u32;
    let mut closed = None;
    let mut reply_err = None;
    let target = c.target;
    {
        let Conn {
            inbox,
            wbuf,
            outstanding,
            ws,
            ..
        } = c;
        let ws = *ws;
        let mut on = |inc: Incoming<'_>| match inc {
            Incoming::Response(p) => {
                acc.answer(p, now, false, target);
                *outstanding = outstanding.saturating_sub(1);
                reissue += 1;
            }
            Incoming::Delivery(p) => acc.answer(p, now, true, target),
            Incoming::Request { id, payload } => {
                if let Err(e) = link::frame(ws, wbuf, |o| adapter.encode_response(o, id, payload)) {
                    reply_err = Some(e);
                }
            }
            Incoming::Ping(n) => {
                let _ = link::frame(ws, wbuf, |o| adapter.encode_pong(o, n));
            }
            Incoming::Error {
                ends_request,
                message,
            } => {
                if ends_request {
                    *outstanding = outstanding.saturating_sub(1);
                    acc.delivered += 1;
                    reissue += 1;
                }
                acc.error(None, message);
            }
            Incoming::Closed(why) => closed = Some(why),
            Incoming::Ignored => {}
        };
        match inbox.deliver(&mut |m| Ok((adapter.parse(m, &mut on)?, false))) {
            Ok(d) => {
                if let Some(why) = d.closed {
                    closed.get_or_insert(why);
                }
            }
            Err(e) => {
                closed = Some(format!("unparseable data from the server: {e:#}"));
            }
        }
        if !inbox.control.is_empty() {
            wbuf.extend_from_slice(&inbox.control);
            inbox.control.clear();
        }
    }
    if let Some(e) = reply_err {
        return Err(e);
    }
    if let Some(why) = closed {
        kill(c, acc, why);
        return Ok(());
    }
    if let (Mode::Closed { .. }, true) = (cfg.mode, sending) {
        for _ in 0..reissue {
            generate(c, adapter, cfg, acc, pbuf, now, now)?;
        }
    }
    Ok(())
}
