//! The JSON report (schema below is versioned by [`SCHEMA_VERSION`]) and its assembly from
//! engine results.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Mode, RunOut};
use crate::envinfo::Environment;
use crate::hist::{self, Hist, LatencySummary, Spread};
use crate::sys::SockStat;

/// Bumped whenever a field is renamed, removed or changes meaning (adding one does not).
pub const SCHEMA_VERSION: u32 = 1;

/// One invocation of the loadgen: environment, settings, and one entry per run (one per
/// rate of a sweep).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always "peerd-loadgen".
    pub tool: &'static str,
    /// rpc, p2p, fanout, direct, broadcast, connect, idle, floor, attack or soak.
    pub scenario: String,
    /// Protocol adapter: peerd, floor or redis.
    pub protocol: String,
    /// "open-loop" or "closed-loop" (every run of a report has the same mode).
    pub mode: String,
    /// Unix time the invocation started.
    pub started_unix_s: u64,
    /// argv of the invocation, to re-run it.
    pub command_line: Vec<String>,
    /// Machine, kernel, limits, commit.
    pub environment: Environment,
    /// The server measured.
    pub server: ServerInfo,
    /// Which cores ran what.
    pub pinning: Pinning,
    /// Every loadgen setting of the invocation.
    pub settings: serde_json::Value,
    /// One per rate (a sweep has several).
    pub runs: Vec<RunReport>,
    /// Sweep result: the highest rate whose p99 stayed under the bound.
    pub knee: Option<Knee>,
    /// The idle scenario's memory readings.
    pub idle: Option<IdleReport>,
    /// The attack scenario's readings (the well-behaved peer's latency is `runs[0]`).
    pub attack: Option<crate::attack::AttackReport>,
    /// The soak scenario's readings.
    pub soak: Option<crate::soak::SoakReport>,
    /// Everything that makes the numbers doubtful (loadgen saturated, lost answers, ...).
    pub warnings: Vec<String>,
}

/// The server side of a report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerInfo {
    /// "peerd (spawned)", "floor echo (in-process)", "external".
    pub kind: String,
    /// Address driven.
    pub address: String,
    /// Server pid, when known (CPU and RSS readings need it).
    pub pid: Option<u32>,
    /// Shard count, when known.
    pub shards: Option<u32>,
    /// The command line it was started with (spawned servers).
    pub command: Option<Vec<String>>,
    /// How it exited (spawned servers).
    pub exit: Option<String>,
    /// Every target in --target order (one entry for a single server). With several,
    /// `address` above lists them all and `pid` is null; their pids are here.
    pub targets: Vec<TargetInfo>,
    /// Further processes whose CPU is reported by name (--extra-pid NAME=PID).
    pub extra_pids: Vec<crate::cli::NamedPid>,
}

/// One target (a server, or one node of a cluster).
#[derive(Debug, Clone, Serialize, Default)]
pub struct TargetInfo {
    /// Position in --target order; connections name targets by it.
    pub index: usize,
    /// The address driven.
    pub address: String,
    /// Its server's pid, when known (--server-pid, or the spawned server's).
    pub pid: Option<u32>,
}

/// Pinning of server and loadgen.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Pinning {
    /// Cores of the loadgen worker threads (null = not pinned).
    pub loadgen_cores: Option<Vec<usize>>,
    /// Cores of the server (null = not pinned by the loadgen).
    pub server_cores: Option<Vec<usize>>,
    /// Loadgen worker threads.
    pub loadgen_threads: usize,
    /// Whether server and loadgen cores overlap (a bad measurement setup).
    pub overlap: bool,
}

/// One run at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// "r10000" (open loop, rate; "r10000-batch8" in the batched pattern) or "closed-p1"
    /// (closed loop, pipeline depth).
    pub label: String,
    /// "open-loop" or "closed-loop".
    pub mode: String,
    /// How the senders spaced their messages: "evenly spaced" (a write per message),
    /// "batched N per write" (--batch N), or "closed loop" (a message per answer).
    pub send_pattern: String,
    /// Messages per write of each sender (1 unless --batch).
    pub messages_per_write: u64,
    /// Offered rate in messages/s (open loop).
    pub offered_rate: Option<f64>,
    /// Requests in flight per connection (closed loop).
    pub pipeline: Option<u32>,
    /// Connections in the run.
    pub connections: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Warm-up seconds (discarded).
    pub warmup_s: f64,
    /// Seconds per measured window.
    pub window_s: f64,
    /// Number of windows.
    pub repetitions: usize,
    /// Answers each message should produce (1 for request/response, N for fan-out).
    pub answers_per_msg: u64,
    /// All windows together: response or publish-to-receipt latency.
    pub latency: LatencySummary,
    /// All windows together: per message, the slowest receiver (fan-out scenarios).
    pub slowest_receiver: Option<LatencySummary>,
    /// Fan-out: latency of the deliveries to subscribers on the publishers' target
    /// (null when none arrived there).
    pub latency_local: Option<LatencySummary>,
    /// Fan-out: latency of the deliveries to subscribers on the other targets (null when
    /// none arrived there, e.g. with a single target).
    pub latency_remote: Option<LatencySummary>,
    /// Fan-out: deliveries in the windows per target (empty for other scenarios).
    pub deliveries_by_target: Vec<TargetDeliveries>,
    /// Messages sent in the windows.
    pub sent: u64,
    /// Answers (responses or deliveries) received for them.
    pub received: u64,
    /// Errors reported by the server.
    pub errors: u64,
    /// Answers that never came (sent * answers_per_msg - received - errors, not below 0).
    pub missing: u64,
    /// p99 counting missing answers as infinitely late (microseconds; null if > 1 % missing).
    pub p99_with_missing_us: Option<f64>,
    /// Answers per second (responses/s, or deliveries/s for fan-out).
    pub achieved_rate: f64,
    /// Messages sent per second.
    pub sent_rate: f64,
    /// Server CPU seconds in the windows.
    pub server_cpu_s: Option<f64>,
    /// Answers (responses or deliveries) per server CPU-second.
    pub per_server_cpu_s: Option<f64>,
    /// Each target's server CPU seconds in the windows (`server_cpu_s` is their sum, a
    /// process given for two targets counted once).
    pub server_cpu_by_target: Vec<TargetCpu>,
    /// CPU seconds in the windows of each --extra-pid process, by its NAME.
    pub extra_cpu_s: BTreeMap<String, Option<f64>>,
    /// The loadgen's own cost and lateness.
    pub loadgen: LoadgenCost,
    /// Per window.
    pub reps: Vec<RepReport>,
    /// Spread over windows (min/median/max).
    pub spread: SpreadReport,
    /// Files written for this run, relative to the output directory.
    pub files: Vec<String>,
    /// A connection's unsent bytes passed the limit (the server stopped reading).
    pub overloaded: bool,
    /// Connections lost during the run.
    pub dead_connections: usize,
    /// Answers to warm-up messages (discarded).
    pub warmup_received: u64,
    /// The first few errors.
    pub error_samples: Vec<String>,
    /// Whether p99 (with missing answers) stayed under --p99-bound.
    pub meets_p99_bound: Option<bool>,
    /// Doubts about this run.
    pub warnings: Vec<String>,
}

/// Deliveries to the subscribers on one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetDeliveries {
    /// Target index (--target order).
    pub target: usize,
    /// Its address.
    pub address: String,
    /// Whether the publishers are connected to it (its deliveries are the "local" ones).
    pub local: bool,
    /// Subscribing connections on it.
    pub subscribers: usize,
    /// Deliveries received on them for messages intended in the windows.
    pub received: u64,
    /// `received / subscribers`: messages each got on average (equals `sent` when every
    /// subscriber here is on the one topic and nothing was lost).
    pub received_per_subscriber: Option<f64>,
}

/// One target's server CPU.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCpu {
    /// Target index (--target order).
    pub target: usize,
    /// Its address.
    pub address: String,
    /// The pid read.
    pub pid: Option<u32>,
    /// CPU seconds over the windows (null: pid unknown or unreadable).
    pub cpu_s: Option<f64>,
}

/// The loadgen's CPU and schedule lateness.
#[derive(Debug, Clone, Serialize)]
pub struct LoadgenCost {
    /// CPU seconds of the worker threads over the windows.
    pub cpu_s: f64,
    /// Busiest worker thread, fraction of one core (1.0 = saturated).
    pub max_thread_util: f64,
    /// CPU seconds of the whole process (includes an in-process floor server).
    pub process_cpu_s: f64,
    /// Generation time minus intended time (open loop).
    pub send_lag: LatencySummary,
    /// The loadgen itself was the bottleneck (thread near 100 % without --spin, or it fell
    /// behind its schedule).
    pub saturated: bool,
    /// Busy-polling was on (CPU then reads 100 % by design).
    pub spin: bool,
}

/// One measured window.
#[derive(Debug, Clone, Serialize)]
pub struct RepReport {
    /// Window index.
    pub index: usize,
    /// Latency.
    pub latency: LatencySummary,
    /// Slowest receiver per message.
    pub slowest_receiver: Option<LatencySummary>,
    /// Messages sent.
    pub sent: u64,
    /// Answers received.
    pub received: u64,
    /// Errors.
    pub errors: u64,
    /// Missing answers.
    pub missing: u64,
    /// Answers per second.
    pub achieved_rate: f64,
    /// Server CPU seconds.
    pub server_cpu_s: Option<f64>,
    /// Answers per server CPU-second.
    pub per_server_cpu_s: Option<f64>,
    /// Loadgen worker CPU seconds.
    pub loadgen_cpu_s: f64,
    /// Busiest loadgen worker thread (fraction of a core).
    pub loadgen_max_thread_util: f64,
}

/// Spread of the windows.
#[derive(Debug, Clone, Serialize)]
pub struct SpreadReport {
    /// p50 (µs).
    pub p50: Spread,
    /// p99 (µs).
    pub p99: Spread,
    /// p99.9 (µs).
    pub p99_9: Spread,
    /// max (µs).
    pub max: Spread,
    /// Answers per second.
    pub achieved_rate: Spread,
    /// Answers per server CPU-second (when the server pid is known).
    pub per_server_cpu_s: Option<Spread>,
}

/// The knee of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Knee {
    /// The bound on p99, µs.
    pub p99_bound_us: f64,
    /// Highest tested rate meeting it (null: none did).
    pub rate: Option<f64>,
    /// Rates tested, in order.
    pub rates_tested: Vec<f64>,
}

/// Memory per idle connection.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections open and handshaken while measuring.
    pub connected: usize,
    /// Failed attempts.
    pub failed: usize,
    /// Seconds to open them all.
    pub connect_s: f64,
    /// Server VmRSS before opening them.
    pub server_rss_before_bytes: Option<u64>,
    /// Server VmRSS with all of them open.
    pub server_rss_held_bytes: Option<u64>,
    /// Server VmRSS after closing them.
    pub server_rss_after_close_bytes: Option<u64>,
    /// (held - before) / connected.
    pub server_rss_per_conn_bytes: Option<f64>,
    /// /proc/net/sockstat before.
    pub sockstat_before: Option<SockStat>,
    /// /proc/net/sockstat with the connections held.
    pub sockstat_held: Option<SockStat>,
    /// TCP socket buffer memory delta (sockstat "mem" pages * page size) / connected.
    pub kernel_tcp_mem_per_conn_bytes: Option<f64>,
    /// Slab caches growing with connections (bytes delta per cache), root only.
    pub slab_delta_bytes: Vec<(String, i64)>,
    /// Sum of the slab deltas / connected.
    pub kernel_slab_per_conn_bytes: Option<f64>,
    /// How to read the kernel numbers.
    pub note: String,
}

/// Everything needed to turn a [`RunOut`] into a [`RunReport`].
pub struct RunMeta {
    /// Mode of the run.
    pub mode: Mode,
    /// Connections.
    pub connections: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Answers per message.
    pub answers_per_msg: u64,
    /// --p99-bound in µs, if any.
    pub p99_bound_us: Option<f64>,
    /// --spin.
    pub spin: bool,
    /// Messages per write (--batch; 1 = evenly spaced).
    pub per_write: u64,
}

/// The send pattern of a run, as every output names it (so that a batched run is never
/// read as an evenly spaced one).
pub fn send_pattern(mode: Mode, per_write: u64) -> String {
    match (mode, per_write) {
        (Mode::Closed { .. }, _) => "closed loop".into(),
        (Mode::Open { .. }, 0 | 1) => "evenly spaced".into(),
        (Mode::Open { .. }, n) => format!("batched {n} per write"),
    }
}

fn per_cpu(received: u64, cpu: Option<f64>) -> Option<f64> {
    cpu.filter(|c| *c > 0.0).map(|c| received as f64 / c)
}

/// p99 over all expected answers, a missing one counting as infinitely late.
pub fn p99_with_missing(h: &Hist, received: u64, missing: u64) -> Option<f64> {
    let expected = received + missing;
    if expected == 0 || received == 0 {
        return None;
    }
    if missing as f64 > 0.01 * expected as f64 {
        return None;
    }
    let q = (0.99 * expected as f64 / received as f64).min(1.0);
    Some(h.value_at_quantile(q) as f64 / hist::NS_PER_US)
}

/// Build the report of one run. Returns it with the combined histograms (for files/plots).
pub fn build_run(out: &RunOut, meta: &RunMeta) -> (RunReport, Hist, Option<Hist>) {
    let mut combined = hist::new_hist();
    let mut slowest: Option<Hist> = None;
    let mut reps = Vec::new();
    let (mut sent, mut received, mut errors, mut missing) = (0, 0, 0, 0);
    let mut server_cpu: Option<f64> = Some(0.0);
    let (mut lg_cpu, mut lg_util, mut proc_cpu) = (0.0, 0.0f64, 0.0);
    for (i, r) in out.reps.iter().enumerate() {
        combined.add(&r.hist).ok();
        if let Some(s) = &r.slowest {
            slowest.get_or_insert_with(hist::new_hist).add(s).ok();
        }
        let miss = (r.sent * meta.answers_per_msg).saturating_sub(r.received + r.errors);
        sent += r.sent;
        received += r.received;
        errors += r.errors;
        missing += miss;
        server_cpu = match (server_cpu, r.server_cpu_s) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        lg_cpu += r.loadgen_cpu_s;
        lg_util = lg_util.max(r.loadgen_max_thread_util);
        proc_cpu += r.process_cpu_s;
        reps.push(RepReport {
            index: i,
            latency: LatencySummary::of(&r.hist),
            slowest_receiver: r.slowest.as_ref().map(LatencySummary::of),
            sent: r.sent,
            received: r.received,
            errors: r.errors,
            missing: miss,
            achieved_rate: r.received as f64 / out.window_s,
            server_cpu_s: r.server_cpu_s,
            per_server_cpu_s: per_cpu(r.received, r.server_cpu_s),
            loadgen_cpu_s: r.loadgen_cpu_s,
            loadgen_max_thread_util: r.loadgen_max_thread_util,
        });
    }
    let total_s = out.window_s * out.reps.len() as f64;
    let latency = LatencySummary::of(&combined);
    let p99m = p99_with_missing(&combined, received, missing);
    let send_lag = LatencySummary::of(&out.send_lag);
    let mut warnings = Vec::new();
    let behind = matches!(meta.mode, Mode::Open { .. }) && send_lag.p99 > 1000.0;
    if behind {
        warnings.push(format!(
            "loadgen fell behind its schedule: send lag p99 {:.0} µs, max {:.0} µs (latencies stay corrected; add --threads or lower --rate)",
            send_lag.p99, send_lag.max
        ));
    }
    let cpu_saturated = !meta.spin && lg_util > 0.9;
    if cpu_saturated {
        warnings.push(format!(
            "loadgen saturated: its busiest thread used {:.0} % of a core",
            lg_util * 100.0
        ));
    }
    if missing > 0 {
        warnings.push(format!(
            "{missing} answers never arrived (of {} expected)",
            sent * meta.answers_per_msg
        ));
    }
    if errors > 0 {
        warnings.push(format!("{errors} errors reported by the server"));
    }
    if out.overloaded {
        warnings.push("overloaded: the server stopped reading and the loadgen stopped sending on a connection; latencies beyond this point are not meaningful".into());
    }
    if out.dead_conns > 0 {
        warnings.push(format!(
            "{} connections lost during the run",
            out.dead_conns
        ));
    }
    if latency.count < 1_000_000 && latency.count > 0 {
        // Not a warning about the run, but about reading p99.99 (BENCHMARKING.md rule 3).
    }
    let meets = meta
        .p99_bound_us
        .map(|b| p99m.is_some_and(|p| p < b) && !out.overloaded && out.dead_conns == 0);
    let spread = SpreadReport {
        p50: Spread::of(&reps.iter().map(|r| r.latency.p50).collect::<Vec<_>>()),
        p99: Spread::of(&reps.iter().map(|r| r.latency.p99).collect::<Vec<_>>()),
        p99_9: Spread::of(&reps.iter().map(|r| r.latency.p99_9).collect::<Vec<_>>()),
        max: Spread::of(&reps.iter().map(|r| r.latency.max).collect::<Vec<_>>()),
        achieved_rate: Spread::of(&reps.iter().map(|r| r.achieved_rate).collect::<Vec<_>>()),
        per_server_cpu_s: reps
            .iter()
            .map(|r| r.per_server_cpu_s)
            .collect::<Option<Vec<f64>>>()
            .map(|v| Spread::of(&v)),
    };
    let (label, offered_rate, pipeline) = match meta.mode {
        // The pattern is in the label (and so in the .hgrm file names) too: a batched
        // run's files never pass for an evenly spaced run's.
        Mode::Open { rate } if meta.per_write > 1 => (
            format!("r{}-batch{}", fmt_rate(rate), meta.per_write),
            Some(rate),
            None,
        ),
        Mode::Open { rate } => (format!("r{}", fmt_rate(rate)), Some(rate), None),
        Mode::Closed { pipeline } => (format!("closed-p{pipeline}"), None, Some(pipeline)),
    };
    let report = RunReport {
        label,
        mode: meta.mode.label().into(),
        send_pattern: send_pattern(meta.mode, meta.per_write),
        messages_per_write: meta.per_write.max(1),
        offered_rate,
        pipeline,
        connections: meta.connections,
        payload_bytes: meta.payload,
        warmup_s: meta.warmup_s,
        window_s: out.window_s,
        repetitions: out.reps.len(),
        answers_per_msg: meta.answers_per_msg,
        latency,
        slowest_receiver: slowest.as_ref().map(LatencySummary::of),
        latency_local: None,
        latency_remote: None,
        deliveries_by_target: Vec::new(),
        sent,
        received,
        errors,
        missing,
        p99_with_missing_us: p99m,
        achieved_rate: received as f64 / total_s,
        sent_rate: sent as f64 / total_s,
        server_cpu_s: server_cpu,
        per_server_cpu_s: per_cpu(received, server_cpu),
        server_cpu_by_target: Vec::new(),
        extra_cpu_s: BTreeMap::new(),
        loadgen: LoadgenCost {
            cpu_s: lg_cpu,
            max_thread_util: lg_util,
            process_cpu_s: proc_cpu,
            send_lag,
            saturated: behind || cpu_saturated,
            spin: meta.spin,
        },
        reps,
        spread,
        files: Vec::new(),
        overloaded: out.overloaded,
        dead_connections: out.dead_conns,
        warmup_received: out.warmup_received,
        error_samples: out.error_samples.clone(),
        meets_p99_bound: meets,
        warnings,
    };
    (report, combined, slowest)
}

/// How the connections of a run were laid out over the targets.
#[derive(Debug, Clone, Default)]
pub struct TargetLayout {
    /// Every target, in --target order.
    pub targets: Vec<TargetInfo>,
    /// The target the publishers are connected to (fan-out).
    pub publisher_target: usize,
    /// Subscribing connections on each target (fan-out; index = target).
    pub subscribers: Vec<usize>,
    /// --extra-pid processes, in the order of the probe's readings after the targets.
    pub extra: Vec<crate::cli::NamedPid>,
}

/// Per-target CPU (the probe's named readings: every target, then the extra processes)
/// and, for fan-out (`split`), deliveries per target and the local/remote latency. Returns
/// the local and remote histograms over all windows, for their files.
pub fn add_targets(
    r: &mut RunReport,
    out: &RunOut,
    layout: &TargetLayout,
    split: bool,
) -> (Option<Hist>, Option<Hist>) {
    let n = layout.targets.len();
    // Sum over the windows; one unreadable window makes the total unknown.
    let named_total = |i: usize| -> Option<f64> {
        out.reps
            .iter()
            .map(|rep| rep.named_cpu_s.get(i).copied().flatten())
            .sum()
    };
    if !out.reps.is_empty() {
        r.server_cpu_by_target = layout
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| TargetCpu {
                target: t.index,
                address: t.address.clone(),
                pid: t.pid,
                cpu_s: t.pid.and_then(|_| named_total(i)),
            })
            .collect();
        r.extra_cpu_s = layout
            .extra
            .iter()
            .enumerate()
            .map(|(j, e)| (e.name.clone(), named_total(n + j)))
            .collect();
    }
    if !split {
        return (None, None);
    }
    let (mut local, mut remote): (Option<Hist>, Option<Hist>) = (None, None);
    let mut by_target = vec![0u64; n];
    for rep in &out.reps {
        for (mine, theirs) in [(&mut local, &rep.local), (&mut remote, &rep.remote)] {
            if let Some(h) = theirs {
                mine.get_or_insert_with(hist::new_hist).add(h).ok();
            }
        }
        for (t, k) in rep.by_target.iter().enumerate() {
            if t < n {
                by_target[t] += k;
            }
        }
    }
    r.latency_local = local.as_ref().map(LatencySummary::of);
    r.latency_remote = remote.as_ref().map(LatencySummary::of);
    r.deliveries_by_target = layout
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let subs = layout.subscribers.get(i).copied().unwrap_or(0);
            TargetDeliveries {
                target: t.index,
                address: t.address.clone(),
                local: i == layout.publisher_target,
                subscribers: subs,
                received: by_target[i],
                received_per_subscriber: (subs > 0).then(|| by_target[i] as f64 / subs as f64),
            }
        })
        .collect();
    (local, remote)
}

/// A rate as a short string: 10000 -> "10000", 2500.5 -> "2500.5".
pub fn fmt_rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{}", r as u64)
    } else {
        format!("{r}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RepOut;

    /// A run's windows as the engine hands them over, nothing else happening.
    fn run_out(reps: Vec<RepOut>) -> RunOut {
        RunOut {
            reps,
            send_lag: hist::new_hist(),
            warmup_received: 0,
            error_samples: vec![],
            overloaded: false,
            dead_conns: 0,
            window_s: 1.0,
        }
    }

    /// One connection's open or closed loop of 64 B messages, one answer each, evenly spaced.
    fn run_meta(mode: Mode) -> RunMeta {
        RunMeta {
            mode,
            connections: 1,
            payload: 64,
            warmup_s: 0.0,
            answers_per_msg: 1,
            p99_bound_us: None,
            spin: false,
            per_write: 1,
        }
    }

    fn sample_report() -> Report {
        let mut h = hist::new_hist();
        for v in 1..=1000u64 {
            hist::record(&mut h, v * 1000);
        }
        let out = RunOut {
            warmup_received: 10,
            ..run_out(vec![RepOut {
                hist: h,
                slowest: None,
                sent: 1000,
                received: 1000,
                errors: 0,
                server_cpu_s: Some(0.5),
                loadgen_cpu_s: 0.2,
                loadgen_max_thread_util: 0.2,
                process_cpu_s: 0.3,
                named_cpu_s: Vec::new(),
                local: None,
                remote: None,
                by_target: Vec::new(),
            }])
        };
        let (run, _, _) = build_run(
            &out,
            &RunMeta {
                warmup_s: 1.0,
                p99_bound_us: Some(2000.0),
                ..run_meta(Mode::Open { rate: 1000.0 })
            },
        );
        Report {
            schema_version: SCHEMA_VERSION,
            tool: "peerd-loadgen",
            scenario: "rpc".into(),
            protocol: "peerd".into(),
            mode: "open-loop".into(),
            started_unix_s: 1,
            command_line: vec!["peerd-loadgen".into(), "rpc".into()],
            environment: Environment::collect(),
            server: ServerInfo::default(),
            pinning: Pinning::default(),
            settings: serde_json::json!({"rate": 1000.0}),
            runs: vec![run],
            knee: Some(Knee {
                p99_bound_us: 2000.0,
                rate: Some(1000.0),
                rates_tested: vec![1000.0],
            }),
            idle: None,
            attack: None,
            soak: None,
            warnings: vec![],
        }
    }

    #[test]
    fn run_numbers_from_known_windows() {
        let r = &sample_report().runs[0];
        assert_eq!(r.label, "r1000");
        assert_eq!(r.send_pattern, "evenly spaced");
        assert_eq!(r.messages_per_write, 1);
        assert_eq!(r.latency.count, 1000);
        assert!((r.latency.p50 - 500.0).abs() < 0.5);
        assert!((r.latency.p99 - 990.0).abs() < 1.0);
        assert!((r.latency.max - 1000.0).abs() < 1.0);
        assert_eq!(r.missing, 0);
        assert_eq!(r.achieved_rate, 1000.0);
        assert_eq!(r.per_server_cpu_s, Some(2000.0));
        assert_eq!(r.meets_p99_bound, Some(true));
        assert!(!r.loadgen.saturated);
    }

    #[test]
    fn batched_runs_are_labelled_as_such() {
        let mut rep = sample_report();
        let out = run_out(Vec::new());
        let meta = |mode, per_write| RunMeta {
            connections: 2,
            per_write,
            ..run_meta(mode)
        };
        let (r, _, _) = build_run(&out, &meta(Mode::Open { rate: 500.0 }, 8));
        assert_eq!(r.label, "r500-batch8");
        assert_eq!(r.send_pattern, "batched 8 per write");
        assert_eq!(r.messages_per_write, 8);
        rep.runs = vec![r];
        let v = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["runs"][0]["send_pattern"], "batched 8 per write");
        let (r, _, _) = build_run(&out, &meta(Mode::Closed { pipeline: 2 }, 1));
        assert_eq!(
            (r.label.as_str(), r.send_pattern.as_str()),
            ("closed-p2", "closed loop")
        );
    }

    #[test]
    fn json_schema_field_names_and_types() {
        let v = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["tool"], "peerd-loadgen");
        for k in [
            "scenario",
            "protocol",
            "mode",
            "started_unix_s",
            "command_line",
            "environment",
            "server",
            "pinning",
            "settings",
            "runs",
            "knee",
            "idle",
            "warnings",
        ] {
            assert!(v.get(k).is_some(), "missing top-level field {k}");
        }
        let env = &v["environment"];
        for k in [
            "kernel",
            "cpu_model",
            "cores",
            "virtualization",
            "git_commit",
            "memlock_soft_bytes",
            "io_uring_disabled",
        ] {
            assert!(env.get(k).is_some(), "missing environment.{k}");
        }
        assert!(env["cores"].is_u64());
        assert!(env["virtualization"]["is_vm"].is_boolean());
        let run = &v["runs"][0];
        assert!(run["offered_rate"].is_f64());
        assert!(run["achieved_rate"].is_f64());
        assert!(run["per_server_cpu_s"].is_f64());
        assert!(run["reps"].is_array());
        assert!(run["loadgen"]["saturated"].is_boolean());
        assert!(run["loadgen"]["send_lag"]["p99"].is_f64());
        let lat = &run["latency"];
        assert_eq!(lat["unit"], "us");
        assert!(lat["count"].is_u64());
        for k in [
            "min", "mean", "stdev", "p50", "p90", "p99", "p99_9", "p99_99", "max",
        ] {
            assert!(lat[k].is_f64(), "latency.{k} not a number");
        }
        for k in ["p50", "p99", "p99_9", "max", "achieved_rate"] {
            for s in ["min", "median", "max"] {
                assert!(run["spread"][k][s].is_f64(), "spread.{k}.{s}");
            }
        }
        assert!(run["slowest_receiver"].is_null());
        assert_eq!(v["knee"]["rate"], 1000.0);
    }

    #[test]
    fn targets_add_up_over_windows() {
        let rep = |local: &[u64], remote: &[u64], by: Vec<u64>, cpu: Vec<Option<f64>>| {
            let h = |v: &[u64]| {
                let mut h = hist::new_hist();
                for &x in v {
                    hist::record(&mut h, x * 1000);
                }
                h
            };
            RepOut {
                hist: h(&[local, remote].concat()),
                slowest: None,
                sent: 1,
                received: (local.len() + remote.len()) as u64,
                errors: 0,
                server_cpu_s: Some(1.0),
                loadgen_cpu_s: 0.0,
                loadgen_max_thread_util: 0.0,
                process_cpu_s: 0.0,
                named_cpu_s: cpu,
                local: (!local.is_empty()).then(|| h(local)),
                remote: (!remote.is_empty()).then(|| h(remote)),
                by_target: by,
            }
        };
        let out = run_out(vec![
            rep(
                &[10, 20],
                &[30],
                vec![2, 1],
                vec![Some(0.5), Some(0.25), Some(1.0)],
            ),
            // A window where target 1 got nothing (a short by_target) and the second
            // server's CPU could not be read.
            rep(&[40], &[], vec![1], vec![Some(0.5), None, Some(1.0)]),
        ]);
        let meta = RunMeta {
            connections: 4,
            answers_per_msg: 2,
            ..run_meta(Mode::Open { rate: 1.0 })
        };
        let (mut r, _, _) = build_run(&out, &meta);
        let layout = TargetLayout {
            targets: (0..2)
                .map(|i| TargetInfo {
                    index: i,
                    address: format!("t{i}"),
                    pid: Some(7),
                })
                .collect(),
            publisher_target: 0,
            subscribers: vec![1, 1],
            extra: vec![crate::cli::NamedPid {
                name: "nats".into(),
                pid: 8,
            }],
        };
        let (local, remote) = add_targets(&mut r, &out, &layout, true);
        assert_eq!(local.unwrap().len(), 3);
        assert_eq!(remote.unwrap().len(), 1);
        assert_eq!(r.latency_local.as_ref().unwrap().count, 3);
        assert_eq!(r.latency_remote.as_ref().unwrap().count, 1);
        let got: Vec<(u64, bool)> = r
            .deliveries_by_target
            .iter()
            .map(|d| (d.received, d.local))
            .collect();
        assert_eq!(got, [(3, true), (1, false)]);
        assert_eq!(r.server_cpu_by_target[0].cpu_s, Some(1.0));
        // One unreadable window: the total is unknown, not a partial sum.
        assert_eq!(r.server_cpu_by_target[1].cpu_s, None);
        assert_eq!(r.extra_cpu_s["nats"], Some(2.0));
        // Without the split (not fan-out) only the CPU is filled in.
        let (mut r, _, _) = build_run(&out, &meta);
        assert_eq!(add_targets(&mut r, &out, &layout, false).0, None);
        assert!(r.deliveries_by_target.is_empty() && r.latency_local.is_none());
        assert_eq!(r.extra_cpu_s.len(), 1);
    }

    #[test]
    fn missing_answers_count_as_infinitely_late() {
        let mut h = hist::new_hist();
        for v in 1..=1000u64 {
            hist::record(&mut h, v);
        }
        // 5 of 1005 missing: p99 moves up from 990 ns.
        let p = p99_with_missing(&h, 1000, 5).unwrap();
        assert!(p * 1000.0 > 990.0);
        // More than 1 % missing: no finite p99.
        assert_eq!(p99_with_missing(&h, 1000, 11), None);
    }
}
