//! The environment every JSON report records (BENCHMARKING.md rule 11).

use std::fs;
use std::process::Command;

use serde::Serialize;

use crate::sys;

/// Where a run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`.
    pub arch: String,
    /// Host name.
    pub hostname: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online cores.
    pub cores: usize,
    /// Cores this process may run on.
    pub allowed_cores: Vec<usize>,
    /// Whether this is a virtual machine, and the evidence.
    pub virtualization: Virtualization,
    /// `git rev-parse HEAD` of the workspace the loadgen runs in.
    pub git_commit: Option<String>,
    /// Uncommitted changes in that workspace.
    pub git_dirty: Option<bool>,
    /// RLIMIT_MEMLOCK soft limit in bytes (null = unlimited).
    pub memlock_soft_bytes: Option<u64>,
    /// RLIMIT_MEMLOCK hard limit in bytes (null = unlimited).
    pub memlock_hard_bytes: Option<u64>,
    /// RLIMIT_NOFILE soft limit (after the loadgen raised it).
    pub nofile_soft: Option<u64>,
    /// Contents of /proc/sys/kernel/io_uring_disabled (null when the file is absent).
    pub io_uring_disabled: Option<String>,
    /// Total memory in bytes.
    pub mem_total_bytes: Option<u64>,
    /// Version of this loadgen.
    pub loadgen_version: &'static str,
}

/// Evidence for "is this a VM".
#[derive(Debug, Clone, Serialize)]
pub struct Virtualization {
    /// Best guess.
    pub is_vm: bool,
    /// /sys/class/dmi/id/product_name.
    pub dmi_product_name: Option<String>,
    /// `systemd-detect-virt` output.
    pub systemd_detect_virt: Option<String>,
    /// The `hypervisor` CPU flag in /proc/cpuinfo.
    pub hypervisor_flag: bool,
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn cmd(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn uname() -> (String, String, String) {
    // SAFETY: uname fills a struct of fixed-size NUL-terminated arrays.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Default::default();
    }
    let f = |a: &[libc::c_char]| {
        let bytes: Vec<u8> = a
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (f(&u.release), f(&u.machine), f(&u.nodename))
}

impl Environment {
    /// Read it now.
    pub fn collect() -> Environment {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let hypervisor_flag = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
        let dmi = read_trim("/sys/class/dmi/id/product_name");
        let sdv = cmd("systemd-detect-virt", &[]);
        let dmi_vm = dmi.as_deref().is_some_and(|p| {
            let p = p.to_ascii_lowercase();
            [
                "kvm",
                "qemu",
                "virtual",
                "vmware",
                "xen",
                "hvm",
                "firecracker",
                "cloud",
            ]
            .iter()
            .any(|k| p.contains(k))
        });
        let is_vm = hypervisor_flag || dmi_vm || sdv.as_deref().is_some_and(|s| s != "none");
        let (kernel, arch, hostname) = uname();
        // The workspace the loadgen runs in; outside any repository, the one it was built from.
        let repo = if cmd("git", &["rev-parse", "--git-dir"]).is_some() {
            ".".to_string()
        } else {
            concat!(env!("CARGO_MANIFEST_DIR"), "/..").to_string()
        };
        let (ml_soft, ml_hard) = sys::rlimit(libc::RLIMIT_MEMLOCK);
        let (nf_soft, _) = sys::rlimit(libc::RLIMIT_NOFILE);
        let mem_total_bytes = fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        });
        Environment {
            kernel,
            arch,
            hostname,
            cpu_model,
            cores: sys::num_cores(),
            allowed_cores: sys::allowed_cores(),
            virtualization: Virtualization {
                is_vm,
                dmi_product_name: dmi,
                systemd_detect_virt: sdv,
                hypervisor_flag,
            },
            git_commit: cmd("git", &["-C", &repo, "rev-parse", "HEAD"]),
            git_dirty: Command::new("git")
                .args(["-C", &repo, "status", "--porcelain", "--untracked-files=no"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| !o.stdout.is_empty()),
            memlock_soft_bytes: ml_soft,
            memlock_hard_bytes: ml_hard,
            nofile_soft: nf_soft,
            io_uring_disabled: read_trim("/proc/sys/kernel/io_uring_disabled"),
            mem_total_bytes,
            loadgen_version: env!("CARGO_PKG_VERSION"),
        }
    }
}
