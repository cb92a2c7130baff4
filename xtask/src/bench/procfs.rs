//! What the kernel accounts for a process and the host: RSS, CPU, counters.

use std::{
    fs,
    time::{Duration, Instant},
};

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM, ...).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    keyed_value(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?, key)
}

/// The number after `key:` in a "Key:   value [kB]" file (/proc/PID/status,
/// /proc/meminfo).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0)
}

/// utime + stime of the whole process (all threads, live and exited), seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm, which may hold spaces: state is field 3.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Sum of the run time of every live thread (/proc/PID/task/*/schedstat),
/// nanosecond resolution; threads that exited are not included.
pub fn sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for e in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Some(ns) = fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Some(total)
}

/// A counter of /proc/vmstat (host-wide).
pub fn vmstat(key: &str) -> Option<u64> {
    let s = fs::read_to_string("/proc/vmstat").ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

pub fn meminfo(key: &str) -> Option<u64> {
    keyed_value(&fs::read_to_string("/proc/meminfo").ok()?, key)
}

/// CPU use of one process over a window, as a share of one core.
pub struct CpuWindow {
    pid: u32,
    start: Instant,
    cpu0: f64,
    sched0: u64,
}

pub struct CpuUse {
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// utime+stime over wall time, percent of one core.
    pub percent: f64,
    /// The same from schedstat (ns resolution, live threads only).
    pub sched_percent: f64,
}

impl CpuWindow {
    pub fn start(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            start: Instant::now(),
            cpu0: cpu_seconds(pid)?,
            sched0: sched_ns(pid)?,
        })
    }

    pub fn end(&self) -> Option<CpuUse> {
        let cpu1 = cpu_seconds(self.pid)?;
        let sched1 = sched_ns(self.pid)?;
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = cpu1 - self.cpu0;
        Some(CpuUse {
            seconds: secs,
            cpu_seconds: cpu,
            percent: cpu / secs * 100.0,
            sched_percent: sched1.saturating_sub(self.sched0) as f64 / 1e9 / secs * 100.0,
        })
    }
}

/// Sleeps until `deadline`, calling `each` about every `step`.
pub fn sample_until(deadline: Instant, step: Duration, mut each: impl FnMut()) {
    loop {
        each();
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(step.min(deadline - now));
    }
}
