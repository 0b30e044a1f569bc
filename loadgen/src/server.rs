//! Starting and stopping a local `peerd serve` (`--spawn-server`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::sys;

/// Where a server listens: `host:port`, `tcp://host:port`, `tls://host:port`,
/// `ws://host:port[/path]` or `wss://host:port[/path]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub scheme: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Request path of a WebSocket endpoint (`/` when not given); empty otherwise.
    pub path: String,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether the scheme is `ws` or `wss`.
    pub fn is_ws(&self) -> bool {
        matches!(self.scheme.as_str(), "ws" | "wss")
    }

    /// Whether the scheme is `tls` or `wss`.
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme.as_str(), "tls" | "wss")
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.host_port(), self.path)
    }
}

/// Parse an endpoint (see [`Endpoint`]); a bare `host:port` is `tcp`.
pub fn parse_endpoint(s: &str) -> Result<Endpoint> {
    let s = s.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((sc, r)) => (sc.to_ascii_lowercase(), r),
        None => ("tcp".to_string(), s),
    };
    if !matches!(scheme.as_str(), "tcp" | "tls" | "ws" | "wss") {
        bail!("{s:?}: unknown scheme {scheme:?} (expected tcp, tls, ws or wss)");
    }
    let (hp, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = hp
        .rsplit_once(':')
        .with_context(|| format!("{s:?}: no port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        bail!("{s:?}: no host");
    }
    let port: u16 = port
        .parse()
        .with_context(|| format!("{s:?}: bad port {port:?}"))?;
    let path = match (scheme.as_str(), path) {
        ("ws" | "wss", "") => "/".to_string(),
        ("ws" | "wss", p) => p.to_string(),
        (_, "" | "/") => String::new(),
        (_, p) => bail!("{s:?}: a {scheme} endpoint has no path ({p:?})"),
    };
    Ok(Endpoint {
        scheme,
        host: host.to_string(),
        port,
        path,
    })
}

/// What the ready line told us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyLine {
    /// Listening address.
    pub addr: SocketAddr,
    /// The endpoint as announced (scheme, host, port, path).
    pub endpoint: Endpoint,
    /// Shard count.
    pub shards: u32,
    /// Server process id.
    pub pid: u32,
}

/// Parse `peerd listening on ENDPOINT shards=N pid=PID`, where ENDPOINT is `127.0.0.1:PORT`
/// or a URL such as `ws://127.0.0.1:PORT/` (a Unix socket's line gives `None`).
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let rest = line.trim().strip_prefix("peerd listening on ")?;
    let mut it = rest.split_whitespace();
    let endpoint = parse_endpoint(it.next()?).ok()?;
    let addr = SocketAddr::new(endpoint.host.parse().ok()?, endpoint.port);
    let mut shards = None;
    let mut pid = None;
    for kv in it {
        if let Some(v) = kv.strip_prefix("shards=") {
            shards = v.parse().ok();
        } else if let Some(v) = kv.strip_prefix("pid=") {
            pid = v.parse().ok();
        }
    }
    Some(ReadyLine {
        addr,
        endpoint,
        shards: shards?,
        pid: pid?,
    })
}

/// How to start the server.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnConfig {
    /// Path to the `peerd` binary.
    pub bin: PathBuf,
    /// `--shards`.
    pub shards: u32,
    /// Cores the server process is pinned to (sched_setaffinity before exec), also passed
    /// as `--cores`.
    pub cores: Option<Vec<usize>>,
    /// Extra arguments after `serve ...`.
    pub extra_args: Vec<String>,
    /// `--listen` (default `127.0.0.1:0`), e.g. `ws://127.0.0.1:0`.
    pub listen: Option<String>,
}

/// A running server we started.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    /// What it announced.
    pub ready: ReadyLine,
    /// The exact command line.
    pub command: Vec<String>,
}

impl SpawnedServer {
    /// Start the server and wait (up to 20 s) for its ready line.
    pub fn start(cfg: &SpawnConfig) -> Result<SpawnedServer> {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            cfg.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into()),
            "--shards".into(),
            cfg.shards.to_string(),
        ];
        if let Some(c) = &cfg.cores {
            args.push("--cores".into());
            args.push(sys::format_cpu_list(c));
        }
        args.extend(cfg.extra_args.iter().cloned());
        let mut cmd = Command::new(&cfg.bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cores) = cfg.cores.clone() {
            // SAFETY: between fork and exec we only call sched_setaffinity, which is
            // async-signal-safe, on a set computed before the fork.
            unsafe {
                cmd.pre_exec(move || sys::set_affinity(0, &cores));
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cfg.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining stdout after the ready line so the server never blocks
        // on a full pipe.
        std::thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if !sent {
                        if let Some(r) = parse_ready_line(&line) {
                            let _ = tx.send(Ok(r));
                            sent = true;
                            continue;
                        }
                    }
                    eprintln!("[peerd] {line}");
                }
                if !sent {
                    let _ = tx.send(Err(()));
                }
            })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(r)) => break r,
                Ok(Err(())) => {
                    let status = child.wait()?;
                    bail!(
                        "{} exited ({status}) without printing its ready line",
                        cfg.bin.display()
                    );
                }
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("{} printed no ready line within 20 s", cfg.bin.display());
                }
                Err(_) => {
                    if let Some(status) = child.try_wait()? {
                        bail!("{} exited early ({status})", cfg.bin.display());
                    }
                }
            }
        };
        let mut command = vec![cfg.bin.display().to_string()];
        command.extend(args);
        Ok(SpawnedServer {
            child,
            ready,
            command,
        })
    }

    /// How the server exited, if it has (without waiting).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot tell: {e}")),
        }
    }

    /// SIGTERM, wait up to 10 s (then SIGKILL). Returns the exit description.
    pub fn stop(mut self) -> Result<String> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.to_string());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait()?;
                return Ok(format!(
                    "killed after 10 s without exiting on SIGTERM ({status})"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let r = parse_ready_line("peerd listening on 127.0.0.1:40123 shards=2 pid=777\n").unwrap();
        assert_eq!(r.addr, "127.0.0.1:40123".parse::<SocketAddr>().unwrap());
        assert_eq!(r.shards, 2);
        assert_eq!(r.pid, 777);
        assert!(parse_ready_line("something else").is_none());
        assert!(parse_ready_line("peerd listening on 127.0.0.1:1 shards=2").is_none());
        let r =
            parse_ready_line("peerd listening on ws://127.0.0.1:40459/ shards=1 pid=5449").unwrap();
        assert_eq!(r.addr, "127.0.0.1:40459".parse::<SocketAddr>().unwrap());
        assert_eq!(r.endpoint.scheme, "ws");
        assert_eq!(r.endpoint.path, "/");
        let r = parse_ready_line("peerd listening on wss://[::1]:7/x shards=1 pid=2").unwrap();
        assert_eq!(r.addr, "[::1]:7".parse::<SocketAddr>().unwrap());
        assert_eq!(r.endpoint.to_string(), "wss://[::1]:7/x");
        assert!(parse_ready_line("peerd listening on unix:/tmp/p shards=1 pid=2").is_none());
    }

    #[test]
    fn endpoints_parse() {
        let e = parse_endpoint("localhost:7400").unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("tcp", "localhost", 7400)
        );
        assert_eq!(e.path, "");
        let e = parse_endpoint("WSS://h:1/a/b?c").unwrap();
        assert_eq!((e.scheme.as_str(), e.path.as_str()), ("wss", "/a/b?c"));
        assert!(e.is_ws() && e.is_tls());
        assert_eq!(parse_endpoint("tls://h:2/").unwrap().path, "");
        assert!(parse_endpoint("tls://h:2/x").is_err());
        assert!(parse_endpoint("http://h:1").is_err());
        assert!(parse_endpoint("h").is_err());
        assert!(parse_endpoint("ws://:1").is_err());
    }
}
