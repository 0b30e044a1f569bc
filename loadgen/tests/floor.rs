//! End to end through the real binary: the floors (no peerd server needed): the echo floor
//! in a short open-loop run on loopback and the files it must leave behind, the fan-out
//! floor evenly spaced and batched, and the checks on what the floors and --batch refuse.
//!
//! No wall-clock assertions: the loadgen's own --duration/--warmup/--drain bound each run,
//! and the tests check what the report says (counts, errors), which is what can go wrong.

use std::process::Command;

mod common;
use common::{loadgen, out_dir, WINDOW};

#[test]
fn floor_open_loop_short_run_writes_reports() {
    let dir = out_dir("floor");
    let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
        .args([
            "floor",
            "--rate",
            "2000",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--repetitions",
            "1",
            // The drain ends as soon as every answer is in: a generous bound costs nothing
            // on a healthy run and keeps a busy machine from losing answers.
            "--drain",
            "30",
            "--no-progress",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run peerd-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("open-loop"), "{stdout}");
    assert!(stdout.contains("r2000"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("floor.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["scenario"], "floor");
    assert_eq!(json["protocol"], "floor");
    assert_eq!(json["mode"], "open-loop");
    let run = &json["runs"][0];
    assert_eq!(run["offered_rate"], 2000.0);
    // 0.5 s at 2000/s: 1000 messages intended in the window, every one answered.
    assert_eq!(run["sent"], 1000);
    assert_eq!(run["received"], 1000);
    assert_eq!(run["missing"], 0);
    assert_eq!(run["errors"], 0);
    assert_eq!(run["error_samples"], serde_json::json!([]));
    assert_eq!(run["dead_connections"], 0);
    assert_eq!(run["overloaded"], false);
    assert_eq!(run["latency"]["count"], 1000);
    let p50 = run["latency"]["p50"].as_f64().unwrap();
    let max = run["latency"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "p50 {p50} max {max}");
    assert!((run["achieved_rate"].as_f64().unwrap() - 2000.0).abs() < 1.0);
    // The in-process echo server's threads are the floor's "server CPU".
    assert!(run["server_cpu_s"].is_number());
    assert!(json["environment"]["kernel"].is_string());

    let hgrm = std::fs::read_to_string(dir.join("floor-r2000.hgrm")).unwrap();
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(hgrm.contains("Total count    =         1000]"));
    let svg = std::fs::read_to_string(dir.join("floor.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("99.9%"));
    assert!(dir.join("floor.md").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn floor_closed_loop_is_labelled() {
    let dir = out_dir("closed");
    let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
        .args([
            "floor",
            "--closed-loop",
            "--pipeline",
            "2",
            "--connections",
            "2",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--repetitions",
            "2",
            "--drain",
            "30",
            "--no-progress",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run peerd-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("closed-loop"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("floor.json")).unwrap()).unwrap();
    assert_eq!(json["mode"], "closed-loop");
    let run = &json["runs"][0];
    assert_eq!(run["label"], "closed-p2");
    assert_eq!(run["reps"].as_array().unwrap().len(), 2);
    assert!(run["received"].as_u64().unwrap() > 10);
    // Closed loop: every request sent in the windows was answered, without errors.
    assert_eq!(run["missing"], 0);
    assert_eq!(run["errors"], 0);
    for rep in run["reps"].as_array().unwrap() {
        assert!(rep["received"].as_u64().unwrap() > 0, "{rep}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plot_overlays_hgrm_files() {
    let dir = out_dir("plot");
    std::fs::create_dir_all(&dir).unwrap();
    let mut h = peerd_loadgen::hist::new_hist();
    for v in 1..=5000u64 {
        peerd_loadgen::hist::record(&mut h, 10_000 + v * 7);
    }
    let a = dir.join("a.hgrm");
    std::fs::write(&a, peerd_loadgen::hist::hgrm_string(&h)).unwrap();
    let svg = dir.join("both.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
        .arg("plot")
        .arg("--out")
        .arg(&svg)
        .arg(format!("{}=floor", a.display()))
        .arg(format!("{}=again", a.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("floor") && text.contains("again"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fanout_floor_delivers_every_publish_to_every_subscriber() {
    let dir = out_dir("fanout-floor");
    // 400/s for 0.5 s to 10 subscribers: 200 publishes, 2000 deliveries; then the same
    // messages 8 to a write (25 writes in the window).
    for (batch, name, label, pattern) in [
        ("1", "even", "r400", "evenly spaced"),
        ("8", "batched", "r400-batch8", "batched 8 per write"),
    ] {
        let mut args = vec![
            "fanout",
            "--protocol",
            "floor",
            "--subscribers",
            "10",
            "--batch",
            batch,
        ];
        args.extend(WINDOW);
        let j = loadgen(&args, &dir, name);
        assert_eq!(j["scenario"], "fanout");
        assert_eq!(j["protocol"], "floor");
        let kind = j["server"]["kind"].as_str().unwrap();
        assert!(kind.starts_with("floor fan-out"), "{kind}");
        let run = &j["runs"][0];
        assert_eq!(run["label"], label);
        assert_eq!(run["send_pattern"], pattern);
        assert_eq!(run["answers_per_msg"], 10);
        assert_eq!(run["sent"], 200, "{run}");
        assert_eq!(run["received"], 2000, "{run}");
        assert_eq!(run["missing"], 0);
        assert_eq!(run["errors"], 0, "{}", run["error_samples"]);
        assert_eq!(run["dead_connections"], 0);
        // Deliveries, not echoes: the slowest receiver of every publish is known.
        assert_eq!(run["slowest_receiver"]["count"], 200, "{run}");
        // The floor's threads are the server: their CPU is read (it may round to 0 s in
        // so short a run at clock-tick resolution).
        assert!(
            run["server_cpu_s"].as_f64().is_some_and(|c| c >= 0.0),
            "{run}"
        );
        assert!(dir.join(format!("{name}-{label}-slowest.hgrm")).exists());
        let md = std::fs::read_to_string(dir.join(format!("{name}.md"))).unwrap();
        assert!(
            md.starts_with(&format!("# fanout / floor / open-loop, {pattern}\n")),
            "{md}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn floor_echo_batched_answers_every_request() {
    // The batched pattern in a request/response scenario: 4 requests per write, every one
    // answered, each latency counted from its write's intended time.
    let dir = out_dir("floor-batch");
    let mut args = vec!["floor", "--batch", "4", "--connections", "2"];
    args.extend(WINDOW);
    let j = loadgen(&args, &dir, "fb");
    let run = &j["runs"][0];
    assert_eq!(run["label"], "r400-batch4");
    assert_eq!(run["messages_per_write"], 4);
    assert_eq!(run["sent"], 200, "{run}");
    assert_eq!(run["received"], 200, "{run}");
    assert_eq!(run["missing"], 0);
    assert_eq!(j["settings"]["batch"], 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batch_and_the_fanout_floor_refuse_what_they_cannot_do() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
            .args(args)
            .args(["--no-progress", "--no-pin", "--out"])
            .arg(std::env::temp_dir().join("peerd-loadgen-batch-checks"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Each is refused before a server is started or a connection opened.
    let err = run(&["idle", "--batch", "2", "--spawn-server"]);
    assert!(
        err.contains("--batch applies to the message scenarios"),
        "{err}"
    );
    let err = run(&["floor", "--closed-loop", "--batch", "2"]);
    assert!(err.contains("--batch"), "{err}");
    let err = run(&["floor", "--batch", "0"]);
    assert!(err.contains("--batch"), "{err}");
    let err = run(&["fanout", "--protocol", "floor", "--topics", "2"]);
    assert!(err.contains("one topic"), "{err}");
    let err = run(&["fanout", "--protocol", "floor", "--spawn-server"]);
    assert!(err.contains("--spawn-server"), "{err}");
}
