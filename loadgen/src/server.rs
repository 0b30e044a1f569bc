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

/// What the ready line told us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyLine {
    /// Listening address.
    pub addr: SocketAddr,
    /// Shard count.
    pub shards: u32,
    /// Server process id.
    pub pid: u32,
}

/// Parse `peerd listening on 127.0.0.1:PORT shards=N pid=PID`.
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let rest = line.trim().strip_prefix("peerd listening on ")?;
    let mut it = rest.split_whitespace();
    let addr = it.next()?.parse().ok()?;
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
            "127.0.0.1:0".into(),
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
    }
}
