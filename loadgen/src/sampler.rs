//! Server memory and CPU over time, for `attack` and `soak`: a thread that reads the
//! server's VmRSS and CPU time (and the kernel's TCP memory) at a fixed interval, with the
//! hostile connections open at that moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{self, now_ns};
use crate::hostile::Gauges;
use crate::sys;

/// One reading.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// Server VmRSS.
    pub rss_bytes: Option<u64>,
    /// Server CPU seconds (user + system) since it started.
    pub server_cpu_s: Option<f64>,
    /// Hostile connections open (not yet seen closed by the server).
    pub hostile_open: u64,
    /// Bytes the server's kernel holds unsent toward hostile peers (its ends' send queues
    /// in /proc/net/tcp; loopback targets only).
    pub server_unsent_bytes: u64,
    /// Memory of every TCP socket on the machine (/proc/net/sockstat "mem" pages), both
    /// ends of every loopback connection included.
    pub kernel_tcp_mem_bytes: Option<u64>,
}

/// A named moment of the run (setup, attack start, ...).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What began.
    pub name: String,
    /// Seconds since the start of the run.
    pub t_s: f64,
}

/// Server memory over a run.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Interval between samples.
    pub sample_interval_ms: u64,
    /// Server VmRSS before any hostile connection was opened.
    pub baseline_rss_bytes: Option<u64>,
    /// Highest sampled VmRSS.
    pub peak_rss_bytes: Option<u64>,
    /// When it was sampled, seconds since the start.
    pub peak_at_s: Option<f64>,
    /// VmRSS when the attack (or soak load) ended, before its connections were closed.
    pub at_end_rss_bytes: Option<u64>,
    /// VmRSS `after_wait_s` after the hostile connections were closed ("RSS after").
    pub after_rss_bytes: Option<u64>,
    /// Seconds waited after closing the hostile connections.
    pub after_wait_s: f64,
    /// Highest sampled kernel TCP memory (both ends of loopback connections).
    pub kernel_tcp_mem_peak_bytes: Option<u64>,
    /// Named moments of the run.
    pub phases: Vec<Phase>,
    /// Every sample.
    pub series: Vec<Sample>,
}

impl MemoryReport {
    /// Summarize `series`, with the readings taken at the moments that matter.
    pub fn new(
        interval: Duration,
        baseline: Option<u64>,
        at_end: Option<u64>,
        after: Option<u64>,
        after_wait_s: f64,
        phases: Vec<Phase>,
        series: Vec<Sample>,
    ) -> MemoryReport {
        let peak = series
            .iter()
            .filter_map(|s| s.rss_bytes.map(|r| (r, s.t_s)))
            .chain(at_end.map(|r| (r, f64::NAN)))
            .fold(None, |m: Option<(u64, f64)>, x| match m {
                Some(m) if m.0 >= x.0 => Some(m),
                _ => Some(x),
            });
        MemoryReport {
            sample_interval_ms: interval.as_millis() as u64,
            baseline_rss_bytes: baseline,
            peak_rss_bytes: peak.map(|p| p.0),
            peak_at_s: peak.map(|p| p.1).filter(|t| t.is_finite()),
            at_end_rss_bytes: at_end,
            after_rss_bytes: after,
            after_wait_s,
            kernel_tcp_mem_peak_bytes: series.iter().filter_map(|s| s.kernel_tcp_mem_bytes).max(),
            phases,
            series,
        }
    }
}

/// Run-relative seconds of `t` (ns).
pub fn secs_since(origin: u64, t: u64) -> f64 {
    t.saturating_sub(origin) as f64 / 1e9
}

/// The sampling thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Sample server `pid` (None: only the kernel and the gauges) every `interval`; times
    /// are seconds since `origin` (ns).
    pub fn start(
        pid: Option<u32>,
        origin: u64,
        interval: Duration,
        gauges: Arc<Gauges>,
        cores: Option<Vec<usize>>,
    ) -> std::io::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                if let Some(c) = &cores {
                    let _ = sys::set_affinity(0, c);
                }
                let page = sys::page_size();
                let step = interval.as_nanos().max(1) as u64;
                let mut out = Vec::new();
                let mut next = now_ns();
                while !flag.load(Ordering::SeqCst) {
                    out.push(Sample {
                        t_s: secs_since(origin, now_ns()),
                        rss_bytes: pid.and_then(|p| sys::rss_bytes(p).ok()),
                        server_cpu_s: pid.and_then(|p| sys::process_cpu_s(p).ok()),
                        hostile_open: gauges.open.load(Ordering::Relaxed),
                        server_unsent_bytes: gauges.server_unsent.load(Ordering::Relaxed),
                        kernel_tcp_mem_bytes: sys::sockstat()
                            .ok()
                            .map(|s| s.tcp_mem_pages.max(0) as u64 * page),
                    });
                    next += step;
                    // Sleep in short pieces so that stop() is prompt.
                    while !flag.load(Ordering::SeqCst) && now_ns() < next {
                        clock::sleep_until(next.min(now_ns() + 50_000_000));
                    }
                }
                out
            })?;
        Ok(Sampler { stop, handle })
    }

    /// Stop and return the samples.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss: u64) -> Sample {
        Sample {
            t_s,
            rss_bytes: Some(rss),
            server_cpu_s: None,
            hostile_open: 0,
            server_unsent_bytes: 0,
            kernel_tcp_mem_bytes: Some(rss / 2),
        }
    }

    #[test]
    fn peak_comes_from_the_series_or_the_end_reading() {
        let s = vec![sample(0.0, 10), sample(0.25, 30), sample(0.5, 20)];
        let m = MemoryReport::new(
            Duration::from_millis(250),
            Some(10),
            Some(25),
            Some(12),
            10.0,
            vec![],
            s.clone(),
        );
        assert_eq!(m.peak_rss_bytes, Some(30));
        assert_eq!(m.peak_at_s, Some(0.25));
        assert_eq!(m.kernel_tcp_mem_peak_bytes, Some(15));
        let m = MemoryReport::new(
            Duration::from_millis(250),
            Some(10),
            Some(40),
            None,
            10.0,
            vec![],
            s,
        );
        assert_eq!(m.peak_rss_bytes, Some(40));
        assert_eq!(m.peak_at_s, None);
    }

    #[test]
    fn sampler_reads_its_own_process() {
        let s = Sampler::start(
            Some(std::process::id()),
            now_ns(),
            Duration::from_millis(10),
            Arc::new(Gauges::default()),
            None,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let v = s.stop();
        assert!(v.len() >= 2, "{v:?}");
        assert!(v[0].rss_bytes.unwrap() > 0);
        assert!(v.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }
}
