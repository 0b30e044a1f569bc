//! What the `peerd` binary's integration tests share: the binary with a clean environment,
//! and running children under a deadline (a watchdog SIGKILLs a child that overstays, so a
//! hang fails the test instead of hanging it), their pipes read on threads.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// `peerd` with no `PEERD_*`, `RUST_LOG` or `NOTIFY_SOCKET` from the environment running
/// the tests (a test run under systemd must not have its servers notify the service
/// manager), its stdin closed and its output piped.
pub fn peerd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peerd"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PEERD_") || k == "RUST_LOG" || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Wait for `child`; SIGKILL it (and fail naming `what`) if it takes longer than `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let pid = child.id() as libc::pid_t;
    let (done, done_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
            // The child is not reaped yet (the wait below is still blocked), so the pid is
            // still its own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let status = child.wait().expect("wait for a child");
    drop(done);
    assert!(
        !watchdog.join().unwrap(),
        "{what} did not exit within {limit:?}"
    );
    status
}

/// Lines of a child's pipe, read on a thread, as they arrive.
pub fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Everything a pipe says until it closes, read on a thread.
pub fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// What a command run to completion said.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` to completion under `limit` (its output piped and read while it runs, so a
/// chatty child never blocks on a full pipe).
pub fn run(mut cmd: Command, limit: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_bounded(&mut child, limit, what);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A running `peerd serve`: the stdout lines it printed while starting (its ready lines),
/// the rest of stdout drained on a thread (a chatty child never blocks on a full pipe), its
/// stderr collected. It is killed if still running when dropped, so a failed assertion
/// never leaves a server behind.
pub struct Served {
    pub child: Child,
    /// The stdout lines read while starting, in order.
    pub lines: Vec<String>,
    stderr: Receiver<String>,
}

impl Served {
    /// Spawn `cmd` (a `peerd serve …` from [`peerd`]) and read its stdout lines until
    /// `started` says the lines so far are all that is needed; fail (with its stderr) if
    /// they do not come within `limit`.
    pub fn start(mut cmd: Command, limit: Duration, started: impl Fn(&[String]) -> bool) -> Served {
        let mut child = cmd.spawn().expect("spawn peerd serve");
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        let mut got = Vec::new();
        while !started(&got) {
            match stdout.recv_timeout(limit) {
                Ok(line) => got.push(line),
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().expect("reap peerd serve");
                    let err: Vec<String> = stderr.try_iter().collect();
                    panic!("no ready lines ({e}; {status}); stdout: {got:?}; stderr: {err:?}");
                }
            }
        }
        thread::spawn(move || for _ in stdout {});
        Served {
            child,
            lines: got,
            stderr,
        }
    }

    /// Start and read one line: the ready line of a server with one endpoint.
    pub fn one_line(cmd: Command, limit: Duration) -> Served {
        Served::start(cmd, limit, |l| !l.is_empty())
    }

    /// The first ready line's endpoint: `peerd listening on ENDPOINT shards=N pid=PID`.
    pub fn endpoint(&self) -> &str {
        self.lines[0].split(' ').nth(3).expect("ready line")
    }

    /// The next line it writes to stderr, waiting at most `limit`.
    pub fn stderr_line(&self, limit: Duration) -> Option<String> {
        self.stderr.recv_timeout(limit).ok()
    }

    pub fn sigterm(&self) {
        // The child is ours and not reaped yet, so the pid names it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Wait (at most `limit`) for the exit, then everything it wrote to stderr.
    pub fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let status = wait_bounded(&mut self.child, limit, "peerd serve");
        // The process is gone, so its stderr is at EOF and this ends.
        let stderr: Vec<String> = self.stderr.iter().collect();
        (status, stderr.join("\n"))
    }

    /// SIGTERM, then [`wait`](Self::wait).
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, String) {
        self.sigterm();
        self.wait(limit)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
