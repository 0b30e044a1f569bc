//! A short soak against the real `peerd` binary: the loadgen's `soak` scenario (in-process,
//! through its library) spawns this package's `peerd`, runs churn, takeovers, resets, slow
//! consumers, partial frames, relay floods and pipeliners for a few seconds beside
//! well-behaved publishers and subscribers, and the test checks the report: no message
//! lost, duplicated or reordered, every loop and hostile kind ran, and the server survived
//! (a fresh connection's echo works, it exits 0 on SIGTERM).
//!
//! It lives here rather than in loadgen/tests because only this package's tests know where
//! cargo put the `peerd` binary (`CARGO_BIN_EXE_peerd`), built for them in the same profile.
//!
//! Bounded: the soak's own --duration, --drain and --after stop it; the assertions are on
//! counts and codes, never on wall time. Unpinned (--no-pin): tests run in parallel.

use serde_json::Value;

#[test]
fn short_soak_loses_nothing_and_the_server_survives() {
    let dir = peerd_testkit::Scratch::new("soak-test");
    let out = dir.path().to_string_lossy().into_owned();
    let run = peerd_loadgen::main_with_args([
        "peerd-loadgen",
        "soak",
        "--spawn-server",
        "--server-bin",
        env!("CARGO_BIN_EXE_peerd"),
        "--no-pin",
        "--duration",
        "4",
        "--drain",
        "10",
        "--after",
        "1",
        // Big messages and a small outbound queue, so that the slow consumers are cut while
        // the well-behaved subscribers of the same topics must keep every message.
        "--payload",
        "4096",
        "--server-arg=--outbound-queue-bytes=262144",
        "--hold",
        "2",
        "--no-progress",
        "--out",
        &out,
    ]);
    let text = std::fs::read_to_string(dir.join("soak.json"))
        .unwrap_or_else(|e| panic!("no report ({e}); the run said {run:?}"));
    let json: Value = serde_json::from_str(&text).unwrap();
    let soak = &json["soak"];
    assert!(run.is_ok(), "{run:?}\n{:#}", soak["failures"]);
    assert_eq!(soak["ok"], true, "{:#}", soak["failures"]);

    let ps = &soak["pubsub"];
    let published = ps["published"].as_u64().unwrap();
    assert!(published > 0, "{ps:#}");
    // 2 topics x 3 subscribers: every message reaches the 3 subscribers of its topic.
    assert_eq!(ps["expected_deliveries"].as_u64().unwrap(), 3 * published);
    assert_eq!(ps["delivered"], ps["expected_deliveries"], "{ps:#}");
    assert_eq!(ps["lost"], 0, "{ps:#}");
    assert_eq!(ps["duplicated"], 0, "{ps:#}");
    assert_eq!(ps["reordered"], 0, "{ps:#}");
    assert_eq!(ps["foreign"], 0, "{ps:#}");
    assert_eq!(ps["subscribers_disconnected"], serde_json::json!([]));
    assert_eq!(ps["publishers_failed"], serde_json::json!([]));

    for l in soak["loops"].as_array().unwrap() {
        assert!(l["ok"].as_u64().unwrap() > 0, "{l:#}");
    }
    let takeover = soak["loops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "takeover")
        .unwrap();
    assert_eq!(
        takeover["counts"]["old connection got replaced"], takeover["ok"],
        "{takeover:#}"
    );
    for kind in [
        "slow-consumers",
        "partial-frames",
        "relay-floods",
        "pipeliners",
    ] {
        assert!(
            soak["hostile"][kind]["opened"].as_u64().unwrap() > 0,
            "{kind}: {:#}",
            soak["hostile"]
        );
    }
    assert_eq!(soak["server_alive"], true);
    assert_eq!(soak["final_echo"], "ok");
    assert!(soak["memory"]["series"].as_array().unwrap().len() > 2);
    assert_eq!(json["server"]["exit"], "exit status: 0");
}
