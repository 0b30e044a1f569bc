//! End to end through the real binary against a real peerd (in this test process, see
//! tests/common): the two send patterns of issue 14's peers runner, evenly spaced (the
//! default) and batched (`--batch 8`: eight publishes per write at the same offered rate).
//! Both must deliver every publish to every subscriber, and every output of the batched
//! run must say it is batched.
//!
//! No wall-clock assertions: each run is bounded by its own --duration/--drain, and the
//! drain ends as soon as every delivery is in.

mod common;
use common::{loadgen, out_dir, peerd, WINDOW};

#[test]
fn batched_fanout_delivers_everything_and_says_it_is_batched() {
    let srv = peerd();
    let addr = srv.local_addr().unwrap().to_string();
    let dir = out_dir("batch");
    // 400/s for 0.5 s to 10 subscribers: 200 publishes and 2000 deliveries in the window,
    // either as 200 writes of one publish or as 25 writes of eight.
    let run = |batch: &str, name: &str| {
        let mut args = vec![
            "fanout",
            "--target",
            &addr,
            "--subscribers",
            "10",
            "--batch",
            batch,
        ];
        args.extend(WINDOW);
        loadgen(&args, &dir, name)
    };
    let even = run("1", "even");
    let batched = run("8", "batched");
    srv.close();

    for (j, label, pattern, per_write) in [
        (&even, "r400", "evenly spaced", 1),
        (&batched, "r400-batch8", "batched 8 per write", 8),
    ] {
        assert_eq!(j["mode"], "open-loop");
        assert_eq!(j["settings"]["msg"]["batch"], per_write);
        let r = &j["runs"][0];
        assert_eq!(r["label"], label, "{r}");
        assert_eq!(r["send_pattern"], pattern, "{r}");
        assert_eq!(r["messages_per_write"], per_write);
        // The offered rate is the same; so is what must arrive.
        assert_eq!(r["offered_rate"], 400.0);
        assert_eq!(r["sent"], 200, "{r}");
        assert_eq!(r["received"], 2000, "{r}");
        assert_eq!(r["missing"], 0);
        assert_eq!(r["errors"], 0, "{}", r["error_samples"]);
        assert_eq!(r["dead_connections"], 0);
        assert_eq!(r["latency"]["count"], 2000);
        assert_eq!(r["slowest_receiver"]["count"], 200, "{r}");
    }

    // The markdown's title and table, the plot's title and the files' names say it.
    let md = std::fs::read_to_string(dir.join("batched.md")).unwrap();
    assert!(
        md.starts_with("# fanout / peerd / open-loop, batched 8 per write\n"),
        "{md}"
    );
    assert!(
        md.contains("| r400-batch8 | open-loop | batched 8 per write |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(dir.join("batched.svg")).unwrap();
    assert!(svg.contains("batched 8 per write"), "the plot's title");
    assert!(dir.join("batched-r400-batch8.hgrm").exists());
    assert!(dir.join("batched-r400-batch8-slowest.hgrm").exists());
    let md = std::fs::read_to_string(dir.join("even.md")).unwrap();
    assert!(
        md.starts_with("# fanout / peerd / open-loop, evenly spaced\n"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
