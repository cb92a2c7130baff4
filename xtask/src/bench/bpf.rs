//! eBPF program run time, per program, from the kernel's own accounting.
//!
//! `kernel.bpf_stats_enabled=1` makes the kernel time every program run
//! (`run_time_ns`, `run_cnt`); [`StatsEnabled`] sets it and puts the previous
//! value back on drop. The programs measured are those the daemon holds:
//! every `anon_inode:bpf-prog` fd of its process, read from
//! /proc/PID/fdinfo, so programs added later (vmscan reclaim probes) are
//! measured without any change here. Names come from `bpftool prog show`
//! when it is installed.

use std::{
    collections::BTreeMap,
    fs,
    process::Command,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::{Context as _, Result, bail};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
pub const TRACEPOINT: u32 = 5; // BPF_PROG_TYPE_TRACEPOINT

/// Enables BPF run-time statistics until dropped, then restores the value
/// found (statistics cost every program two clock reads while on).
pub struct StatsEnabled {
    previous: String,
}

/// The value to put back if a signal ends the process while statistics are
/// on (Ctrl-C during the window): a drop guard does not run then.
static PREVIOUS: AtomicU8 = AtomicU8::new(b'0');
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn restore_and_die(sig: libc::c_int) {
    let byte = [PREVIOUS.load(Ordering::SeqCst)];
    // SAFETY: open, write, close, signal and raise are async-signal-safe.
    unsafe {
        let fd = libc::open(
            c"/proc/sys/kernel/bpf_stats_enabled".as_ptr(),
            libc::O_WRONLY,
        );
        if fd >= 0 {
            libc::write(fd, byte.as_ptr().cast(), 1);
            libc::close(fd);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

impl StatsEnabled {
    pub fn enable() -> Result<Self> {
        let previous = fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL}"))?
            .trim()
            .to_owned();
        PREVIOUS.store(previous.bytes().next().unwrap_or(b'0'), Ordering::SeqCst);
        for sig in SIGNALS {
            // SAFETY: installs a handler that only makes async-signal-safe calls.
            unsafe { libc::signal(sig, restore_and_die as *const () as libc::sighandler_t) };
        }
        fs::write(SYSCTL, "1")
            .with_context(|| format!("writing 1 to {SYSCTL} (needs CAP_SYS_ADMIN)"))?;
        Ok(Self { previous })
    }

    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.previous) {
            eprintln!(
                "warning: could not restore {SYSCTL} to {}: {e}",
                self.previous
            );
        }
        for sig in SIGNALS {
            // SAFETY: back to the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

#[derive(Clone, Debug)]
pub struct Prog {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The programs a process holds, by program id.
pub fn progs_of(pid: u32) -> Result<BTreeMap<u32, Prog>> {
    let mut out = BTreeMap::new();
    let fd_dir = format!("/proc/{pid}/fd");
    for e in fs::read_dir(&fd_dir)
        .with_context(|| format!("reading {fd_dir}"))?
        .flatten()
    {
        let Ok(link) = fs::read_link(e.path()) else {
            continue;
        };
        if link.to_string_lossy() != "anon_inode:bpf-prog" {
            continue;
        }
        let fd = e.file_name();
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
        else {
            continue;
        };
        let field = |k: &str| {
            info.lines().find_map(|l| {
                l.strip_prefix(k)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        let Some(id) = field("prog_id") else { continue };
        out.insert(
            id as u32,
            Prog {
                id: id as u32,
                prog_type: field("prog_type").unwrap_or(0) as u32,
                name: String::new(),
                run_time_ns: field("run_time_ns").unwrap_or(0),
                run_cnt: field("run_cnt").unwrap_or(0),
            },
        );
    }
    if out.is_empty() {
        bail!("process {pid} holds no eBPF programs");
    }
    let names = names();
    for p in out.values_mut() {
        p.name = names
            .get(&p.id)
            .cloned()
            .unwrap_or_else(|| format!("prog_id {} (type {})", p.id, p.prog_type));
    }
    Ok(out)
}

/// Program names by id, from `bpftool prog show -j` (empty without bpftool).
fn names() -> BTreeMap<u32, String> {
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
    else {
        return BTreeMap::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return BTreeMap::new();
    };
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p["id"].as_u64()? as u32, p["name"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Run time and count of each program between two snapshots.
#[derive(Clone, Debug)]
pub struct ProgDelta {
    pub name: String,
    pub id: u32,
    pub prog_type: u32,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl ProgDelta {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

/// The programs of one process over a window: counters at its start, the
/// difference at its end.
pub struct ProgWindow {
    pid: u32,
    start: BTreeMap<u32, Prog>,
}

impl ProgWindow {
    pub fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            start: progs_of(pid)?,
        })
    }

    pub fn end(&self) -> Result<Vec<ProgDelta>> {
        Ok(delta(&self.start, &progs_of(self.pid)?))
    }
}

fn delta(before: &BTreeMap<u32, Prog>, after: &BTreeMap<u32, Prog>) -> Vec<ProgDelta> {
    after
        .values()
        .map(|a| {
            let (t0, c0) = before
                .get(&a.id)
                .map(|b| (b.run_time_ns, b.run_cnt))
                .unwrap_or((0, 0));
            ProgDelta {
                name: a.name.clone(),
                id: a.id,
                prog_type: a.prog_type,
                runs: a.run_cnt.saturating_sub(c0),
                run_time_ns: a.run_time_ns.saturating_sub(t0),
            }
        })
        .collect()
}
