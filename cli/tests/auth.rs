//! `peerd serve`'s authentication flags end to end: tokens from `peerd token` (HS256) and
//! from a private key (RS256) accepted, a missing or foreign token refused, a key file that
//! is not one refused at start, and the loud warning when the server takes anyone on a
//! non-loopback address.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{peerd, run, Output, Served};

const LIMIT: Duration = Duration::from_secs(20);

fn testdata(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/auth")
        .join(name)
        .display()
        .to_string()
}

/// A running `peerd serve` and its port.
struct Server {
    served: Served,
    port: String,
}

impl Server {
    fn start(listen: &str, args: &[&str]) -> Server {
        let mut cmd = peerd();
        cmd.args(["serve", "--listen", listen, "--no-pin", "--shards", "1"])
            .args(args);
        let served = Served::one_line(cmd, LIMIT);
        let port = served.endpoint().rsplit_once(':').unwrap().1.to_string();
        Server { served, port }
    }

    fn client(&self, args: &[&str]) -> Output {
        let mut c = peerd();
        c.arg(args[0])
            .args(["--server", &format!("127.0.0.1:{}", self.port)])
            .args(&args[1..]);
        run(c, LIMIT, "peerd")
    }

    /// SIGTERM; everything it wrote to stderr.
    fn stop(mut self) -> String {
        let (status, stderr) = self.served.terminate(LIMIT);
        assert!(status.success(), "{status}");
        stderr
    }
}

fn token(args: &[&str]) -> String {
    let mut c: Command = peerd();
    c.arg("token").args(args);
    let out = run(c, LIMIT, "peerd token");
    assert!(out.status.success(), "peerd token: {}", out.stderr);
    out.stdout.trim().to_string()
}

#[test]
fn tokens_from_peerd_token_and_from_a_private_key_are_accepted_and_others_refused() {
    let secret = testdata("hs256.secret");
    let server = Server::start(
        "127.0.0.1:0",
        &[
            "--auth-hs256-secret",
            &secret,
            "--auth-public-key",
            &testdata("rsa.pub.pem"),
        ],
    );
    let hs = token(&["--secret", &secret, "--sub", "alice"]);
    let ok = server.client(&["call", "--token", &hs, "echo", "hi"]);
    assert!(ok.status.success(), "{}", ok.stderr);
    assert_eq!(ok.stdout, "hi\n");

    let rs = token(&[
        "--key",
        &testdata("rsa.key"),
        "--alg",
        "RS256",
        "--sub",
        "bob",
    ]);
    let mut c = peerd();
    c.args([
        "call",
        "--server",
        &format!("127.0.0.1:{}", server.port),
        "peers",
    ])
    .env("PEERD_TOKEN", &rs);
    let peers = run(c, LIMIT, "peerd call");
    assert!(peers.status.success(), "{}", peers.stderr);
    assert!(
        peers.stdout.contains("\"bob\""),
        "the token named the peer: {}",
        peers.stdout
    );

    let none = server.client(&["call", "echo", "hi"]);
    assert!(!none.status.success());
    assert!(none.stderr.contains("unauthorized"), "{}", none.stderr);
    assert!(none.stderr.contains("requires a token"), "{}", none.stderr);

    let other = token(&[
        "--key",
        &testdata("rsa-other.key"),
        "--alg",
        "RS256",
        "--sub",
        "bob",
    ]);
    let foreign = server.client(&["call", "--token", &other, "echo", "hi"]);
    assert!(
        foreign.stderr.contains("signature does not verify"),
        "{}",
        foreign.stderr
    );

    let someone_else = server.client(&["call", "--token", &hs, "--id", "mallory", "echo", "x"]);
    assert!(
        someone_else.stderr.contains("not \"mallory\""),
        "{}",
        someone_else.stderr
    );

    // Permissions from the flags of `peerd token`.
    let limited = token(&["--secret", &secret, "--sub", "carol", "--publish", "chat"]);
    let refused = server.client(&["pub", "--token", &limited, "chat-admin", "x"]);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("not allowed to publish"),
        "{}",
        refused.stderr
    );
    let allowed = server.client(&["pub", "--token", &limited, "chat", "x"]);
    assert!(allowed.status.success(), "{}", allowed.stderr);
    server.stop();
}

#[test]
fn a_bad_key_file_is_refused_at_start_naming_it() {
    for (flag, file) in [
        ("--auth-public-key", "rsa.key"),
        ("--auth-public-key", "hs256.secret"),
        ("--auth-hs256-secret", "no-such-file"),
    ] {
        let mut c = peerd();
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
            flag,
            &testdata(file),
        ]);
        let out = run(c, LIMIT, "peerd serve");
        assert_eq!(out.status.code(), Some(1), "{flag} {file}: {}", out.stderr);
        assert!(out.stderr.contains(file), "{}", out.stderr);
        assert!(out.stdout.is_empty(), "no ready line: {}", out.stdout);
    }
    let mut c = peerd();
    c.args([
        "token",
        "--secret",
        &testdata("hs256.secret"),
        "--sub",
        "42",
    ]);
    assert_eq!(run(c, LIMIT, "peerd token").status.code(), Some(2));
}

#[test]
fn open_access_on_a_non_loopback_address_is_announced_loudly() {
    let warned = |s: &str| s.contains("WARNING: no authentication on") && s.contains("anyone");
    // Every interface, no auth: the warning, and the server still serves.
    let open = Server::start("0.0.0.0:0", &[]);
    let mut seen = open.served.stderr_line(LIMIT).expect("something on stderr");
    while !warned(&seen) {
        seen = open.served.stderr_line(LIMIT).expect("the warning");
    }
    assert!(open.client(&["call", "echo", "x"]).status.success());
    open.stop();

    // Said explicitly, with a key, or on loopback: no warning.
    let secret = testdata("hs256.secret");
    for (listen, args) in [
        ("0.0.0.0:0", vec!["--allow-anonymous"]),
        ("0.0.0.0:0", vec!["--auth-hs256-secret", secret.as_str()]),
        ("127.0.0.1:0", vec![]),
    ] {
        let s = Server::start(listen, &args);
        let err = s.stop();
        assert!(!warned(&err), "{listen} {args:?}: {err}");
    }
}

#[test]
fn anonymous_peers_get_the_permissions_given_for_them() {
    let secret = testdata("hs256.secret");
    let server = Server::start(
        "127.0.0.1:0",
        &[
            "--auth-hs256-secret",
            &secret,
            "--allow-anonymous",
            "--anonymous-permissions",
            r#"{"call":["echo"]}"#,
        ],
    );
    let echo = server.client(&["call", "echo", "hi"]);
    assert!(echo.status.success(), "{}", echo.stderr);
    let peers = server.client(&["call", "peers"]);
    assert!(
        peers
            .stderr
            .contains("not allowed to call method \"peers\""),
        "{}",
        peers.stderr
    );
    let claimed = server.client(&["call", "--id", "alice", "echo", "hi"]);
    assert!(
        claimed.stderr.contains("needs a token"),
        "{}",
        claimed.stderr
    );
    server.stop();
}
