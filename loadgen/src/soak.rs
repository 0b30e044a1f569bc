//! The `soak` scenario: a bounded mixed run. For `--duration` s, at once:
//!
//! - well-behaved publishers publish to `--topics` topics round-robin at `--rate` in total,
//!   each message stamped with (publisher, topic, sequence number per publisher and topic,
//!   intended send time); well-behaved subscribers (`--subscribers` per topic) check that
//!   every publisher's sequence arrives complete, once, and in order;
//! - churn: connect, handshake, Close{normal}, at `--churn-rate`;
//! - takeovers: a second connection resumes the first's peer id with its resume token, and
//!   the first must receive Close{replaced}, at `--takeover-rate`;
//! - resets: connect, handshake, Join a soak topic, RST, at `--reset-rate`;
//! - hostile connections held at once, each for `--hold` s (then reset and replaced) unless
//!   the server closes it first: slow consumers (joined to every topic, never reading),
//!   partial frames, relay floods and pipeliners (see [`crate::hostile`]).
//!
//! Server RSS and CPU are sampled throughout. The run fails (non-zero exit, after writing
//! the report) when a well-behaved subscriber lost, duplicated or reordered a message, a
//! well-behaved connection was cut, or the server died or stopped answering.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use peerd_codec::{encode, split_frame, Close, Code, Frame, Join, Pong, Publish, RpcRequest};
use serde::Serialize;

use crate::adapter::peerd::handshake;
use crate::adapter::{self, read_until, Adapter, ConnectOptions, Connected};
use crate::attack::mib;
use crate::cli::SoakArgs;
use crate::clock::{self, now_ns};
use crate::hist::{self, Hist, LatencySummary};
use crate::hostile::{code_name, Behaviour, Kind, KindStats, Skimmer, Swarm};
use crate::output;
use crate::report::{self, Report};
use crate::sampler::{secs_since, MemoryReport, Phase, Sampler};
use crate::scenarios::{self, Prepared};
use crate::schedule::{Pacer, Schedule};
use crate::sys;

/// One of the connect loops (churn, takeover, reset).
#[derive(Debug, Clone, Serialize)]
pub struct LoopReport {
    /// churn, takeover or reset.
    pub name: String,
    /// What one iteration does.
    pub what: String,
    /// Iterations per second asked for.
    pub rate: f64,
    /// Iterations started.
    pub attempts: u64,
    /// Iterations that did all they should.
    pub ok: u64,
    /// Iterations that failed (the first few errors below).
    pub failed: u64,
    /// Outcome counts (takeover: the close code the replaced connection got).
    pub counts: BTreeMap<String, u64>,
    /// The first few errors.
    pub first_errors: Vec<String>,
}

/// The well-behaved publishers and subscribers.
#[derive(Debug, Clone, Serialize)]
pub struct PubSubReport {
    /// Publishers.
    pub publishers: usize,
    /// Subscribers per topic.
    pub subscribers_per_topic: usize,
    /// Topics.
    pub topics: usize,
    /// Publishes per second over all publishers.
    pub rate: f64,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Messages published (encoded for sending).
    pub published: u64,
    /// Deliveries the subscribers should have received (each message times the
    /// subscribers of its topic).
    pub expected_deliveries: u64,
    /// Deliveries received (duplicates included).
    pub delivered: u64,
    /// Sequence numbers never received.
    pub lost: u64,
    /// Sequence numbers received more than once.
    pub duplicated: u64,
    /// Sequence numbers received after a later one.
    pub reordered: u64,
    /// Deliveries without the soak's stamp, or for a topic the subscriber did not join.
    pub foreign: u64,
    /// Status failures the server sent the well-behaved connections.
    pub status_errors: u64,
    /// Subscribers the server (or the network) cut: name and why.
    pub subscribers_disconnected: Vec<String>,
    /// Publishers cut, or that the server stopped reading: name and why.
    pub publishers_failed: Vec<String>,
    /// Publish (intended send time) to receipt, every delivery.
    pub latency: LatencySummary,
    /// Seconds waited after the last publish for the last deliveries.
    pub drain_s: f64,
}

/// What a soak did and found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Length of the load, seconds.
    pub duration_s: f64,
    /// The connect loops.
    pub loops: Vec<LoopReport>,
    /// Hostile connections held at once, by behaviour.
    pub hostile_held: BTreeMap<String, usize>,
    /// Seconds each hostile connection is held before the loadgen replaces it.
    pub hostile_hold_s: f64,
    /// How each kind of hostile connection fared.
    pub hostile: BTreeMap<String, KindStats>,
    /// How closes by the server were detected.
    pub close_detection: String,
    /// Hostile connections that could not be opened: the first few errors.
    pub hostile_setup_errors: Vec<String>,
    /// The well-behaved publishers and subscribers.
    pub pubsub: PubSubReport,
    /// Server memory over the run.
    pub memory: MemoryReport,
    /// Server CPU seconds over the load.
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds from the end of the load to the "RSS after" reading.
    pub server_cpu_after_s: Option<f64>,
    /// The server was still running at the end.
    pub server_alive: bool,
    /// A fresh connection's echo call after the soak: "ok" or the error.
    pub final_echo: String,
    /// Why the soak failed (empty when it passed).
    pub failures: Vec<String>,
    /// No failures.
    pub ok: bool,
}

/// The soak's name for a hostile kind.
fn soak_name(k: Kind) -> &'static str {
    match k {
        Kind::SlowReader | Kind::SlowSubscribers => "slow-consumers",
        Kind::PartialFrames => "partial-frames",
        Kind::RelayFlood => "relay-floods",
        Kind::Pipeline => "pipeliners",
        Kind::Flood => "flooders",
    }
}

/// One line per fact, for the terminal and the markdown report.
pub fn summary_lines(s: &SoakReport) -> Vec<String> {
    let p = &s.pubsub;
    let l = &p.latency;
    let mut v = vec![
        format!(
            "soak {:.1} s: {}; server alive at the end: {}, a fresh connection's echo: {}",
            s.duration_s,
            if s.ok { "PASSED" } else { "FAILED" },
            if s.server_alive { "yes" } else { "NO" },
            s.final_echo
        ),
        format!(
            "well-behaved pub/sub: {} publishers -> {} topics x {} subscribers, {}/s of {} B: {} published, {} deliveries expected, {} received; lost {}, duplicated {}, reordered {}, foreign {}; subscribers cut {}, publishers failed {}",
            p.publishers,
            p.topics,
            p.subscribers_per_topic,
            p.rate,
            p.payload_bytes,
            p.published,
            p.expected_deliveries,
            p.delivered,
            p.lost,
            p.duplicated,
            p.reordered,
            p.foreign,
            p.subscribers_disconnected.len(),
            p.publishers_failed.len()
        ),
        format!(
            "delivery latency (µs, {} samples): p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, p99.99 {:.1}, max {:.1}",
            l.count, l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
        ),
    ];
    for lp in &s.loops {
        v.push(format!(
            "{} ({}, {}/s): {} started, {} ok, {} failed{}",
            lp.name,
            lp.what,
            lp.rate,
            lp.attempts,
            lp.ok,
            lp.failed,
            if lp.counts.is_empty() {
                String::new()
            } else {
                format!("; {}", crate::output::join_counts(&lp.counts))
            }
        ));
    }
    for (name, k) in &s.hostile {
        let codes: Vec<String> = k
            .close_codes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        v.push(format!(
            "{name} (held {} at once, {:.1} s each): {} opened, {} closed by the server ({}; EOF {}, reset {}, unread {}), {} replaced by the loadgen, {} open at the end; {} messages sent",
            s.hostile_held.get(name).copied().unwrap_or(0),
            s.hostile_hold_s,
            k.opened,
            k.closed_by_server,
            if codes.is_empty() { "no Close".into() } else { codes.join(", ") },
            k.eof_without_close,
            k.resets,
            k.closed_unread,
            k.closed_by_loadgen,
            k.open_at_end,
            k.messages_sent
        ));
    }
    let m = &s.memory;
    v.push(format!(
        "server RSS: baseline {}, peak {}{}, end of load {}, {:.0} s after {}; server CPU {} s over the load, {} s after",
        mib(m.baseline_rss_bytes),
        mib(m.peak_rss_bytes),
        m.peak_at_s.map(|t| format!(" at {t:.1} s")).unwrap_or_default(),
        mib(m.at_end_rss_bytes),
        m.after_wait_s,
        mib(m.after_rss_bytes),
        s.server_cpu_s.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
        s.server_cpu_after_s.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
    ));
    for f in &s.failures {
        v.push(format!("FAILURE: {f}"));
    }
    v
}

// ---------------------------------------------------------------------------------------
// Well-behaved publishers and subscribers.

/// Bytes of the soak stamp: intended send time u64, publisher u32, topic u32, sequence u64.
const STAMP: usize = 24;

fn stamp(buf: &mut Vec<u8>, size: usize, intended: u64, publisher: u32, topic: u32, seq: u64) {
    buf.clear();
    buf.extend_from_slice(&intended.to_le_bytes());
    buf.extend_from_slice(&publisher.to_le_bytes());
    buf.extend_from_slice(&topic.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.resize(size.max(STAMP), b's');
}

fn read_stamp(p: &[u8]) -> Option<(u64, u32, u32, u64)> {
    Some((
        u64::from_le_bytes(p.get(0..8)?.try_into().ok()?),
        u32::from_le_bytes(p.get(8..12)?.try_into().ok()?),
        u32::from_le_bytes(p.get(12..16)?.try_into().ok()?),
        u64::from_le_bytes(p.get(16..24)?.try_into().ok()?),
    ))
}

/// One publisher's sequence as one subscriber sees it.
#[derive(Debug, Default, Clone)]
pub struct SeqCheck {
    next: u64,
    missing: BTreeSet<u64>,
    missing_overflow: u64,
    /// Received, duplicates included.
    pub received: u64,
    /// Received again.
    pub duplicated: u64,
    /// Received after a later one.
    pub reordered: u64,
}

/// Most sequence gaps remembered one by one per stream (beyond, they are only counted).
const MAX_MISSING: usize = 1 << 20;

impl SeqCheck {
    /// Sequence number `seq` arrived.
    pub fn see(&mut self, seq: u64) {
        self.received += 1;
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            for s in self.next..seq {
                if self.missing.len() < MAX_MISSING {
                    self.missing.insert(s);
                } else {
                    self.missing_overflow += 1;
                }
            }
            self.next = seq + 1;
        } else if self.missing.remove(&seq) {
            self.reordered += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Sequence numbers below `expected` (the count the publisher sent) never received.
    pub fn lost(&self, expected: u64) -> u64 {
        self.missing.len() as u64 + self.missing_overflow + expected.saturating_sub(self.next)
    }

    /// Whether everything below `expected` arrived.
    pub fn complete(&self, expected: u64) -> bool {
        self.next >= expected && self.missing.is_empty() && self.missing_overflow == 0
    }
}

enum Role {
    Pub {
        index: u32,
        pacer: Pacer,
        seqs: Vec<u64>,
        rr: usize,
    },
    Sub {
        topic: u32,
        checks: Vec<SeqCheck>,
    },
}

struct PsConn {
    name: String,
    stream: TcpStream,
    rbuf: Vec<u8>,
    rlen: usize,
    wbuf: BytesMut,
    role: Role,
    gone: Option<String>,
}

/// Largest frame body accepted from the server.
const MAX_BODY: u32 = 64 << 20;
/// A publisher with more than this unsent has been stopped by the server.
const MAX_UNSENT: usize = 32 << 20;

struct PubSubCounters {
    published: AtomicU64,
    delivered: AtomicU64,
}

struct PubSubSetup {
    publishers: Vec<Connected>,
    subscribers: Vec<(Connected, u32)>,
    topics: Vec<String>,
    rate: f64,
    payload: usize,
    subscribers_per_topic: usize,
}

impl PsConn {
    fn flush(&mut self) {
        while !self.wbuf.is_empty() && self.gone.is_none() {
            match (&self.stream).write(&self.wbuf) {
                Ok(0) => self.gone = Some("write returned 0".into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.gone = Some(format!("write: {e}")),
            }
        }
    }

    /// Read and handle everything available; returns deliveries seen.
    fn read(
        &mut self,
        npub: usize,
        hist: &mut Hist,
        status_errors: &mut u64,
        foreign: &mut u64,
    ) -> u64 {
        let mut delivered = 0;
        loop {
            if self.rbuf.len() - self.rlen < 16 * 1024 {
                let n = (self.rbuf.len() * 2).max(64 * 1024);
                self.rbuf.resize(n, 0);
            }
            match (&self.stream).read(&mut self.rbuf[self.rlen..]) {
                Ok(0) => {
                    self.gone
                        .get_or_insert_with(|| "EOF from the server".into());
                    break;
                }
                Ok(n) => self.rlen += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.gone.get_or_insert_with(|| format!("read: {e}"));
                    break;
                }
            }
            // Parse what is complete.
            let now = now_ns();
            let mut used = 0;
            loop {
                let (raw, n) = match split_frame(&self.rbuf[used..self.rlen], MAX_BODY) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => {
                        self.gone = Some(format!("bad frame from the server: {e}"));
                        break;
                    }
                };
                used += n;
                match raw.decode() {
                    Ok(Frame::TopicMessage(m)) => {
                        delivered += 1;
                        match (&mut self.role, read_stamp(m.payload.as_slice())) {
                            (Role::Sub { topic, checks }, Some((t, p, tp, seq)))
                                if tp == *topic && (p as usize) < npub =>
                            {
                                hist::record(hist, now.saturating_sub(t));
                                checks[p as usize].see(seq);
                            }
                            _ => *foreign += 1,
                        }
                    }
                    Ok(Frame::Ping(p)) => {
                        let _ = encode(
                            &Pong {
                                nonce: p.nonce.to_native(),
                            },
                            &mut self.wbuf,
                            u32::MAX,
                        );
                    }
                    Ok(Frame::Status(s)) if s.code.to_native() != 0 => *status_errors += 1,
                    Ok(Frame::Close(c)) => {
                        self.gone.get_or_insert_with(|| {
                            format!(
                                "Close {} ({})",
                                Code::describe(c.code.to_native()),
                                c.reason.as_str()
                            )
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.gone = Some(format!("invalid frame from the server: {e}"));
                    }
                }
            }
            self.rbuf.copy_within(used..self.rlen, 0);
            self.rlen -= used;
            if self.gone.is_some() {
                break;
            }
        }
        self.flush();
        delivered
    }
}

fn run_pubsub(
    setup: PubSubSetup,
    start: u64,
    end: u64,
    drain: Duration,
    counters: Arc<PubSubCounters>,
    cores: Option<Vec<usize>>,
) -> Result<(PubSubReport, Hist)> {
    if let Some(c) = &cores {
        sys::set_affinity(0, c)?;
    }
    clock::tight_timer_slack();
    let PubSubSetup {
        publishers,
        subscribers,
        topics,
        rate,
        payload,
        subscribers_per_topic,
    } = setup;
    let npub = publishers.len();
    let ntopics = topics.len();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns = Vec::new();
    let mut add = |c: Connected, name: String, role: Role| -> Result<()> {
        c.stream.set_nonblocking(true)?;
        c.stream.set_read_timeout(None)?;
        poll.registry().register(
            &mut SourceFd(&c.stream.as_raw_fd()),
            Token(conns.len()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut rbuf = vec![0u8; 64 * 1024];
        let rlen = c.leftover.len().min(rbuf.len());
        rbuf[..rlen].copy_from_slice(&c.leftover[..rlen]);
        conns.push(PsConn {
            name,
            stream: c.stream,
            rbuf,
            rlen,
            wbuf: BytesMut::with_capacity(64 * 1024),
            role,
            gone: None,
        });
        Ok(())
    };
    for (i, c) in publishers.into_iter().enumerate() {
        add(
            c,
            format!("publisher {i}"),
            Role::Pub {
                index: i as u32,
                pacer: Pacer::new(Schedule::new(start, rate, npub as u64, i as u64), end),
                seqs: vec![0; ntopics],
                rr: i,
            },
        )?;
    }
    for (i, (c, topic)) in subscribers.into_iter().enumerate() {
        add(
            c,
            format!("subscriber {i} (topic {topic})"),
            Role::Sub {
                topic,
                checks: vec![SeqCheck::default(); npub],
            },
        )?;
    }
    let mut hist = hist::new_hist();
    let (mut status_errors, mut foreign, mut delivered) = (0u64, 0u64, 0u64);
    let mut published = 0u64;
    let mut pbuf = Vec::with_capacity(payload.max(STAMP));
    let mut publishers_failed = Vec::new();
    let drain_deadline = end + drain.as_nanos() as u64;
    let drained_at = loop {
        let now = now_ns();
        // Publish what is due.
        for c in conns.iter_mut() {
            let Role::Pub {
                index,
                pacer,
                seqs,
                rr,
            } = &mut c.role
            else {
                continue;
            };
            if c.gone.is_some() {
                continue;
            }
            let mut any = false;
            while let Some((_, t)) = pacer.pop_due(now) {
                let topic = *rr % ntopics;
                *rr += 1;
                stamp(&mut pbuf, payload, t, *index, topic as u32, seqs[topic]);
                encode(
                    &Publish {
                        req: 0,
                        topic: Cow::Borrowed(&topics[topic]),
                        echo: false,
                        payload: Cow::Borrowed(&pbuf),
                    },
                    &mut c.wbuf,
                    u32::MAX,
                )
                .map_err(|e| anyhow!("encoding a publish: {e}"))?;
                seqs[topic] += 1;
                published += 1;
                any = true;
            }
            if any {
                c.flush();
                if c.wbuf.len() > MAX_UNSENT {
                    c.gone = Some(format!(
                        "more than {} MiB unsent: the server stopped reading it",
                        MAX_UNSENT >> 20
                    ));
                }
            }
        }
        counters.published.store(published, Ordering::Relaxed);
        counters.delivered.store(delivered, Ordering::Relaxed);
        if now >= end {
            let expected: Vec<Vec<u64>> = conns
                .iter()
                .filter_map(|c| match &c.role {
                    Role::Pub { seqs, .. } => Some(seqs.clone()),
                    Role::Sub { .. } => None,
                })
                .collect();
            let complete = conns.iter().all(|c| match &c.role {
                Role::Sub { topic, checks } => {
                    c.gone.is_some()
                        || checks
                            .iter()
                            .zip(&expected)
                            .all(|(k, e)| k.complete(e[*topic as usize]))
                }
                Role::Pub { .. } => c.gone.is_some() || c.wbuf.is_empty(),
            });
            if complete || now >= drain_deadline {
                break now;
            }
        }
        let next = conns
            .iter()
            .filter_map(|c| match &c.role {
                Role::Pub { pacer, .. } if c.gone.is_none() => pacer.next_time(),
                _ => None,
            })
            .min()
            .unwrap_or(now + 10_000_000)
            .min(now + 10_000_000);
        let timeout = Duration::from_nanos(next.saturating_sub(now_ns()));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.gone.is_some() {
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                delivered += c.read(npub, &mut hist, &mut status_errors, &mut foreign);
            }
            if ev.is_writable() {
                c.flush();
            }
        }
    };
    let expected: Vec<Vec<u64>> = conns
        .iter()
        .filter_map(|c| match &c.role {
            Role::Pub { seqs, .. } => Some(seqs.clone()),
            Role::Sub { .. } => None,
        })
        .collect();
    let (mut lost, mut duplicated, mut reordered, mut expected_deliveries) = (0, 0, 0, 0);
    let mut subscribers_disconnected = Vec::new();
    for c in &conns {
        match &c.role {
            Role::Sub { topic, checks } => {
                for (k, e) in checks.iter().zip(&expected) {
                    let e = e[*topic as usize];
                    expected_deliveries += e;
                    lost += k.lost(e);
                    duplicated += k.duplicated;
                    reordered += k.reordered;
                }
                if let Some(g) = &c.gone {
                    subscribers_disconnected.push(format!("{}: {g}", c.name));
                }
            }
            Role::Pub { .. } => {
                if let Some(g) = &c.gone {
                    publishers_failed.push(format!("{}: {g}", c.name));
                } else if !c.wbuf.is_empty() {
                    publishers_failed.push(format!(
                        "{}: {} bytes still unsent after the drain",
                        c.name,
                        c.wbuf.len()
                    ));
                }
            }
        }
    }
    let latency = LatencySummary::of(&hist);
    let report = PubSubReport {
        publishers: npub,
        subscribers_per_topic,
        topics: ntopics,
        rate,
        payload_bytes: payload.max(STAMP),
        published,
        expected_deliveries,
        delivered,
        lost,
        duplicated,
        reordered,
        foreign,
        status_errors,
        subscribers_disconnected,
        publishers_failed,
        latency,
        drain_s: secs_since(end, drained_at),
    };
    Ok((report, hist))
}

// ---------------------------------------------------------------------------------------
// Connect loops.

/// Read `s` until a Close frame (its code), EOF (None) or the deadline.
fn read_close(s: &mut TcpStream, leftover: &[u8], within: Duration) -> Result<Option<u16>> {
    let mut sk = Skimmer::default();
    sk.feed(leftover, &mut |_| {});
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 16 * 1024];
    while sk.close.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no Close frame within {within:?}");
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => sk.feed(&buf[..n], &mut |_| {}),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(sk.close),
            Err(e) => return Err(e).context("reading the replaced connection"),
        }
    }
    Ok(sk.close)
}

fn send_close(s: &mut TcpStream) {
    let mut b = BytesMut::new();
    if encode(
        &Close {
            code: Code::Normal.as_u16(),
            reason: Cow::Borrowed("bye"),
        },
        &mut b,
        u32::MAX,
    )
    .is_ok()
    {
        let _ = s.write_all(&b);
    }
}

/// Run `op` at `rate` per second from `start` until `end` (never two at once; a slow
/// iteration delays the next one rather than bunching them).
fn run_loop(
    name: &str,
    what: &str,
    rate: f64,
    start: u64,
    end: u64,
    cores: Option<Vec<usize>>,
    mut op: impl FnMut(u64, &mut BTreeMap<String, u64>) -> Result<()>,
) -> LoopReport {
    if let Some(c) = &cores {
        let _ = sys::set_affinity(0, c);
    }
    let mut r = LoopReport {
        name: name.into(),
        what: what.into(),
        rate,
        attempts: 0,
        ok: 0,
        failed: 0,
        counts: BTreeMap::new(),
        first_errors: Vec::new(),
    };
    if rate <= 0.0 {
        return r;
    }
    let period = (1e9 / rate) as u64;
    let mut next = start;
    loop {
        clock::sleep_until(next);
        let now = now_ns();
        if now >= end {
            break;
        }
        match op(r.attempts, &mut r.counts) {
            Ok(()) => r.ok += 1,
            Err(e) => {
                r.failed += 1;
                if r.first_errors.len() < 5 {
                    r.first_errors.push(format!("{e:#}"));
                }
            }
        }
        r.attempts += 1;
        next = (next + period).max(now);
    }
    r
}

// ---------------------------------------------------------------------------------------
// The hostile connections.

struct HostileOut {
    stats: BTreeMap<Kind, KindStats>,
    errors: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn run_hostiles(
    mut swarm: Swarm,
    adapter: Arc<dyn Adapter>,
    addr: SocketAddr,
    topics: Vec<String>,
    held: Vec<(Behaviour, usize)>,
    hold_ns: u64,
    start: u64,
    end: u64,
    tag: String,
    cores: Option<Vec<usize>>,
) -> Result<HostileOut> {
    if let Some(c) = &cores {
        sys::set_affinity(0, c)?;
    }
    clock::sleep_until(start);
    swarm.set_active(true, now_ns());
    let mut errors = Vec::new();
    let mut next_refill = 0;
    let mut n = 0u64;
    loop {
        let now = now_ns();
        if now >= end {
            break;
        }
        if now >= next_refill {
            next_refill = now + 100_000_000;
            let mut open: BTreeMap<Kind, usize> = BTreeMap::new();
            for (slot, kind, age) in swarm.slots(now) {
                if age >= hold_ns {
                    swarm.retire(slot);
                } else {
                    *open.entry(kind).or_default() += 1;
                }
            }
            for (beh, want) in &held {
                for _ in open.get(&beh.kind).copied().unwrap_or(0)..*want {
                    let id = format!("{tag}-x{n}");
                    n += 1;
                    let opened = adapter
                        .connect(addr, Some(&id), &ConnectOptions::default())
                        .and_then(|mut c| {
                            if beh.kind == Kind::SlowReader {
                                for t in &topics {
                                    adapter.subscribe(&mut c, t)?;
                                }
                            }
                            Ok(c)
                        });
                    match opened {
                        Ok(c) => {
                            swarm.add(c, &id, beh)?;
                        }
                        Err(e) => {
                            if errors.len() < 5 {
                                errors.push(format!("{}: {e:#}", soak_name(beh.kind)));
                            }
                        }
                    }
                }
            }
        }
        swarm.step(next_refill.min(end))?;
    }
    swarm.finish(now_ns() + 2_000_000_000);
    Ok(HostileOut {
        stats: std::mem::take(&mut swarm.stats),
        errors,
    })
}

/// A fresh connection calls `echo` and must get its params back.
fn final_echo(adapter: &dyn Adapter, addr: SocketAddr) -> Result<()> {
    let c = adapter.connect(addr, None, &ConnectOptions::default())?;
    let mut s = c.stream;
    let mut b = BytesMut::new();
    encode(
        &RpcRequest {
            id: 7,
            method: Cow::Borrowed("echo"),
            peer: None,
            timeout_ms: 0,
            params: Cow::Borrowed(b"soak"),
        },
        &mut b,
        u32::MAX,
    )
    .map_err(|e| anyhow!("encoding: {e}"))?;
    s.write_all(&b)?;
    let mut buf = c.leftover;
    read_until(
        &mut s,
        &mut buf,
        Instant::now() + Duration::from_secs(5),
        |b| {
            let mut used = 0;
            while let Some((raw, n)) = split_frame(&b[used..], MAX_BODY)? {
                used += n;
                match raw.decode()? {
                    Frame::RpcResponse(r) if r.id.to_native() == 7 => {
                        if r.result.as_slice() != b"soak" {
                            bail!("echo answered {:?}", r.result.as_slice());
                        }
                        return Ok(Some(((), used)));
                    }
                    Frame::RpcError(e) => bail!(
                        "echo failed: {} ({})",
                        Code::describe(e.code.to_native()),
                        e.message.as_str()
                    ),
                    _ => {}
                }
            }
            Ok(None)
        },
    )?;
    send_close(&mut s);
    Ok(())
}

/// Run the soak scenario.
pub fn run_soak(a: &SoakArgs, settings: serde_json::Value) -> Result<()> {
    scenarios::check_args(&a.msg)?;
    if let Some(p) = a.msg.protocol.as_deref().filter(|p| *p != "peerd") {
        bail!("soak speaks peerd's protocol, not {p}");
    }
    scenarios::require_tcp("soak", &a.msg)?;
    if a.publishers == 0 || a.subscribers == 0 || a.topics == 0 {
        bail!("--publishers, --subscribers and --topics must be at least 1");
    }
    sys::raise_nofile();
    let adapter: Arc<dyn Adapter> = Arc::from(adapter::by_name("peerd", "soak")?);
    let Prepared {
        dir,
        name,
        started,
        environment,
        mut target,
        lg_cores,
        pin,
        mut warnings,
    } = scenarios::prepare("soak", "peerd", &a.msg)?;
    let pid = target.pid();
    if pid.is_none() {
        warnings.push(
            "server pid unknown (--spawn-server or --server-pid): no RSS or CPU readings".into(),
        );
    }
    let interval = Duration::from_millis(a.sample_ms.max(1));
    let origin = now_ns();
    let addr = target.addr;

    let result = (|| -> Result<(SoakReport, Hist)> {
        let rss_baseline = pid.and_then(|p| sys::rss_bytes(p).ok());
        let swarm = Swarm::new(addr, origin)?;
        let sampler = Sampler::start(
            pid,
            origin,
            interval,
            swarm.gauges.clone(),
            lg_cores.clone(),
        )?;
        let tag = format!("lg{}n{}", std::process::id(), scenarios::run_nonce());
        let topics: Vec<String> = (0..a.topics).map(|t| format!("{tag}-soak{t}")).collect();
        let mut subscribers = Vec::new();
        for (t, topic) in topics.iter().enumerate() {
            for i in 0..a.subscribers {
                let mut c = adapter
                    .connect(
                        addr,
                        Some(&format!("{tag}-s{t}-{i}")),
                        &ConnectOptions::default(),
                    )
                    .context("opening a well-behaved subscriber")?;
                adapter.subscribe(&mut c, topic)?;
                subscribers.push((c, t as u32));
            }
        }
        let mut publishers = Vec::new();
        for i in 0..a.publishers {
            publishers.push(
                adapter
                    .connect(
                        addr,
                        Some(&format!("{tag}-p{i}")),
                        &ConnectOptions::default(),
                    )
                    .context("opening a well-behaved publisher")?,
            );
        }
        let start = now_ns() + 200_000_000;
        let end = start + (a.msg.duration * 1e9) as u64;
        let rate = a.msg.rate.unwrap_or(1000.0);
        let counters = Arc::new(PubSubCounters {
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        let pubsub = {
            let setup = PubSubSetup {
                publishers,
                subscribers,
                topics: topics.clone(),
                rate,
                payload: a.msg.payload,
                subscribers_per_topic: a.subscribers,
            };
            let (counters, cores) = (counters.clone(), lg_cores.clone());
            let drain = Duration::from_secs_f64(a.msg.drain);
            std::thread::Builder::new()
                .name("soak-pubsub".into())
                .spawn(move || run_pubsub(setup, start, end, drain, counters, cores))?
        };
        let gauges = swarm.gauges.clone();
        let hostile = {
            let mk = |kind: Kind| {
                let mut b = Behaviour::new(kind);
                b.rate = a.hostile_rate;
                b.partial_bytes = a.partial_bytes;
                b
            };
            let held = vec![
                (mk(Kind::SlowReader), a.slow_consumers),
                (mk(Kind::PartialFrames), a.partial_frames),
                (mk(Kind::RelayFlood), a.relay_floods),
                (mk(Kind::Pipeline), a.pipeliners),
            ];
            let (adapter, topics, tag, cores) = (
                adapter.clone(),
                topics.clone(),
                tag.clone(),
                lg_cores.clone(),
            );
            let hold_ns = (a.hold * 1e9) as u64;
            std::thread::Builder::new()
                .name("soak-hostile".into())
                .spawn(move || {
                    run_hostiles(
                        swarm, adapter, addr, topics, held, hold_ns, start, end, tag, cores,
                    )
                })?
        };
        let mut loops = Vec::new();
        let (churn_rate, takeover_rate, reset_rate) = (a.churn_rate, a.takeover_rate, a.reset_rate);
        {
            let (ad, cores) = (adapter.clone(), lg_cores.clone());
            loops.push(
                std::thread::Builder::new()
                    .name("soak-churn".into())
                    .spawn(move || {
                        run_loop(
                            "churn",
                            "connect, handshake, Close{normal}, close",
                            churn_rate,
                            start,
                            end,
                            cores,
                            |_, _| {
                                let mut c = ad.connect(addr, None, &ConnectOptions::default())?;
                                send_close(&mut c.stream);
                                Ok(())
                            },
                        )
                    })?,
            );
        }
        {
            let (tag, cores) = (tag.clone(), lg_cores.clone());
            loops.push(std::thread::Builder::new().name("soak-takeover".into()).spawn(move || {
                run_loop(
                    "takeover",
                    "connect as X, connect again as X with X's resume token; the first must get Close{replaced}",
                    takeover_rate,
                    start,
                    end,
                    cores,
                    |i, counts| {
                        let id = format!("{tag}-tk{i}");
                        let opts = ConnectOptions::default();
                        let (mut first, w) = handshake(addr, Some(&id), None, &opts)?;
                        let (mut second, w2) =
                            handshake(addr, Some(&id), Some(&w.resume_token), &opts)?;
                        if w2.peer_id != id {
                            bail!("the takeover was welcomed as {} instead of {id}", w2.peer_id);
                        }
                        let code = read_close(
                            &mut first.stream,
                            &first.leftover,
                            Duration::from_secs(5),
                        )?;
                        send_close(&mut second.stream);
                        let what = match code {
                            Some(c) => format!("old connection got {}", code_name(c)),
                            None => "old connection got EOF without Close".into(),
                        };
                        *counts.entry(what).or_default() += 1;
                        if code != Some(Code::Replaced.as_u16()) {
                            bail!("the replaced connection got {code:?}, not Close{{replaced}}");
                        }
                        Ok(())
                    },
                )
            })?);
        }
        {
            let (ad, topics, cores) = (adapter.clone(), topics.clone(), lg_cores.clone());
            loops.push(
                std::thread::Builder::new()
                    .name("soak-reset".into())
                    .spawn(move || {
                        run_loop(
                            "reset",
                            "connect, handshake, Join a soak topic, RST",
                            reset_rate,
                            start,
                            end,
                            cores,
                            |i, _| {
                                let mut c = ad.connect(addr, None, &ConnectOptions::default())?;
                                let mut b = BytesMut::new();
                                encode(
                                    &Join {
                                        req: 0,
                                        topic: Cow::Borrowed(&topics[i as usize % topics.len()]),
                                    },
                                    &mut b,
                                    u32::MAX,
                                )
                                .map_err(|e| anyhow!("encoding Join: {e}"))?;
                                c.stream.write_all(&b)?;
                                socket2::SockRef::from(&c.stream)
                                    .set_linger(Some(Duration::ZERO))?;
                                Ok(())
                            },
                        )
                    })?,
            );
        }

        // Watch the load go by.
        let pb = scenarios::progress_bar(&a.msg, (a.msg.duration * 1000.0) as u64 + 200, "soak");
        let mut cpu_start = None;
        loop {
            let now = now_ns();
            if cpu_start.is_none() && now >= start {
                cpu_start = pid.and_then(|p| sys::process_cpu_s(p).ok());
            }
            if let Some(pb) = &pb {
                pb.set_position(now.saturating_sub(origin) / 1_000_000);
                pb.set_message(format!(
                    "published {} delivered {} hostile open {}",
                    counters.published.load(Ordering::Relaxed),
                    counters.delivered.load(Ordering::Relaxed),
                    gauges.open.load(Ordering::Relaxed)
                ));
            }
            if now >= end {
                break;
            }
            clock::sleep_until(end.min(now + 100_000_000));
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let rss_end = pid.and_then(|p| sys::rss_bytes(p).ok());
        let cpu_end = pid.and_then(|p| sys::process_cpu_s(p).ok());
        let loops: Vec<LoopReport> = loops
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a soak loop panicked")))
            .collect::<Result<_>>()?;
        let hostile = hostile
            .join()
            .map_err(|_| anyhow!("the hostile thread panicked"))??;
        let (pubsub, lat) = pubsub
            .join()
            .map_err(|_| anyhow!("the pub/sub thread panicked"))??;
        let closed_at = now_ns();
        let final_echo = match final_echo(&*adapter, addr) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("{e:#}"),
        };
        clock::sleep_until(closed_at + (a.after * 1e9) as u64);
        let rss_after = pid.and_then(|p| sys::rss_bytes(p).ok());
        let cpu_after = pid.and_then(|p| sys::process_cpu_s(p).ok());
        let series = sampler.stop();
        let server_alive = target.alive();

        let mut failures = Vec::new();
        let p = &pubsub;
        if p.lost > 0 {
            failures.push(format!(
                "well-behaved subscribers lost {} of {} messages",
                p.lost, p.expected_deliveries
            ));
        }
        if p.duplicated > 0 || p.reordered > 0 {
            failures.push(format!(
                "well-behaved subscribers got {} duplicated and {} reordered messages",
                p.duplicated, p.reordered
            ));
        }
        for s in p
            .subscribers_disconnected
            .iter()
            .chain(&p.publishers_failed)
        {
            failures.push(format!("well-behaved {s}"));
        }
        if !server_alive {
            failures.push("the server died".into());
        }
        if final_echo != "ok" {
            failures.push(format!(
                "a fresh connection's echo call after the soak failed: {final_echo}"
            ));
        }
        let mut hostile_held = BTreeMap::new();
        for (k, n) in [
            (Kind::SlowReader, a.slow_consumers),
            (Kind::PartialFrames, a.partial_frames),
            (Kind::RelayFlood, a.relay_floods),
            (Kind::Pipeline, a.pipeliners),
        ] {
            hostile_held.insert(soak_name(k).to_string(), n);
        }
        let phases = vec![
            Phase {
                name: "setup".into(),
                t_s: 0.0,
            },
            Phase {
                name: "soak".into(),
                t_s: secs_since(origin, start),
            },
            Phase {
                name: "after".into(),
                t_s: secs_since(origin, closed_at),
            },
        ];
        let report = SoakReport {
            duration_s: a.msg.duration,
            loops,
            hostile_held,
            hostile_hold_s: a.hold,
            hostile: hostile
                .stats
                .into_iter()
                .map(|(k, s)| (soak_name(k).to_string(), s))
                .collect(),
            close_detection: crate::hostile::close_detection(addr).to_string(),
            hostile_setup_errors: hostile.errors,
            pubsub,
            memory: MemoryReport::new(
                interval,
                rss_baseline,
                rss_end,
                rss_after,
                a.after,
                phases,
                series,
            ),
            server_cpu_s: cpu_start.zip(cpu_end).map(|(s, e)| e - s),
            server_cpu_after_s: cpu_end.zip(cpu_after).map(|(s, e)| e - s),
            server_alive,
            final_echo,
            ok: failures.is_empty(),
            failures,
        };
        Ok((report, lat))
    })();
    let server = target.finish()?;
    let (soak, lat) = result?;
    for l in summary_lines(&soak) {
        println!("{l}");
    }
    for lp in &soak.loops {
        for e in &lp.first_errors {
            warnings.push(format!("{}: {e}", lp.name));
        }
    }
    for e in &soak.hostile_setup_errors {
        warnings.push(format!("opening a hostile connection: {e}"));
    }
    let rss_svg = format!("{name}-rss.svg");
    output::plot_memory(
        &dir.join(&rss_svg),
        &format!("{name}: server RSS"),
        &soak.memory,
    )?;
    let ok = soak.ok;
    let failures = soak.failures.clone();
    let rep = Report {
        schema_version: report::SCHEMA_VERSION,
        tool: "peerd-loadgen",
        scenario: "soak".into(),
        protocol: "peerd".into(),
        mode: "open-loop".into(),
        started_unix_s: started,
        command_line: crate::command_line(),
        environment,
        server,
        pinning: pin,
        settings,
        runs: Vec::new(),
        knee: None,
        idle: None,
        attack: None,
        soak: Some(soak),
        warnings,
    };
    let hgrm = format!("{name}-deliveries.hgrm");
    output::write_hgrm(&dir.join(&hgrm), &lat)?;
    let series = vec![(
        format!("{name} well-behaved deliveries"),
        hist::percentile_points(&lat),
    )];
    scenarios::finish_report(&rep, &dir, &name, &series)?;
    println!(
        "wrote {}, {}",
        dir.join(&hgrm).display(),
        dir.join(&rss_svg).display()
    );
    if !ok {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_checks_tell_lost_from_late_and_twice() {
        let mut k = SeqCheck::default();
        for s in [0, 1, 2, 3] {
            k.see(s);
        }
        assert!(k.complete(4));
        assert_eq!(k.lost(4), 0);
        // 4 and 5 skipped, 6 arrives; then 5 late, 6 again.
        k.see(6);
        assert_eq!(k.lost(7), 2);
        k.see(5);
        k.see(6);
        assert_eq!((k.reordered, k.duplicated), (1, 1));
        assert_eq!(k.lost(7), 1);
        assert!(!k.complete(7));
        // The tail the publisher sent but nothing arrived of counts too.
        assert_eq!(k.lost(10), 4);
        assert_eq!(k.received, 7);
    }

    #[test]
    fn stamps_round_trip() {
        let mut b = Vec::new();
        stamp(&mut b, 64, 99, 3, 1, 12345);
        assert_eq!(b.len(), 64);
        assert_eq!(read_stamp(&b), Some((99, 3, 1, 12345)));
        stamp(&mut b, 0, 1, 2, 3, 4);
        assert_eq!(b.len(), STAMP);
        assert_eq!(read_stamp(&b[..20]), None);
    }
}
