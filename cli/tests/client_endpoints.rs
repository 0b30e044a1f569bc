//! The client subcommands' `--server ENDPOINT` and `--ca FILE` through the binary: a Unix
//! socket (`peerd serve --listen unix:PATH`, then `peerd call`, `pub`/`sub`, `peers`),
//! `ws://`, `wss://` and `tls://` with the test CA (`--ca`, `PEERD_CA`), and the refusals:
//! a malformed endpoint is a usage error naming `--server`, an unreadable CA file names
//! the file, an unknown CA is a TLS error.
//!
//! Every child runs under a deadline (killed if it overstays), so a hang fails the test.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{peerd, run, Output, Served};

const LIMIT: Duration = Duration::from_secs(20);

fn pki(file: &str) -> String {
    format!("{}/../testdata/tls/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// `peerd serve` on the `--listen` endpoints given, killed on drop.
struct Server {
    /// The process (killed when dropped, after `Server::drop` removed the socket file).
    _served: Served,
    /// The endpoints from the ready lines, real ports filled in.
    endpoints: Vec<String>,
    path: Option<PathBuf>,
}

impl Server {
    fn start(listen: &[String], extra: &[String]) -> Server {
        let mut cmd = peerd();
        cmd.args(["serve", "--no-pin", "--shards", "1"]);
        for l in listen {
            cmd.args(["--listen", l]);
        }
        cmd.args(extra);
        // One `peerd listening on ENDPOINT shards=N pid=PID` line per endpoint.
        let served = Served::start(cmd, LIMIT, |l| l.len() == listen.len());
        let endpoints = served
            .lines
            .iter()
            .map(|line| {
                let words: Vec<&str> = line.split(' ').collect();
                assert_eq!(&words[..3], ["peerd", "listening", "on"], "{line}");
                words[3].to_string()
            })
            .collect();
        Server {
            _served: served,
            endpoints,
            path: None,
        }
    }

    fn unix(name: &str) -> Server {
        let path =
            std::env::temp_dir().join(format!("peerd-cli-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut s = Server::start(&[format!("unix:{}", path.display())], &[]);
        assert!(s.endpoints[0].starts_with("unix:"), "{:?}", s.endpoints);
        s.path = Some(path);
        s
    }

    fn endpoint(&self) -> String {
        self.endpoints[0].clone()
    }

    fn client(&self, args: &[&str]) -> Output {
        let mut c = peerd();
        c.arg(args[0])
            .args(["--server", &self.endpoint()])
            .args(&args[1..]);
        run(c, LIMIT, "peerd")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `_served` (the process) is dropped, and killed, after this.
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn call_over_websocket_tls_and_websocket_over_tls_with_a_private_ca() {
    let listen: Vec<String> = [
        "ws://127.0.0.1:0",
        "wss://127.0.0.1:0/peerd",
        "tls://127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let tls = [
        "--tls-cert".to_string(),
        pki("server.pem"),
        "--tls-key".to_string(),
        pki("server.key"),
    ];
    let srv = Server::start(&listen, &tls);
    for ep in &srv.endpoints {
        // By name: the certificate is for localhost.
        let ep = ep.replace("127.0.0.1", "localhost");
        let mut c = peerd();
        c.args([
            "call",
            "--server",
            &ep,
            "--ca",
            &pki("ca.pem"),
            "echo",
            "hi",
        ]);
        let out = run(c, LIMIT, "peerd");
        assert!(out.status.success(), "{ep}: {}", out.stderr);
        assert_eq!(out.stdout, "hi\n", "{ep}");
        // PEERD_CA instead of --ca.
        let mut c = peerd();
        c.env("PEERD_CA", pki("ca.pem"))
            .env("PEERD_SERVER", &ep)
            .args(["peers"]);
        let out = run(c, LIMIT, "peerd");
        assert!(out.status.success(), "{ep}: {}", out.stderr);
    }
    // Without the CA the system's roots do not know the test CA: a TLS error, exit 1.
    let wss = srv.endpoints[1].replace("127.0.0.1", "localhost");
    let mut c = peerd();
    c.args(["call", "--server", &wss, "echo", "hi"]);
    let out = run(c, LIMIT, "peerd");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}

#[test]
fn client_subcommands_reach_a_unix_socket() {
    let srv = Server::unix("subcommands");
    let out = srv.client(&["call", "echo", "over unix"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "over unix\n");

    // A subscriber on the socket receives a publish made through the socket.
    let mut sub = peerd();
    sub.args([
        "sub",
        "--server",
        &srv.endpoint(),
        "--id",
        "listener",
        "news",
    ])
    .args(["--count", "1"]);
    let sub = thread::spawn(move || run(sub, LIMIT, "peerd"));
    let deadline = Instant::now() + LIMIT;
    loop {
        let peers = srv.client(&["peers", "--topic", "news"]);
        assert!(peers.status.success(), "{}", peers.stderr);
        if peers.stdout.lines().any(|l| l == "listener") {
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber joined");
        thread::sleep(Duration::from_millis(20));
    }
    let out = srv.client(&["pub", "--id", "speaker", "news", "hello"]);
    assert!(out.status.success(), "{}", out.stderr);
    let sub = sub.join().unwrap();
    assert!(sub.status.success(), "{}", sub.stderr);
    assert_eq!(sub.stdout, "speaker: hello\n");
}

#[test]
fn a_malformed_endpoint_is_a_usage_error_naming_the_flag() {
    for bad in [
        "http://h:1",
        "localhost",
        "tcp://h:1/x",
        "ws://h:1/a b",
        "unix:",
    ] {
        let mut c = peerd();
        c.args(["call", "--server", bad, "echo"]);
        let out = run(c, LIMIT, "peerd");
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", out.stderr);
        assert!(out.stderr.contains("--server"), "{bad}");
    }
    // From the environment too.
    let mut c = peerd();
    c.env("PEERD_SERVER", "gopher://h:1").args(["peers"]);
    let out = run(c, LIMIT, "peerd");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn an_unreadable_ca_file_is_named() {
    let mut c = peerd();
    c.args([
        "ping",
        "--server",
        "tls://localhost:1",
        "--ca",
        "/nonexistent/ca.pem",
    ]);
    let out = run(c, LIMIT, "peerd");
    assert_eq!(out.status.code(), Some(1));
    let err = out.stderr;
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    // PEERD_CA sets it for a whole session.
    let mut c = peerd();
    c.env("PEERD_CA", "/nonexistent/env-ca.pem")
        .args(["ping", "--server", "wss://localhost:1/"]);
    let out = run(c, LIMIT, "peerd");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("/nonexistent/env-ca.pem"),
        "{}",
        out.stderr
    );
}
