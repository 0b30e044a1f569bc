//! The `attack` scenario: `--hostile N` connections of one hostile kind against the server,
//! while one well-behaved peer measures echo RPC latency open loop (the message engine, as
//! in `rpc`) for the whole attack.
//!
//! Timeline, on one clock (seconds since the start of the run, as in the RSS series):
//!
//! 1. `setup`: the hostile connections open (handshake; the slow-reader kinds join their
//!    topics), then the well-behaved peer (and, for the slow-reader kinds, the well-behaved
//!    publisher) connects.
//! 2. `warm-up`: `--warmup` s of the well-behaved peer alone (discarded).
//! 3. `attack`: the hostile connections do what their kind does for `--duration` s; the
//!    well-behaved peer's latency is measured over it in `--repetitions` windows.
//! 4. `closing`: connections the server closed are read to their end for the Close code;
//!    the rest are closed by the loadgen.
//! 5. `after`: `--after` s of quiet, then the "RSS after" reading.
//!
//! The server's RSS and CPU are sampled every `--sample-ms` throughout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::adapter::{self, Adapter, ConnectOptions};
use crate::cli::AttackArgs;
use crate::clock::{self, now_ns};
use crate::engine::{self, ConnSpec, Mode, RunConfig, SendKind};
use crate::hist;
use crate::hostile::{Behaviour, Kind, KindStats, Publisher, PublisherReport, Swarm};
use crate::output;
use crate::report::{self, Report, RunMeta};
use crate::sampler::{secs_since, MemoryReport, Phase, Sampler};
use crate::scenarios::{self, Prepared};
use crate::schedule::{Pacer, Schedule};
use crate::sys;

/// Server CPU seconds by phase.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPhases {
    /// While the hostile connections (and the well-behaved ones) opened, and the warm-up.
    pub setup_s: Option<f64>,
    /// Over the attack.
    pub attack_s: Option<f64>,
    /// From the end of the attack to the "RSS after" reading (closing included).
    pub after_s: Option<f64>,
}

/// The well-behaved peer, in short (its full latency is the report's `runs[0]`).
#[derive(Debug, Clone, Serialize)]
pub struct WellBehaved {
    /// Its connections (1 unless --connections).
    pub connections: usize,
    /// Whether the server (or the network) ever cut one of them.
    pub disconnected: bool,
    /// Errors the server answered it with.
    pub errors: u64,
    /// Requests never answered.
    pub missing: u64,
    /// Samples of the latency distribution.
    pub samples: u64,
}

/// What an attack did and what it cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    /// The kind of hostile peer.
    pub kind: Kind,
    /// Its parameters (per connection).
    pub behaviour: Behaviour,
    /// Hostile connections asked for.
    pub hostile_requested: usize,
    /// Hostile connections opened (handshaken, joined where the kind joins).
    pub hostile_connected: u64,
    /// Attempts that failed during the set-up.
    pub setup_failed: usize,
    /// The first few set-up errors.
    pub setup_errors: Vec<String>,
    /// Seconds the set-up took.
    pub setup_s: f64,
    /// Topics the hostile peers joined (slow-reader kinds).
    pub topics: Option<usize>,
    /// Length of the attack, seconds.
    pub attack_s: f64,
    /// Server memory over the run.
    pub memory: MemoryReport,
    /// Server CPU by phase.
    pub server_cpu_s: CpuPhases,
    /// How the hostile connections ended: closed by the server (and how), or open at the end.
    pub hostile: KindStats,
    /// How closes by the server were detected.
    pub close_detection: String,
    /// The well-behaved publisher (slow-reader kinds).
    pub publisher: Option<PublisherReport>,
    /// The well-behaved peer.
    pub well_behaved: WellBehaved,
    /// The server was still running at the end.
    pub server_alive: bool,
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| sys::rss_bytes(p).ok())
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| sys::process_cpu_s(p).ok())
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// "12.3 MiB", or "-".
pub fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "-".into())
}

fn secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "-".into())
}

/// One line per fact, for the terminal and the markdown report.
pub fn summary_lines(a: &AttackReport) -> Vec<String> {
    let m = &a.memory;
    let h = &a.hostile;
    let mut v = vec![
        format!(
            "attack {}: {} hostile connections of {} ({} failed) opened in {:.2} s{}; attack {:.1} s",
            a.kind.name(),
            a.hostile_connected,
            a.hostile_requested,
            a.setup_failed,
            a.setup_s,
            a.topics
                .map(|t| format!(", {t} topics"))
                .unwrap_or_default(),
            a.attack_s
        ),
        format!(
            "server RSS: baseline {}, peak {}{}, end of attack {}, {:.0} s after closing {} (kernel TCP memory peak {})",
            mib(m.baseline_rss_bytes),
            mib(m.peak_rss_bytes),
            m.peak_at_s.map(|t| format!(" at {t:.1} s")).unwrap_or_default(),
            mib(m.at_end_rss_bytes),
            m.after_wait_s,
            mib(m.after_rss_bytes),
            mib(m.kernel_tcp_mem_peak_bytes)
        ),
        format!(
            "server CPU: setup {}, attack {}, after {}",
            secs(a.server_cpu_s.setup_s),
            secs(a.server_cpu_s.attack_s),
            secs(a.server_cpu_s.after_s)
        ),
    ];
    let codes = if h.close_codes.is_empty() {
        "no Close frame".to_string()
    } else {
        crate::output::join_counts(&h.close_codes)
    };
    v.push(format!(
        "hostile connections closed by the server: {} of {} ({codes}; EOF without Close {}, reset {}, unread {}, other {}){}; open at the end {}",
        h.closed_by_server,
        h.opened,
        h.eof_without_close,
        h.resets,
        h.closed_unread,
        h.errors,
        match (h.first_server_close_s, h.last_server_close_s) {
            (Some(f), Some(l)) => format!(", first at {f:.1} s, last at {l:.1} s"),
            _ => String::new(),
        },
        h.open_at_end
    ));
    v.push(format!(
        "hostile traffic: {} messages, {} bytes sent{}",
        h.messages_sent,
        h.bytes_sent,
        if h.frames_received.is_empty() {
            String::new()
        } else {
            format!(
                "; received {}",
                crate::output::join_counts(&h.frames_received)
            )
        }
    ));
    if let Some(p) = &a.publisher {
        v.push(format!(
            "publisher: {} publishes of {} B to {} topics at {}/s, {} skipped (server not reading it), {} failures, disconnected: {}",
            p.published,
            p.payload_bytes,
            p.topics,
            p.rate,
            p.skipped_backpressure,
            p.status_errors,
            p.disconnected.as_deref().unwrap_or("no")
        ));
    }
    let w = &a.well_behaved;
    v.push(format!(
        "well-behaved peer: {} samples, disconnected: {}, errors {}, missing {}; server alive at the end: {}",
        w.samples,
        if w.disconnected { "YES" } else { "no" },
        w.errors,
        w.missing,
        if a.server_alive { "yes" } else { "NO" }
    ));
    v
}

struct DriverOut {
    stats: KindStats,
    publisher: Option<PublisherReport>,
    rss_end: Option<u64>,
    cpu_start: Option<f64>,
    cpu_end: Option<f64>,
    ended_at: u64,
    closed_at: u64,
}

/// Run the attack scenario.
pub fn run_attack(a: &AttackArgs, settings: serde_json::Value) -> Result<()> {
    scenarios::check_args(&a.msg)?;
    if a.msg.closed_loop || a.msg.sweep.is_some() {
        bail!("attack measures the well-behaved peer open loop at one --rate");
    }
    if let Some(p) = a.msg.protocol.as_deref().filter(|p| *p != "peerd") {
        bail!("attack speaks peerd's protocol, not {p}");
    }
    scenarios::require_tcp("attack", &a.msg)?;
    if a.hostile == 0 {
        bail!("--hostile must be at least 1");
    }
    let nofile = sys::raise_nofile();
    let kind = a.kind;
    let mut msg = a.msg.clone();
    msg.name
        .get_or_insert_with(|| format!("attack-{}", kind.name()));
    let adapter: Arc<dyn Adapter> = Arc::from(adapter::by_name("peerd", "attack")?);
    let Prepared {
        dir,
        name,
        started,
        environment,
        mut target,
        lg_cores,
        pin,
        mut warnings,
    } = scenarios::prepare("attack", "peerd", &msg)?;
    if (a.hostile as u64) + 64 > nofile {
        warnings.push(format!(
            "the open-files limit ({nofile}) is below --hostile + 64: set-up will fail part way"
        ));
    }
    let pid = target.pid();
    if pid.is_none() {
        warnings.push(
            "server pid unknown (--spawn-server or --server-pid): no RSS or CPU readings".into(),
        );
    }
    warnings.push(
        "the hostile connections run on the loadgen's cores beside the well-behaved peer: its latency includes that contention"
            .into(),
    );
    let interval = Duration::from_millis(a.sample_ms.max(1));
    let origin = now_ns();
    let mut phases = vec![Phase {
        name: "setup".into(),
        t_s: 0.0,
    }];

    let result = (|| -> Result<(AttackReport, report::RunReport, hist::Hist)> {
        let rss_baseline = rss(pid);
        let cpu0 = cpu(pid);
        let mut swarm = Swarm::new(target.addr, origin)?;
        let sampler = Sampler::start(
            pid,
            origin,
            interval,
            swarm.gauges.clone(),
            lg_cores.clone(),
        )?;
        let tag = format!("lg{}n{}", std::process::id(), scenarios::run_nonce());

        // The behaviour and, for the slow-reader kinds, the topics and the publisher.
        let mut beh = Behaviour::new(kind);
        beh.partial_bytes = a.partial_bytes;
        beh.trickle_ns = a.trickle_ms.max(1) * 1_000_000;
        beh.call_timeout_ms = a.call_timeout_ms;
        beh.rate = a.hostile_rate / a.hostile as f64;
        let (topics, publish_rate, publish_payload) = match kind {
            Kind::SlowReader => (
                Some(a.topics.unwrap_or(100).clamp(1, a.hostile)),
                a.publish_rate.unwrap_or(2000.0),
                a.hostile_payload.unwrap_or(32),
            ),
            Kind::SlowSubscribers => (
                Some(a.topics.unwrap_or(a.hostile).clamp(1, a.hostile)),
                a.publish_rate.unwrap_or(4000.0),
                a.hostile_payload.unwrap_or(16 * 1024),
            ),
            _ => {
                beh.payload = a.hostile_payload.unwrap_or(64);
                (None, 0.0, 0)
            }
        };
        let topic_names: Vec<String> = (0..topics.unwrap_or(0))
            .map(|t| format!("{tag}-t{t}"))
            .collect();

        let pb = crate::scenarios::count_bar(!a.msg.no_progress, a.hostile as u64, "hostile");
        let loopback = target.addr.ip().is_loopback() && target.addr.is_ipv4();
        let t_setup = now_ns();
        let mut failed = 0;
        let mut setup_errors = Vec::new();
        for i in 0..a.hostile {
            // ~28k ephemeral ports per source address: spread big runs over 127.0.0.x.
            let bind = (loopback && a.hostile > 20_000)
                .then(|| SocketAddr::from(([127, 0, 0, 2 + (i / 20_000) as u8], 0)));
            let opts = ConnectOptions {
                bind,
                ..Default::default()
            };
            let id = format!("{tag}-h{i}");
            let opened = adapter
                .connect(target.addr, Some(&id), &opts)
                .and_then(|mut c| {
                    if let Some(t) = topic_names.get(i % topic_names.len().max(1)) {
                        adapter.subscribe(&mut c, t)?;
                    }
                    Ok(c)
                });
            match opened {
                Ok(c) => {
                    swarm.add(c, &id, &beh)?;
                }
                Err(e) => {
                    failed += 1;
                    if setup_errors.len() < 5 {
                        setup_errors.push(format!("hostile {i}: {e:#}"));
                    }
                    if failed > 100 && swarm.open() == 0 {
                        bail!("no hostile connection succeeded: {}", setup_errors[0]);
                    }
                }
            }
            if let Some(pb) = &pb {
                if i % 64 == 0 {
                    pb.set_position(i as u64);
                }
            }
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let setup_s = (now_ns() - t_setup) as f64 / 1e9;
        let hostile_connected = swarm.stats.get(&kind).map(|s| s.opened).unwrap_or(0);

        // The well-behaved side.
        let n_wb = a.msg.connections.unwrap_or(1).max(1);
        let mut specs = Vec::new();
        for i in 0..n_wb {
            specs.push(ConnSpec {
                conn: adapter
                    .connect(
                        target.addr,
                        Some(&format!("{tag}-w{i}")),
                        &ConnectOptions::default(),
                    )
                    .with_context(|| format!("opening the well-behaved connection {i}"))?,
                send: Some((SendKind::Request { target: None }, i as u32)),
                target: 0,
            });
        }
        let reps = a.msg.repetitions.max(1);
        let window_ns = ((a.msg.duration * 1e9) as u64 / reps as u64).max(1);
        let t0 = now_ns() + 200_000_000;
        let attack_start = t0 + (a.msg.warmup * 1e9) as u64;
        let attack_end = attack_start + window_ns * reps as u64;
        if !topic_names.is_empty() {
            let c = adapter
                .connect(
                    target.addr,
                    Some(&format!("{tag}-pub")),
                    &ConnectOptions::default(),
                )
                .context("opening the well-behaved publisher")?;
            let pacer = Pacer::new(Schedule::new(attack_start, publish_rate, 1, 0), attack_end);
            swarm.set_publisher(Publisher::new(
                c,
                pacer,
                publish_rate,
                topic_names.clone(),
                publish_payload,
            )?)?;
        }

        let cores = lg_cores.clone();
        let driver = std::thread::Builder::new().name("hostile".into()).spawn(
            move || -> Result<DriverOut> {
                if let Some(c) = &cores {
                    sys::set_affinity(0, c)?;
                }
                let mut cpu_start = None;
                let mut active = false;
                loop {
                    let now = now_ns();
                    if now >= attack_end {
                        break;
                    }
                    if !active && now >= attack_start {
                        swarm.set_active(true, now);
                        cpu_start = cpu(pid);
                        active = true;
                    }
                    swarm.step(if active { attack_end } else { attack_start })?;
                }
                let ended_at = now_ns();
                let rss_end = rss(pid);
                let cpu_end = cpu(pid);
                swarm.finish(now_ns() + 5_000_000_000);
                let closed_at = now_ns();
                let publisher = swarm.publisher_report();
                let stats = swarm.stats.remove(&kind).unwrap_or_default();
                drop(swarm);
                Ok(DriverOut {
                    stats,
                    publisher,
                    rss_end,
                    cpu_start,
                    cpu_end,
                    ended_at,
                    closed_at,
                })
            },
        )?;

        let cfg = RunConfig {
            mode: Mode::Open {
                rate: a.msg.rate.unwrap_or(1000.0),
            },
            per_write: 1,
            payload: a.msg.payload.max(crate::payload::MIN_PAYLOAD),
            warmup: Duration::from_secs_f64(a.msg.warmup),
            window: Duration::from_nanos(window_ns),
            reps,
            drain: Duration::from_secs_f64(a.msg.drain),
            threads: a.msg.threads,
            cores: lg_cores.clone(),
            spin: a.msg.spin,
            spin_before_ns: a.msg.spin_us * 1000,
            answers_per_msg: 1,
            track_slowest: false,
            max_unsent: 64 << 20,
            start_ns: Some(t0),
            local_target: None,
        };
        let total_ms = attack_end.saturating_sub(now_ns()) / 1_000_000 + 100;
        let pb = scenarios::progress_bar(&a.msg, total_ms, kind.name());
        let mut probe = target.probe();
        let engine_out = engine::run(specs, &cfg, adapter.clone(), &mut probe, pb.as_ref());
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let d = driver
            .join()
            .map_err(|_| anyhow::anyhow!("the hostile thread panicked"))??;
        let out = engine_out?;
        phases.push(Phase {
            name: "warm-up".into(),
            t_s: secs_since(origin, t0),
        });
        phases.push(Phase {
            name: "attack".into(),
            t_s: secs_since(origin, attack_start),
        });
        phases.push(Phase {
            name: "closing".into(),
            t_s: secs_since(origin, d.ended_at),
        });
        phases.push(Phase {
            name: "after".into(),
            t_s: secs_since(origin, d.closed_at),
        });
        clock::sleep_until(d.closed_at + (a.after * 1e9) as u64);
        let rss_after = rss(pid);
        let cpu_after = cpu(pid);
        let series = sampler.stop();
        let server_alive = target.alive();

        let meta = RunMeta {
            mode: cfg.mode,
            connections: n_wb,
            payload: cfg.payload,
            warmup_s: a.msg.warmup,
            answers_per_msg: 1,
            p99_bound_us: Some(a.msg.p99_bound),
            spin: a.msg.spin || a.msg.spin_us > 0,
            per_write: cfg.per_write,
        };
        let (rr, h, _) = report::build_run(&out, &meta);
        let well_behaved = WellBehaved {
            connections: n_wb,
            disconnected: rr.dead_connections > 0,
            errors: rr.errors,
            missing: rr.missing,
            samples: rr.latency.count,
        };
        let attack = AttackReport {
            kind,
            behaviour: beh,
            hostile_requested: a.hostile,
            hostile_connected,
            setup_failed: failed,
            setup_errors,
            setup_s,
            topics,
            attack_s: (attack_end - attack_start) as f64 / 1e9,
            memory: MemoryReport::new(
                interval,
                rss_baseline,
                d.rss_end,
                rss_after,
                a.after,
                std::mem::take(&mut phases),
                series,
            ),
            server_cpu_s: CpuPhases {
                setup_s: delta(cpu0, d.cpu_start),
                attack_s: delta(d.cpu_start, d.cpu_end),
                after_s: delta(d.cpu_end, cpu_after),
            },
            hostile: d.stats,
            close_detection: crate::hostile::close_detection(target.addr).to_string(),
            publisher: d.publisher,
            well_behaved,
            server_alive,
        };
        Ok((attack, rr, h))
    })();
    let server = target.finish()?;
    let (attack, mut rr, h) = result?;

    println!(
        "attack {} / peerd / open-loop — server {} at {}; the well-behaved peer's echo RPC latency during the attack:",
        kind.name(),
        server.kind,
        server.address
    );
    println!("{}", output::table_header());
    print!("{}", output::table_rows(&rr));
    for l in summary_lines(&attack) {
        println!("  {l}");
    }
    let f = format!("{name}-{}.hgrm", rr.label);
    output::write_hgrm(&dir.join(&f), &h)?;
    rr.files.push(f);
    let rss_svg = format!("{name}-rss.svg");
    output::plot_memory(
        &dir.join(&rss_svg),
        &format!("{name}: server RSS"),
        &attack.memory,
    )?;
    rr.files.push(rss_svg);
    for w in &rr.warnings {
        warnings.push(format!("{}: {w}", rr.label));
    }
    let series = vec![(
        format!("{name} well-behaved {}", rr.label),
        hist::percentile_points(&h),
    )];
    let alive = attack.server_alive;
    let rep = Report {
        schema_version: report::SCHEMA_VERSION,
        tool: "peerd-loadgen",
        scenario: "attack".into(),
        protocol: "peerd".into(),
        mode: "open-loop".into(),
        started_unix_s: started,
        command_line: crate::command_line(),
        environment,
        server,
        pinning: pin,
        settings,
        runs: vec![rr],
        knee: None,
        idle: None,
        attack: Some(attack),
        soak: None,
        warnings,
    };
    scenarios::finish_report(&rep, &dir, &name, &series)?;
    if !alive {
        bail!("the server died during the attack ({:?})", rep.server.exit);
    }
    Ok(())
}
