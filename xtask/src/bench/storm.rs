//! Kill storm: 200 kills within 20 s spread over 20 cgroups (bursts of 10
//! concurrent hogs in 10 different cgroups every second), and how many the
//! daemon missed, against the kernel's own counters:
//! - per cgroup: v1 `memory.oom_control` oom_kill / v2 `memory.events`,
//!   exact for our cgroups, compared with the oom_kill events tail printed
//!   for them and with `oomwatch_oom_kills_total`;
//! - host-wide: /proc/vmstat `oom_kill` against the daemon's
//!   `oomwatch_kernel_oom_kills_seen_total` and every oom_kill tail saw
//!   (other users of the machine may add kills to both sides).

use std::{
    collections::HashSet,
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use oomwatch_tests::{ChildGuard, Daemon, Tail, TestCgroup};
use serde_json::json;

use super::{Ctx, Report, Row, Target, bpf, metric_samples, metric_sum, procfs};

const MIB: u64 = 1 << 20;

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let ncg = 20usize;
    let kills = ctx.pick(200usize, 60);
    let burst = 10usize;
    let period = Duration::from_secs(1);
    let cgroups: Vec<TestCgroup> = (0..ncg)
        .map(|i| TestCgroup::new(&format!("bench-storm{i}"), Some(32 * MIB)))
        .collect();
    let paths: HashSet<&str> = cgroups.iter().map(|c| c.path.as_str()).collect();

    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &["--kind", "oom_kill"]);
    // Let the sampler find the new cgroups (inotify) before the storm.
    std::thread::sleep(Duration::from_secs(2));
    // What the OOM programs cost per kill (kernel.bpf_stats_enabled, restored
    // after), next to bpftrace printing each kill (perf buffer + wakeup).
    let peer = std::process::Command::new("bpftrace")
        .args(["-e", super::latency::BPFTRACE_PROGRAM])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(ChildGuard);
    if let Ok(p) = &peer {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && bpf::progs_of(p.pid()).is_err() {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = bpf::StatsEnabled::enable();
    let p0 = bpf::progs_of(daemon.pid()).ok();
    let peer0 = peer.as_ref().ok().and_then(|p| bpf::progs_of(p.pid()).ok());
    let m0 = daemon.metrics();
    let seen0 = metric_sum(&m0, "oomwatch_kernel_oom_kills_seen_total");
    let lost0 = metric_sum(&m0, "oomwatch_events_lost_total");
    let vm0 = procfs::vmstat("oom_kill").context("/proc/vmstat has no oom_kill")?;
    let cg0: Vec<u64> = cgroups.iter().map(TestCgroup::oom_kills).collect();

    let t0 = Instant::now();
    let mut hogs: Vec<ChildGuard> = Vec::with_capacity(kills);
    let mut spawned = 0usize;
    let mut round = 0usize;
    while spawned < kills {
        let at = t0 + period * round as u32;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for j in 0..burst.min(kills - spawned) {
            let cg = &cgroups[(round * burst + j) % ncg];
            hogs.push(ChildGuard(cg.spawn(ctx.memhog().args(["hog", "128"]))));
            spawned += 1;
        }
        round += 1;
    }
    let spawn_secs = t0.elapsed().as_secs_f64();
    let mut not_killed = 0usize;
    for h in &mut hogs {
        match h.wait_timeout(Duration::from_secs(30)) {
            Some(s) if s.signal() == Some(libc::SIGKILL) => {}
            _ => not_killed += 1,
        }
    }
    let storm_secs = t0.elapsed().as_secs_f64();
    let kernel_cg: u64 = cgroups
        .iter()
        .zip(&cg0)
        .map(|(c, b)| c.oom_kills().saturating_sub(*b))
        .sum();

    // Wait for the stream to catch up (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let count_ours = |t: &Tail| {
        t.seen
            .iter()
            .filter(|(v, _)| {
                v["kind"] == "oom_kill" && v["cgroup"].as_str().is_some_and(|c| paths.contains(c))
            })
            .count() as u64
    };
    while count_ours(&tail) < kernel_cg && Instant::now() < deadline {
        let _ = tail.wait_for(Duration::from_millis(200), |_| false);
    }
    let _ = tail.wait_for(Duration::from_millis(500), |_| false);
    let tail_ours = count_ours(&tail);
    let tail_all = tail
        .seen
        .iter()
        .filter(|(v, _)| v["kind"] == "oom_kill")
        .count() as u64;
    let vm1 = procfs::vmstat("oom_kill").unwrap_or(vm0);
    let m1 = daemon.metrics();
    let p1 = bpf::progs_of(daemon.pid()).ok();
    let peer1 = peer.as_ref().ok().and_then(|p| bpf::progs_of(p.pid()).ok());
    drop(stats);
    if let Ok(p) = &peer {
        // SAFETY: plain kill(2) of the pid we started.
        unsafe { libc::kill(p.pid() as i32, libc::SIGINT) };
    }
    drop(peer);
    let peer_prog = match (&peer0, &peer1) {
        (Some(a), Some(b)) => bpf::delta(a, b)
            .into_iter()
            .find(|d| d.prog_type == 5 && d.runs > 0),
        _ => None,
    };
    let progs = match (&p0, &p1) {
        (Some(a), Some(b)) => bpf::delta(a, b),
        _ => Vec::new(),
    };
    let seen1 = metric_sum(&m1, "oomwatch_kernel_oom_kills_seen_total");
    let lost1 = metric_sum(&m1, "oomwatch_events_lost_total");
    let metric_ours: f64 = metric_samples(&m1, "oomwatch_oom_kills_total")
        .iter()
        .filter(|(labels, _)| {
            paths
                .iter()
                .any(|p| labels.contains(&format!("cgroup=\"{p}\"")))
        })
        .map(|(_, v)| v)
        .sum();
    let vm_delta = vm1.saturating_sub(vm0);
    let seen_delta = (seen1 - seen0).max(0.0) as u64;
    let missed_tail = kernel_cg.saturating_sub(tail_ours);
    let missed_metric = kernel_cg.saturating_sub(metric_ours as u64);
    let missed_host = vm_delta.saturating_sub(seen_delta);
    println!(
        "storm: {spawned} hogs in {spawn_secs:.1} s over {ncg} cgroups, all dead after {storm_secs:.1} s; kernel per-cgroup {kernel_cg}, tail {tail_ours}, \
         oomwatch_oom_kills_total {metric_ours}; host: vmstat +{vm_delta}, daemon saw +{seen_delta}, tail (all cgroups) {tail_all}"
    );

    let g = "kill storm";
    rep.row(Row::new(
        g,
        format!("kills by the kernel in our {ncg} cgroups (in {storm_secs:.0} s)"),
        kernel_cg as f64,
        "",
    ));
    rep.row(
        Row::new(
            g,
            "missed by tail (vs memory.oom_control)",
            missed_tail as f64,
            "",
        )
        .target(Target::Exactly(0.0)),
    );
    rep.row(
        Row::new(
            g,
            "missed by oomwatch_oom_kills_total",
            missed_metric as f64,
            "",
        )
        .target(Target::Exactly(0.0)),
    );
    rep.row(
        Row::new(
            g,
            "missed host-wide (vmstat vs kernel_oom_kills_seen)",
            missed_host as f64,
            "",
        )
        .target(Target::Exactly(0.0)),
    );
    rep.row(
        Row::new(g, "events lost (ring buffer full)", lost1 - lost0, "")
            .target(Target::Exactly(0.0)),
    );
    for d in &progs {
        if let Some(ns) = d.ns_per_run() {
            let mut row = Row::new(
                g,
                format!("prog {} per run during the storm ({} runs)", d.name, d.runs),
                ns,
                "ns",
            );
            if let Some(p) = peer_prog.as_ref().and_then(|p| p.ns_per_run())
                && d.name.starts_with("mark_victim")
            {
                row = row.peer(format!(
                    "bpftrace printf at mark_victim: {p:.0} ns ({})",
                    super::ratio(ns, p)
                ));
            }
            rep.row(row);
        }
    }
    if not_killed > 0 {
        rep.row(Row::new(
            g,
            "hogs that were not OOM-killed",
            not_killed as f64,
            "",
        ));
    }
    if vm_delta != kernel_cg {
        rep.note(format!("kill storm: /proc/vmstat oom_kill moved by {vm_delta}, our cgroups by {kernel_cg}: other users of the machine had kills meanwhile"));
    }
    rep.detail(
        "storm",
        json!({
            "cgroups": ncg, "hogs": spawned, "burst": burst, "period_s": period.as_secs_f64(),
            "spawn_seconds": spawn_secs, "storm_seconds": storm_secs, "not_oom_killed": not_killed,
            "kernel_per_cgroup": kernel_cg, "tail_ours": tail_ours, "metric_ours": metric_ours,
            "vmstat_delta": vm_delta, "daemon_seen_delta": seen_delta, "tail_all": tail_all,
            "events_lost_delta": lost1 - lost0,
            "bpftrace_printf_ns_per_run": peer_prog.as_ref().and_then(|p| p.ns_per_run()),
            "programs": progs.iter().map(|d| json!({"name": d.name, "runs": d.runs, "run_time_ns": d.run_time_ns, "ns_per_run": d.ns_per_run()})).collect::<Vec<_>>(),
            "per_cgroup": cgroups.iter().zip(&cg0).map(|(c, b)| json!({"cgroup": c.path, "kernel": c.oom_kills() - b,
                "tail": tail.seen.iter().filter(|(v, _)| v["kind"] == "oom_kill" && v["cgroup"] == c.path.as_str()).count()})).collect::<Vec<_>>(),
        }),
    );
    drop(hogs);
    Ok(())
}
