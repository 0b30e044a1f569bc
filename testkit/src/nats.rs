//! [`Nats`]: a real `nats-server` with JetStream on a free loopback port, for the cluster
//! tests. The binary is `$NATS_SERVER`, else `nats-server` on the PATH (or in /usr/sbin,
//! where Debian's package puts it); `.ci/deps` installs it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running nats-server; killed when dropped, its store removed.
pub struct Nats {
    child: Option<Child>,
    /// The port it listens on (kept across [`Nats::restart`]).
    pub port: u16,
    dir: PathBuf,
    /// More nats-server arguments (TLS, credentials), kept across restarts.
    extra: Vec<String>,
}

fn binary() -> String {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return p;
    }
    for p in [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return p.to_string();
        }
    }
    panic!("nats-server not found: run .ci/deps (it unpacks Debian's nats-server), or set NATS_SERVER=path");
}

impl Nats {
    /// Start one on a free port, with JetStream and a fresh store.
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// [`Nats::start`] with more nats-server arguments (`--tls`, `--user`, ...).
    pub fn start_with(extra: &[&str]) -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("peerd-nats-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut n = Nats {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let mut child = Command::new(binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("nats-server on port {} did not say it was ready", self.port);
        }
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL it (its store stays, for [`Nats::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
