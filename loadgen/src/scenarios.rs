//! Scenario set-up and the run loop around the engine: target resolution (external,
//! spawned peerd, in-process floor), pinning, connections and roles per scenario, rate
//! sweeps, and the `connect` and `idle` scenarios, which need no message engine.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::adapter::{self, Adapter, ConnectOptions, Connected, Incoming};
use crate::cli::{parse_sweep, MsgArgs};
use crate::clock::{self, now_ns};
use crate::echo::FloorServer;
use crate::engine::{self, ConnSpec, Mode, Probe, RepOut, RunConfig, RunOut, SendKind};
use crate::envinfo::Environment;
use crate::hist::{self, PercentilePoint};
use crate::output;
use crate::report::{self, IdleReport, Knee, Pinning, Report, RunMeta, ServerInfo};
use crate::schedule::{Pacer, Schedule, Windows};
use crate::server::{parse_endpoint, Endpoint, SpawnConfig, SpawnedServer};
use crate::sys;

/// Shape of the fan-out scenarios.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribers per topic.
    pub subscribers: usize,
    /// Topics.
    pub topics: usize,
    /// Index of the target the publishers connect to (fan-out over several targets).
    pub publisher_target: usize,
}

/// One server a run connects to (with several, one node of a cluster each).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) addr: SocketAddr,
    /// Where it listens (scheme, host, port, path): what the adapter's transport connects to.
    pub(crate) endpoint: Endpoint,
    /// Its server's pid, when known.
    pub(crate) pid: Option<u32>,
}

/// The server being measured and how to read its CPU.
pub(crate) struct Target {
    /// The first (with one target, the only) node: what every single-server scenario
    /// drives.
    pub(crate) addr: SocketAddr,
    /// Where it listens (scheme, host, port, path): what the adapter's transport connects to.
    pub(crate) endpoint: Endpoint,
    pub(crate) info: ServerInfo,
    /// Every target in --target order (`addr`/`endpoint` above are the first).
    pub(crate) nodes: Vec<Node>,
    spawned: Option<SpawnedServer>,
    /// The in-process floor (echo or fan-out), whose threads are the server.
    floor: Option<Arc<FloorServer>>,
    server_cores: Option<Vec<usize>>,
}

pub(crate) struct ServerProbe {
    /// Each target's server pid.
    pids: Vec<Option<u32>>,
    /// --extra-pid processes, read after the targets.
    extra: Vec<u32>,
    floor: Option<Arc<FloorServer>>,
}

impl Probe for ServerProbe {
    fn server_cpu_s(&mut self) -> Option<f64> {
        if let Some(f) = &self.floor {
            return Some(f.cpu_s());
        }
        // The sum over the targets; unknown if any target's is (a partial sum would pass
        // for the whole). Two targets served by one process count it once.
        if self.pids.is_empty() {
            return None;
        }
        let mut seen = Vec::with_capacity(self.pids.len());
        let mut sum = 0.0;
        for p in &self.pids {
            let p = (*p)?;
            if !seen.contains(&p) {
                seen.push(p);
                sum += sys::process_cpu_s(p).ok()?;
            }
        }
        Some(sum)
    }

    fn named_cpu_s(&mut self) -> Vec<Option<f64>> {
        let read = |p: u32| sys::process_cpu_s(p).ok();
        let targets: Vec<Option<f64>> = match &self.floor {
            // The in-process floor: its threads, not this whole process.
            Some(f) => vec![Some(f.cpu_s())],
            None => self.pids.iter().map(|p| p.and_then(read)).collect(),
        };
        targets
            .into_iter()
            .chain(self.extra.iter().map(|&p| read(p)))
            .collect()
    }
}

fn default_server_cores(n: usize) -> Option<Vec<usize>> {
    let allowed = sys::allowed_cores();
    (n < allowed.len()).then(|| allowed[..n].to_vec())
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))
}

/// The protocol adapter a scenario uses: --protocol, else the floor's own for `floor`,
/// else peerd.
pub(crate) fn protocol_name<'a>(scenario: &str, a: &'a MsgArgs) -> Result<&'a str> {
    Ok(match (scenario, a.protocol.as_deref()) {
        ("floor", None | Some("floor")) => "floor",
        ("floor", Some(p)) => bail!("the floor scenario speaks the floor protocol, not {p}"),
        (_, Some(p)) => p,
        (_, None) if a.server.target.iter().any(|t| is_nats_url(t)) => "nats",
        (_, None) => "peerd",
    })
}

/// `nats://host:port`: a NATS server's URL (plain TCP for the loadgen).
fn is_nats_url(t: &str) -> bool {
    t.trim()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("nats://"))
}

/// The endpoint asked for on the command line: the first --target (its scheme, or
/// --transport for a bare host:port), or for --spawn-server 127.0.0.1 port 0 with
/// --transport's scheme.
pub(crate) fn wanted_endpoint(scenario: &str, a: &MsgArgs) -> Result<Endpoint> {
    let mut eps = wanted_endpoints(scenario, a)?;
    Ok(eps.swap_remove(0))
}

/// Every endpoint asked for: one per --target (several only for `fanout`, all over the
/// same transport, since one adapter encodes for every connection), or the one of
/// --spawn-server.
pub(crate) fn wanted_endpoints(scenario: &str, a: &MsgArgs) -> Result<Vec<Endpoint>> {
    let transport = a.transport.as_deref().map(str::to_ascii_lowercase);
    if let Some(t) = &transport {
        if !matches!(t.as_str(), "tcp" | "tls" | "ws" | "wss") {
            bail!("--transport {t:?}: expected tcp, tls, ws or wss");
        }
    }
    let protocol = protocol_name(scenario, a)?;
    let default_scheme = match protocol {
        "wsop" => "ws",
        _ => "tcp",
    };
    if a.server.target.len() > 1 && scenario != "fanout" {
        bail!(
            "--target is given {} times: several targets (the nodes of a cluster) are for the fanout scenario only",
            a.server.target.len()
        );
    }
    let mut eps = Vec::new();
    for t in &a.server.target {
        // nats:// names a NATS server, which the nats adapter reaches over plain TCP.
        let (t, nats) = match is_nats_url(t) {
            true if protocol != "nats" => {
                bail!("--target {t} is a NATS server: use --protocol nats")
            }
            true => (&t.trim()[7..], true),
            false => (t.as_str(), false),
        };
        let has_scheme = t.contains("://") || nats;
        let mut ep = parse_endpoint(t)?;
        match (&transport, has_scheme) {
            (Some(tr), true) if *tr != ep.scheme => {
                bail!("--target {t} says {} but --transport says {tr}", ep.scheme)
            }
            (Some(tr), false) => ep.scheme = tr.clone(),
            (None, false) => ep.scheme = default_scheme.into(),
            _ => {}
        }
        eps.push(ep);
    }
    if eps.is_empty() {
        eps.push(Endpoint {
            scheme: transport.unwrap_or_else(|| default_scheme.into()),
            host: "127.0.0.1".into(),
            port: 0,
            path: String::new(),
        });
    }
    for ep in &mut eps {
        if ep.is_ws() && ep.path.is_empty() {
            ep.path = "/".into();
        }
    }
    if let Some(other) = eps.iter().find(|e| e.scheme != eps[0].scheme) {
        bail!(
            "every --target must use the same transport: {} is {}, {} is {}",
            eps[0],
            eps[0].scheme,
            other,
            other.scheme
        );
    }
    if scenario == "floor" && eps[0].scheme != "tcp" {
        bail!("the floor runs over plain TCP only");
    }
    Ok(eps)
}

/// Plain TCP only (the hostile scenarios write peerd frames straight to the socket).
pub(crate) fn require_tcp(scenario: &str, a: &MsgArgs) -> Result<()> {
    let ep = wanted_endpoint(scenario, a)?;
    if ep.scheme != "tcp" {
        bail!(
            "{scenario} runs over plain TCP only (its hostile peers write peerd frames straight to the socket), not {}",
            ep.scheme
        );
    }
    Ok(())
}

/// The adapter for `scenario` over the transport `ep` names (TLS trust: --ca, or the test
/// CA for a spawned server).
pub(crate) fn make_adapter(scenario: &str, a: &MsgArgs, ep: &Endpoint) -> Result<Arc<dyn Adapter>> {
    let name = protocol_name(scenario, a)?;
    let tls = if ep.is_tls() {
        let ca = match (&a.ca, a.server.spawn_server) {
            (Some(c), _) => c.clone(),
            (None, true) => PathBuf::from("testdata/tls/ca.pem"),
            (None, false) => bail!(
                "{} needs --ca FILE: the CA certificate the server's certificate chains to",
                ep.scheme
            ),
        };
        Some(adapter::link::TlsSettings {
            config: adapter::link::tls_config(&ca)?,
            server_name: adapter::link::server_name(&ep.host)?,
        })
    } else {
        None
    };
    let ws = ep.is_ws().then(|| adapter::link::WsSettings {
        host: if ep.port == 0 {
            ep.host.clone()
        } else {
            ep.host_port()
        },
        path: ep.path.clone(),
        subprotocol: String::new(),
    });
    let ad: Arc<dyn Adapter> = Arc::from(adapter::build(
        name,
        scenario,
        adapter::Transport { tls, ws },
    )?);
    if !ad.supports(scenario) {
        bail!("protocol {} cannot run the {scenario} scenario", ad.name());
    }
    Ok(ad)
}

/// The report's list of targets.
fn target_infos(nodes: &[Node]) -> Vec<report::TargetInfo> {
    nodes
        .iter()
        .enumerate()
        .map(|(index, n)| report::TargetInfo {
            index,
            address: n.endpoint.to_string(),
            pid: n.pid,
        })
        .collect()
}

fn setup_target(scenario: &str, a: &MsgArgs) -> Result<Target> {
    let s = &a.server;
    if !s.target.is_empty() && s.spawn_server {
        bail!("give either --target or --spawn-server, not both");
    }
    let mut names = Vec::new();
    for e in &s.extra_pid {
        if names.contains(&&e.name) {
            bail!("--extra-pid names {:?} twice", e.name);
        }
        names.push(&e.name);
    }
    let wanted = wanted_endpoint(scenario, a)?;
    if !s.target.is_empty() {
        let eps = wanted_endpoints(scenario, a)?;
        if !s.server_pid.is_empty() && s.server_pid.len() != eps.len() {
            bail!(
                "--server-pid is given {} times for {} --target: give it once per --target, in the same order (or not at all)",
                s.server_pid.len(),
                eps.len()
            );
        }
        let nodes = eps
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                Ok(Node {
                    addr: resolve(&ep.host_port())?,
                    endpoint: ep.clone(),
                    pid: s.server_pid.get(i).copied(),
                })
            })
            .collect::<Result<Vec<Node>>>()?;
        let several = nodes.len() > 1;
        return Ok(Target {
            addr: nodes[0].addr,
            endpoint: nodes[0].endpoint.clone(),
            info: ServerInfo {
                kind: if several {
                    format!("external ({} targets)", nodes.len())
                } else {
                    "external".into()
                },
                address: eps
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                // One pid only where there is one server; with several they are under
                // `targets`.
                pid: if several { None } else { nodes[0].pid },
                targets: target_infos(&nodes),
                extra_pids: s.extra_pid.clone(),
                ..Default::default()
            },
            nodes,
            spawned: None,
            floor: None,
            server_cores: s
                .server_cores
                .as_deref()
                .map(sys::parse_cpu_list)
                .transpose()?,
        });
    }
    // The floors run in this process: the echo for `floor`, the fan-out floor for
    // `fanout --protocol floor`.
    let fanout_floor = scenario == "fanout" && protocol_name(scenario, a)? == "floor";
    if fanout_floor && s.spawn_server {
        bail!("the fan-out floor runs in the loadgen's process: drop --spawn-server");
    }
    if scenario == "floor" || fanout_floor {
        let cores = match &s.server_cores {
            Some(c) => Some(sys::parse_cpu_list(c)?),
            None if s.no_pin => None,
            None => default_server_cores(1),
        };
        let (floor, kind) = if fanout_floor {
            (
                crate::fanout_floor::start(cores.clone())?,
                "floor fan-out (in-process, blocking, thread per connection, a write per subscriber)",
            )
        } else {
            (
                FloorServer::echo(cores.clone())?,
                "floor echo (in-process, blocking, thread per connection)",
            )
        };
        let floor = Arc::new(floor);
        let endpoint = Endpoint {
            scheme: "tcp".into(),
            host: floor.addr().ip().to_string(),
            port: floor.addr().port(),
            path: String::new(),
        };
        let nodes = vec![Node {
            addr: floor.addr(),
            endpoint: endpoint.clone(),
            pid: Some(std::process::id()),
        }];
        return Ok(Target {
            addr: floor.addr(),
            endpoint,
            info: ServerInfo {
                kind: kind.into(),
                address: floor.addr().to_string(),
                pid: Some(std::process::id()),
                shards: None,
                command: None,
                exit: None,
                targets: target_infos(&nodes),
                extra_pids: s.extra_pid.clone(),
            },
            nodes,
            spawned: None,
            floor: Some(floor),
            server_cores: cores,
        });
    }
    if !s.spawn_server {
        bail!("give --target HOST:PORT or --spawn-server");
    }
    let cores = match &s.server_cores {
        Some(c) => Some(sys::parse_cpu_list(c)?),
        None if s.no_pin => None,
        None => default_server_cores(s.shards as usize),
    };
    let mut extra_args = s.server_arg.clone();
    if s.no_pin {
        extra_args.push("--no-pin".into());
    }
    if wanted.is_tls() && !extra_args.iter().any(|x| x.starts_with("--tls-cert")) {
        extra_args.push("--tls-cert".into());
        extra_args.push(s.tls_cert.display().to_string());
        extra_args.push("--tls-key".into());
        extra_args.push(s.tls_key.display().to_string());
    }
    let listen = match wanted.scheme.as_str() {
        "tcp" => "127.0.0.1:0".to_string(),
        sc => format!("{sc}://127.0.0.1:0{}", wanted.path),
    };
    let spawned = SpawnedServer::start(&SpawnConfig {
        bin: s.server_bin.clone(),
        shards: s.shards,
        cores: cores.clone(),
        extra_args,
        listen: Some(listen),
    })?;
    eprintln!(
        "started {} (pid {}, {} shards) on {}",
        spawned.command.join(" "),
        spawned.ready.pid,
        spawned.ready.shards,
        spawned.ready.endpoint
    );
    if spawned.ready.endpoint.scheme != wanted.scheme {
        let got = spawned.ready.endpoint.to_string();
        let _ = spawned.stop();
        bail!(
            "asked the server for a {} listener, it announced {got}",
            wanted.scheme
        );
    }
    let nodes = vec![Node {
        addr: spawned.ready.addr,
        endpoint: spawned.ready.endpoint.clone(),
        pid: Some(spawned.ready.pid),
    }];
    Ok(Target {
        addr: spawned.ready.addr,
        endpoint: spawned.ready.endpoint.clone(),
        info: ServerInfo {
            kind: "peerd (spawned)".into(),
            address: spawned.ready.endpoint.to_string(),
            pid: Some(spawned.ready.pid),
            shards: Some(spawned.ready.shards),
            command: Some(spawned.command.clone()),
            exit: None,
            targets: target_infos(&nodes),
            extra_pids: s.extra_pid.clone(),
        },
        nodes,
        spawned: Some(spawned),
        floor: None,
        server_cores: cores,
    })
}

impl Target {
    /// The server's pid, when it is a separate process on this machine.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.info.pid.filter(|_| self.floor.is_none())
    }

    /// Whether the server is still running: a spawned one has not exited, an external one
    /// with a known pid is still in /proc (without a pid: assumed, the caller checks by
    /// connecting).
    pub(crate) fn alive(&mut self) -> bool {
        if let Some(s) = &mut self.spawned {
            return s.exited().is_none();
        }
        match self.pid() {
            Some(p) => Path::new(&format!("/proc/{p}")).exists(),
            None => true,
        }
    }

    pub(crate) fn probe(&self) -> ServerProbe {
        ServerProbe {
            pids: self
                .nodes
                .iter()
                .map(|n| n.pid.filter(|_| self.floor.is_none()))
                .collect(),
            extra: self.info.extra_pids.iter().map(|e| e.pid).collect(),
            floor: self.floor.clone(),
        }
    }

    /// How the report names the targets and the extra processes.
    pub(crate) fn layout(&self) -> report::TargetLayout {
        report::TargetLayout {
            targets: self.info.targets.clone(),
            extra: self.info.extra_pids.clone(),
            ..Default::default()
        }
    }

    pub(crate) fn finish(mut self) -> Result<ServerInfo> {
        if let Some(s) = self.spawned.take() {
            let exit = s.stop()?;
            self.info.exit = Some(exit);
        }
        Ok(self.info)
    }
}

fn loadgen_cores(a: &MsgArgs, server_cores: &Option<Vec<usize>>) -> Result<Option<Vec<usize>>> {
    if let Some(c) = &a.cores {
        return Ok(Some(sys::parse_cpu_list(c)?));
    }
    if a.server.no_pin {
        return Ok(None);
    }
    Ok(server_cores.as_ref().and_then(|sc| {
        let rest: Vec<usize> = sys::allowed_cores()
            .into_iter()
            .filter(|c| !sc.contains(c))
            .collect();
        (!rest.is_empty()).then_some(rest)
    }))
}

pub(crate) fn progress_bar(a: &MsgArgs, total_ms: u64, label: &str) -> Option<ProgressBar> {
    if a.no_progress {
        return None;
    }
    let pb = ProgressBar::new(total_ms);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    Some(pb)
}

/// A progress bar counting `len` items (connections opened), unless progress is off.
pub(crate) fn count_bar(show: bool, len: u64, label: &str) -> Option<ProgressBar> {
    show.then(|| {
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        pb
    })
}

pub(crate) fn run_nonce() -> u64 {
    (now_ns() / 1000) % 1_000_000
}

/// The connections of one run and what the engine and the report need to know of them.
struct Built {
    specs: Vec<ConnSpec>,
    /// Answers each message should produce.
    answers: u64,
    /// Keep the slowest receiver per message.
    track_slowest: bool,
    /// Connections in all.
    connections: usize,
    /// Fan-out: subscribing connections per target.
    subscribers_by_target: Vec<usize>,
}

/// Connections and roles for one run of a message scenario. `nodes` holds, per target, the
/// adapter for its endpoint (a WebSocket's Host header, a TLS server name) and its
/// address; every scenario but fan-out uses the first only.
fn build_specs(
    scenario: &str,
    a: &MsgArgs,
    shape: Shape,
    nodes: &[(Arc<dyn Adapter>, SocketAddr)],
) -> Result<Built> {
    let opts = ConnectOptions::default();
    let tag = format!("lg{}n{}", std::process::id(), run_nonce());
    let connect_to = |node: usize, role: &str, i: usize| -> Result<Connected> {
        let (adapter, addr) = &nodes[node];
        adapter
            .connect(*addr, Some(&format!("{tag}-{role}{i}")), &opts)
            .with_context(|| format!("opening connection {role}{i} to {addr}"))
    };
    let connect = |role: &str, i: usize| connect_to(0, role, i);
    let spec = |conn: Connected, send: Option<(SendKind, u32)>| ConnSpec {
        conn,
        send,
        target: 0,
    };
    let n = a.connections.unwrap_or(1).max(1);
    let mut specs = Vec::new();
    let pairs = |specs: &mut Vec<ConnSpec>, direct: bool| -> Result<()> {
        for i in 0..n {
            let callee = connect("e", i)?;
            let target = callee
                .peer_id
                .clone()
                .context("the protocol gave the callee no peer id")?;
            let kind = if direct {
                SendKind::Direct { target }
            } else {
                SendKind::Request {
                    target: Some(target),
                }
            };
            specs.push(spec(connect("c", i)?, Some((kind, i as u32))));
            specs.push(spec(callee, None));
        }
        Ok(())
    };
    let built = |specs, answers, track_slowest, connections| Built {
        specs,
        answers,
        track_slowest,
        connections,
        subscribers_by_target: Vec::new(),
    };
    Ok(match scenario {
        "rpc" | "floor" => {
            for i in 0..n {
                specs.push(spec(
                    connect("c", i)?,
                    Some((SendKind::Request { target: None }, i as u32)),
                ));
            }
            built(specs, 1, false, n)
        }
        "p2p" => {
            pairs(&mut specs, false)?;
            built(specs, 1, false, 2 * n)
        }
        "direct" => {
            pairs(&mut specs, true)?;
            built(specs, 1, true, 2 * n)
        }
        "fanout" => {
            let topics: Vec<String> = (0..shape.topics.max(1))
                .map(|t| format!("{tag}-topic{t}"))
                .collect();
            let mut subscribers_by_target = vec![0; nodes.len()];
            let mut i = 0;
            for t in &topics {
                for _ in 0..shape.subscribers.max(1) {
                    // Subscribers go round the targets (every topic has members on every
                    // node when there are at least as many subscribers as targets).
                    let node = i % nodes.len();
                    let mut c = connect_to(node, "s", i)?;
                    nodes[node]
                        .0
                        .subscribe(&mut c, t)
                        .with_context(|| format!("subscribing s{i} to {t}"))?;
                    specs.push(ConnSpec {
                        conn: c,
                        send: None,
                        target: node,
                    });
                    subscribers_by_target[node] += 1;
                    i += 1;
                }
            }
            for p in 0..shape.publishers.max(1) {
                let mut mine = topics.clone();
                mine.rotate_left(p % topics.len());
                specs.push(ConnSpec {
                    conn: connect_to(shape.publisher_target, "p", p)?,
                    send: Some((SendKind::Publish { topics: mine }, p as u32)),
                    target: shape.publisher_target,
                });
            }
            Built {
                subscribers_by_target,
                ..built(
                    specs,
                    shape.subscribers.max(1) as u64,
                    true,
                    i + shape.publishers.max(1),
                )
            }
        }
        "broadcast" => {
            let receivers = a.connections.unwrap_or(10);
            let pubs = shape.publishers.max(1);
            for i in 0..receivers {
                specs.push(spec(connect("r", i)?, None));
            }
            for p in 0..pubs {
                specs.push(spec(
                    connect("p", p)?,
                    Some((SendKind::Broadcast, p as u32)),
                ));
            }
            built(specs, (receivers + pubs - 1) as u64, true, receivers + pubs)
        }
        other => bail!("{other} is not a message scenario"),
    })
}

/// What every scenario runner sets up before it measures.
pub(crate) struct Prepared {
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
    pub(crate) started: u64,
    pub(crate) environment: Environment,
    pub(crate) target: Target,
    pub(crate) lg_cores: Option<Vec<usize>>,
    pub(crate) pin: Pinning,
    pub(crate) warnings: Vec<String>,
}

/// Output paths, environment, the target server (spawned or external), core pinning and the
/// pinning warnings, in the order the reports expect.
pub(crate) fn prepare(scenario: &str, protocol: &str, a: &MsgArgs) -> Result<Prepared> {
    // Every runner comes through here: the one place to refuse a send pattern that only
    // the message engine's scenarios follow.
    if a.batch != 1 && !MESSAGE_SCENARIOS.contains(&scenario) {
        bail!(
            "--batch applies to the message scenarios ({}), not {scenario}",
            MESSAGE_SCENARIOS.join(", ")
        );
    }
    let (dir, name) = output_paths(scenario, protocol, a)?;
    let started = now_unix();
    let environment = Environment::collect();
    let target = setup_target(scenario, a)?;
    let lg_cores = loadgen_cores(a, &target.server_cores)?;
    let pin = pinning(a, &lg_cores, &target.server_cores);
    let warnings = pinning_warnings(&pin, target.nodes.iter().any(|n| n.pid.is_some()));
    Ok(Prepared {
        dir,
        name,
        started,
        environment,
        target,
        lg_cores,
        pin,
        warnings,
    })
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn output_paths(scenario: &str, protocol: &str, a: &MsgArgs) -> Result<(PathBuf, String)> {
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| Path::new("results").join(scenario));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let default_proto = if scenario == "floor" {
        "floor"
    } else {
        "peerd"
    };
    let name = a.name.clone().unwrap_or_else(|| {
        if protocol == default_proto {
            scenario.to_string()
        } else {
            format!("{scenario}-{protocol}")
        }
    });
    Ok((dir, name))
}

pub(crate) fn check_args(a: &MsgArgs) -> Result<()> {
    if a.duration <= 0.0 || a.warmup < 0.0 || a.drain < 0.0 {
        bail!("--duration must be > 0, --warmup and --drain >= 0");
    }
    if a.repetitions == 0 || a.threads == 0 || a.pipeline == 0 || a.batch == 0 {
        bail!("--repetitions, --threads, --pipeline and --batch must be at least 1");
    }
    if a.closed_loop && (a.sweep.is_some() || a.rate.is_some()) {
        bail!("--closed-loop takes no --rate or --sweep (its rate is whatever the server answers)");
    }
    Ok(())
}

/// The adapter before the server is started (to check the scenario and name the files),
/// and the adapter for the server as it announced itself (a spawned server's real port in
/// the WebSocket Host header).
fn pick_adapter(scenario: &str, a: &MsgArgs) -> Result<Arc<dyn Adapter>> {
    make_adapter(scenario, a, &wanted_endpoint(scenario, a)?)
}

fn pinning(a: &MsgArgs, lg: &Option<Vec<usize>>, srv: &Option<Vec<usize>>) -> Pinning {
    Pinning {
        loadgen_cores: lg.clone(),
        server_cores: srv.clone(),
        loadgen_threads: a.threads,
        overlap: match (lg, srv) {
            (Some(l), Some(s)) => l.iter().any(|c| s.contains(c)),
            _ => false,
        },
    }
}

fn pinning_warnings(p: &Pinning, local: bool) -> Vec<String> {
    let mut w = Vec::new();
    if p.overlap {
        w.push("server and loadgen share cores".into());
    }
    if local && (p.server_cores.is_none() || p.loadgen_cores.is_none()) {
        w.push(
            "server and loadgen are not both pinned (not enough cores, or pinning not given)"
                .into(),
        );
    }
    w
}

/// The scenarios [`run_messages`] runs.
const MESSAGE_SCENARIOS: [&str; 6] = ["rpc", "p2p", "fanout", "direct", "broadcast", "floor"];

/// Run a message scenario (rpc, p2p, fanout, direct, broadcast, floor), with sweeps.
pub fn run_messages(
    scenario: &str,
    a: &MsgArgs,
    shape: Shape,
    settings: serde_json::Value,
) -> Result<()> {
    check_args(a)?;
    if a.closed_loop && !matches!(scenario, "rpc" | "p2p" | "floor") {
        bail!("--closed-loop applies to request/response scenarios (rpc, p2p, floor)");
    }
    if a.closed_loop && a.batch != 1 {
        bail!("--batch is a send pattern of the open loop; --closed-loop sends as answers arrive");
    }
    sys::raise_nofile();
    let adapter = pick_adapter(scenario, a)?;
    if adapter.name() == "floor" && scenario == "fanout" && shape.topics > 1 {
        bail!(
            "the fan-out floor has one topic (every subscriber gets every publish): drop --topics"
        );
    }
    let Prepared {
        dir,
        name,
        started,
        environment,
        target,
        lg_cores,
        pin,
        mut warnings,
    } = prepare(scenario, adapter.name(), a)?;
    // One adapter per target, each for its own endpoint (they encode alike: the first
    // serves the engine).
    let nodes: Vec<(Arc<dyn Adapter>, SocketAddr)> = match target
        .nodes
        .iter()
        .map(|n| Ok((make_adapter(scenario, a, &n.endpoint)?, n.addr)))
        .collect::<Result<_>>()
    {
        Ok(n) => n,
        Err(e) => {
            let _ = target.finish();
            return Err(e);
        }
    };
    let adapter = nodes[0].0.clone();
    if shape.publisher_target >= nodes.len() {
        let _ = target.finish();
        bail!(
            "--publisher-target {} but there {} {} target{}",
            shape.publisher_target,
            if nodes.len() == 1 { "is" } else { "are" },
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" }
        );
    }
    let fanout = scenario == "fanout";
    let several = nodes.len() > 1;

    let modes: Vec<Mode> = if a.closed_loop {
        vec![Mode::Closed {
            pipeline: a.pipeline,
        }]
    } else if let Some(s) = &a.sweep {
        parse_sweep(s)?
            .into_iter()
            .map(|rate| Mode::Open { rate })
            .collect()
    } else {
        vec![Mode::Open {
            rate: a.rate.unwrap_or(1000.0),
        }]
    };
    let sweeping = modes.len() > 1;
    let mut runs = Vec::new();
    let mut series: Vec<(String, Vec<PercentilePoint>)> = Vec::new();
    let mut tested = Vec::new();
    println!(
        "{} — server {} at {}",
        output::heading(scenario, adapter.name(), modes[0], a.batch),
        target.info.kind,
        if several {
            target.info.address.clone()
        } else {
            target.endpoint.to_string()
        }
    );
    println!("{}", output::table_header());
    let result = (|| -> Result<()> {
        for mode in &modes {
            let Built {
                specs,
                answers,
                track_slowest,
                connections: conns,
                subscribers_by_target,
            } = build_specs(scenario, a, shape, &nodes)?;
            let cfg = RunConfig {
                mode: *mode,
                per_write: a.batch,
                payload: a.payload.max(crate::payload::MIN_PAYLOAD),
                warmup: Duration::from_secs_f64(a.warmup),
                window: Duration::from_secs_f64(a.duration),
                reps: a.repetitions,
                drain: Duration::from_secs_f64(a.drain),
                threads: a.threads,
                cores: lg_cores.clone(),
                spin: a.spin,
                spin_before_ns: a.spin_us * 1000,
                answers_per_msg: answers,
                track_slowest,
                max_unsent: 64 << 20,
                start_ns: None,
                local_target: fanout.then_some(shape.publisher_target),
            };
            let total_ms = ((a.warmup + a.duration * a.repetitions as f64) * 1000.0) as u64 + 150;
            let label = match mode {
                Mode::Open { rate } => format!("{} msg/s", report::fmt_rate(*rate)),
                Mode::Closed { pipeline } => format!("closed p{pipeline}"),
            };
            let pb = progress_bar(a, total_ms, &label);
            let mut probe = target.probe();
            let out = engine::run(specs, &cfg, adapter.clone(), &mut probe, pb.as_ref())?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let meta = RunMeta {
                mode: *mode,
                connections: conns,
                payload: cfg.payload,
                warmup_s: a.warmup,
                answers_per_msg: answers,
                p99_bound_us: Some(a.p99_bound),
                spin: a.spin || a.spin_us > 0,
                per_write: cfg.per_write,
            };
            let (mut rr, h, slowest) = report::build_run(&out, &meta);
            let layout = report::TargetLayout {
                publisher_target: shape.publisher_target,
                subscribers: subscribers_by_target,
                ..target.layout()
            };
            let (local, remote) = report::add_targets(&mut rr, &out, &layout, fanout);
            let f = format!("{name}-{}.hgrm", rr.label);
            output::write_hgrm(&dir.join(&f), &h)?;
            rr.files.push(f);
            series.push((format!("{name} {}", rr.label), hist::percentile_points(&h)));
            if let Some(s) = &slowest {
                let f = format!("{name}-{}-slowest.hgrm", rr.label);
                output::write_hgrm(&dir.join(&f), s)?;
                rr.files.push(f);
                series.push((
                    format!("{name} {} slowest receiver", rr.label),
                    hist::percentile_points(s),
                ));
            }
            // Over several targets: the deliveries on the publishers' node and on the
            // others, each in a file of its own and on the plot (new files: the names
            // above stay what they were).
            if several {
                for (which, h) in [("local", &local), ("remote", &remote)] {
                    if let Some(h) = h {
                        let f = format!("{name}-{}-{which}.hgrm", rr.label);
                        output::write_hgrm(&dir.join(&f), h)?;
                        rr.files.push(f);
                        series.push((
                            format!("{name} {} {which} receivers", rr.label),
                            hist::percentile_points(h),
                        ));
                    }
                }
            }
            print!("{}", output::table_rows(&rr));
            if let Mode::Open { rate } = mode {
                tested.push(*rate);
            }
            let missed = rr.meets_p99_bound == Some(false);
            for w in &rr.warnings {
                warnings.push(format!("{}: {w}", rr.label));
            }
            runs.push(rr);
            if sweeping && missed && !a.sweep_all {
                println!(
                    "p99 bound of {} µs missed: sweep stops here (--sweep-all to go on)",
                    a.p99_bound
                );
                break;
            }
        }
        Ok(())
    })();
    let server = target.finish()?;
    result?;

    let knee = sweeping.then(|| Knee {
        p99_bound_us: a.p99_bound,
        rate: runs
            .iter()
            .filter(|r| r.meets_p99_bound == Some(true))
            .filter_map(|r| r.offered_rate)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r)))),
        rates_tested: tested,
    });
    let rep = Report {
        schema_version: report::SCHEMA_VERSION,
        tool: "peerd-loadgen",
        scenario: scenario.into(),
        protocol: adapter.name().into(),
        mode: modes[0].label().into(),
        started_unix_s: started,
        command_line: crate::command_line(),
        environment,
        server,
        pinning: pin,
        settings,
        runs,
        knee,
        idle: None,
        attack: None,
        soak: None,
        warnings,
    };
    finish_report(&rep, &dir, &name, &series)
}

pub(crate) fn finish_report(
    rep: &Report,
    dir: &Path,
    name: &str,
    series: &[(String, Vec<PercentilePoint>)],
) -> Result<()> {
    if let Some(k) = &rep.knee {
        println!(
            "knee (highest rate with p99 < {} µs): {}",
            k.p99_bound_us,
            k.rate
                .map(|r| format!("{} msg/s", report::fmt_rate(r)))
                .unwrap_or_else(|| "none of the rates tested".into())
        );
    }
    let json = dir.join(format!("{name}.json"));
    output::write_json(&json, rep)?;
    let md = dir.join(format!("{name}.md"));
    output::write_markdown(&md, rep)?;
    let mut written = vec![json.display().to_string(), md.display().to_string()];
    if !series.is_empty() {
        let svg = dir.join(format!("{name}.svg"));
        let conns = rep.runs.first().map(|r| r.connections).unwrap_or(0);
        let payload = rep.runs.first().map(|r| r.payload_bytes).unwrap_or(0);
        let title = format!("{} — {} conns, {} B", output::title(rep), conns, payload);
        output::plot_percentiles(&svg, &title, series)?;
        written.push(svg.display().to_string());
    }
    for r in &rep.runs {
        for f in &r.files {
            written.push(dir.join(f).display().to_string());
        }
    }
    println!("wrote {}", written.join(", "));
    Ok(())
}

/// One connection attempt: intended start, latency (None on failure), error.
type ConnectSample = (u64, Option<u64>, Option<String>);

/// The connect scenario: connection + handshake latency at a fixed rate (or closed loop).
pub fn run_connect(a: &MsgArgs, settings: serde_json::Value) -> Result<()> {
    check_args(a)?;
    sys::raise_nofile();
    let scenario = "connect";
    let adapter = pick_adapter(scenario, a)?;
    let Prepared {
        dir,
        name,
        started,
        environment,
        target,
        lg_cores,
        pin,
        mut warnings,
    } = prepare(scenario, adapter.name(), a)?;
    let adapter = make_adapter(scenario, a, &target.endpoint)?;
    let mode = match a.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed { pipeline: 1 },
    };
    let threads = a.threads.max(1);
    let result = (|| -> Result<(report::RunReport, hist::Hist)> {
        let t0 = now_ns() + 100_000_000;
        let windows = Windows {
            measure_start_ns: t0 + (a.warmup * 1e9) as u64,
            window_ns: (a.duration * 1e9) as u64,
            count: a.repetitions,
        };
        let tids = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicU64::new(0));
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for ti in 0..threads {
            let (adapter, tids, done, cores, released) = (
                adapter.clone(),
                tids.clone(),
                done.clone(),
                lg_cores.clone(),
                released.clone(),
            );
            let addr = target.addr;
            handles.push(std::thread::spawn(move || -> Result<Vec<ConnectSample>> {
                if let Some(c) = &cores {
                    sys::set_affinity(0, &[c[ti % c.len()]])?;
                }
                clock::tight_timer_slack();
                tids.lock().unwrap().push(sys::gettid());
                let end = windows.end_ns();
                let mut pacer = match mode {
                    Mode::Open { rate } => Some(Pacer::new(
                        Schedule::new(t0, rate, threads as u64, ti as u64),
                        end,
                    )),
                    Mode::Closed { .. } => None,
                };
                clock::sleep_until(t0);
                // (intended, latency or None on failure, error)
                let mut samples = Vec::new();
                let opts = ConnectOptions::default();
                loop {
                    let intended = match &mut pacer {
                        Some(p) => {
                            let Some(t) = p.next_time() else { break };
                            clock::sleep_until(t);
                            p.pop_due(now_ns().max(t));
                            t
                        }
                        None => {
                            let t = now_ns();
                            if t >= end {
                                break;
                            }
                            t
                        }
                    };
                    match adapter.connect(addr, None, &opts) {
                        Ok(c) => {
                            let lat = now_ns() - intended;
                            // RST instead of FIN: no TIME_WAIT pile-up on the loadgen side.
                            let _ =
                                socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
                            drop(c);
                            samples.push((intended, Some(lat), None));
                        }
                        Err(e) => samples.push((intended, None, Some(format!("{e:#}")))),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                // Keep the thread (and its /proc entry) until the last CPU reading.
                while !released.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(samples)
            }));
        }
        let pb = progress_bar(
            a,
            ((a.warmup + a.duration * a.repetitions as f64) * 1000.0) as u64 + 100,
            "connect",
        );
        let mut probe = target.probe();
        let boundaries = engine::watch_windows(
            &windows,
            t0,
            &mut probe,
            &tids,
            pb.as_ref(),
            &|| handles.iter().all(|h| h.is_finished()),
            &|| format!("connections {}", done.load(Ordering::Relaxed)),
        );
        released.store(true, Ordering::SeqCst);
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let mut reps: Vec<RepOut> = engine::rep_shells(&boundaries, false);
        let mut errors = Vec::new();
        let mut warmup_received = 0;
        for h in handles {
            let samples = h
                .join()
                .map_err(|_| anyhow::anyhow!("connect thread panicked"))??;
            for (t, lat, err) in samples {
                match windows.index(t) {
                    Some(r) => {
                        reps[r].sent += 1;
                        match lat {
                            Some(l) => {
                                hist::record(&mut reps[r].hist, l);
                                reps[r].received += 1;
                            }
                            None => reps[r].errors += 1,
                        }
                    }
                    None => warmup_received += 1,
                }
                if let Some(e) = err {
                    if errors.len() < 8 {
                        errors.push(e);
                    }
                }
            }
        }
        let out = RunOut {
            reps,
            send_lag: hist::new_hist(),
            warmup_received,
            error_samples: errors,
            overloaded: false,
            dead_conns: 0,
            window_s: a.duration,
        };
        let (rr, h, _) = report::build_run(
            &out,
            &RunMeta {
                mode,
                connections: threads,
                payload: 0,
                warmup_s: a.warmup,
                answers_per_msg: 1,
                p99_bound_us: Some(a.p99_bound),
                spin: false,
                per_write: 1,
            },
        );
        Ok((rr, h))
    })();
    let server = target.finish()?;
    let (mut rr, h) = result?;
    println!(
        "connect / {} / {} — connections+handshakes per second and latency",
        adapter.name(),
        mode.label()
    );
    println!("{}", output::table_header());
    print!("{}", output::table_rows(&rr));
    let f = format!("{name}-{}.hgrm", rr.label);
    output::write_hgrm(&dir.join(&f), &h)?;
    rr.files.push(f);
    for w in &rr.warnings {
        warnings.push(format!("{}: {w}", rr.label));
    }
    let series = vec![(format!("{name} {}", rr.label), hist::percentile_points(&h))];
    let rep = Report {
        schema_version: report::SCHEMA_VERSION,
        tool: "peerd-loadgen",
        scenario: scenario.into(),
        protocol: adapter.name().into(),
        mode: mode.label().into(),
        started_unix_s: started,
        command_line: crate::command_line(),
        environment,
        server,
        pinning: pin,
        settings,
        runs: vec![rr],
        knee: None,
        idle: None,
        attack: None,
        soak: None,
        warnings,
    };
    finish_report(&rep, &dir, &name, &series)
}

/// The idle scenario: memory per idle, handshaken connection.
pub fn run_idle(a: &MsgArgs, settings: serde_json::Value) -> Result<()> {
    sys::raise_nofile();
    let scenario = "idle";
    let adapter = pick_adapter(scenario, a)?;
    let Prepared {
        dir,
        name,
        started,
        environment,
        target,
        lg_cores,
        pin,
        mut warnings,
    } = prepare(scenario, adapter.name(), a)?;
    let adapter = make_adapter(scenario, a, &target.endpoint)?;
    if let Some(c) = &lg_cores {
        sys::set_affinity(0, c)?;
    }
    let pid = target.pid();
    if pid.is_none() {
        warnings
            .push("server pid unknown (--spawn-server or --server-pid): no RSS readings".into());
    }
    let n = a.connections.unwrap_or(1000);
    let result = (|| -> Result<IdleReport> {
        let settle = || std::thread::sleep(Duration::from_millis(500));
        settle();
        let rss_before = pid.and_then(|p| sys::rss_bytes(p).ok());
        let sock_before = sys::sockstat().ok();
        let slab_before = sys::tcp_slab_bytes();
        let pb = count_bar(!a.no_progress, n as u64, "connecting");
        let loopback = target.addr.ip().is_loopback() && target.addr.is_ipv4();
        let t_start = now_ns();
        let mut conns = Vec::with_capacity(n);
        let mut failed = 0;
        let mut first_err = None;
        let tag = format!("lg{}n{}", std::process::id(), run_nonce());
        for i in 0..n {
            // ~28k ephemeral ports per source address: spread big runs over 127.0.0.x.
            let bind = (loopback && n > 20_000)
                .then(|| SocketAddr::from(([127, 0, 0, 2 + (i / 20_000) as u8], 0)));
            let opts = ConnectOptions {
                bind,
                ..Default::default()
            };
            match adapter.connect(target.addr, Some(&format!("{tag}-i{i}")), &opts) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert_with(|| format!("{e:#}"));
                    if failed > 100 && conns.is_empty() {
                        bail!("no connection succeeded: {}", first_err.unwrap_or_default());
                    }
                }
            }
            if let Some(pb) = &pb {
                if i % 256 == 0 {
                    pb.set_position(i as u64);
                }
            }
        }
        let connect_s = (now_ns() - t_start) as f64 / 1e9;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        if let Some(e) = &first_err {
            warnings.push(format!("{failed} connections failed; first: {e}"));
        }
        // Hold them, answering pings, then read memory.
        hold(
            &*adapter,
            &mut conns,
            Duration::from_secs_f64(a.duration.max(1.0)),
        )?;
        let connected = conns.len();
        let rss_held = pid.and_then(|p| sys::rss_bytes(p).ok());
        let sock_held = sys::sockstat().ok();
        let slab_held = sys::tcp_slab_bytes();
        drop(conns);
        std::thread::sleep(Duration::from_millis(1000));
        let rss_after = pid.and_then(|p| sys::rss_bytes(p).ok());
        let per = |d: f64| (connected > 0).then(|| d / connected as f64);
        let slab_delta: Vec<(String, i64)> = match (&slab_before, &slab_held) {
            (Some(b), Some(h)) => h
                .iter()
                .map(|(k, v)| {
                    let before = b.iter().find(|(n, _)| n == k).map(|x| x.1).unwrap_or(0);
                    (k.clone(), *v as i64 - before as i64)
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(IdleReport {
            requested: n,
            connected,
            failed,
            connect_s,
            server_rss_before_bytes: rss_before,
            server_rss_held_bytes: rss_held,
            server_rss_after_close_bytes: rss_after,
            server_rss_per_conn_bytes: match (rss_before, rss_held) {
                (Some(b), Some(h)) => per(h as f64 - b as f64),
                _ => None,
            },
            sockstat_before: sock_before,
            sockstat_held: sock_held,
            kernel_tcp_mem_per_conn_bytes: match (sock_before, sock_held) {
                (Some(b), Some(h)) => {
                    per(((h.tcp_mem_pages - b.tcp_mem_pages) * sys::page_size() as i64) as f64)
                }
                _ => None,
            },
            kernel_slab_per_conn_bytes: (!slab_delta.is_empty())
                .then(|| per(slab_delta.iter().map(|x| x.1 as f64).sum()))
                .flatten(),
            slab_delta_bytes: slab_delta,
            note: "kernel numbers (sockstat, slab) count both ends of each loopback connection: the loadgen's socket and the server's; server RSS is the server process alone".into(),
        })
    })();
    let server = target.finish()?;
    let idle = result?;
    println!(
        "idle / {} — {} connections held",
        adapter.name(),
        idle.connected
    );
    let kb = |v: Option<f64>| {
        v.map(|x| format!("{:.0} B", x))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "  server RSS per connection: {}   (before {} KiB, held {} KiB, after close {} KiB)",
        kb(idle.server_rss_per_conn_bytes),
        idle.server_rss_before_bytes.map(|b| b / 1024).unwrap_or(0),
        idle.server_rss_held_bytes.map(|b| b / 1024).unwrap_or(0),
        idle.server_rss_after_close_bytes
            .map(|b| b / 1024)
            .unwrap_or(0),
    );
    println!(
        "  kernel per connection (both ends): socket buffers {}, slab {}",
        kb(idle.kernel_tcp_mem_per_conn_bytes),
        kb(idle.kernel_slab_per_conn_bytes)
    );
    println!(
        "  opened in {:.2} s ({} failed)",
        idle.connect_s, idle.failed
    );
    let rep = Report {
        schema_version: report::SCHEMA_VERSION,
        tool: "peerd-loadgen",
        scenario: scenario.into(),
        protocol: adapter.name().into(),
        mode: "idle".into(),
        started_unix_s: started,
        command_line: crate::command_line(),
        environment,
        server,
        pinning: pin,
        settings,
        runs: Vec::new(),
        knee: None,
        idle: Some(idle),
        attack: None,
        soak: None,
        warnings,
    };
    finish_report(&rep, &dir, &name, &[])
}

/// Keep idle connections alive for `d`: answer the server's pings (the protocol's and,
/// over a WebSocket, the WebSocket's), notice closes.
fn hold(adapter: &dyn Adapter, conns: &mut Vec<Connected>, d: Duration) -> Result<()> {
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;
    let mut poll = Poll::new()?;
    // Register the sockets' own fds (no try_clone): a duplicate per connection would halve
    // how many idle connections fit under the descriptor limit.
    for (i, c) in conns.iter().enumerate() {
        c.stream.set_nonblocking(true)?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&c.stream.as_raw_fd()),
            Token(i),
            Interest::READABLE,
        )?;
    }
    // A receive buffer only for connections that get something (most get nothing).
    let mut inboxes: Vec<Option<adapter::link::Inbox>> = (0..conns.len()).map(|_| None).collect();
    let mut events = Events::with_capacity(1024);
    let end = now_ns() + d.as_nanos() as u64;
    let mut closed = vec![false; conns.len()];
    while now_ns() < end {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            let inbox = inboxes[i]
                .get_or_insert_with(|| c.link.inbox(4096, &std::mem::take(&mut c.leftover)));
            loop {
                let spare = inbox.spare(4096);
                match c.link.read(&mut &c.stream, spare) {
                    Ok(0) => {
                        closed[i] = true;
                        break;
                    }
                    Ok(n) => {
                        inbox.filled(n);
                        let ws = c.link.is_ws();
                        let mut out = bytes::BytesMut::new();
                        let d = inbox.deliver(&mut |m| {
                            let used = adapter.parse(m, &mut |inc| {
                                if let Incoming::Ping(nonce) = inc {
                                    let _ = adapter::link::frame(ws, &mut out, |o| {
                                        adapter.encode_pong(o, nonce)
                                    });
                                }
                            })?;
                            Ok((used, false))
                        });
                        out.extend_from_slice(&inbox.control);
                        inbox.control.clear();
                        let mut at = 0;
                        while at < out.len() {
                            match c.link.write(&mut &c.stream, &out[at..]) {
                                Ok(n) => at += n,
                                Err(_) => break,
                            }
                        }
                        if !matches!(d, Ok(ref d) if d.closed.is_none()) {
                            closed[i] = true;
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
    for c in conns.iter() {
        let _ = poll
            .registry()
            .deregister(&mut mio::unix::SourceFd(&c.stream.as_raw_fd()));
    }
    // Put back what was read and not handed out, so a later reader of these connections
    // starts where this one stopped.
    for (c, inbox) in conns.iter_mut().zip(inboxes) {
        if let Some(inbox) = inbox {
            c.leftover = inbox.into_leftover();
        }
    }
    let mut i = 0;
    conns.retain(|_| {
        i += 1;
        !closed[i - 1]
    });
    for c in conns.iter() {
        c.stream.set_nonblocking(false)?;
    }
    Ok(())
}

/// The plot subcommand.
pub fn run_plot(p: &crate::cli::PlotArgs) -> Result<()> {
    let mut series = Vec::new();
    for f in &p.files {
        let (path, label) = match f.split_once('=') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (
                f.clone(),
                Path::new(f)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.clone()),
            ),
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        series.push((
            label,
            hist::parse_hgrm(&text).with_context(|| format!("parsing {path}"))?,
        ));
    }
    output::plot_percentiles(&p.out, &p.title, &series)?;
    println!("wrote {}", p.out.display());
    Ok(())
}
