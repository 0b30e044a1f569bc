//! The `peerd` binary end to end: start `peerd serve` on 127.0.0.1:0, wait for its ready
//! line, talk to it with the client subcommands, stop it with SIGTERM; and the start-up
//! refusals and environment variables of `serve`.
//!
//! Every child runs under a deadline (a watchdog SIGKILLs it), so a hung server fails the
//! test instead of hanging it. Servers run with `--no-pin`: tests run in parallel.

use std::process::{Command, ExitStatus};
use std::thread;
use std::time::Duration;

mod common;
use common::{peerd, run, Output, Served};

/// Longest any child may run.
const LIMIT: Duration = Duration::from_secs(20);

/// A `peerd serve` that has printed its ready line.
struct Server {
    served: Served,
    addr: String,
    shards: usize,
}

impl Server {
    /// Start `peerd serve --listen 127.0.0.1:0 --no-pin <args>` and wait for the ready line.
    fn start(mut cmd: Command, args: &[&str]) -> Server {
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-pin"])
            .args(args);
        let served = Served::one_line(cmd, LIMIT);
        let line = served.lines[0].clone();
        // `peerd listening on ADDR shards=N pid=PID`, exactly: the loadgen parses it.
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 6, "ready line {line:?}");
        assert_eq!(
            &words[..3],
            ["peerd", "listening", "on"],
            "ready line {line:?}"
        );
        let addr = words[3].to_string();
        assert!(addr.starts_with("127.0.0.1:"), "ready line {line:?}");
        let shards = words[4]
            .strip_prefix("shards=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ready line {line:?}"));
        assert_eq!(
            words[5],
            format!("pid={}", served.child.id()),
            "ready line {line:?}"
        );
        Server {
            served,
            addr,
            shards,
        }
    }

    /// A client subcommand against this server.
    fn client(&self, args: &[&str]) -> Output {
        let mut c = peerd();
        c.arg(args[0])
            .args(["--server", &self.addr])
            .args(&args[1..]);
        run(c, LIMIT, "peerd")
    }

    /// SIGTERM, then the exit status and what the server wrote to stderr.
    fn terminate(mut self) -> (ExitStatus, String) {
        self.served.terminate(LIMIT)
    }
}

#[test]
fn serve_answers_client_subcommands_and_exits_0_on_sigterm() {
    // The smallest frame limit the flag accepts still carries the handshake and a call.
    let server = Server::start(peerd(), &["--shards", "2", "--max-frame-len", "1024"]);
    assert_eq!(server.shards, 2);

    let echo = server.client(&["call", "echo", "hello"]);
    assert!(echo.status.success(), "call echo: {}", echo.stderr);
    assert_eq!(echo.stdout, "hello\n");

    // The `peers` builtin (the binary's, not the library's): a JSON array of peer ids,
    // holding at least the caller itself.
    let peers = server.client(&["call", "--id", "asker", "peers"]);
    assert!(peers.status.success(), "call peers: {}", peers.stderr);
    let ids: Vec<String> = serde_json::from_str(peers.stdout.trim()).expect("JSON array");
    assert!(ids.iter().any(|id| id == "asker"), "{ids:?}");

    let missing = server.client(&["call", "no.such.method"]);
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);
    assert!(missing.stderr.starts_with("peerd: "), "{}", missing.stderr);

    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn nonsense_values_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--max-frame-len", "0"),
        ("--outbound-queue-bytes", "0"),
        ("--max-connections", "0"),
        ("--shards", "0"),
        ("--heartbeat-ms", "0"),
        ("--handshake-timeout-ms", "0"),
        ("--max-frame-len", "1023"),
        ("--max-frame-len", "5000000000"),
        ("--shards", "many"),
    ] {
        let mut c = peerd();
        c.args(["serve", "--listen", "127.0.0.1:0", "--no-pin", flag, value]);
        let out = run(c, LIMIT, "peerd");
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {}", out.stderr);
        assert!(
            out.stderr.contains(flag),
            "{flag} {value}: message does not name the flag: {}",
            out.stderr
        );
        assert!(
            !out.stdout.contains("listening"),
            "{flag} {value} started: {}",
            out.stdout
        );
    }
}

#[test]
fn environment_sets_serve_flags_and_flags_win() {
    // A shard count that is not this machine's default, so the variable is what set it.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let want = if cores == 1 { 2 } else { 1 };
    let mut c = peerd();
    c.env("PEERD_SHARDS", want.to_string());
    let server = Server::start(c, &[]);
    assert_eq!(server.shards, want);
    assert_eq!(server.terminate().0.code(), Some(0));

    // A flag wins over the environment, even over a value the flag would refuse.
    let mut c = peerd();
    c.env("PEERD_SHARDS", "0");
    let server = Server::start(c, &["--shards", "1"]);
    assert_eq!(server.shards, 1);
    assert_eq!(server.terminate().0.code(), Some(0));

    // The environment is validated like the flag, and the message names the flag.
    let mut c = peerd();
    c.env("PEERD_MAX_FRAME_LEN", "0")
        .args(["serve", "--listen", "127.0.0.1:0", "--no-pin"]);
    let out = run(c, LIMIT, "peerd");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--max-frame-len"), "{}", out.stderr);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);
}

#[test]
fn logs_go_to_stderr_filtered_by_rust_log() {
    // Default filter: peerd's own info events, plain text (stderr is a pipe, no colours).
    let server = Server::start(peerd(), &["--shards", "1"]);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("INFO") && stderr.contains("stopped"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe: {stderr:?}"
    );

    // RUST_LOG=off silences the log; the ready line on stdout is not a log line.
    let mut c = peerd();
    c.env("RUST_LOG", "off");
    let server = Server::start(c, &["--shards", "1"]);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn the_server_logs_connections_at_debug_and_refusals_at_warn() {
    let mut c = peerd();
    c.env("RUST_LOG", "peerd_server=debug");
    let server = Server::start(c, &["--shards", "1"]);
    let out = server.client(&["call", "--id", "logged", "echo", "hi"]);
    assert!(out.status.success(), "{}", out.stderr);
    // Garbage instead of a Hello: refused, and said so at warn.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut s, &[0xff; 16]).unwrap();
    let mut sink = Vec::new();
    // The server answers with a Reject and shuts the connection: read to its end.
    let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let has = |level: &str, what: &str| {
        stderr
            .lines()
            .any(|l| l.contains(level) && l.contains(what))
    };
    assert!(
        has("DEBUG", "peer connected") && has("DEBUG", "logged"),
        "{stderr}"
    );
    assert!(has("DEBUG", "peer closed"), "{stderr}");
    assert!(has("WARN", "handshake refused"), "{stderr}");
}
