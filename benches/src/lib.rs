//! End-to-end latency benches for `cargo bench -p peerd-benches` (see `benches/e2e.rs`).
//!
//! # Layout
//!
//! - [`report`]: percentile lines from an HdrHistogram.
//!
//! The peer the benches drive is `peerd_testkit::RawPeer`: blocking std sockets and the
//! codec, so the measurement includes only the kernel, the server and the codec, not a
//! client library's threads.

pub mod report {
    use hdrhistogram::Histogram;

    /// One line: sample count and p50/p90/p99/p99.9/p99.99/max in microseconds.
    pub fn line(name: &str, h: &Histogram<u64>) -> String {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{name:<34} n={:<8} p50={:>7.1}us p90={:>7.1}us p99={:>7.1}us p99.9={:>7.1}us p99.99={:>7.1}us max={:>8.1}us",
            h.len(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            us(0.9999),
            h.max() as f64 / 1000.0
        )
    }
}
