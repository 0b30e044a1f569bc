//! `peerd serve --admin`: the admin listener through real sockets. `/metrics` after real
//! traffic (client subcommands over TCP and WebSocket, a raw peer sending a bad frame)
//! counts what happened, and its text passes `promtool check metrics` (Prometheus's own
//! parser and linter) plus the checks promtool does not make (every family declared once,
//! no duplicate series, histogram buckets cumulative and ending in `_count`); the same
//! checker refuses broken variants of that text, so a malformed exposition fails the test.
//! `/healthz` and `/readyz`, `/readyz` turning 503 for a graceful drain; `peerd stats`.
//!
//! Needs `promtool` (Debian: `apt-get install prometheus`; or `PROMTOOL=/path/to/promtool`);
//! without it the test fails saying so, it does not skip. Servers run with `--no-pin`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use peerd_codec::{self as codec, Code, Frame};
use peerd_testkit::RawPeer;

mod common;
use common::{peerd, run, Output, Served};

#[allow(dead_code)]
#[path = "../src/stats.rs"]
mod stats;
use stats::{parse, Sample};

const LIMIT: Duration = Duration::from_secs(30);

/// A `peerd serve --admin 127.0.0.1:0` that has printed its ready lines.
struct Server {
    served: Served,
    /// The TCP endpoint, then the WebSocket one.
    endpoints: Vec<String>,
    admin: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut cmd = peerd();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "ws://127.0.0.1:0/",
            "--no-pin",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(args);
        // The endpoints' lines, then `peerd admin on http://ADDR/ pid=PID`.
        let served = Served::start(cmd, LIMIT, |l| {
            l.last().is_some_and(|l| l.starts_with("peerd admin on "))
        });
        let mut endpoints = Vec::new();
        let mut admin = None;
        for line in &served.lines {
            if let Some(rest) = line.strip_prefix("peerd listening on ") {
                endpoints.push(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("peerd admin on http://") {
                let (addr, pid) = rest.split_once("/ pid=").expect("admin line");
                assert_eq!(pid, served.child.id().to_string(), "{line}");
                admin = Some(addr.parse().expect("admin address"));
            } else {
                panic!("unexpected line {line:?}");
            }
        }
        assert_eq!(endpoints.len(), 2, "{endpoints:?}");
        Server {
            served,
            endpoints,
            admin: admin.expect("admin line"),
        }
    }

    fn client(&self, endpoint: usize, args: &[&str]) -> Output {
        let mut c = peerd();
        c.arg(args[0])
            .args(["--server", &self.endpoints[endpoint]])
            .args(&args[1..]);
        run(c, LIMIT, "peerd")
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        http(self.admin, "GET", path)
    }

    /// `/metrics`, checked like a scraper would (`check_exposition`), as samples.
    fn metrics(&self) -> Samples {
        let (status, headers, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        assert!(
            headers.contains("text/plain; version=0.0.4"),
            "content type: {headers}"
        );
        if let Err(e) = check_exposition(&body) {
            panic!("/metrics is not a valid exposition: {e}\n{body}");
        }
        Samples(parse(&body).expect("samples"))
    }

    fn sigterm(&self) {
        self.served.sigterm();
    }

    fn wait(mut self) -> (i32, String) {
        let (status, stderr) = self.served.wait(LIMIT);
        (status.code().unwrap_or(-1), stderr)
    }
}

/// One HTTP/1.1 request; (status, head, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the admin listener");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (status, head.to_string(), body.to_string())
}

/// Samples of one scrape, summed the ways the tests need.
struct Samples(Vec<Sample>);

impl Samples {
    /// The sum of `name`'s samples whose labels include every one of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// The path of promtool: `$PROMTOOL`, else `promtool` on the PATH.
fn promtool() -> String {
    let tool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let ok = Command::new(&tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the metrics test needs Prometheus's promtool: `apt-get install prometheus` \
         (Debian), or PROMTOOL=/path/to/promtool"
    );
    tool
}

/// Whether `text` is an exposition Prometheus reads without complaint: `promtool check
/// metrics` (parse errors and lint problems both fail), then what promtool leaves
/// unchecked.
fn check_exposition(text: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running promtool: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let body = text.to_string();
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(body.as_bytes());
    });
    let out = child.wait_with_output().expect("promtool ran");
    feeder.join().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        return Err(format!("promtool check metrics ({}): {said}", out.status));
    }
    structure(text)
}

/// What promtool (2.42) does not check: each family's HELP and TYPE once, before its
/// samples, and its samples together; no series twice; histogram buckets cumulative, with
/// `+Inf` equal to `_count`; counters not negative.
fn structure(text: &str) -> Result<(), String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let mut series: HashSet<String> = HashSet::new();
    let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("").to_string();
            if !helps.insert(name.clone()) {
                return Err(format!("HELP for {name} twice"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let (name, kind) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            if types.insert(name.into(), kind.into()).is_some() {
                return Err(format!("TYPE for {name} twice"));
            }
            if !helps.contains(name) {
                return Err(format!("{name} has no HELP before its TYPE"));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let s = &parse(line).map_err(|e| format!("{e}: {line}"))?[0];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = s.name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&s.name)
            .to_string();
        let Some(kind) = types.get(&family) else {
            return Err(format!("{} has no TYPE before its samples", s.name));
        };
        if family != current {
            if finished.contains(&family) {
                return Err(format!("samples of {family} are not together"));
            }
            finished.insert(std::mem::replace(&mut current, family.clone()));
        }
        let mut labels = s.labels.clone();
        labels.sort();
        if !series.insert(format!("{}{labels:?}", s.name)) {
            return Err(format!("series twice: {line}"));
        }
        if kind == "counter" && (s.value.is_nan() || s.value < 0.0) {
            return Err(format!("counter below 0 or NaN: {line}"));
        }
        if kind == "histogram" {
            let others: Vec<_> = labels.iter().filter(|(k, _)| k != "le").collect();
            let key = format!("{family}{others:?}");
            if s.name.ends_with("_bucket") {
                let le = &labels.iter().find(|(k, _)| k == "le").ok_or("no le")?.1;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("le {le:?}"))?
                };
                buckets.entry(key).or_default().push((le, s.value));
            } else if s.name.ends_with("_count") {
                counts.insert(key, s.value);
            }
        }
    }
    for (key, b) in &buckets {
        if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!(
                "{key}: buckets not increasing and cumulative: {b:?}"
            ));
        }
        let last = b.last().unwrap();
        if last.0 != f64::INFINITY || Some(&last.1) != counts.get(key) {
            return Err(format!("{key}: +Inf bucket is not _count"));
        }
    }
    Ok(())
}

/// `text` with the value of the sample line starting with `series` replaced.
fn set_value(text: &str, series: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix(series) {
            Some(_) if !found => {
                found = true;
                format!("{series} {value}")
            }
            _ => l.to_string(),
        })
        .collect();
    assert!(found, "no {series} in the exposition");
    out.join("\n") + "\n"
}

/// Poll `f` until it holds, or fail naming `what`.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_real_traffic_and_pass_promtool() {
    let server = Server::start(&["--shards", "2"]);

    let (status, _, body) = server.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(server.get("/readyz").0, 200);
    assert_eq!(server.get("/nothing").0, 404);
    assert_eq!(http(server.admin, "POST", "/metrics").0, 405);
    let (status, _, body) = http(server.admin, "HEAD", "/metrics");
    assert_eq!((status, body.as_str()), (200, ""));

    let before = server.metrics();
    assert_eq!(before.sum("peerd_ready", &[]), 1.0);
    assert_eq!(before.sum("peerd_shards", &[]), 2.0);
    assert_eq!(before.sum("peerd_frames_received_total", &[]), 0.0);
    // Hooks for what is not built yet are there, at 0.
    assert_eq!(before.sum("peerd_rate_limit_hits_total", &[]), 0.0);
    assert_eq!(
        before.sum("peerd_auth_failures_total", &[("reason", "unauthorized")]),
        0.0
    );

    for _ in 0..3 {
        let echo = server.client(0, &["call", "echo", "hi"]);
        assert!(echo.status.success(), "{}", echo.stderr);
    }
    let ws = server.client(1, &["call", "echo", "over ws"]);
    assert_eq!(ws.stdout, "over ws\n", "{}", ws.stderr);
    let publish = server.client(0, &["pub", "chat", "hello"]);
    assert!(publish.status.success(), "{}", publish.stderr);
    // A handshaken peer sending a frame kind that does not exist.
    let addr: SocketAddr = server.endpoints[0].parse().unwrap();
    let mut bad = RawPeer::connect(addr, Some("bad"));
    bad.send_raw(&[0, 0, 0, 0, 0xEE, 0, 0, 0]);
    bad.expect_close(Code::BadFrame);
    drop(bad);

    eventually("every connection ended", || {
        server.metrics().sum("peerd_connections", &[]) == 0.0
    });
    let m = server.metrics();
    let tcp = [("transport", "tcp")];
    let ws = [("transport", "ws")];
    assert_eq!(m.sum("peerd_connections_accepted_total", &tcp), 5.0);
    assert_eq!(m.sum("peerd_connections_accepted_total", &ws), 1.0);
    assert_eq!(m.sum("peerd_connections_welcomed_total", &tcp), 5.0);
    assert_eq!(m.sum("peerd_connections_welcomed_total", &ws), 1.0);
    let kind = |k| [("kind", k)];
    assert_eq!(m.sum("peerd_frames_received_total", &kind("Hello")), 6.0);
    assert_eq!(
        m.sum("peerd_frames_received_total", &kind("RpcRequest")),
        4.0
    );
    assert_eq!(m.sum("peerd_frames_received_total", &kind("Publish")), 1.0);
    assert_eq!(m.sum("peerd_frames_sent_total", &kind("Welcome")), 6.0);
    assert_eq!(m.sum("peerd_frames_sent_total", &kind("RpcResponse")), 4.0);
    assert!(m.sum("peerd_received_bytes_total", &kind("RpcRequest")) > 4.0 * 8.0);
    assert_eq!(m.sum("peerd_closes_total", &[("code", "bad_frame")]), 1.0);
    assert_eq!(m.sum("peerd_closes_total", &[("code", "normal")]), 5.0);
    assert_eq!(m.sum("peerd_rpc_handler_duration_seconds_count", &[]), 4.0);
    assert_eq!(
        m.sum(
            "peerd_rpc_handler_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        4.0
    );
    // Per shard: every shard has its own series.
    for shard in ["0", "1"] {
        let labels = [("shard", shard), ("transport", "tcp")];
        assert_eq!(
            m.0.iter()
                .filter(|s| s.name == "peerd_connections_accepted_total")
                .filter(|s| labels
                    .iter()
                    .all(|(k, v)| s.labels.contains(&(k.to_string(), v.to_string()))))
                .count(),
            1
        );
    }

    // The checker refuses what Prometheus would not take (or would take wrongly).
    let (_, _, good) = server.get("/metrics");
    check_exposition(&good).expect("the real exposition");
    let broken = [
        // A label value not closed.
        good.replacen("shard=\"0\"", "shard=\"0", 1),
        // A counter named without `_total`.
        good.replace("peerd_closes_total", "peerd_closes"),
        // A family declared twice.
        format!("{good}# HELP peerd_ready again\n# TYPE peerd_ready gauge\npeerd_ready 1\n"),
        // A series twice (next to itself).
        {
            let line = good
                .lines()
                .find(|l| l.starts_with("peerd_accept_errors_total "))
                .unwrap();
            good.replacen(&format!("{line}\n"), &format!("{line}\n{line}\n"), 1)
        },
        // A family's samples split apart.
        format!("{good}peerd_accept_errors_total{{x=\"y\"}} 0\n"),
        // Buckets that are not cumulative.
        set_value(
            &good,
            "peerd_rpc_handler_duration_seconds_bucket{shard=\"0\",le=\"0.00001\"}",
            "999",
        ),
        // The +Inf bucket not matching _count.
        set_value(
            &good,
            "peerd_rpc_handler_duration_seconds_count{shard=\"1\"}",
            "999",
        ),
        // A sample with no TYPE.
        format!("{good}peerd_undeclared 1\n"),
    ];
    for (i, b) in broken.iter().enumerate() {
        assert_ne!(b, &good, "variant {i} changed nothing");
        match check_exposition(b) {
            Ok(()) => panic!("broken variant {i} accepted"),
            Err(e) => eprintln!("broken variant {i} refused: {e}"),
        }
    }

    // `peerd stats` prints the same, readably.
    let mut c = peerd();
    c.args(["stats", "--admin", &server.admin.to_string()]);
    let out = run(c, LIMIT, "peerd stats");
    assert!(out.status.success(), "{}", out.stderr);
    for want in [
        "ready, up ",
        "2 shards",
        "accepted       6 (",
        "(tcp 5, ws 1)",
        // Each `peerd call` and `pub` says Close{normal} when it is done.
        "closes         6 (normal 5, bad_frame 1)",
        "frames in      ",
        "RpcRequest 4",
        "rpc handlers   4 calls",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in:\n{}", out.stdout);
    }

    server.sigterm();
    let (code, stderr) = server.wait();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn readyz_turns_503_for_a_graceful_drain() {
    let server = Server::start(&["--shards", "1", "--drain-ms", "6000"]);
    let (status, _, body) = server.get("/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // A call the server cannot finish: `callback` calls this peer back, and it never
    // answers, so the drain waits for the handler.
    let addr: SocketAddr = server.endpoints[0].parse().unwrap();
    let mut p = RawPeer::connect(addr, Some("stuck"));
    p.send(&codec::RpcRequest {
        id: 1,
        method: "callback".into(),
        peer: None,
        timeout_ms: 0,
        params: br#"{"method": "never"}"#.as_slice().into(),
    });
    p.recv_until(|f| match f {
        Frame::RpcRequest(r) if r.method.as_str() == "never" => Some(()),
        _ => None,
    });
    let started = Instant::now();
    server.sigterm();
    eventually("/readyz says 503", || server.get("/readyz").0 == 503);
    let (_, _, body) = server.get("/readyz");
    assert!(body.contains("draining"), "{body}");
    // Alive, and still scraped, while it drains.
    assert_eq!(server.get("/healthz").0, 200);
    let m = server.metrics();
    assert_eq!(m.sum("peerd_ready", &[]), 0.0);
    assert_eq!(m.sum("peerd_connections", &[]), 1.0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the checks ran within the drain"
    );
    let (code, stderr) = server.wait();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_taken_admin_address_stops_serve_before_it_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut c = peerd();
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-pin",
        "--admin",
        &addr,
    ]);
    let out = run(c, LIMIT, "peerd serve");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("admin address {addr} is already in use")),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);

    // And `peerd stats` against nothing says what it tried.
    drop(taken);
    let mut c = peerd();
    c.args(["stats", "--admin", &addr]);
    let out = run(c, LIMIT, "peerd stats");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with(&format!("peerd: fetching http://{addr}/metrics")),
        "{}",
        out.stderr
    );
}
