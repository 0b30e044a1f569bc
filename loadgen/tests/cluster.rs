//! End to end through the real binary: `fanout` over several `--target`s, the way a peerd
//! cluster is measured (subscriber i on target i % N, publishers on --publisher-target).
//!
//! The peerd server runs in this test process (peerd-server as a dev-dependency: this
//! package's tests are not given the `peerd` binary's path, see cli/tests/soak.rs). Both
//! targets are that one server's address: every subscriber then gets every message, so the
//! test can check that the report's per-target counts and its local/remote split add up to
//! the whole. (Two separate single-node servers would not do: a subscriber on the second
//! gets nothing without a cluster between them.)
//!
//! No wall-clock assertions: each run is bounded by its own --duration/--drain, and the
//! drain ends as soon as every delivery is in.

use std::process::Command;

mod common;
use common::{loadgen, out_dir, peerd, WINDOW};

#[test]
fn fanout_over_two_targets_counts_per_target_and_splits_local_from_remote() {
    let srv = peerd();
    let addr = srv.local_addr().unwrap().to_string();
    let me = std::process::id().to_string();
    let dir = out_dir("cluster");
    // 10 subscribers alternate between the targets (5 each), the publisher is on target 0.
    // 400/s for 0.5 s: 200 publishes, 2000 deliveries, 1000 on each target. The server runs
    // in this process: its pid is this test's, given once per target.
    let second = format!("tcp://{addr}");
    let mut args = vec![
        "fanout",
        "--target",
        &addr,
        "--target",
        &second,
        "--server-pid",
        &me,
        "--server-pid",
        &me,
        "--publishers",
        "1",
        "--subscribers",
        "10",
    ];
    args.extend(WINDOW);
    let j = loadgen(&args, &dir, "cluster");
    srv.close();

    assert_eq!(j["scenario"], "fanout");
    assert_eq!(j["protocol"], "peerd");
    let targets = j["server"]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{}", j["server"]);
    assert_eq!(targets[1]["index"], 1);
    assert!(j["server"]["pid"].is_null(), "{}", j["server"]);

    let run = &j["runs"][0];
    assert_eq!(run["sent"], 200, "{run}");
    assert_eq!(run["received"], 2000, "{run}");
    assert_eq!(run["missing"], 0);
    assert_eq!(run["errors"], 0, "{}", run["error_samples"]);
    assert_eq!(run["dead_connections"], 0);

    // Per target: 5 subscribers, each got all 200 messages; together, every delivery.
    let by = run["deliveries_by_target"].as_array().unwrap();
    assert_eq!(by.len(), 2, "{run}");
    for (i, t) in by.iter().enumerate() {
        assert_eq!(t["target"], i);
        assert_eq!(t["local"], i == 0, "{t}");
        assert_eq!(t["subscribers"], 5, "{t}");
        assert_eq!(t["received"], 1000, "{t}");
        assert_eq!(t["received_per_subscriber"], 200.0, "{t}");
    }
    // The split: local is target 0's deliveries, remote target 1's; both make the whole.
    let count = |k: &str| run[k]["count"].as_u64().unwrap();
    assert_eq!(count("latency_local"), 1000, "{run}");
    assert_eq!(count("latency_remote"), 1000, "{run}");
    assert_eq!(
        count("latency_local") + count("latency_remote"),
        count("latency")
    );

    // Each target's server CPU, and their sum (one process: counted once).
    let cpu = run["server_cpu_by_target"].as_array().unwrap();
    assert_eq!(cpu.len(), 2, "{run}");
    for c in cpu {
        assert!(c["cpu_s"].is_number(), "{c}");
    }
    assert!(run["server_cpu_s"].is_number(), "{run}");

    // The existing files keep their names; the split adds its own two.
    for f in [
        "cluster.json",
        "cluster.md",
        "cluster.svg",
        "cluster-r400.hgrm",
        "cluster-r400-slowest.hgrm",
        "cluster-r400-local.hgrm",
        "cluster-r400-remote.hgrm",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let md = std::fs::read_to_string(dir.join("cluster.md")).unwrap();
    assert!(md.contains("deliveries by target"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_target_report_keeps_its_shape() {
    let srv = peerd();
    let addr = srv.local_addr().unwrap().to_string();
    let dir = out_dir("onetarget");
    // 200/s for 0.5 s to 3 subscribers: 100 publishes, 300 deliveries.
    let j = loadgen(
        &[
            "fanout",
            "--target",
            &addr,
            "--subscribers",
            "3",
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--repetitions",
            "1",
            "--drain",
            "30",
        ],
        &dir,
        "one",
    );
    srv.close();
    // One --target is a string in the settings and the server's address, as before.
    assert_eq!(j["settings"]["msg"]["server"]["target"], addr.as_str());
    assert_eq!(j["server"]["address"], format!("tcp://{addr}"));
    let run = &j["runs"][0];
    assert_eq!(run["received"], 300, "{run}");
    // Every delivery is local; nothing is remote.
    assert_eq!(run["latency_local"]["count"], 300, "{run}");
    assert!(run["latency_remote"].is_null(), "{run}");
    assert_eq!(run["deliveries_by_target"][0]["received"], 300);
    assert!(!dir.join("one-r200-local.hgrm").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_targets_are_checked() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
            .args(args)
            .args(["--no-progress", "--no-pin", "--out"])
            .arg(std::env::temp_dir().join("peerd-loadgen-checks"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Nothing listens on port 1: each must be refused before connecting anywhere.
    let two = ["--target", "127.0.0.1:1", "--target", "127.0.0.1:1"];
    let err = run(&[&["rpc"][..], &two].concat());
    assert!(err.contains("fanout"), "{err}");
    let err = run(&[&["fanout", "--server-pid", "1"][..], &two].concat());
    assert!(err.contains("once per --target"), "{err}");
    let err = run(&[&["fanout", "--publisher-target", "2"][..], &two].concat());
    assert!(err.contains("--publisher-target"), "{err}");
    let err = run(&[
        "fanout",
        "--target",
        "127.0.0.1:1",
        "--target",
        "ws://127.0.0.1:1/",
    ]);
    assert!(err.contains("same transport"), "{err}");
    let err = run(&[
        "fanout",
        "--protocol",
        "peerd",
        "--target",
        "nats://127.0.0.1:1",
    ]);
    assert!(err.contains("--protocol nats"), "{err}");
}
