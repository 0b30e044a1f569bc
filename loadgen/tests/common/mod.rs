//! What the loadgen's integration tests share: a fresh output directory, running the
//! loadgen binary to read the JSON report it wrote, and a peerd server in the test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// 400/s for 0.5 s after 0.2 s of warm-up: 200 publishes in the window, one repetition;
/// the drain ends as soon as every delivery is in (30 s only bounds a stuck run).
#[allow(dead_code)] // not every test file runs this window
pub const WINDOW: [&str; 10] = [
    "--rate",
    "400",
    "--duration",
    "0.5",
    "--warmup",
    "0.2",
    "--repetitions",
    "1",
    "--drain",
    "30",
];

/// An empty directory for one test's reports.
pub fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peerd-loadgen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// One peerd server on an ephemeral loopback port, one unpinned shard (tests run in
/// parallel on a small machine). It runs in the test process (peerd-server is a
/// dev-dependency: this package's tests are not given the `peerd` binary's path, see
/// cli/tests/soak.rs), so its pid is the test's.
#[allow(dead_code)] // not every test file needs a peerd
pub fn peerd() -> peerd_server::PeerServer {
    let mut opts = peerd_server::ListenOptions::default();
    opts.endpoints = vec![peerd_server::Endpoint::Tcp("127.0.0.1:0".into())];
    opts.shards = 1;
    opts.pin = false;
    // The loadgen's connections close at once; no reason to wait out the 2 s default
    // when the test closes the server.
    opts.close_linger = Duration::from_millis(300);
    peerd_server::listen(opts).expect("start peerd")
}

/// Run the loadgen (no progress bar, unpinned, reports named `name` in `dir`); the JSON
/// report it wrote. Fails the test, with its output, if the loadgen fails.
pub fn loadgen(args: &[&str], dir: &Path, name: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
        .args(args)
        .args(["--no-progress", "--no-pin", "--name", name, "--out"])
        .arg(dir)
        .output()
        .expect("run peerd-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
        .unwrap()
}
