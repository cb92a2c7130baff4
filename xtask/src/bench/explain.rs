//! The kernel's OOM report (`kernel_report`, `kill_explained`): what reading
//! it costs a kill, measured on real kills.
//! - Kill path: kernel (`ktime_ns`) -> a socket tail client of a daemon that
//!   reads /dev/kmsg ("report on") and of one that cannot ("report off":
//!   started without CAP_SYSLOG, which kernel.dmesg_restrict=1 requires;
//!   there is no config switch), in alternating blocks of one run, p50/p99
//!   each and their ratio. The report must stay off the path: the kill is
//!   published at once and amended later.
//! - Kill -> `kill_explained` (the amendment) on the same client, p50/p99.
//! - Daemon CPU during a 200-kill storm with the report on (20 cgroups,
//!   bursts of 10 a second), and the same storm with it off.
//!
//! Kills of the latency passes come at least 0.5 s apart: the kernel prints
//! 10 reports per 5 s, and a kill without one has nothing to read.

use std::{
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use oomwatch_tests::{ChildGuard, Daemon, Tail, TestCgroup, metric_value};
use serde_json::{Value, json};

use super::{Ctx, MIB, Report, Row, Target, latency::kill_one, percentile_of, procfs};

const GROUP: &str = "kernel report";
/// The kernel's allowance is 10 reports per 5 s: one kill per 0.5 s keeps
/// every kill of the latency passes reported.
const SPACING: Duration = Duration::from_millis(550);
/// The daemon's CPU during the storm with the report on, at most (the
/// reclaim storm's target).
const STORM_CPU_TARGET_PERCENT: f64 = 5.0;
const WITHOUT_SYSLOG: &[&str] = &["setpriv", "--bounding-set=-syslog", "--inh-caps=-syslog", "--"];

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let restricted = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict").unwrap_or_default();
    if restricted.trim() != "1" {
        bail!("kernel.dmesg_restrict is not 1: a daemon without CAP_SYSLOG could still read the kernel log, so the report cannot be switched off");
    }
    let cg = TestCgroup::new("bench-explain", Some(32 * MIB));
    let lat = Latencies::collect(ctx, &cg)?;
    lat.print();
    lat.rows(rep);
    let storm_on = storm(ctx, true)?;
    let storm_off = storm(ctx, false)?;
    for s in [&storm_on, &storm_off] {
        s.print();
    }
    storm_rows(rep, &storm_on, &storm_off);
    rep.detail("explain", json!({"latency": lat.detail(), "storm_report_on": storm_on.detail(), "storm_report_off": storm_off.detail()}));
    Ok(())
}

fn start_daemon(report: bool) -> Result<Daemon> {
    let daemon = if report { Daemon::start(&[]) } else { Daemon::start_under(WITHOUT_SYSLOG, &[]) };
    let attached = metric_value(&daemon.metrics(), "oomwatch_probe_attached{probe=\"kmsg\"}");
    if attached != Some(if report { 1.0 } else { 0.0 }) {
        bail!("the daemon (report {}) has probe_attached{{probe=\"kmsg\"}} {attached:?}", if report { "on" } else { "off" });
    }
    Ok(daemon)
}

/// Microseconds per kill.
#[derive(Default)]
struct Latencies {
    on: Vec<f64>,
    off: Vec<f64>,
    /// Kill -> kill_explained, report on.
    explained: Vec<f64>,
    /// The oom_kill event -> its kill_explained, on the same client: what
    /// the report takes once the kill is out.
    after_kill: Vec<f64>,
    /// Kills of the "on" passes that came with the kernel's report.
    with_report: usize,
    not_explained: usize,
}

impl Latencies {
    fn collect(ctx: &Ctx, cg: &TestCgroup) -> Result<Self> {
        let (kills, rounds) = (ctx.pick(60, 20), ctx.pick(2, 1));
        let mut s = Self::default();
        for _ in 0..rounds {
            s.pass(ctx, cg, true, kills / rounds)?;
            s.pass(ctx, cg, false, kills / rounds)?;
        }
        Ok(s)
    }

    fn pass(&mut self, ctx: &Ctx, cg: &TestCgroup, report: bool, kills: usize) -> Result<()> {
        let daemon = start_daemon(report)?;
        let mut socket = Tail::connect(&daemon);
        for i in 0..kills {
            let pid = kill_one(ctx, cg)?;
            let (ev, kill_at) = socket
                .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
                .with_context(|| format!("kill {i}: no oom_kill for pid {pid} within 10 s"))?;
            let ktime = ev["ktime_ns"].as_u64().context("oom_kill without ktime_ns")?;
            let us = kill_at.saturating_sub(ktime) as f64 / 1e3;
            if !report {
                self.off.push(us);
                std::thread::sleep(SPACING);
                continue;
            }
            self.on.push(us);
            match socket.wait_for(Duration::from_secs(5), |v| v["kind"] == "kill_explained" && v["pid"] == pid) {
                Some((x, at)) => {
                    self.explained.push(at.saturating_sub(ktime) as f64 / 1e3);
                    self.after_kill.push(at.saturating_sub(kill_at) as f64 / 1e3);
                    self.with_report += usize::from(x["kernel_report"].get("missing").is_none());
                }
                None => self.not_explained += 1,
            }
            std::thread::sleep(SPACING);
        }
        Ok(())
    }

    fn print(&self) {
        let p = |v: &[f64], q| percentile_of(v, q);
        println!(
            "explain: kernel -> socket client, report on: p50 {:.0} us, p99 {:.0} us ({} kills); off: p50 {:.0} us, p99 {:.0} us ({} kills)",
            p(&self.on, 50.0),
            p(&self.on, 99.0),
            self.on.len(),
            p(&self.off, 50.0),
            p(&self.off, 99.0),
            self.off.len()
        );
        println!(
            "explain: kill -> kill_explained p50 {:.1} ms, p99 {:.1} ms (after the oom_kill event: p50 {:.1} ms, p99 {:.1} ms); {} of {} with the kernel's report, {} never explained",
            p(&self.explained, 50.0) / 1e3,
            p(&self.explained, 99.0) / 1e3,
            p(&self.after_kill, 50.0) / 1e3,
            p(&self.after_kill, 99.0) / 1e3,
            self.with_report,
            self.on.len(),
            self.not_explained
        );
    }

    fn rows(&self, rep: &mut Report) {
        let n = self.on.len();
        for (q, name) in [(50.0, "p50"), (99.0, "p99")] {
            let (on, off) = (percentile_of(&self.on, q) / 1e3, percentile_of(&self.off, q) / 1e3);
            rep.row(
                Row::new(GROUP, format!("kernel -> socket tail client {name}, report on ({n} kills)"), on, "ms")
                    .peer(format!("report off {off:.2} ms ({:.2}x)", on / off)),
            );
        }
        // "Off the path": the report on may not make the kill later than
        // the same daemon without it by more than noise.
        let ratio = percentile_of(&self.on, 50.0) / percentile_of(&self.off, 50.0);
        rep.row(Row::new(GROUP, "kill path p50, report on / off", ratio, "x").target(Target::AtMost(1.25)));
        rep.row(Row::new(GROUP, "kill -> kill_explained p50", percentile_of(&self.explained, 50.0) / 1e3, "ms"));
        rep.row(Row::new(GROUP, "kill -> kill_explained p99", percentile_of(&self.explained, 99.0) / 1e3, "ms").target(Target::AtMost(100.0)));
        rep.row(Row::new(GROUP, "oom_kill event -> its kill_explained, same client, p50", percentile_of(&self.after_kill, 50.0) / 1e3, "ms"));
        rep.row(Row::new(GROUP, "oom_kill event -> its kill_explained, same client, p99", percentile_of(&self.after_kill, 99.0) / 1e3, "ms"));
        // Other kills on the host share the kernel's allowance: no target.
        rep.row(Row::new(GROUP, format!("kills with the kernel's report (of {n}, one per {} ms)", SPACING.as_millis()), self.with_report as f64, ""));
    }

    fn detail(&self) -> Value {
        json!({"on_us": self.on, "off_us": self.off, "kill_to_explained_us": self.explained, "kill_event_to_explained_us": self.after_kill,
            "with_report": self.with_report, "not_explained": self.not_explained, "spacing_ms": SPACING.as_millis()})
    }
}

/// One storm of real kills and what the daemon did meanwhile.
struct Storm {
    report: bool,
    kills: usize,
    secs: f64,
    cpu_seconds: f64,
    cpu_percent: f64,
    seen: usize,
    explained: usize,
    with_report: usize,
}

/// Counted after the last kill of a storm, in its CPU window.
const AFTER: Duration = Duration::from_secs(5);

/// `kills` hogs in bursts of 10 a second over 20 cgroups; the daemon's CPU
/// from the first hog to [`AFTER`] past the last kill.
fn storm(ctx: &Ctx, report: bool) -> Result<Storm> {
    let cgroups: Vec<TestCgroup> = (0..20).map(|i| TestCgroup::new(&format!("bench-explain-storm{i}"), Some(32 * MIB))).collect();
    let kills = ctx.pick(200, 60);
    let daemon = start_daemon(report)?;
    let mut tail = Tail::connect(&daemon);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = procfs::CpuWindow::start(daemon.pid()).context("daemon /proc stat")?;
    let t0 = Instant::now();
    let mut hogs = Vec::with_capacity(kills);
    for round in 0.. {
        if hogs.len() >= kills {
            break;
        }
        if let Some(wait) = (t0 + Duration::from_secs(round)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for j in 0..10.min(kills - hogs.len()) {
            let cg = &cgroups[(round as usize * 10 + j) % cgroups.len()];
            hogs.push(ChildGuard(cg.spawn(ctx.memhog().args(["hog", "128"]))));
        }
    }
    let mut pids = Vec::with_capacity(kills);
    for h in &mut hogs {
        if h.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.signal() == Some(libc::SIGKILL)) {
            pids.push(h.pid());
        }
    }
    let count = |t: &Tail, kind: &str, key: &dyn Fn(&Value) -> &Value| {
        t.seen.iter().filter(|(v, _)| v["kind"] == kind && key(v).as_u64().is_some_and(|p| pids.contains(&(p as u32)))).count()
    };
    // The same window both ways: the storm, then AFTER for the stream and
    // the amendments to come in.
    let deadline = Instant::now() + AFTER;
    while Instant::now() < deadline {
        let _ = tail.wait_for(Duration::from_millis(100), |_| false);
    }
    let used = cpu.end().context("daemon /proc stat")?;
    let with_report = tail
        .seen
        .iter()
        .filter(|(v, _)| v["kind"] == "kill_explained" && v["kernel_report"].get("missing").is_none())
        .filter(|(v, _)| v["pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32))))
        .count();
    Ok(Storm {
        report,
        kills: pids.len(),
        secs: used.seconds,
        cpu_seconds: used.cpu_seconds,
        cpu_percent: used.percent,
        seen: count(&tail, "oom_kill", &|v| &v["victim"]["pid"]),
        explained: count(&tail, "kill_explained", &|v| &v["pid"]),
        with_report,
    })
}

impl Storm {
    fn name(&self) -> &'static str {
        if self.report { "report on" } else { "report off" }
    }

    fn print(&self) {
        println!(
            "explain storm ({}): {} kills, {} on the tail, {} explained ({} with the kernel's report); daemon CPU {:.2} s over {:.1} s = {:.2}% of a core",
            self.name(),
            self.kills,
            self.seen,
            self.explained,
            self.with_report,
            self.cpu_seconds,
            self.secs,
            self.cpu_percent
        );
    }

    fn detail(&self) -> Value {
        json!({"kills": self.kills, "seconds": self.secs, "cpu_seconds": self.cpu_seconds, "cpu_percent": self.cpu_percent,
            "tail_kills": self.seen, "kill_explained": self.explained, "with_report": self.with_report})
    }
}

fn storm_rows(rep: &mut Report, on: &Storm, off: &Storm) {
    rep.row(
        Row::new(GROUP, format!("daemon CPU, {}-kill storm in {:.0} s, report on", on.kills, on.secs), on.cpu_percent, "% core")
            .target(Target::AtMost(STORM_CPU_TARGET_PERCENT))
            .peer(format!("report off {:.2} % core ({:.2}x)", off.cpu_percent, on.cpu_percent / off.cpu_percent)),
    );
    rep.row(Row::new(GROUP, "storm kills missed by the tail, report on", (on.kills - on.seen.min(on.kills)) as f64, "").target(Target::Exactly(0.0)));
    rep.row(Row::new(GROUP, "storm kills never explained, report on", (on.kills - on.explained.min(on.kills)) as f64, "").target(Target::Exactly(0.0)));
    rep.row(Row::new(GROUP, "storm kills with the kernel's report (the kernel prints 10 per 5 s)", on.with_report as f64, ""));
}
