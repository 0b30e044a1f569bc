//! What a person reads: the terminal table, the files under `--out`, the SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::engine::Mode;
use crate::hist::{self, Hist, PercentilePoint};
use crate::report::{send_pattern, Report, RunReport};
use crate::sampler::MemoryReport;

/// Column header of the run table.
pub fn table_header() -> String {
    format!(
        "{:<14} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8}",
        "run",
        "answers/s",
        "samples",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "p99.99µs",
        "max µs",
        "missing",
        "/srv-cpu-s",
        "lg-cpu%"
    )
}

/// One row of the run table (plus a spread row and a slowest-receiver row when present).
pub fn table_rows(r: &RunReport) -> String {
    let mut s = String::new();
    let l = &r.latency;
    let per_cpu = r
        .per_server_cpu_s
        .map(|v| format!("{v:.0}"))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "{:<14} {:>11.0} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>11} {:>7.0}%",
        r.label,
        r.achieved_rate,
        l.count,
        l.p50,
        l.p90,
        l.p99,
        l.p99_9,
        l.p99_99,
        l.max,
        r.missing,
        per_cpu,
        r.loadgen.max_thread_util * 100.0
    );
    if let Some(sl) = &r.slowest_receiver {
        let _ = writeln!(
            s,
            "{:<14} {:>11} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            "  slowest rcv", "", sl.count, sl.p50, sl.p90, sl.p99, sl.p99_9, sl.p99_99, sl.max
        );
    }
    // The local/remote split only says something over several targets (with one, every
    // delivery is local and the row would repeat the first).
    if r.deliveries_by_target.len() > 1 {
        for (label, l) in [
            ("  local rcv", &r.latency_local),
            ("  remote rcv", &r.latency_remote),
        ] {
            match l {
                Some(l) => {
                    let _ = writeln!(
                        s,
                        "{:<14} {:>11} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                        label, "", l.count, l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
                    );
                }
                None => {
                    let _ = writeln!(s, "{label:<14} {:>11} {:>11}", "", 0);
                }
            }
        }
    }
    for line in target_lines(r) {
        let _ = writeln!(s, "  {line}");
    }
    if r.reps.len() > 1 {
        let sp = &r.spread;
        let _ = writeln!(
            s,
            "  spread over {} windows (min/median/max): p50 {:.1}/{:.1}/{:.1} µs, p99 {:.1}/{:.1}/{:.1} µs, p99.9 {:.1}/{:.1}/{:.1} µs, answers/s {:.0}/{:.0}/{:.0}",
            r.reps.len(),
            sp.p50.min, sp.p50.median, sp.p50.max,
            sp.p99.min, sp.p99.median, sp.p99.max,
            sp.p99_9.min, sp.p99_9.median, sp.p99_9.max,
            sp.achieved_rate.min, sp.achieved_rate.median, sp.achieved_rate.max,
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  WARNING: {w}");
    }
    s
}

/// Per-target lines of a run over several targets (deliveries per target, each server's
/// CPU) and the --extra-pid processes' CPU; nothing for a plain single-server run.
pub fn target_lines(r: &RunReport) -> Vec<String> {
    let mut v = Vec::new();
    if r.deliveries_by_target.len() > 1 {
        let parts: Vec<String> = r
            .deliveries_by_target
            .iter()
            .map(|d| {
                format!(
                    "t{} {}{}: {} subscribers, {} received{}",
                    d.target,
                    d.address,
                    if d.local { " (publishers')" } else { "" },
                    d.subscribers,
                    d.received,
                    d.received_per_subscriber
                        .map(|x| format!(" ({x:.0} each)"))
                        .unwrap_or_default()
                )
            })
            .collect();
        v.push(format!("deliveries by target: {}", parts.join("; ")));
    }
    let secs = |c: Option<f64>| c.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "-".into());
    if r.server_cpu_by_target.len() > 1 || !r.extra_cpu_s.is_empty() {
        let mut parts: Vec<String> = Vec::new();
        if r.server_cpu_by_target.len() > 1 {
            parts.extend(
                r.server_cpu_by_target
                    .iter()
                    .map(|t| format!("t{} {}", t.target, secs(t.cpu_s))),
            );
            parts.push(format!("sum {}", secs(r.server_cpu_s)));
        } else {
            parts.push(format!("server {}", secs(r.server_cpu_s)));
        }
        parts.extend(
            r.extra_cpu_s
                .iter()
                .map(|(name, c)| format!("{name} {}", secs(*c))),
        );
        v.push(format!("CPU in the windows: {}", parts.join(", ")));
    }
    v
}

/// What a run is, as every title says it: "scenario / protocol / mode", then the send
/// pattern of an open-loop run ("evenly spaced", "batched 8 per write"), so that a batched
/// run is never read as an evenly spaced one.
pub fn heading(scenario: &str, protocol: &str, mode: Mode, per_write: u64) -> String {
    let pattern = matches!(mode, Mode::Open { .. }).then(|| send_pattern(mode, per_write));
    join_heading(scenario, protocol, mode.label(), pattern.as_deref())
}

/// A report's [`heading`], from its first run (every run of one invocation has the same
/// mode and pattern; a report without runs has no pattern).
pub fn title(rep: &Report) -> String {
    let pattern = rep.runs.first().filter(|r| r.offered_rate.is_some());
    let pattern = pattern.map(|r| r.send_pattern.as_str());
    join_heading(&rep.scenario, &rep.protocol, &rep.mode, pattern)
}

fn join_heading(scenario: &str, protocol: &str, mode: &str, pattern: Option<&str>) -> String {
    match pattern {
        Some(p) => format!("{scenario} / {protocol} / {mode}, {p}"),
        None => format!("{scenario} / {protocol} / {mode}"),
    }
}

/// The whole table for a report, with a title line.
pub fn table(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} — server: {} {}",
        title(rep),
        rep.server.kind,
        rep.server.address
    );
    let _ = writeln!(s, "{}", table_header());
    for r in &rep.runs {
        s.push_str(&table_rows(r));
    }
    if let Some(k) = &rep.knee {
        let _ = writeln!(
            s,
            "knee (highest rate with p99 < {} µs): {}",
            k.p99_bound_us,
            k.rate
                .map(|r| format!("{r} msg/s"))
                .unwrap_or_else(|| "none of the rates tested".into())
        );
    }
    s
}

/// Label on the percentile axis for x = 1/(1-p): "0%", "90%", "99%", "99.9%", ... at powers
/// of ten, nothing in between.
pub fn percentile_label(x: f64) -> String {
    if x <= 0.0 {
        return String::new();
    }
    let d = x.log10();
    if (d - d.round()).abs() > 1e-6 {
        return String::new();
    }
    let d = d.round() as i32;
    match d {
        0 => "0%".into(),
        1 => "90%".into(),
        d if d >= 2 => format!("{:.*}%", (d - 2) as usize, 100.0 - 100.0 / x),
        _ => String::new(),
    }
}

/// Plot percentile distributions (HdrHistogram style: x = 1/(1-p) on a log scale, labelled as
/// percentiles; y = latency in µs), several series overlaid, to an SVG file.
pub fn plot_percentiles(
    path: &Path,
    title: &str,
    series: &[(String, Vec<PercentilePoint>)],
) -> Result<()> {
    let pts = |s: &Vec<PercentilePoint>| -> Vec<(f64, f64)> {
        s.iter()
            .filter(|p| p.percentile < 1.0)
            .map(|p| (1.0 / (1.0 - p.percentile), p.value_us))
            .collect()
    };
    let all: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, s)| pts(s)).collect();
    let max_x = all.iter().flatten().map(|p| p.0).fold(100.0f64, f64::max);
    let max_x = 10f64.powf(max_x.log10().ceil());
    let max_y = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.value_us))
        .fold(1.0f64, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..max_x).log_scale(), 0f64..max_y)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, ((label, src), data)) in series.iter().zip(all).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // The 100 % point (the max) has no finite x: draw it as a marker at the right edge.
        let max = src.last().map(|p| p.value_us);
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(match max {
                Some(m) => format!("{label} (max {m:.1} µs)"),
                None => label.clone(),
            })
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if let Some(m) = max {
            chart
                .draw_series(std::iter::once(Circle::new((max_x, m), 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Plot server RSS and kernel TCP memory over a run (MiB against seconds), with the
/// run's phases as vertical lines, to an SVG file.
pub fn plot_memory(path: &Path, title: &str, m: &MemoryReport) -> Result<()> {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let rss: Vec<(f64, f64)> = m
        .series
        .iter()
        .filter_map(|s| s.rss_bytes.map(|r| (s.t_s, mib(r))))
        .collect();
    let kernel: Vec<(f64, f64)> = m
        .series
        .iter()
        .filter_map(|s| s.kernel_tcp_mem_bytes.map(|r| (s.t_s, mib(r))))
        .collect();
    let max_x = m.series.last().map(|s| s.t_s).unwrap_or(1.0).max(1.0);
    let max_y = rss
        .iter()
        .chain(&kernel)
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for ph in &m.phases {
        chart
            .draw_series(LineSeries::new(
                vec![(ph.t_s, 0.0), (ph.t_s, max_y)],
                BLACK.mix(0.25),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                ph.name.clone(),
                (ph.t_s, max_y * 0.98),
                ("sans-serif", 12),
            )))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    for (i, (label, data)) in [
        ("server RSS", rss),
        ("kernel TCP memory (all sockets)", kernel),
    ]
    .into_iter()
    .enumerate()
    {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Write `h` as a `.hgrm` file.
pub fn write_hgrm(path: &Path, h: &Hist) -> Result<()> {
    std::fs::write(path, hist::hgrm_string(h))
        .with_context(|| format!("writing {}", path.display()))
}

/// Write the JSON report.
pub fn write_json(path: &Path, rep: &Report) -> Result<()> {
    let s = serde_json::to_string_pretty(rep)?;
    std::fs::write(path, s + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A markdown summary: the command and the table, for results/README.md.
pub fn write_markdown(path: &Path, rep: &Report) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", title(rep));
    let _ = writeln!(
        s,
        "Command:\n\n```sh\n{}\n```\n",
        shell_join(&rep.command_line)
    );
    let e = &rep.environment;
    let _ = writeln!(
        s,
        "Environment: kernel {}, {} ({} cores, VM: {}), commit {}{}, loadgen cores {:?}, server cores {:?}.\n",
        e.kernel,
        e.cpu_model,
        e.cores,
        e.virtualization.is_vm,
        e.git_commit.as_deref().unwrap_or("unknown"),
        if e.git_dirty == Some(true) { " (dirty)" } else { "" },
        rep.pinning.loadgen_cores,
        rep.pinning.server_cores
    );
    let _ = writeln!(
        s,
        "| run | mode | sends | conns | payload | answers/s | samples | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | missing | answers / server CPU-s |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &rep.runs {
        let l = &r.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} B | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.label,
            r.mode,
            r.send_pattern,
            r.connections,
            r.payload_bytes,
            r.achieved_rate,
            l.count,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.p99_99,
            l.max,
            r.missing,
            r.per_server_cpu_s.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
        );
    }
    if rep.runs.iter().any(|r| !target_lines(r).is_empty()) {
        let _ = writeln!(s, "\n## Targets\n");
        for r in &rep.runs {
            if let (true, Some(l), Some(m)) = (
                r.deliveries_by_target.len() > 1,
                &r.latency_local,
                &r.latency_remote,
            ) {
                let _ = writeln!(
                    s,
                    "- {}: local p50 {:.1} µs, p99 {:.1} µs ({} samples); remote p50 {:.1} µs, p99 {:.1} µs ({} samples)",
                    r.label, l.p50, l.p99, l.count, m.p50, m.p99, m.count
                );
            }
            for l in target_lines(r) {
                let _ = writeln!(s, "- {}: {l}", r.label);
            }
        }
    }
    if let Some(a) = &rep.attack {
        let _ = writeln!(s, "\n## Attack\n");
        for l in crate::attack::summary_lines(a) {
            let _ = writeln!(s, "- {l}");
        }
    }
    if let Some(k) = &rep.soak {
        let _ = writeln!(s, "\n## Soak\n");
        for l in crate::soak::summary_lines(k) {
            let _ = writeln!(s, "- {l}");
        }
    }
    if !rep.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:\n");
        for w in &rep.warnings {
            let _ = writeln!(s, "- {w}");
        }
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Quote argv for a shell, minimally.
/// `name count, name count, ...` for a report line.
pub fn join_counts<'a, K: std::fmt::Display + 'a, V: std::fmt::Display + 'a>(
    counts: impl IntoIterator<Item = (&'a K, &'a V)>,
) -> String {
    counts
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
        assert_eq!(percentile_label(1e6), "99.9999%");
        assert_eq!(percentile_label(20.0), "");
    }

    #[test]
    fn plot_writes_an_svg_with_overlaid_series() {
        let mut a = hist::new_hist();
        let mut b = hist::new_hist();
        for v in 1..=10_000u64 {
            hist::record(&mut a, 10_000 + v);
            hist::record(&mut b, 20_000 + 3 * v);
        }
        let dir = std::env::temp_dir().join(format!("lg-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        plot_percentiles(
            &path,
            "test",
            &[
                ("floor".into(), hist::percentile_points(&a)),
                ("peerd".into(), hist::percentile_points(&b)),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("floor"));
        assert!(svg.contains("peerd"));
        assert!(svg.contains("99.9%"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_join(&["a".into(), "b c".into(), "--rate=1".into()]),
            "a 'b c' --rate=1"
        );
    }
}
