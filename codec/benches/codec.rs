//! Codec micro-benchmarks: rkyv encode / validated access / full deserialize per frame kind,
//! against the same message as a serde struct through postcard and serde_json.
//!
//! ```text
//! cargo bench -p peerd-codec --bench codec                       # criterion report on stdout
//! PEERD_CODEC_REPORT=1 cargo bench -p peerd-codec --bench codec  # + results/codec/ files
//! ```
//!
//! With `PEERD_CODEC_REPORT=1` the run also writes `results/codec/README.md` (a table of
//! median ns per operation and wire sizes), `results/codec/summary.json` and copies of
//! criterion's raw `estimates.json` under `results/codec/criterion/`. Only benchmarks that
//! ran in this process are reported, so a filtered run writes a partial table.
//!
//! What each column measures:
//! - `rkyv_encode`: `peerd_codec::encode` (header + archive) into a reused `BytesMut`.
//! - `rkyv_access`: `peerd_codec::decode` on the body: bytecheck validation, zero-copy.
//! - `rkyv_deserialize`: `decode` + `codec::to_owned` into the owned Rust message.
//! - `postcard_encode` / `json_encode`: serde struct into a reused `Vec<u8>`.
//! - `postcard_decode` / `json_decode`: bytes into the owned serde struct (String, Vec<u8>),
//!   the counterpart of `rkyv_deserialize`. They have no header and, unlike rkyv, no
//!   zero-copy access mode, so `rkyv_access` has no serde counterpart.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use criterion::Criterion;
use peerd_codec::codec::to_owned;
use peerd_codec::*;
use serde::{Deserialize, Serialize};

// ---- serde mirrors of the benchmarked messages (the baseline a serde user would write) ----

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SRpcRequest {
    id: u64,
    method: String,
    peer: Option<String>,
    timeout_ms: u32,
    params: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SPublish {
    req: u64,
    topic: String,
    echo: bool,
    payload: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct STopicMessage {
    topic: String,
    from: String,
    direct: bool,
    payload: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SLimits {
    max_frame_len: u32,
    max_topics_per_peer: u32,
    max_members_per_topic: u32,
    max_topic_len: u32,
    outbound_queue_bytes: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SWelcome {
    version: u16,
    peer_id: String,
    session_id: u64,
    resume_token: Vec<u8>,
    limits: SLimits,
    heartbeat_ms: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SPing {
    nonce: u64,
}

/// Wire sizes of one benchmarked message in each format.
struct Sizes {
    label: &'static str,
    rkyv: usize,
    postcard: usize,
    json: usize,
}

const FUNCTIONS: &[&str] = &[
    "rkyv_encode",
    "rkyv_access",
    "rkyv_deserialize",
    "postcard_encode",
    "postcard_decode",
    "json_encode",
    "json_decode",
];

/// One criterion group per message: the seven functions above.
macro_rules! bench_msg {
    ($c:expr, $sizes:expr, $label:expr, $variant:ident, $msg:expr, $owned:ty, $smsg:expr, $sty:ty) => {{
        let msg = $msg;
        let smsg: $sty = $smsg;
        let label: &'static str = $label;
        let mut g = $c.benchmark_group(label);

        let mut buf = BytesMut::with_capacity(4096);
        g.bench_function("rkyv_encode", |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(&msg), &mut buf, u32::MAX).unwrap();
                black_box(buf.len())
            })
        });

        let frame = encode_to_bytes(&msg).unwrap();
        let body: &[u8] = &frame[HEADER_LEN..];
        // Sanity, outside the timed loops: the archive round-trips.
        let Frame::$variant(a) = decode(FrameKind::$variant, body).unwrap() else {
            unreachable!()
        };
        assert_eq!(to_owned::<$owned, _>(a), msg);

        g.bench_function("rkyv_access", |b| {
            b.iter(|| black_box(decode(FrameKind::$variant, black_box(body)).unwrap()))
        });
        g.bench_function("rkyv_deserialize", |b| {
            b.iter(|| {
                let Frame::$variant(a) = decode(FrameKind::$variant, black_box(body)).unwrap()
                else {
                    unreachable!()
                };
                black_box(to_owned::<$owned, _>(a))
            })
        });

        let mut pbuf: Vec<u8> = Vec::with_capacity(4096);
        g.bench_function("postcard_encode", |b| {
            b.iter(|| {
                pbuf.clear();
                pbuf = postcard::to_extend(black_box(&smsg), std::mem::take(&mut pbuf)).unwrap();
                black_box(pbuf.len())
            })
        });
        let p = postcard::to_stdvec(&smsg).unwrap();
        assert_eq!(postcard::from_bytes::<$sty>(&p).unwrap(), smsg);
        g.bench_function("postcard_decode", |b| {
            b.iter(|| black_box(postcard::from_bytes::<$sty>(black_box(&p)).unwrap()))
        });

        let mut jbuf: Vec<u8> = Vec::with_capacity(8192);
        g.bench_function("json_encode", |b| {
            b.iter(|| {
                jbuf.clear();
                serde_json::to_writer(&mut jbuf, black_box(&smsg)).unwrap();
                black_box(jbuf.len())
            })
        });
        let j = serde_json::to_vec(&smsg).unwrap();
        assert_eq!(serde_json::from_slice::<$sty>(&j).unwrap(), smsg);
        g.bench_function("json_decode", |b| {
            b.iter(|| black_box(serde_json::from_slice::<$sty>(black_box(&j)).unwrap()))
        });
        g.finish();

        $sizes.push(Sizes {
            label,
            rkyv: frame.len(),
            postcard: p.len(),
            json: j.len(),
        });
    }};
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + 7) as u8).collect()
}

fn benches(c: &mut Criterion) -> Vec<Sizes> {
    let mut sizes = Vec::new();
    let p64 = payload(64);
    let p1k = payload(1024);

    bench_msg!(
        c,
        sizes,
        "RpcRequest_64B",
        RpcRequest,
        RpcRequest {
            id: 12_345,
            method: Cow::Borrowed("chat.send"),
            peer: Some(Cow::Borrowed("peer-42")),
            timeout_ms: 5_000,
            params: Cow::Borrowed(&p64),
        },
        RpcRequest<'static>,
        SRpcRequest {
            id: 12_345,
            method: "chat.send".into(),
            peer: Some("peer-42".into()),
            timeout_ms: 5_000,
            params: p64.clone(),
        },
        SRpcRequest
    );

    for (label, p) in [("Publish_64B", &p64), ("Publish_1KiB", &p1k)] {
        let msg = Publish {
            req: 7,
            topic: Cow::Borrowed("room/general"),
            echo: false,
            payload: Cow::Borrowed(p),
        };
        let smsg = SPublish {
            req: 7,
            topic: "room/general".into(),
            echo: false,
            payload: p.clone(),
        };
        bench_msg!(
            c,
            sizes,
            label,
            Publish,
            msg,
            Publish<'static>,
            smsg,
            SPublish
        );
    }

    bench_msg!(
        c,
        sizes,
        "TopicMessage_64B",
        TopicMessage,
        TopicMessage {
            topic: Cow::Borrowed("room/general"),
            from: Cow::Borrowed("peer-42"),
            direct: false,
            payload: Cow::Borrowed(&p64),
        },
        TopicMessage<'static>,
        STopicMessage {
            topic: "room/general".into(),
            from: "peer-42".into(),
            direct: false,
            payload: p64.clone(),
        },
        STopicMessage
    );

    let token = payload(16);
    bench_msg!(
        c,
        sizes,
        "Welcome",
        Welcome,
        Welcome {
            version: PROTOCOL_VERSION,
            peer_id: Cow::Borrowed("peer-42"),
            session_id: 0x1234_5678_9abc,
            resume_token: Cow::Borrowed(&token),
            limits: Limits {
                max_frame_len: DEFAULT_MAX_FRAME_LEN,
                max_topics_per_peer: 64,
                max_members_per_topic: 10_000,
                max_topic_len: DEFAULT_MAX_TOPIC_LEN,
                outbound_queue_bytes: 4 << 20,
            },
            heartbeat_ms: 15_000,
        },
        Welcome<'static>,
        SWelcome {
            version: PROTOCOL_VERSION,
            peer_id: "peer-42".into(),
            session_id: 0x1234_5678_9abc,
            resume_token: token.clone(),
            limits: SLimits {
                max_frame_len: DEFAULT_MAX_FRAME_LEN,
                max_topics_per_peer: 64,
                max_members_per_topic: 10_000,
                max_topic_len: DEFAULT_MAX_TOPIC_LEN,
                outbound_queue_bytes: 4 << 20,
            },
            heartbeat_ms: 15_000,
        },
        SWelcome
    );

    bench_msg!(
        c,
        sizes,
        "Ping",
        Ping,
        Ping { nonce: 0xfeed_f00d },
        Ping,
        SPing { nonce: 0xfeed_f00d },
        SPing
    );

    sizes
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let started = SystemTime::now();
    let load_before = report::loadavg();
    let sizes = benches(&mut c);
    c.final_summary();
    report::run(started, &load_before, &sizes);
}

/// Collects criterion's estimates for the benchmarks run in this process, prints a table and,
/// with `PEERD_CODEC_REPORT=1`, writes it under `results/codec/`.
mod report {
    use super::*;
    use serde_json::{json, Value};

    /// Where criterion writes, resolved the way criterion itself does.
    fn criterion_dir() -> PathBuf {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return PathBuf::from(home);
        }
        if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
            return PathBuf::from(t).join("criterion");
        }
        let from_metadata = std::env::var_os("CARGO").and_then(|cargo| {
            let out = std::process::Command::new(cargo)
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .output()
                .ok()?;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            Some(PathBuf::from(v["target_directory"].as_str()?))
        });
        from_metadata
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("criterion")
    }

    /// `estimates.json` of one benchmark, if it was written by this process.
    fn estimates(dir: &Path, group: &str, func: &str, since: SystemTime) -> Option<Value> {
        let path = dir
            .join(group)
            .join(func)
            .join("new")
            .join("estimates.json");
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        if modified < since {
            return None;
        }
        serde_json::from_slice(&std::fs::read(&path).ok()?).ok()
    }

    fn fmt_ns(ns: f64) -> String {
        if ns >= 100.0 {
            format!("{ns:.0}")
        } else {
            format!("{ns:.1}")
        }
    }

    fn cmd(program: &str, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// UTC date and time from the system clock, `YYYY-MM-DD HH:MM UTC`.
    fn utc_now() -> String {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
            rem / 3600,
            rem % 3600 / 60
        )
    }

    fn environment() -> Value {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        // `systemd-detect-virt --vm` names the hypervisor even inside a container.
        let hypervisor_flag = std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| s.contains(" hypervisor"))
            .unwrap_or(false);
        let virt = match cmd("systemd-detect-virt", &["--vm"]) {
            Some(v) if v != "none" => format!("VM: {v}"),
            _ if hypervisor_flag => "VM (hypervisor cpu flag)".to_string(),
            _ => "no VM detected".to_string(),
        };
        let dirty = cmd("git", &["status", "--porcelain", "--", "codec"])
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        let commit = cmd("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
        let commit = if dirty {
            format!("{commit} + uncommitted codec/ changes")
        } else {
            commit
        };
        json!({
            "date": utc_now(),
            "kernel": kernel,
            "cpu_model": cpu,
            "cores": cores,
            "virtualization": virt,
            "rustc": cmd("rustc", &["-V"]).unwrap_or_default(),
            "commit": commit,
            "criterion": {"sample_size": 30, "warm_up_s": 0.5, "measurement_s": 2.0},
        })
    }

    /// The 1, 5 and 15 minute load averages: other work on this shared VM shows up here.
    pub fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    pub fn run(started: SystemTime, load_before: &str, sizes: &[Sizes]) {
        let dir = criterion_dir();
        let mut rows = Vec::new();
        let mut raw = Vec::new();
        for s in sizes {
            let mut cells = Vec::new();
            for f in FUNCTIONS {
                let est = estimates(&dir, s.label, f, started);
                let median = est
                    .as_ref()
                    .and_then(|e| e["median"]["point_estimate"].as_f64());
                if let Some(e) = est {
                    raw.push((s.label, *f, e));
                }
                cells.push(median);
            }
            rows.push((s, cells));
        }
        if raw.is_empty() {
            // `cargo test --benches` or a filter that matched nothing: nothing to report.
            return;
        }

        let mut table = String::new();
        table.push_str("| frame | rkyv encode | rkyv access | rkyv deserialize | postcard encode | postcard decode | serde_json encode | serde_json decode |\n");
        table.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (s, cells) in &rows {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| c.map(fmt_ns).unwrap_or_else(|| "-".into()))
                .collect();
            table.push_str(&format!("| {} | {} |\n", s.label, cells.join(" | ")));
        }
        let mut size_table = String::new();
        size_table.push_str("| frame | rkyv (incl. 8 B header) | postcard | serde_json |\n");
        size_table.push_str("|---|---:|---:|---:|\n");
        for s in sizes {
            size_table.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                s.label, s.rkyv, s.postcard, s.json
            ));
        }
        let mut ratio_table = String::new();
        ratio_table.push_str("| frame | postcard encode / rkyv encode | postcard decode / rkyv access | postcard decode / rkyv deserialize | serde_json decode / rkyv deserialize |\n");
        ratio_table.push_str("|---|---:|---:|---:|---:|\n");
        for (s, c) in &rows {
            let r = |num: usize, den: usize| match (c[num], c[den]) {
                (Some(n), Some(d)) if d > 0.0 => format!("{:.2}", n / d),
                _ => "-".into(),
            };
            // Indices into FUNCTIONS.
            ratio_table.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                s.label,
                r(3, 0),
                r(4, 1),
                r(4, 2),
                r(6, 2)
            ));
        }
        println!("\nMedian ns per operation (criterion point estimates):\n\n{table}");
        println!("Ratios (> 1: rkyv is faster):\n\n{ratio_table}");
        println!("Encoded size in bytes:\n\n{size_table}");

        if std::env::var_os("PEERD_CODEC_REPORT").is_none() {
            println!("(set PEERD_CODEC_REPORT=1 to write results/codec/)");
            return;
        }
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/codec");
        let mut env = environment();
        env["loadavg_before"] = json!(load_before);
        env["loadavg_after"] = json!(loadavg());
        std::fs::create_dir_all(&out).expect("create results/codec");
        let crit_out = out.join("criterion");
        let _ = std::fs::remove_dir_all(&crit_out);
        let mut results = Vec::new();
        for (group, func, est) in &raw {
            let d = crit_out.join(group);
            std::fs::create_dir_all(&d).expect("create results/codec/criterion");
            std::fs::write(
                d.join(format!("{func}.estimates.json")),
                serde_json::to_vec_pretty(est).unwrap(),
            )
            .expect("write estimates");
            results.push(json!({
                "frame": group,
                "op": func,
                "median_ns": est["median"]["point_estimate"],
                "median_ci95_ns": [
                    est["median"]["confidence_interval"]["lower_bound"],
                    est["median"]["confidence_interval"]["upper_bound"],
                ],
                "mean_ns": est["mean"]["point_estimate"],
                "std_dev_ns": est["std_dev"]["point_estimate"],
            }));
        }
        let sizes_json: Vec<Value> = sizes
            .iter()
            .map(|s| json!({"frame": s.label, "rkyv_frame_bytes": s.rkyv, "postcard_bytes": s.postcard, "serde_json_bytes": s.json}))
            .collect();
        let summary = json!({
            "command": COMMAND,
            "environment": env,
            "results": results,
            "sizes": sizes_json,
        });
        std::fs::write(
            out.join("summary.json"),
            serde_json::to_vec_pretty(&summary).unwrap(),
        )
        .expect("write summary.json");

        let readme = format!(
            "# Codec micro-benchmarks\n\n\
             Generated by `codec/benches/codec.rs`; re-run the command below to regenerate this \
             file, `summary.json` and `criterion/` (criterion's raw `estimates.json` per \
             benchmark).\n\n\
             ```\n{COMMAND}\n```\n\n\
             - Date: {date}\n\
             - Machine: {cores} vCPU ({virt}), kernel `{kernel}`, CPU `{cpu}`\n\
             - Load average (1/5/15 min) before / after the run: {load_before} / {load_after} \
             (the benchmark itself adds about 1; more means other builds on this VM competed for the 2 cores)\n\
             - Toolchain: `{rustc}`, peerd commit `{commit}`, bench profile (release, debug=1, \
             codegen-units=4)\n\
             - Criterion: sample_size 30, warm-up 0.5 s, measurement 2 s per benchmark; the \
             numbers are medians of the per-iteration time. This is a shared 2-vCPU VM: compare \
             ratios within one run, not absolute times across runs.\n\n\
             ## Median ns per operation\n\n{table}\n\
             - **rkyv encode**: `peerd_codec::encode` (8-byte header + archive) into a reused \
             `BytesMut`.\n\
             - **rkyv access**: `peerd_codec::decode` on the body: full bytecheck validation \
             (pointers, lengths, UTF-8, tags), zero-copy; fields are then read in place.\n\
             - **rkyv deserialize**: `decode` + `codec::to_owned` into the owned Rust message \
             (allocates the strings and byte vectors).\n\
             - **postcard / serde_json**: the same fields as a plain serde struct (`String`, \
             `Vec<u8>`, `Option<String>`), encoded into a reused `Vec<u8>` and decoded into the \
             owned struct (the counterpart of *rkyv deserialize*). No frame header; byte fields \
             are a JSON array of numbers in serde_json (no base64).\n\n\
             Timings on this VM move by 10-30 % between runs and differences of a few ns are \
             noise (for Ping, *access* can even come out slower than *deserialize*, which \
             includes it: the two loops inline differently). Read the ratios, measured in the \
             same run:\n\n\
             ## Ratios (> 1: rkyv is faster)\n\n{ratio_table}\n\
             ## Encoded size in bytes\n\n{size_table}\n\
             Message contents: RpcRequest {{ method \"chat.send\", peer Some(\"peer-42\"), 64 B \
             params }}; Publish {{ topic \"room/general\", 64 B or 1 KiB payload }}; \
             TopicMessage {{ topic \"room/general\", from \"peer-42\", 64 B payload }}; Welcome \
             {{ peer id \"peer-42\", 16 B resume token, limits }}; Ping {{ nonce }}.\n",
            date = env["date"].as_str().unwrap_or(""),
            cores = env["cores"],
            virt = env["virtualization"].as_str().unwrap_or(""),
            kernel = env["kernel"].as_str().unwrap_or(""),
            cpu = env["cpu_model"].as_str().unwrap_or(""),
            rustc = env["rustc"].as_str().unwrap_or(""),
            commit = env["commit"].as_str().unwrap_or(""),
            load_before = env["loadavg_before"].as_str().unwrap_or(""),
            load_after = env["loadavg_after"].as_str().unwrap_or(""),
        );
        std::fs::write(out.join("README.md"), readme).expect("write results/codec/README.md");
        println!("wrote {}", out.display());
    }

    const COMMAND: &str = "PEERD_CODEC_REPORT=1 cargo bench -p peerd-codec --bench codec";
}
