//! The memory shapes of real services, each with its own target, with
//! parameters drawn from a seed (printed, so a failure can be replayed with
//! `--seed`):
//!
//! (f) flat sawtooth near the limit (a garbage-collected heap): no alert
//! (g) sawtooth whose troughs and peaks climb (a leak under GC): warning >= 15 s before the kill
//! (h) step growth that stops below the limit (a cache warm-up): no alert
//! (i) exponential growth (doubling buffers): warning before the kill
//! (j) a leak in one child of a pod-like parent that holds the limit:
//!     warning on the parent >= 15 s before the kill, none on the children

use std::time::Duration;

use oomwatch_tests::{ChildGuard, Daemon, Tail, TestCgroup, memhog};

use super::{MIB, Row, alert_is, secs, unexpected_firings};

const LIMIT_MIB: f64 = 256.0;

/// splitmix64: small, seedable, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), rounded to one decimal so the printed
    /// parameters are exactly what ran.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + u * (hi - lo)) * 10.0).round() / 10.0
    }
}

/// What one run saw for the cgroup whose limit matters.
struct Seen {
    kill_s: Option<f64>,
    warning_s: Option<f64>,
    critical_s: Option<f64>,
    /// Every oom_forecast transition (pending, firing, resolved, cancelled).
    transitions: usize,
    false_alerts: Vec<String>,
    /// The summary of the first firing forecast alert.
    summary: Option<String>,
}

impl Seen {
    fn lead(&self, at: Option<f64>) -> Option<f64> {
        self.kill_s.zip(at).map(|(k, t)| k - t)
    }
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}s"))
}

/// Runs `hogs` (the first is the one expected to be killed, if any) for at
/// most `max_s`, then collects the alerts on `watched` and on `quiet`
/// (cgroups that must see no alert but the kill's).
fn observe(mut tail: Tail, watched: &TestCgroup, quiet: &[&TestCgroup], mut hogs: Vec<ChildGuard>, t0: u64, max_s: u64) -> Seen {
    let pid = hogs[0].pid();
    let _ = hogs[0].wait_timeout(Duration::from_secs(max_s));
    let killed = tail.wait_for(Duration::from_secs(3), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid);
    let kill_s = killed.map(|(_, t)| secs(t, t0));
    drop(hogs);
    tail.wait_for(Duration::from_millis(1500), |_| false);
    let path = watched.path.as_str();
    let firing = |sev| tail.seen.iter().find(|(v, _)| v["cgroup"] == path && alert_is(v, "oom_forecast", sev, "firing"));
    let summary = firing("warning").and_then(|(v, _)| v["summary"].as_str().map(str::to_owned));
    let (warning_s, critical_s) = (firing("warning").map(|(_, t)| secs(*t, t0)), firing("critical").map(|(_, t)| secs(*t, t0)));
    let transitions = tail.seen.iter().filter(|(v, _)| v["cgroup"] == path && v["kind"] == "alert" && v["alert"] == "oom_forecast").count();
    let mut false_alerts = unexpected_firings(&tail, path, &["oom_forecast/warning", "oom_forecast/critical", "oom_kill/critical"]);
    for q in quiet {
        false_alerts.extend(unexpected_firings(&tail, &q.path, &["oom_kill/critical"]).into_iter().map(|a| format!("{a} on {}", q.path)));
    }
    Seen { kill_s, warning_s, critical_s, transitions, false_alerts, summary }
}

fn start(daemon: &Daemon) -> (Tail, u64) {
    let tail = Tail::start(daemon, &[]);
    std::thread::sleep(Duration::from_millis(2000));
    (tail, oomwatch_tests::monotonic_ns())
}

fn row(scenario: &'static str, run: usize, target: &'static str, seen: &Seen, met: bool, params: String) -> Row {
    let mut extra = format!("{params}; oom_forecast transitions {}", seen.transitions);
    if seen.kill_s.is_some() {
        extra.push_str(&format!("; lead: warning {} critical {}", fmt_s(seen.lead(seen.warning_s)), fmt_s(seen.lead(seen.critical_s))));
    }
    if let Some(s) = &seen.summary {
        extra.push_str(&format!("; said: {s:?}"));
    }
    Row { scenario, run, kill_s: seen.kill_s, warning_s: seen.warning_s, critical_s: seen.critical_s, extra, false_alerts: seen.false_alerts.clone(), target, met }
}

/// A silent shape: nothing may fire on the cgroup, and nothing is killed.
fn silent_row(scenario: &'static str, run: usize, seen: &Seen, cg: &TestCgroup, params: String) -> Row {
    let fired = seen.warning_s.is_some() || seen.critical_s.is_some();
    let met = !fired && seen.false_alerts.is_empty() && cg.oom_kills() == 0;
    row(scenario, run, "no alerts at all, no kill", seen, met, params)
}

pub fn flat_sawtooth(daemon: &Daemon, run: usize, seed: u64, quick: bool) -> Row {
    let mut r = Rng::new(seed);
    let trough = (LIMIT_MIB * r.range(0.15, 0.35)).round();
    let peak = (LIMIT_MIB * r.range(0.80, 0.92)).round();
    let fill = r.range(1.5, 4.0);
    let period = ((fill + r.range(1.0, 4.0)) * 10.0).round() / 10.0;
    let secs_ = if quick { 40 } else { 60 };
    let params = format!("seed {seed}: {trough}->{peak} MiB of 256, fill {fill}s, period {period}s, {secs_}s");
    let (tail, t0) = start(daemon);
    let cg = TestCgroup::new("scn-f", Some(256 * MIB));
    let args = ["sawtooth".into(), trough.to_string(), peak.to_string(), fill.to_string(), period.to_string(), secs_.to_string()];
    let hog = ChildGuard(cg.spawn(memhog().args(args)));
    let seen = observe(tail, &cg, &[], vec![hog], t0, secs_ + 30);
    silent_row("f: flat sawtooth", run, &seen, &cg, params)
}

pub fn gc_leak(daemon: &Daemon, run: usize, seed: u64) -> Row {
    let mut r = Rng::new(seed);
    let trough = (LIMIT_MIB * r.range(0.15, 0.30)).round();
    let peak = trough + (LIMIT_MIB * r.range(0.30, 0.42)).round();
    let fill = r.range(1.5, 3.0);
    let period = ((fill + r.range(1.0, 3.0)) * 10.0).round() / 10.0;
    // A leak that kills within four cycles and 20 s cannot be told from a
    // heap's first fills (see forecast.rs): slow the drift to leave room.
    let drift = (r.range(1.5, 3.0).min((LIMIT_MIB - peak) / (4.0 * period + 25.0)) * 10.0).floor() / 10.0;
    let params = format!("seed {seed}: {trough}->{peak} MiB of 256, +{drift} MiB/s under it, fill {fill}s, period {period}s");
    let (tail, t0) = start(daemon);
    let cg = TestCgroup::new("scn-g", Some(256 * MIB));
    let args = ["sawtooth".into(), trough.to_string(), peak.to_string(), fill.to_string(), period.to_string(), "300".into(), drift.to_string()];
    let hog = ChildGuard(cg.spawn(memhog().args(args)));
    let seen = observe(tail, &cg, &[], vec![hog], t0, 150);
    let met = seen.lead(seen.warning_s).is_some_and(|l| l >= 15.0) && seen.false_alerts.is_empty();
    row("g: leak under GC", run, "warning >= 15 s before the kill", &seen, met, params)
}

pub fn step(daemon: &Daemon, run: usize, seed: u64) -> Row {
    let mut r = Rng::new(seed);
    let start_mb = (LIMIT_MIB * r.range(0.08, 0.2)).round();
    let step_mb = (LIMIT_MIB * r.range(0.12, 0.2)).round();
    let every = r.range(4.0, 10.0);
    let steps = 3;
    let hold = 25.0;
    let params = format!("seed {seed}: {start_mb} MiB + {steps} x {step_mb} MiB every {every}s of 256, then {hold}s flat");
    let (tail, t0) = start(daemon);
    let cg = TestCgroup::new("scn-h", Some(256 * MIB));
    let args = ["step".into(), start_mb.to_string(), step_mb.to_string(), every.to_string(), steps.to_string()];
    let hog = ChildGuard(cg.spawn(memhog().args(args)));
    let seen = observe(tail, &cg, &[], vec![hog], t0, (every * f64::from(steps) + hold) as u64);
    silent_row("h: step", run, &seen, &cg, params)
}

pub fn exponential(daemon: &Daemon, run: usize, seed: u64) -> Row {
    let mut r = Rng::new(seed);
    let start_mb = r.range(4.0, 12.0).round();
    let doubling = r.range(4.0, 7.0);
    let params = format!("seed {seed}: {start_mb} MiB doubling every {doubling}s into 256");
    let (tail, t0) = start(daemon);
    let cg = TestCgroup::new("scn-i", Some(256 * MIB));
    let hog = ChildGuard(cg.spawn(memhog().args(["exp".into(), start_mb.to_string(), doubling.to_string()])));
    let seen = observe(tail, &cg, &[], vec![hog], t0, 90);
    let met = seen.lead(seen.warning_s).is_some_and(|l| l > 0.0) && seen.false_alerts.is_empty();
    row("i: exponential", run, "warning before the kill", &seen, met, params)
}

pub fn pod(daemon: &Daemon, run: usize, seed: u64) -> Row {
    let mut r = Rng::new(seed);
    let rate = r.range(5.0, 8.0);
    let sidecar = (LIMIT_MIB * r.range(0.1, 0.25)).round();
    let params = format!("seed {seed}: parent holds 256 MiB; app leaks 32 MiB + {rate} MiB/s, sidecar holds {sidecar} MiB");
    let (tail, t0) = start(daemon);
    let parent = TestCgroup::new("scn-j", Some(256 * MIB));
    let (app, side) = (parent.child("app", None), parent.child("sidecar", None));
    let side_hog = ChildGuard(side.spawn(memhog().args(["hog".into(), sidecar.to_string()])));
    let app_hog = ChildGuard(app.spawn(memhog().args(["leak".into(), "32".into(), rate.to_string()])));
    let seen = observe(tail, &parent, &[&app, &side], vec![app_hog, side_hog], t0, 90);
    let met = seen.lead(seen.warning_s).is_some_and(|l| l >= 15.0) && seen.false_alerts.is_empty();
    row("j: pod child leak", run, "warning on the parent >= 15 s before the kill", &seen, met, params)
}
