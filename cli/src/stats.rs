//! `peerd stats`: fetch `/metrics` from a server's admin listener and print a summary a
//! person can read: readiness and uptime, connections by transport, what was accepted,
//! rejected and dropped, closes by code, frames in and out with the busiest kinds, RPC
//! handler latency, queues, topics. Rates are averages since the server started.
//!
//! It reads the exposition `peerd serve --admin` writes (the Prometheus text format):
//! [`parse`] takes sample lines (`name{labels} value`) and skips comments; series are
//! summed over shards here.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

/// `peerd stats` flags.
#[derive(Args)]
pub struct StatsArgs {
    /// The admin address of the server (`peerd serve --admin`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:7480",
        env = "PEERD_ADMIN"
    )]
    admin: SocketAddr,
}

/// Largest exposition read (a server with many shards writes a few hundred KiB).
const MAX_BODY: u64 = 64 << 20;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why `peerd stats` printed no summary.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// No connection, or the exchange failed.
    #[error("fetching http://{addr}/metrics: {source}")]
    Io {
        /// The admin address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The answer was not HTTP, or not 200.
    #[error("http://{addr}/metrics answered {status}: {body}")]
    Http {
        /// The admin address.
        addr: SocketAddr,
        /// The status line's code (0: not HTTP at all).
        status: u16,
        /// What it said.
        body: String,
    },
    /// A line of the exposition could not be read.
    #[error("line {line} of the exposition: {why}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// `peerd stats`.
pub fn stats(a: &StatsArgs) -> Result<(), StatsError> {
    let text = fetch(a.admin)?;
    let samples = parse(&text)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let summary = summarize(&a.admin.to_string(), &Samples(samples), now);
    let mut out = io::stdout().lock();
    let _ = out.write_all(summary.as_bytes());
    let _ = out.flush();
    Ok(())
}

/// `GET /metrics` over HTTP/1.1, one request, the body to the end.
fn fetch(addr: SocketAddr) -> Result<String, StatsError> {
    let io = |source| StatsError::Io { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut raw).map_err(io)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let not_http = |raw: &[u8]| StatsError::Http {
        addr,
        status: 0,
        body: String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned(),
    };
    let head = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(not_http(&raw)),
    };
    let body = String::from_utf8_lossy(&raw[head..]).into_owned();
    match resp.code {
        Some(200) => Ok(body),
        Some(status) => Err(StatsError::Http {
            addr,
            status,
            body: body.trim().to_string(),
        }),
        None => Err(not_http(&raw)),
    }
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of a text exposition; comment lines (`# HELP`, `# TYPE`, others) and
/// blank lines are skipped, a timestamp after the value is ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, StatsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why| StatsError::Parse { line: i + 1, why };
        out.push(sample(line).map_err(bad)?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..]
                .trim_start()
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value"),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value"),
                }
            };
            labels.push((key, value));
            rest = rest[end + 1..].trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "value is not a number")?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The samples, with the sums the summary needs.
pub struct Samples(pub Vec<Sample>);

impl Samples {
    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// Every sample of `name` added up (all shards, all labels).
    pub fn total(&self, name: &str) -> f64 {
        // A fold from 0, not `sum()`: an empty f64 sum is -0, which prints as "-0".
        self.of(name).fold(0.0, |a, s| a + s.value)
    }

    /// `name` summed per value of `label`, largest first (ties by label).
    pub fn by(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let mut m: BTreeMap<String, f64> = BTreeMap::new();
        for s in self.of(name) {
            if let Some((_, v)) = s.labels.iter().find(|(k, _)| k == label) {
                *m.entry(v.clone()).or_default() += s.value;
            }
        }
        let mut v: Vec<(String, f64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// The first sample of `name`, if any.
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.of(name).next().map(|s| s.value)
    }
}

/// The summary printed for `samples`, scraped at `now` (seconds since the epoch).
pub fn summarize(addr: &str, s: &Samples, now: f64) -> String {
    let mut out = String::new();
    let up = s
        .gauge("peerd_start_time_seconds")
        .map_or(0.0, |t| (now - t).max(0.0));
    let rate = |n: f64| {
        if up > 0.0 {
            format!("{}/s", round(n / up))
        } else {
            "-".into()
        }
    };
    let ready = match s.gauge("peerd_ready") {
        Some(v) if v > 0.0 => "ready",
        Some(_) => "NOT READY (draining)",
        None => "readiness unknown",
    };
    let missing = s.gauge("peerd_scrape_missing_shards").unwrap_or(0.0);
    let mut head = format!(
        "{ready}, up {}, {} shards",
        duration(up),
        s.gauge("peerd_shards").unwrap_or(0.0)
    );
    if missing > 0.0 {
        head.push_str(&format!(" ({missing} did not answer)"));
    }
    out.push_str(&format!("peerd {addr}: {head}\n"));
    let mut line = |what: &str, text: String| {
        out.push_str(&format!("{what:<15}{text}\n"));
    };
    let open = s.total("peerd_connections");
    line(
        "connections",
        format!(
            "{open} open{}; {} peers; limit {}",
            nonzero_list(&s.by("peerd_connections", "transport")),
            s.gauge("peerd_peers").unwrap_or(0.0),
            s.gauge("peerd_max_connections").unwrap_or(0.0),
        ),
    );
    let accepted = s.total("peerd_connections_accepted_total");
    line(
        "accepted",
        format!(
            "{accepted} ({}){}; welcomed {}",
            rate(accepted),
            nonzero_list(&s.by("peerd_connections_accepted_total", "transport")),
            s.total("peerd_connections_welcomed_total"),
        ),
    );
    for (what, name) in [
        ("rejected", "peerd_connections_rejected_total"),
        ("dropped", "peerd_connections_dropped_total"),
        ("closes", "peerd_closes_total"),
    ] {
        let label = if name == "peerd_closes_total" {
            "code"
        } else {
            "reason"
        };
        line(
            what,
            format!("{}{}", s.total(name), nonzero_list(&s.by(name, label))),
        );
    }
    line(
        "slow consumers",
        format!(
            "{}{}",
            s.total("peerd_slow_consumer_closes_total"),
            nonzero_list(&s.by("peerd_slow_consumer_closes_total", "reason")),
        ),
    );
    for (what, frames, bytes) in [
        (
            "frames in",
            "peerd_frames_received_total",
            "peerd_received_bytes_total",
        ),
        (
            "frames out",
            "peerd_frames_sent_total",
            "peerd_sent_bytes_total",
        ),
    ] {
        let n = s.total(frames);
        let top: Vec<(String, f64)> = s
            .by(frames, "kind")
            .into_iter()
            .filter(|(_, n)| *n > 0.0)
            .take(4)
            .collect();
        let top = if top.is_empty() {
            String::new()
        } else {
            format!("; top: {}", list(&top))
        };
        line(
            what,
            format!("{n} ({}), {}{top}", rate(n), bytes_h(s.total(bytes))),
        );
    }
    line("rpc handlers", rpc(s, &rate));
    line(
        "memory",
        format!(
            "outbound queues {}, receive buffers {} (budget {})",
            bytes_h(s.total("peerd_outbound_queue_bytes")),
            bytes_h(s.total("peerd_receive_buffer_bytes")),
            bytes_h(s.total("peerd_memory_budget_bytes")),
        ),
    );
    line(
        "topics",
        format!(
            "{} topics, {} memberships",
            s.gauge("peerd_topics").unwrap_or(0.0),
            s.total("peerd_topic_members"),
        ),
    );
    line(
        "auth failures",
        format!(
            "{}{}; rate-limit hits {}",
            s.total("peerd_auth_failures_total"),
            nonzero_list(&s.by("peerd_auth_failures_total", "reason")),
            s.total("peerd_rate_limit_hits_total"),
        ),
    );
    out
}

/// Calls, rate, mean, and the buckets holding the median and the 99th percentile.
fn rpc(s: &Samples, rate: &dyn Fn(f64) -> String) -> String {
    let name = "peerd_rpc_handler_duration_seconds";
    let count = s.total(&format!("{name}_count"));
    if count == 0.0 {
        return "0 calls".into();
    }
    let mean = s.total(&format!("{name}_sum")) / count;
    // Cumulative counts per bound, summed over shards.
    let mut buckets: Vec<(f64, f64)> = s
        .by(&format!("{name}_bucket"), "le")
        .into_iter()
        .filter_map(|(le, n)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let at = |q: f64| {
        let want = q * count;
        match buckets.iter().find(|(_, n)| *n >= want) {
            Some((le, _)) if le.is_finite() => format!("<= {}", millis(*le)),
            _ => "> largest bucket".into(),
        }
    };
    format!(
        "{count} call{} ({}), mean {}, p50 {}, p99 {}",
        if count == 1.0 { "" } else { "s" },
        rate(count),
        millis(mean),
        at(0.5),
        at(0.99)
    )
}

fn round(v: f64) -> f64 {
    if v >= 100.0 {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    }
}

fn millis(secs: f64) -> String {
    format!("{} ms", round(secs * 1000.0))
}

fn list(v: &[(String, f64)]) -> String {
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` (a 3, b 1)` for the non-zero entries, or nothing.
fn nonzero_list(v: &[(String, f64)]) -> String {
    let v: Vec<(String, f64)> = v.iter().filter(|(_, n)| *n != 0.0).cloned().collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" ({})", list(&v))
    }
}

fn bytes_h(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v} B")
    } else {
        format!("{:.1} {}", v, UNITS[u])
    }
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_with_escapes_infinities_and_timestamps() {
        let text = "# HELP x y\n# TYPE x counter\n\
                    x_total{shard=\"0\",reason=\"a\\\"b\\\\c\\nd\"} 3\n\
                    h_bucket{le=\"+Inf\",} 7 1700000000000\n\
                    plain 1.5e3\n";
        let v = parse(text).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].name, "x_total");
        assert_eq!(
            v[0].labels,
            vec![
                ("shard".into(), "0".into()),
                ("reason".into(), "a\"b\\c\nd".into())
            ]
        );
        assert_eq!(v[0].value, 3.0);
        assert_eq!(v[1].labels[0].1, "+Inf");
        assert_eq!(v[1].value, 7.0);
        assert_eq!(v[2].value, 1500.0);
        assert!(matches!(
            parse("x{a=\"b} 1"),
            Err(StatsError::Parse { line: 1, .. })
        ));
        assert!(parse("x{a=b} 1").is_err());
        assert!(parse("x one").is_err());
    }

    #[test]
    fn summary_sums_shards_and_averages_since_start() {
        let text = "peerd_ready 1\npeerd_start_time_seconds 1000\npeerd_shards 2\n\
            peerd_connections{shard=\"0\",transport=\"tcp\"} 3\n\
            peerd_connections{shard=\"1\",transport=\"tcp\"} 1\n\
            peerd_connections{shard=\"1\",transport=\"ws\"} 2\n\
            peerd_connections_accepted_total{shard=\"0\",transport=\"tcp\"} 100\n\
            peerd_frames_received_total{shard=\"0\",kind=\"Publish\"} 50\n\
            peerd_frames_received_total{shard=\"1\",kind=\"Publish\"} 50\n\
            peerd_frames_received_total{shard=\"1\",kind=\"Ping\"} 10\n\
            peerd_rpc_handler_duration_seconds_bucket{shard=\"0\",le=\"0.001\"} 9\n\
            peerd_rpc_handler_duration_seconds_bucket{shard=\"0\",le=\"+Inf\"} 10\n\
            peerd_rpc_handler_duration_seconds_sum{shard=\"0\"} 0.02\n\
            peerd_rpc_handler_duration_seconds_count{shard=\"0\"} 10\n";
        let s = Samples(parse(text).unwrap());
        let out = summarize("127.0.0.1:7480", &s, 1100.0);
        assert!(
            out.starts_with("peerd 127.0.0.1:7480: ready, up 1m40s, 2 shards\n"),
            "{out}"
        );
        assert!(out.contains("rejected       0\n"), "{out}");
        assert!(out.contains("6 open (tcp 4, ws 2)"), "{out}");
        assert!(out.contains("100 (1/s) (tcp 100)"), "{out}");
        assert!(
            out.contains("110 (1.1/s), 0 B; top: Publish 100, Ping 10"),
            "{out}"
        );
        assert!(
            out.contains("10 calls (0.1/s), mean 2 ms, p50 <= 1 ms, p99 > largest bucket"),
            "{out}"
        );
    }
}
