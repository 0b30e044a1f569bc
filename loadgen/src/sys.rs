//! Readings from /proc and a few syscalls: CPU time of a process or thread, RSS, socket
//! memory, affinity, resource limits.

use std::fs;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Clock ticks per second for /proc `stat` times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in seconds from the text of a /proc `stat` file.
pub fn parse_stat_cpu(stat: &str) -> Result<f64> {
    // The command name (field 2) may hold spaces and parentheses: fields after it start
    // after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' in stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    if f.len() < 13 {
        bail!("short stat line");
    }
    let utime: f64 = f[11].parse().context("utime")?;
    let stime: f64 = f[12].parse().context("stime")?;
    Ok((utime + stime) / clk_tck())
}

/// CPU seconds (user + system) a process has used so far, all threads, exited ones included.
///
/// Read from the process's CPU-time clock (`clock_getcpuclockid`), which the kernel keeps
/// in nanoseconds. /proc `stat` reports the same time in clock ticks (10 ms): over a 3 s
/// window of a server using 1 µs per message that is a 3 % step, as large as the
/// differences between servers the peers runner compares. The /proc reading remains the
/// fallback where the clock cannot be had.
pub fn process_cpu_s(pid: u32) -> Result<f64> {
    if let Some(s) = process_cpu_clock_s(pid) {
        return Ok(s);
    }
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu(&s)
}

/// The process CPU-time clock of `pid`, in seconds, or None where it cannot be read.
fn process_cpu_clock_s(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes one clockid_t.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// CPU seconds one thread of this process has used so far.
pub fn thread_cpu_s(tid: i32) -> Result<f64> {
    let s = fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .with_context(|| format!("reading /proc/self/task/{tid}/stat"))?;
    parse_stat_cpu(&s)
}

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU seconds of this whole process (getrusage RUSAGE_SELF).
pub fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes one struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// VmRSS of a process in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&s).context("no VmRSS line")
}

/// VmRSS in bytes from the text of /proc/PID/status.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The TCP line of /proc/net/sockstat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SockStat {
    /// "sockets: used".
    pub sockets_used: i64,
    /// TCP "inuse".
    pub tcp_inuse: i64,
    /// TCP "orphan".
    pub tcp_orphan: i64,
    /// TCP "tw".
    pub tcp_tw: i64,
    /// TCP "alloc".
    pub tcp_alloc: i64,
    /// TCP "mem", in pages.
    pub tcp_mem_pages: i64,
}

/// Read /proc/net/sockstat.
pub fn sockstat() -> Result<SockStat> {
    let s = fs::read_to_string("/proc/net/sockstat").context("reading /proc/net/sockstat")?;
    Ok(parse_sockstat(&s))
}

/// Parse the text of /proc/net/sockstat.
pub fn parse_sockstat(s: &str) -> SockStat {
    let mut out = SockStat::default();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let head = it.next().unwrap_or("");
        let kv: Vec<&str> = it.collect();
        let get = |name: &str| -> i64 {
            kv.chunks(2)
                .find(|c| c[0] == name)
                .and_then(|c| c.get(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        match head {
            "sockets:" => out.sockets_used = get("used"),
            "TCP:" => {
                out.tcp_inuse = get("inuse");
                out.tcp_orphan = get("orphan");
                out.tcp_tw = get("tw");
                out.tcp_alloc = get("alloc");
                out.tcp_mem_pages = get("mem");
            }
            _ => {}
        }
    }
    out
}

/// Bytes held by the slab caches that grow with TCP connections (TCP, sock_inode_cache,
/// dentry-free socket inodes...), from /proc/slabinfo (root only). Name -> active bytes.
pub fn tcp_slab_bytes() -> Option<Vec<(String, u64)>> {
    let s = fs::read_to_string("/proc/slabinfo").ok()?;
    let wanted = [
        "TCP",
        "request_sock_TCP",
        "sock_inode_cache",
        "skbuff_head_cache",
        "eventpoll_epi",
        "filp",
    ];
    let mut out = Vec::new();
    for line in s.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || !wanted.contains(&f[0]) {
            continue;
        }
        let active: u64 = f[1].parse().ok()?;
        let objsize: u64 = f[3].parse().ok()?;
        out.push((f[0].to_string(), active * objsize));
    }
    Some(out)
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Parse a CPU list such as "0,2-3" into core numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a
                .trim()
                .parse()
                .with_context(|| format!("bad core {a:?}"))?;
            let b: usize = b
                .trim()
                .parse()
                .with_context(|| format!("bad core {b:?}"))?;
            if b < a {
                bail!("bad core range {part:?}");
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().with_context(|| format!("bad core {part:?}"))?);
        }
    }
    if out.is_empty() {
        bail!("empty core list");
    }
    Ok(out)
}

/// Format core numbers back as "0,1,2".
pub fn format_cpu_list(cores: &[usize]) -> String {
    cores
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Pin thread `tid` (0 = the calling thread) to `cores`.
pub fn set_affinity(tid: i32, cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes within it (checked below).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(std::io::Error::other(format!("core {c} out of range")));
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Cores this process may run on.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: as in set_affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..num_cores()).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Number of online cores.
pub fn num_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// (soft, hard) of a resource limit; `None` = unlimited.
pub fn rlimit(resource: libc::__rlimit_resource_t) -> (Option<u64>, Option<u64>) {
    // SAFETY: getrlimit writes one struct.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    unsafe { libc::getrlimit(resource, &mut r) };
    let f = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    (f(r.rlim_cur), f(r.rlim_max))
}

/// Raise the open-files soft limit to the hard limit (idle runs hold many sockets); returns
/// the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: get/setrlimit on one struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_handles_odd_command_names() {
        let line = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let cpu = parse_stat_cpu(line).unwrap();
        assert!((cpu - 300.0 / clk_tck()).abs() < 1e-9);
        assert!(process_cpu_s(std::process::id()).is_ok());
        assert!(thread_cpu_s(gettid()).is_ok());
    }

    #[test]
    fn another_process_cpu_time_comes_from_its_clock() {
        // The server is another process: its CPU clock must be readable, not only ours.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let clock = process_cpu_clock_s(child.id());
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .map(|s| parse_stat_cpu(&s).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        let clock = clock.expect("a child's CPU clock");
        // Nanoseconds against clock ticks of the same counter.
        assert!((clock - stat.unwrap()).abs() < 2.0 / clk_tck(), "{clock}");
        // Our own: the clock and getrusage read the same accounting.
        let (ours, rusage) = (process_cpu_s(std::process::id()).unwrap(), self_cpu_s());
        assert!((ours - rusage).abs() < 0.05, "{ours} against {rusage}");
    }

    #[test]
    fn vmrss_and_sockstat_parse() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t   1234 kB\n"),
            Some(1234 * 1024)
        );
        let s = parse_sockstat(
            "sockets: used 290\nTCP: inuse 27 orphan 0 tw 3 alloc 30 mem 4\nUDP: inuse 1 mem 0\n",
        );
        assert_eq!(s.sockets_used, 290);
        assert_eq!(s.tcp_inuse, 27);
        assert_eq!(s.tcp_mem_pages, 4);
        assert_eq!(s.tcp_alloc, 30);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("3-1").is_err());
        assert_eq!(format_cpu_list(&[0, 1]), "0,1");
    }
}
