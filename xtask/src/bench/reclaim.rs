//! Reclaim storm: what the daemon's eBPF programs cost while the host
//! reclaims hard, plus events/s, events lost and the daemon's CPU.
//!
//! Workload: `memhog cache` re-reading a file four times the size of its
//! cgroup's limit (memcg reclaim on every read), in two cgroups, plus a
//! stream of short-lived processes (every exit runs the exit probe).
//!
//! Per-program figures come from the kernel (`kernel.bpf_stats_enabled=1`,
//! restored afterwards) for every program the daemon holds, so the vmscan
//! reclaim-stall programs show up here as soon as the daemon loads them.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use oomwatch_tests::{ChildGuard, Daemon, TestCgroup};
use serde_json::json;

use super::{Ctx, Report, Row, Target, bpf, ensure_dir, metric_sum, procfs};

const MIB: u64 = 1 << 20;
/// ns per program run.
const PROG_TARGET_NS: f64 = 150.0;

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let window = ctx.pick(Duration::from_secs(20), Duration::from_secs(5));
    let file_mb = 256u64;
    let limit = 64 * MIB;
    if !which("bpftool") {
        // Names only; figures come from /proc/PID/fdinfo without it.
        if let Err(e) = crate::apt::ensure(&["bpftool"]) {
            rep.note(format!(
                "bpftool unavailable ({e:#}): programs are named by id"
            ));
        }
    }
    let data = ctx.data_dir();
    ensure_dir(&data)?;
    let stats = bpf::StatsEnabled::enable()?;
    let stats_before = stats.previous().to_owned();

    let daemon = Daemon::start(&[]);
    let cgs: Vec<TestCgroup> = (0..2)
        .map(|i| TestCgroup::new(&format!("bench-reclaim{i}"), Some(limit)))
        .collect();
    // Write the files first (outside the window), then re-read them for longer than the window.
    let files: Vec<String> = (0..2)
        .map(|i| data.join(format!("reclaim{i}.dat")).display().to_string())
        .collect();
    for f in &files {
        let mut prep = ChildGuard(
            ctx.memhog()
                .args(["cache", f, &file_mb.to_string(), "0"])
                .spawn()
                .context("memhog")?,
        );
        prep.wait_timeout(Duration::from_secs(120))
            .context("writing the cache file took over 120 s")?;
    }
    // Pages of these files may be cached and charged elsewhere (the writer,
    // an earlier run): drop them so every read charges the reclaiming cgroup.
    for f in &files {
        drop_cache(f)?;
    }
    let secs = (window.as_secs() + 25).to_string();
    let _readers: Vec<ChildGuard> = cgs
        .iter()
        .zip(&files)
        .map(|(cg, f)| {
            ChildGuard(
                cg.spawn(
                    ctx.memhog()
                        .args(["cache", f, &file_mb.to_string(), &secs, "8"]),
                ),
            )
        })
        .collect();

    // Short-lived processes: every exit runs sched_process_exit.
    let stop = Arc::new(AtomicBool::new(false));
    let exits = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, exits) = (stop.clone(), exits.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if Command::new("true").stdout(Stdio::null()).status().is_ok() {
                    exits.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Same-run floor: bpftrace programs on the same tracepoints.
    let baseline = Baseline::start();
    if let Err(e) = &baseline {
        rep.note(format!("bpftrace baseline not measured: {e:#}"));
    }
    std::thread::sleep(Duration::from_secs(2)); // reach steady reclaim

    let pid = daemon.pid();
    let scan = || {
        procfs::vmstat("pgscan_direct").unwrap_or(0) + procfs::vmstat("pgscan_kswapd").unwrap_or(0)
    };
    let failcnt = |cgs: &[TestCgroup]| {
        cgs.iter()
            .map(|c| c.read("memory.failcnt").trim().parse::<u64>().unwrap_or(0))
            .sum::<u64>()
    };
    let pgpgout = |cgs: &[TestCgroup]| {
        cgs.iter()
            .map(|c| {
                c.read("memory.stat")
                    .lines()
                    .find_map(|l| l.strip_prefix("pgpgout ")?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let m0 = daemon.metrics();
    let p0 = bpf::progs_of(pid)?;
    let b0 = baseline
        .as_ref()
        .ok()
        .and_then(|b| bpf::progs_of(b.child.pid()).ok());
    let scan0 = scan();
    let fail0 = failcnt(&cgs);
    let out0 = pgpgout(&cgs);
    let exits0 = exits.load(Ordering::Relaxed);
    let cpu = procfs::CpuWindow::start(pid).context("daemon /proc stat")?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let p1 = bpf::progs_of(pid)?;
    let b1 = baseline
        .as_ref()
        .ok()
        .and_then(|b| bpf::progs_of(b.child.pid()).ok());
    let used = cpu.end().context("daemon /proc stat")?;
    let secs = t0.elapsed().as_secs_f64();
    let m1 = daemon.metrics();
    let scanned = scan().saturating_sub(scan0);
    let limit_hits = failcnt(&cgs).saturating_sub(fail0);
    let uncharged = pgpgout(&cgs).saturating_sub(out0);
    drop(baseline);
    let exited = exits.load(Ordering::Relaxed) - exits0;
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
    drop(stats);

    let published = metric_sum(&m1, "oomwatch_events_published_total")
        - metric_sum(&m0, "oomwatch_events_published_total");
    let lost = metric_sum(&m1, "oomwatch_events_lost_total")
        - metric_sum(&m0, "oomwatch_events_lost_total");
    let deltas = bpf::delta(&p0, &p1);
    let base: Vec<(&str, bpf::ProgDelta)> = match (&b0, &b1) {
        (Some(b0), Some(b1)) => Baseline::label(bpf::delta(b0, b1)),
        _ => Vec::new(),
    };
    let memcg_reclaims = base
        .iter()
        .find(|(l, _)| l.contains("memcg_reclaim_begin"))
        .map(|(_, d)| d.runs);
    println!(
        "reclaim: {secs:.1} s, memcg reclaims {memcg_reclaims:?}, limit hits {limit_hits}, pages uncharged {uncharged}, host pages scanned {scanned}, {exited} process exits; daemon CPU {:.2}% (schedstat {:.2}%), events {published}, lost {lost}",
        used.percent, used.sched_percent
    );
    let g = "reclaim storm";
    for d in &deltas {
        let rate = d.runs as f64 / secs;
        match d.ns_per_run() {
            Some(ns) => rep.row(
                Row::new(
                    g,
                    format!("prog {} per run ({:.0} runs/s)", d.name, rate),
                    ns,
                    "ns",
                )
                .target(Target::AtMost(PROG_TARGET_NS))
                .peer(Baseline::peer_of(&d.name, ns, &base)),
            ),
            None => rep.row(Row::text(g, format!("prog {} per run", d.name), "not run")),
        }
        println!(
            "  prog {} (id {}): {} runs, {} ns total, {:?} ns/run",
            d.name,
            d.id,
            d.runs,
            d.run_time_ns,
            d.ns_per_run()
        );
    }
    for (label, d) in &base {
        if let Some(ns) = d.ns_per_run() {
            rep.row(Row::new(
                g,
                format!(
                    "bpftrace baseline: {label} ({:.0} runs/s)",
                    d.runs as f64 / secs
                ),
                ns,
                "ns",
            ));
        }
    }
    rep.row(Row::new(
        g,
        "events/s published by the daemon",
        published / secs,
        "/s",
    ));
    rep.row(Row::new(g, "events lost (ring buffer full)", lost, "").target(Target::Exactly(0.0)));
    rep.row(
        Row::new(g, "daemon CPU (utime+stime)", used.percent, "% core").target(Target::AtMost(5.0)),
    );
    rep.row(
        Row::new(
            g,
            "workload: memcg reclaims / limit hits / pages uncharged",
            limit_hits as f64,
            "",
        )
        .shown(format!(
            "{} / {limit_hits} / {uncharged}",
            memcg_reclaims
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into())
        )),
    );
    rep.detail(
        "reclaim",
        json!({
            "window_s": secs,
            "bpf_stats_enabled_before": stats_before,
            "workload": {"cgroups": cgs.len(), "limit_bytes": limit, "file_mb": file_mb, "pgscan_host": scanned, "limit_hits": limit_hits,
                "pgpgout": uncharged, "memcg_reclaims": memcg_reclaims, "process_exits": exited},
            "baseline": base.iter().map(|(l, d)| json!({"program": l, "runs": d.runs, "run_time_ns": d.run_time_ns, "ns_per_run": d.ns_per_run()})).collect::<Vec<_>>(),
            "programs": deltas.iter().map(|d| json!({"name": d.name, "id": d.id, "runs": d.runs, "run_time_ns": d.run_time_ns, "ns_per_run": d.ns_per_run()})).collect::<Vec<_>>(),
            "events_published": published,
            "events_lost": lost,
            "daemon_cpu_percent": used.percent,
            "daemon_cpu_sched_percent": used.sched_percent,
            "daemon_rss_mib": procfs::rss_mib(pid),
        }),
    );
    Ok(())
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Evicts a file's clean pages from the page cache.
fn drop_cache(path: &str) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid fd; advice only.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        anyhow::bail!("posix_fadvise({path}, DONTNEED): error {r}");
    }
    Ok(())
}

/// bpftrace programs on the same tracepoints as ours, measured in the same
/// window: an empty program (the floor: dispatch plus the statistics' own
/// clock reads), a hash-map lookup that misses (what a pid filter costs),
/// and the usual way to time reclaim stalls in bpftrace or BCC's drsnoop:
/// a start time per thread in a hash at begin, a histogram at end.
struct Baseline {
    child: ChildGuard,
}

/// Tracepoint programs in load order (bpftrace loads them in script order).
const BASELINE_PROGRAMS: &[&str] = &[
    "empty prog, sched_process_exit",
    "hash lookup (miss), sched_process_exit",
    "empty prog, vmscan memcg_reclaim_begin",
    "empty prog, vmscan memcg_reclaim_end",
    "@start[tid] = nsecs, vmscan memcg_reclaim_begin",
    "hist(nsecs - @start[tid]), vmscan memcg_reclaim_end",
];
const BASELINE_SCRIPT: &str = r#"BEGIN { @pending[0] = 1; }
tracepoint:sched:sched_process_exit { }
tracepoint:sched:sched_process_exit { if (@pending[pid] == 1) { printf("victim %d\n", pid); } }
tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin { }
tracepoint:vmscan:mm_vmscan_memcg_reclaim_end { }
tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin { @start[tid] = nsecs; }
tracepoint:vmscan:mm_vmscan_memcg_reclaim_end { if (@start[tid]) { @stall = hist(nsecs - @start[tid]); delete(@start[tid]); } }"#;

impl Baseline {
    fn start() -> Result<Self> {
        let child = Command::new("bpftrace")
            .args(["-e", BASELINE_SCRIPT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let mut me = Self {
            child: ChildGuard(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = me.child.0.try_wait() {
                anyhow::bail!("bpftrace exited at start: {s}");
            }
            if bpf::progs_of(me.child.pid()).is_ok_and(|p| {
                p.values().filter(|p| p.prog_type == TRACEPOINT).count() >= BASELINE_PROGRAMS.len()
            }) {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        anyhow::bail!("bpftrace did not load its programs within 60 s")
    }

    /// Names the tracepoint programs by load order (ids grow in load order).
    fn label(deltas: Vec<bpf::ProgDelta>) -> Vec<(&'static str, bpf::ProgDelta)> {
        let mut tp: Vec<bpf::ProgDelta> = deltas
            .into_iter()
            .filter(|d| d.prog_type == TRACEPOINT)
            .collect();
        tp.sort_by_key(|d| d.id);
        BASELINE_PROGRAMS.iter().copied().zip(tp).collect()
    }

    /// The baseline to compare one of our programs with, as peer text.
    fn peer_of(name: &str, ns: f64, base: &[(&'static str, bpf::ProgDelta)]) -> String {
        let key = if name.contains("exit") {
            "hash lookup (miss), sched_process_exit"
        } else if name.contains("rcl_begin") {
            "@start[tid] = nsecs, vmscan memcg_reclaim_begin"
        } else if name.contains("rcl_end") {
            "hist(nsecs - @start[tid]), vmscan memcg_reclaim_end"
        } else if name.contains("rcl") || name.contains("reclaim") || name.contains("vmscan") {
            "empty prog, vmscan memcg_reclaim_begin"
        } else {
            return String::new();
        };
        base.iter()
            .find(|(l, _)| *l == key)
            .and_then(|(l, d)| {
                Some(format!(
                    "bpftrace {l}: {:.0} ns ({})",
                    d.ns_per_run()?,
                    super::ratio(ns, d.ns_per_run()?)
                ))
            })
            .unwrap_or_default()
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the pid we started.
        unsafe { libc::kill(self.child.pid() as i32, libc::SIGINT) };
        let _ = self.child.wait_timeout(Duration::from_secs(5));
    }
}

const TRACEPOINT: u32 = 5; // BPF_PROG_TYPE_TRACEPOINT
