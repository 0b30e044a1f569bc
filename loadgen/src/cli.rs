//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Open-loop load generator for peerd and its peers (a raw TCP floor, Redis, NATS).
///
/// Every latency is measured from the message's intended send time (open loop, wrk2's
/// coordinated-omission correction) unless --closed-loop is given, which every output then
/// says. Results go to --out (default results/<scenario>/): a JSON report, .hgrm percentile
/// files, an SVG percentile plot and a markdown table.
#[derive(Parser, Debug)]
#[command(name = "peerd-loadgen", version)]
pub struct Cli {
    /// Scenario.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Scenarios.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Client -> server RPC (the server's `echo` method): request/response latency.
    Rpc(MsgArgs),
    /// Peer -> peer RPC through the server: --connections pairs, the callee answers.
    P2p(MsgArgs),
    /// Topic fan-out: P publishers, N subscribers per topic, M topics (--protocol floor: the
    /// in-process fan-out floor, which only writes each publish to every subscriber).
    Fanout(FanoutArgs),
    /// Peer -> peer message (Event with peer = target): --connections pairs.
    Direct(MsgArgs),
    /// Broadcast from --publishers connections to every other connection.
    Broadcast(BroadcastArgs),
    /// Connection + handshake rate and latency (each connection closed right after).
    Connect(MsgArgs),
    /// Hold --connections idle handshaken connections: server RSS per connection, kernel
    /// socket memory separately.
    Idle(MsgArgs),
    /// The floor: a plain blocking TCP echo of the same bytes (in-process echo server pinned
    /// to the server cores unless --target is given).
    Floor(MsgArgs),
    /// Overlay existing .hgrm files in one SVG percentile plot.
    Plot(PlotArgs),
    /// Hostile peers (--hostile N of one --kind) against the server while one well-behaved
    /// peer measures echo RPC latency at --rate: server RSS every --sample-ms (peak, end of
    /// attack, --after s after closing them), server CPU, which hostile connections the
    /// server closed and with which codes.
    Attack(AttackArgs),
    /// A bounded mixed run for --duration: churn, takeovers, resets, slow consumers, partial
    /// frames, relay floods and pipelines, while well-behaved publishers stamp sequence
    /// numbers that well-behaved subscribers check. Exits non-zero if a subscriber lost a
    /// message or the server died.
    Soak(SoakArgs),
}

/// Where the server is.
#[derive(Args, Debug, Clone, Serialize)]
pub struct ServerArgs {
    /// Drive a running server at host:port, or at a URL whose scheme picks the transport:
    /// tcp://host:port, tls://host:port, ws://host:port[/path], wss://host:port[/path]
    /// (nats://host:port for --protocol nats). Repeatable in `fanout`: the nodes of a
    /// cluster (subscriber i connects to target i % N, publishers to --publisher-target).
    #[arg(long, value_name = "HOST:PORT|URL")]
    #[serde(serialize_with = "one_or_many")]
    pub target: Vec<String>,
    /// Start a local `peerd serve --listen 127.0.0.1:0` (with --transport ws:
    /// `--listen ws://127.0.0.1:0`, and so on) and stop it at the end.
    #[arg(long)]
    pub spawn_server: bool,
    /// The peerd binary for --spawn-server.
    #[arg(long, default_value = "target/release/peerd")]
    pub server_bin: PathBuf,
    /// Shards of the spawned server.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Cores of the spawned server (or of the in-process floor: the echo of `floor`, the
    /// fan-out floor of `fanout --protocol floor`), e.g. "0" or "0-1".
    /// Default: the first --shards cores when that leaves a core for the loadgen.
    #[arg(long, value_name = "LIST")]
    pub server_cores: Option<String>,
    /// Pid of a --target server on this machine, for server CPU (and RSS in `idle`).
    /// Repeatable: once per --target, in the same order; each target's CPU is reported
    /// separately and summed.
    #[arg(long, value_name = "PID")]
    #[serde(serialize_with = "one_or_many")]
    pub server_pid: Vec<u32>,
    /// Another process on this machine whose CPU seconds the report gives under NAME (e.g.
    /// nats=$(pidof nats-server), the backplane of a peerd cluster). Repeatable.
    #[arg(long, value_name = "NAME=PID", value_parser = parse_named_pid)]
    pub extra_pid: Vec<NamedPid>,
    /// Extra argument for the spawned server (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Certificate chain (PEM) of a spawned server's tls:// or wss:// listener.
    #[arg(long, default_value = "testdata/tls/server.pem")]
    pub tls_cert: PathBuf,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, default_value = "testdata/tls/server.key")]
    pub tls_key: PathBuf,
    /// Pin neither the spawned server (it is started with --no-pin) nor the loadgen's
    /// threads: for runs beside other work, such as tests running in parallel.
    #[arg(long)]
    pub no_pin: bool,
}

/// A process named on the command line (`--extra-pid NAME=PID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedPid {
    /// The name its CPU is reported under.
    pub name: String,
    /// Its process id.
    pub pid: u32,
}

fn parse_named_pid(s: &str) -> Result<NamedPid, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PID (e.g. nats=1234)"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{s:?}: empty NAME"));
    }
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {pid:?} is not a pid"))?;
    Ok(NamedPid {
        name: name.to_string(),
        pid,
    })
}

/// Serialize a repeatable flag as it was before it became repeatable: null when absent,
/// the value when given once, and a list only when given several times, so that scripts
/// reading a report's `settings` keep working.
fn one_or_many<T: Serialize, S: serde::Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    match v {
        [] => s.serialize_none(),
        [one] => one.serialize(s),
        many => many.serialize(s),
    }
}

/// Settings shared by every load scenario.
#[derive(Args, Debug, Clone, Serialize)]
pub struct MsgArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Protocol adapter: peerd, wsop (the WebSocket peers in bench-peers/), floor (`fanout`
    /// without --target: the in-process fan-out floor, one topic), redis or nats (fanout;
    /// default when --target is nats://).
    #[arg(long)]
    pub protocol: Option<String>,
    /// How connections are carried: tcp, tls, ws (WebSocket, one message per binary
    /// WebSocket message) or wss (WebSocket in TLS). Default: the scheme of --target, else
    /// tcp (wsop: ws).
    #[arg(long, value_name = "tcp|tls|ws|wss")]
    pub transport: Option<String>,
    /// CA certificate(s) (PEM) that the server's certificate must chain to, for tls and wss.
    /// Default with --spawn-server: testdata/tls/ca.pem (the test CA that signed the
    /// default --tls-cert).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Offered rate, messages/s over all senders (open loop). Default 1000; for `connect`
    /// without --rate the run is closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send pattern (open loop): each sender writes N messages in one write, every N / rate
    /// s, at the same offered rate; each message's latency still counts from its intended
    /// send time, the time of its write. 1 (default): evenly spaced, a write per message.
    /// Message scenarios only; a run with N > 1 is labelled "batched N per write" (its run
    /// `rRATE-batchN`) in every output.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: u64,
    /// Closed loop: each connection keeps --pipeline requests in flight; latency is then
    /// measured from the actual send (labelled closed-loop everywhere).
    #[arg(long)]
    pub closed_loop: bool,
    /// Requests in flight per connection in closed loop.
    #[arg(long, default_value_t = 1)]
    pub pipeline: u32,
    /// Connections (rpc/floor: callers; p2p/direct: pairs; broadcast: receivers; idle: held
    /// connections; connect: ignored). Default 1 (idle: 1000, broadcast: 10).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Payload bytes per message (at least 16: the send-time and sequence stamps).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds per measured window (idle: seconds to hold the connections). Accepts a
    /// plain number of seconds or a unit: 10s, 500ms, 2m.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Warm-up seconds before the first window (discarded); units as for --duration.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    pub warmup: f64,
    /// Measured windows, back to back; the report gives their spread.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Seconds to wait for late answers after the last send; units as for --duration.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    pub drain: f64,
    /// Loadgen worker threads (connections are spread over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Cores for the loadgen threads, e.g. "1" or "2-3". Default: the cores not given to a
    /// local server.
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Busy-poll instead of sleeping until the next send (lowest latency, burns a core).
    #[arg(long)]
    pub spin: bool,
    /// Hybrid: sleep until this many µs before each intended send time, then busy-poll
    /// (hides the thread's wake-up latency from the schedule at a bounded CPU cost).
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Rate sweep: a list "1000,2000,5000" or a geometric progression "START:END[:FACTOR]"
    /// (factor default 2). Finds the knee: the highest rate whose p99 < --p99-bound.
    #[arg(long, value_name = "RATES")]
    pub sweep: Option<String>,
    /// Bound on p99 (µs) for the knee and for meets_p99_bound.
    #[arg(long, default_value_t = 1000.0)]
    pub p99_bound: f64,
    /// Keep sweeping after a rate misses the bound (default: stop there).
    #[arg(long)]
    pub sweep_all: bool,
    /// Output directory (default results/<scenario>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base name of the output files (default <scenario>[-<protocol>]).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Fan-out settings.
#[derive(Args, Debug, Clone, Serialize)]
pub struct FanoutArgs {
    /// Common settings.
    #[command(flatten)]
    pub msg: MsgArgs,
    /// Publishing connections (the rate is shared among them).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers per topic.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Topics; publishers cycle through them.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// With several --target: the index (from 0, in --target order) of the target every
    /// publisher connects to. Subscribers on it are "local", the others "remote".
    #[arg(long, default_value_t = 0)]
    pub publisher_target: usize,
}

/// Broadcast settings.
#[derive(Args, Debug, Clone, Serialize)]
pub struct BroadcastArgs {
    /// Common settings (--connections = receiving connections).
    #[command(flatten)]
    pub msg: MsgArgs,
    /// Broadcasting connections (they receive each other's broadcasts too).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
}

/// Attack settings. Of the common flags, --rate, --payload and --connections describe the
/// well-behaved peer (echo RPC; default 1000/s, 64 B, 1 connection); --duration is the
/// length of the attack, measured in --repetitions windows after --warmup s of calm.
#[derive(Args, Debug, Clone, Serialize)]
pub struct AttackArgs {
    /// Common settings.
    #[command(flatten)]
    pub msg: MsgArgs,
    /// The attack.
    #[arg(long, value_enum)]
    pub kind: crate::hostile::Kind,
    /// Hostile connections.
    #[arg(long, default_value_t = 5000)]
    pub hostile: usize,
    /// Topics the hostile peers join (hostile peer i joins topic i % topics). Default:
    /// slow-reader 100, slow-subscribers one per hostile peer.
    #[arg(long)]
    pub topics: Option<usize>,
    /// Publishes per second of the well-behaved publisher (slow-reader default 2000,
    /// slow-subscribers 4000).
    #[arg(long)]
    pub publish_rate: Option<f64>,
    /// Payload bytes of the publishes (slow-reader default 32, slow-subscribers 16384) or of
    /// the hostile requests (relay-flood, pipeline: default 64).
    #[arg(long)]
    pub hostile_payload: Option<usize>,
    /// Requests per second over all hostile connections (relay-flood, pipeline); 0 = as
    /// fast as each socket takes them.
    #[arg(long, default_value_t = 0.0)]
    pub hostile_rate: f64,
    /// Declared body length of the partial frame (partial-frames); half of it is sent.
    #[arg(long, default_value_t = 1 << 20)]
    pub partial_bytes: u32,
    /// Interval between the single bytes that follow a half frame, ms (partial-frames).
    #[arg(long, default_value_t = 1000)]
    pub trickle_ms: u64,
    /// timeout_ms of the relayed calls (relay-flood).
    #[arg(long, default_value_t = 3_600_000)]
    pub call_timeout_ms: u32,
    /// Seconds to wait after closing the hostile connections before the "RSS after"
    /// reading; units as for --duration.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub after: f64,
    /// Interval of the server RSS/CPU samples, ms.
    #[arg(long, default_value_t = 250)]
    pub sample_ms: u64,
}

/// Soak settings. Of the common flags, --duration is the whole soak, --rate the
/// well-behaved publishes per second over all publishers (default 1000), --payload their
/// size, --drain the most to wait for the last deliveries.
#[derive(Args, Debug, Clone, Serialize)]
pub struct SoakArgs {
    /// Common settings.
    #[command(flatten)]
    pub msg: MsgArgs,
    /// Well-behaved publishers.
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Well-behaved subscribers per topic.
    #[arg(long, default_value_t = 3)]
    pub subscribers: usize,
    /// Topics; each publisher cycles through them.
    #[arg(long, default_value_t = 2)]
    pub topics: usize,
    /// Connect + handshake + Close loops per second.
    #[arg(long, default_value_t = 50.0)]
    pub churn_rate: f64,
    /// Takeovers per second (a second connection resumes the first's peer id with its
    /// resume token; the first must get Close{replaced}).
    #[arg(long, default_value_t = 10.0)]
    pub takeover_rate: f64,
    /// Connect + handshake + Join + RST loops per second.
    #[arg(long, default_value_t = 20.0)]
    pub reset_rate: f64,
    /// Slow consumers held at once: joined to every topic, never reading.
    #[arg(long, default_value_t = 4)]
    pub slow_consumers: usize,
    /// Partial-frame senders held at once.
    #[arg(long, default_value_t = 4)]
    pub partial_frames: usize,
    /// Relay flooders held at once (self-calls with long timeouts, never answered).
    #[arg(long, default_value_t = 2)]
    pub relay_floods: usize,
    /// Pipeliners held at once (echo requests, answers never read).
    #[arg(long, default_value_t = 2)]
    pub pipeliners: usize,
    /// Requests per second of each relay flooder and pipeliner.
    #[arg(long, default_value_t = 500.0)]
    pub hostile_rate: f64,
    /// Declared body length of the partial frames.
    #[arg(long, default_value_t = 1 << 20)]
    pub partial_bytes: u32,
    /// Seconds a hostile connection is held before the loadgen resets it and opens a new
    /// one (unless the server closed it first); units as for --duration.
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    pub hold: f64,
    /// Seconds to wait after the soak before the "RSS after" reading.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub after: f64,
    /// Interval of the server RSS/CPU samples, ms.
    #[arg(long, default_value_t = 250)]
    pub sample_ms: u64,
}

/// Plot settings.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Plot title.
    #[arg(long, default_value = "latency by percentile")]
    pub title: String,
    /// .hgrm files, each optionally FILE=LABEL.
    #[arg(required = true)]
    pub files: Vec<String>,
}

/// Parse a sweep spec: "a,b,c" or "start:end[:factor]".
pub fn parse_sweep(s: &str) -> anyhow::Result<Vec<f64>> {
    use anyhow::{bail, Context};
    let num = |x: &str| -> anyhow::Result<f64> {
        let v: f64 = x
            .trim()
            .parse()
            .with_context(|| format!("bad rate {x:?}"))?;
        if v <= 0.0 || !v.is_finite() {
            bail!("rates must be positive: {x:?}");
        }
        Ok(v)
    };
    if s.contains(':') {
        let p: Vec<&str> = s.split(':').collect();
        if p.len() < 2 || p.len() > 3 {
            bail!("sweep progression is START:END[:FACTOR]");
        }
        let (a, b) = (num(p[0])?, num(p[1])?);
        let f = if p.len() == 3 { num(p[2])? } else { 2.0 };
        if f <= 1.0 || b < a {
            bail!("sweep needs END >= START and FACTOR > 1");
        }
        let mut v = Vec::new();
        let mut r = a;
        while r <= b * (1.0 + 1e-9) && v.len() < 1000 {
            v.push(r.round().max(1.0));
            r *= f;
        }
        Ok(v)
    } else {
        s.split(',')
            .filter(|x| !x.trim().is_empty())
            .map(num)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sweeps_parse() {
        assert_eq!(parse_sweep("1000,2000").unwrap(), vec![1000.0, 2000.0]);
        assert_eq!(
            parse_sweep("1000:8000").unwrap(),
            vec![1000.0, 2000.0, 4000.0, 8000.0]
        );
        assert_eq!(parse_sweep("100:1000:10").unwrap(), vec![100.0, 1000.0]);
        assert!(parse_sweep("0,1").is_err());
        assert!(parse_sweep("5:1").is_err());
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from([
            "peerd-loadgen",
            "fanout",
            "--spawn-server",
            "--rate",
            "5000",
            "--subscribers",
            "100",
            "--topics",
            "2",
            "--closed-loop",
            "--batch",
            "8",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Fanout(f) => {
                assert_eq!(f.msg.batch, 8);
                assert_eq!(f.subscribers, 100);
                assert_eq!(f.msg.rate, Some(5000.0));
                assert!(f.msg.server.spawn_server);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cluster_flags_parse() {
        let c = Cli::try_parse_from([
            "peerd-loadgen",
            "fanout",
            "--target",
            "127.0.0.1:7001",
            "--target",
            "127.0.0.1:7002",
            "--server-pid",
            "11",
            "--server-pid",
            "12",
            "--extra-pid",
            "nats=13",
            "--publisher-target",
            "1",
        ])
        .unwrap();
        let Cmd::Fanout(f) = c.cmd else {
            panic!("not fanout")
        };
        assert_eq!(f.msg.server.target, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(f.msg.server.server_pid, [11, 12]);
        assert_eq!(
            f.msg.server.extra_pid,
            [NamedPid {
                name: "nats".into(),
                pid: 13
            }]
        );
        assert_eq!(f.publisher_target, 1);
        // Several values are a list in the report's settings...
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v["msg"]["server"]["target"],
            serde_json::json!(["127.0.0.1:7001", "127.0.0.1:7002"])
        );
        assert_eq!(v["msg"]["server"]["extra_pid"][0]["name"], "nats");
        for bad in ["nats", "=5", "nats=x"] {
            assert!(
                Cli::try_parse_from(["peerd-loadgen", "fanout", "--extra-pid", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn one_target_serializes_as_before() {
        // One --target and one --server-pid are a string and a number in `settings`, none
        // of either is null: what the flags were before they became repeatable.
        let c = Cli::try_parse_from([
            "peerd-loadgen",
            "rpc",
            "--target",
            "127.0.0.1:7400",
            "--server-pid",
            "5",
        ])
        .unwrap();
        let Cmd::Rpc(a) = c.cmd else {
            panic!("not rpc")
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["server"]["target"], "127.0.0.1:7400");
        assert_eq!(v["server"]["server_pid"], 5);
        let c = Cli::try_parse_from(["peerd-loadgen", "rpc", "--spawn-server"]).unwrap();
        let Cmd::Rpc(a) = c.cmd else {
            panic!("not rpc")
        };
        let v = serde_json::to_value(&a).unwrap();
        assert!(v["server"]["target"].is_null());
        assert!(v["server"]["server_pid"].is_null());
    }

    #[test]
    fn attack_flags_parse() {
        let c = Cli::try_parse_from([
            "peerd-loadgen",
            "attack",
            "--kind",
            "slow-subscribers",
            "--hostile",
            "200",
            "--spawn-server",
            "--after",
            "2s",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Attack(a) => {
                assert_eq!(a.kind, crate::hostile::Kind::SlowSubscribers);
                assert_eq!(a.hostile, 200);
                assert_eq!(a.after, 2.0);
                assert_eq!(a.msg.rate, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["peerd-loadgen", "attack", "--kind", "nonsense"]).is_err());
    }

    #[test]
    fn soak_flags_parse() {
        let c = Cli::try_parse_from([
            "peerd-loadgen",
            "soak",
            "--duration",
            "5",
            "--target",
            "127.0.0.1:7400",
            "--no-pin",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Soak(s) => {
                assert_eq!(s.msg.duration, 5.0);
                assert!(s.msg.server.no_pin);
                assert_eq!(s.publishers, 2);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Parse a duration in seconds: `10`, `2.5`, `10s`, `500ms`, `2m`.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 10, 10s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} must be a non-negative duration"));
    }
    Ok(v * scale)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_seconds;

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_seconds("10"), Ok(10.0));
        assert_eq!(parse_seconds("10s"), Ok(10.0));
        assert_eq!(parse_seconds("2.5"), Ok(2.5));
        assert_eq!(parse_seconds("500ms"), Ok(0.5));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert!(parse_seconds("ten").is_err());
        assert!(parse_seconds("-1s").is_err());
    }
}
