//! End to end through the real binary against a real `nats-server`: `fanout --protocol
//! nats`, the plain NATS fan-out a NATS-based peerd cluster is compared with. Every
//! subscriber must get every message, on one target and spread over two.
//!
//! The test starts its own nats-server on loopback (`.ci/deps` installs Debian's; `$NATS_SERVER`
//! names another) and kills it at the end, also when an assertion fails. A missing binary
//! fails the test: skipping would let the comparison rot unnoticed.
//!
//! No wall-clock assertions: each run is bounded by its own --duration/--drain, and the
//! drain ends as soon as every delivery is in.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::{loadgen, out_dir, WINDOW};

/// The nats-server binary: `$NATS_SERVER`, else `nats-server` on the PATH, else where
/// Debian's package puts it (`/usr/sbin`, often not on a user's PATH).
fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (not in $NATS_SERVER, on the PATH, in /usr/sbin or /usr/local/bin): \
                 run .ci/deps, which installs Debian's nats-server, or set NATS_SERVER=/path/to/nats-server"
            )
        })
}

/// A nats-server on a free loopback port, killed when dropped.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start() -> Nats {
        let bin = nats_server_bin();
        // `-p -1` lets the server pick a free port itself (no window in which another
        // process could take a port chosen here); it logs the port, then "Server is ready".
        let mut child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({e}); see .ci/deps", bin.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the log to the end (so the server never blocks on a full pipe) and passes
        // the port on once the server says it is ready.
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                }
                if line.contains("Server is ready") {
                    let _ = tx.send(port.ok_or_else(|| format!("no port in the log: {line}")));
                }
            }
            let _ = tx.send(Err("nats-server exited before it was ready".into()));
        });
        let mut nats = Nats { child, port: 0 };
        nats.port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("nats-server said nothing about being ready within 10 s"),
        };
        nats
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fanout_over_nats_reaches_every_subscriber() {
    let nats = Nats::start();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let pid = nats.pid();
    let dir = out_dir("nats");

    // One NATS server, 20 subscribers: 200 publishes, 4000 deliveries. Its CPU both as the
    // server's and under a name of its own (the way a peerd cluster's NATS is read).
    let mut args = vec![
        "fanout",
        "--protocol",
        "nats",
        "--target",
        &url,
        "--server-pid",
        &pid,
        "--subscribers",
        "20",
    ];
    let extra = format!("nats={pid}");
    args.extend(["--extra-pid", &extra]);
    args.extend(WINDOW);
    let j = loadgen(&args, &dir, "nats");
    assert_eq!(j["protocol"], "nats");
    let run = &j["runs"][0];
    assert_eq!(run["sent"], 200, "{run}");
    // Every subscriber got every message: 20 x 200, nothing missing, nothing refused.
    assert_eq!(run["received"], 4000, "{run}");
    assert_eq!(run["missing"], 0);
    assert_eq!(run["errors"], 0, "{}", run["error_samples"]);
    assert_eq!(run["dead_connections"], 0);
    assert_eq!(
        run["deliveries_by_target"][0]["received_per_subscriber"],
        200.0
    );
    // Each message's slowest subscriber: one sample per message.
    assert_eq!(run["slowest_receiver"]["count"], 200, "{run}");
    assert!(run["server_cpu_s"].is_number(), "{run}");
    assert!(run["extra_cpu_s"]["nats"].is_number(), "{run}");

    // Spread over two targets (the same NATS server, once as a URL, once as host:port;
    // --protocol nats is inferred from the URL), the publisher on the second: the split
    // and the per-target counts add up to every delivery.
    let hp = format!("127.0.0.1:{}", nats.port);
    let mut args = vec![
        "fanout",
        "--target",
        &url,
        "--target",
        &hp,
        "--publisher-target",
        "1",
        "--subscribers",
        "20",
    ];
    args.extend(WINDOW);
    let j = loadgen(&args, &dir, "nats-two");
    assert_eq!(j["protocol"], "nats");
    let run = &j["runs"][0];
    assert_eq!(run["received"], 4000, "{run}");
    assert_eq!(run["missing"], 0);
    let by = run["deliveries_by_target"].as_array().unwrap();
    assert_eq!(by.len(), 2);
    assert_eq!(by[0]["local"], false);
    assert_eq!(by[1]["local"], true);
    for t in by {
        assert_eq!(t["subscribers"], 10, "{t}");
        assert_eq!(t["received"], 2000, "{t}");
    }
    assert_eq!(run["latency_local"]["count"], 2000, "{run}");
    assert_eq!(run["latency_remote"]["count"], 2000, "{run}");

    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}
