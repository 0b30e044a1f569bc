//! Latency histograms, percentile summaries and the `.hgrm` percentile-distribution file.
//!
//! Every latency is recorded in nanoseconds into an HdrHistogram with 3 significant digits
//! (relative error <= 0.1 %); reports and `.hgrm` files show microseconds.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in nanoseconds.
pub type Hist = Histogram<u64>;

/// Significant value digits of every histogram.
pub const SIGFIG: u8 = 3;

/// Largest latency a histogram holds (100 s); larger values are clamped to it.
pub const MAX_NS: u64 = 100_000_000_000;

/// Nanoseconds per unit of the reports and `.hgrm` files (microseconds).
pub const NS_PER_US: f64 = 1000.0;

/// A fresh histogram: 1 ns .. 100 s, 3 significant digits.
pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, MAX_NS, SIGFIG).expect("valid histogram bounds")
}

/// Record one latency, clamping it into the histogram's range.
#[inline]
pub fn record(h: &mut Hist, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_NS));
}

/// The percentiles every report gives, with the sample count next to them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Unit of every value below: always "us" (microseconds).
    pub unit: &'static str,
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min: f64,
    /// Arithmetic mean (given for completeness; never quoted alone).
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile (meaningful from about a million samples).
    pub p99_99: f64,
    /// Largest sample.
    pub max: f64,
}

impl LatencySummary {
    /// Summarize `h` (nanoseconds) in microseconds.
    pub fn of(h: &Hist) -> LatencySummary {
        let us = |ns: u64| ns as f64 / NS_PER_US;
        if h.is_empty() {
            return LatencySummary {
                unit: "us",
                count: 0,
                min: 0.0,
                mean: 0.0,
                stdev: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                p99_99: 0.0,
                max: 0.0,
            };
        }
        LatencySummary {
            unit: "us",
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / NS_PER_US,
            stdev: h.stdev() / NS_PER_US,
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// Sub-buckets per bucket, as HdrHistogram computes it for a lowest value of 1.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(sigfig as u32)).next_power_of_two()
}

/// The percentile distribution of `h` in HdrHistogram's text format (`.hgrm`), exactly as
/// Java's `outputPercentileDistribution(out, 5, 1000.0)` writes it: values in microseconds
/// with 3 decimals, 5 percentile ticks per half distance, the final 100 % line without the
/// `1/(1-Percentile)` column, then the Mean/StdDeviation, Max/Total count and
/// Buckets/SubBuckets footer. Tools that read wrk2 and HdrHistogram output (the online
/// plotter, HistogramLogAnalyzer, [`parse_hgrm`]) read this.
pub fn hgrm_string(h: &Hist) -> String {
    let scale = NS_PER_US;
    let mut s = String::new();
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let len = h.len() as f64;
        for v in h.iter_quantiles(5) {
            let value = v.value_iterated_to() as f64 / scale;
            let p = v.quantile_iterated_to();
            let total = (v.quantile() * len).round() as u64;
            if p < 1.0 {
                let _ = writeln!(
                    s,
                    "{:12.3} {:2.12} {:10} {:14.2}",
                    value,
                    p,
                    total,
                    1.0 / (1.0 - p)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {p:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    let _ = writeln!(s, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]");
    let _ = writeln!(
        s,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    s
}

/// One line of a percentile distribution: value (µs) and percentile as a fraction (0..=1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentilePoint {
    /// Latency in microseconds.
    pub value_us: f64,
    /// Fraction of samples at or below `value_us`.
    pub percentile: f64,
    /// Samples at or below `value_us`.
    pub total_count: u64,
}

/// The percentile distribution of `h`, the same points `.hgrm` lists.
pub fn percentile_points(h: &Hist) -> Vec<PercentilePoint> {
    let len = h.len() as f64;
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| PercentilePoint {
            value_us: v.value_iterated_to() as f64 / NS_PER_US,
            percentile: v.quantile_iterated_to(),
            total_count: (v.quantile() * len).round() as u64,
        })
        .collect()
}

/// Read the points of a `.hgrm` file (ours, wrk2's or Java HdrHistogram's). Header, blank and
/// `#` lines are skipped. Values keep the file's unit.
pub fn parse_hgrm(text: &str) -> Result<Vec<PercentilePoint>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("Value") {
            continue;
        }
        let cols: Vec<&str> = t.split_whitespace().collect();
        if cols.len() < 3 {
            bail!("line {}: expected at least 3 columns: {line:?}", i + 1);
        }
        let parse = |c: &str| -> Result<f64> {
            c.parse::<f64>()
                .with_context(|| format!("line {}: bad number {c:?}", i + 1))
        };
        out.push(PercentilePoint {
            value_us: parse(cols[0])?,
            percentile: parse(cols[1])?,
            total_count: parse(cols[2])? as u64,
        });
    }
    if out.is_empty() {
        bail!("no percentile lines found");
    }
    Ok(out)
}

/// Min, median and max of a list (the spread across repetitions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Spread of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            };
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_1_to_1000() -> Hist {
        let mut h = new_hist();
        // Values below 2048 ns are exact at 3 significant digits.
        for v in 1..=1000u64 {
            record(&mut h, v);
        }
        h
    }

    #[test]
    fn summary_of_known_inputs() {
        let s = LatencySummary::of(&hist_1_to_1000());
        assert_eq!(s.count, 1000);
        assert_eq!(s.unit, "us");
        assert_eq!(s.min, 0.001);
        assert_eq!(s.p50, 0.5);
        assert_eq!(s.p90, 0.9);
        assert_eq!(s.p99, 0.99);
        assert_eq!(s.p99_9, 0.999);
        assert_eq!(s.p99_99, 1.0);
        assert_eq!(s.max, 1.0);
        assert!((s.mean - 0.5005).abs() < 1e-9);
    }

    #[test]
    fn summary_of_skewed_inputs_and_large_values() {
        let mut h = new_hist();
        for _ in 0..9_900 {
            record(&mut h, 20_000); // 20 µs
        }
        for _ in 0..100 {
            record(&mut h, 5_000_000); // 5 ms
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        assert!((s.p50 - 20.0).abs() / 20.0 < 0.001, "{}", s.p50);
        assert!((s.p99 - 20.0).abs() / 20.0 < 0.001, "{}", s.p99);
        assert!((s.p99_9 - 5000.0).abs() / 5000.0 < 0.001, "{}", s.p99_9);
        assert!((s.max - 5000.0).abs() / 5000.0 < 0.001, "{}", s.max);
        // Out-of-range values clamp instead of panicking.
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 10_002);
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = LatencySummary::of(&new_hist());
        assert_eq!(s.count, 0);
        assert_eq!(s.max, 0.0);
    }

    #[test]
    fn hgrm_format_matches_hdrhistogram() {
        let h = hist_1_to_1000();
        let text = hgrm_string(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First line: the minimum at percentile 0.
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        // The median line.
        assert!(
            lines.contains(&"       0.500 0.500000000000        500           2.00"),
            "{text}"
        );
        // Last data line: 100 % without the 1/(1-p) column.
        let footer_at = lines.iter().position(|l| l.starts_with("#[Mean")).unwrap();
        assert_eq!(
            lines[footer_at - 1],
            "       1.000 1.000000000000       1000"
        );
        assert_eq!(
            lines[footer_at],
            "#[Mean    =        0.500, StdDeviation   =        0.289]"
        );
        assert_eq!(
            lines[footer_at + 1],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert!(lines[footer_at + 2].starts_with("#[Buckets = "));
        assert!(lines[footer_at + 2].ends_with("SubBuckets     =         2048]"));
        assert_eq!(lines.len(), footer_at + 3);
        // Every data line has 4 columns (3 on the last), percentiles never decrease and the
        // counts reach the total.
        let pts = parse_hgrm(&text).unwrap();
        assert!(pts.windows(2).all(|w| w[0].percentile <= w[1].percentile));
        assert!(pts.windows(2).all(|w| w[0].value_us <= w[1].value_us));
        assert_eq!(pts.last().unwrap().total_count, 1000);
        for l in &lines[2..footer_at - 1] {
            assert_eq!(l.split_whitespace().count(), 4, "{l:?}");
        }
        // Ticks get denser towards the tail, as HdrHistogram's do.
        assert!(pts.iter().any(|p| p.percentile > 0.99));
    }

    #[test]
    fn hgrm_of_empty_histogram_has_header_and_footer() {
        let text = hgrm_string(&new_hist());
        assert!(text.starts_with("       Value"));
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn spread_min_median_max() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of(&[4.0, 1.0]).median, 2.5);
    }
}
