//! Interop with a WebSocket client no one here wrote (issue 10, point 7): a spawned
//! `peerd serve` with `ws://` and `wss://` endpoints, driven by
//! `tests/interop/peerd_ws_client.py`, which speaks WebSocket through the PyPI package
//! `websockets` and peerd's frames from an encoder/decoder written by hand from
//! `docs/PROTOCOL.md`: a refused upgrade (wrong subprotocol: HTTP 400), Hello -> Welcome,
//! an `echo` RPC, Join, a Publish the publisher gets back with echo and a second peer
//! receives, and a clean close (the server's WebSocket close status must be 1000).
//!
//! Needs `python3` with `websockets` (`pip install -r cli/tests/interop/requirements.txt`);
//! without it the test fails saying so, it does not skip. Loopback only; every child runs
//! under a deadline (a watchdog SIGKILLs it).

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

mod common;
use common::{collect, peerd, run, wait_bounded, Served};

/// Longest the server may take to start, and to stop on SIGTERM.
const SERVER_LIMIT: Duration = Duration::from_secs(20);

/// Longest one run of the script may take (it bounds itself at 60 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

const REQUIREMENTS: &str = "cli/tests/interop/requirements.txt";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// `python3` with the script's dependency, or a failure that says how to get it.
fn python() -> Command {
    let mut probe = Command::new("python3");
    probe.args(["-c", "import websockets; print(websockets.__version__)"]);
    let how = format!(
        "the interop test needs python3 with the `websockets` package: \
         pip install -r {REQUIREMENTS}"
    );
    let mut probe_child = match probe
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("{how} (python3 did not start: {e})"),
    };
    let err = collect(probe_child.stderr.take().unwrap());
    let out = collect(probe_child.stdout.take().unwrap());
    let status = wait_bounded(
        &mut probe_child,
        SCRIPT_LIMIT,
        "python3 -c 'import websockets'",
    );
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{how}\n{}", err.trim());
    eprintln!("interop: python websockets {}", out.trim());
    let mut c = Command::new("python3");
    // No proxies (the script also passes proxy=None), no user site oddities in the output.
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        c.env_remove(k);
    }
    c.env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// A `peerd serve` with a TCP, a `ws://` and a `wss://` endpoint, ready.
struct Server {
    served: Served,
    ws: String,
    wss: String,
}

impl Server {
    fn start() -> Server {
        let tls = repo().join("testdata/tls");
        let mut c = peerd();
        c.args(["serve", "--no-pin", "--shards", "2"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--listen", "ws://127.0.0.1:0"])
            .args(["--listen", "wss://127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(tls.join("server.pem"))
            .arg("--tls-key")
            .arg(tls.join("server.key"));
        // One ready line per endpoint, in the order given:
        // `peerd listening on ws://127.0.0.1:PORT/ shards=N pid=P`.
        let served = Served::start(c, SERVER_LIMIT, |l| l.len() == 3);
        let endpoints: Vec<String> = served
            .lines
            .iter()
            .map(|line| {
                let words: Vec<&str> = line.split(' ').collect();
                assert_eq!(words.len(), 6, "ready line {line:?}");
                assert_eq!(&words[..3], ["peerd", "listening", "on"], "{line:?}");
                let pid = served.child.id();
                assert_eq!(words[5], format!("pid={pid}"), "{line:?}");
                words[3].to_string()
            })
            .collect();
        let ws = endpoints[1].clone();
        let wss = endpoints[2].clone();
        assert!(
            ws.starts_with("ws://127.0.0.1:") && ws.ends_with('/'),
            "{ws}"
        );
        assert!(
            wss.starts_with("wss://127.0.0.1:") && wss.ends_with('/'),
            "{wss}"
        );
        Server { served, ws, wss }
    }

    /// SIGTERM; the exit status and the server's stderr.
    fn terminate(mut self) -> (ExitStatus, String) {
        self.served.terminate(SERVER_LIMIT)
    }
}

/// Run the script against `url`; it must succeed.
fn drive(url: &str, ca: Option<&PathBuf>) {
    let mut c = python();
    c.arg(repo().join("cli/tests/interop/peerd_ws_client.py"))
        .arg(url);
    if let Some(ca) = ca {
        c.arg("--ca").arg(ca);
    }
    let out = run(c, SCRIPT_LIMIT, "peerd_ws_client.py");
    assert!(
        out.status.success(),
        "python websockets session against {url} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout.trim(),
        out.stderr.trim()
    );
    assert_eq!(
        out.stdout.trim(),
        format!("interop OK {url}"),
        "{}",
        out.stderr
    );
}

#[test]
fn python_websockets_speaks_peerd_over_ws_and_wss() {
    // Before the server: a missing dependency fails here, with the command that fixes it.
    drop(python());
    let server = Server::start();
    drive(&server.ws, None);
    drive(&server.wss, Some(&repo().join("testdata/tls/ca.pem")));
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
