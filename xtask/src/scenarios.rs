//! `cargo xtask scenarios`: real workloads in `oomwatch-test-*` cgroups
//! against a daemon, measured: when the kernel killed, when oomwatch warned,
//! the lead time, and any alert that should not have fired.
//!
//! (a) linear leak, 8 MiB/s from 32 MiB into a 256 MiB limit (5 runs)
//! (b) cache-heavy: re-read a file 4x the limit for 60 s at ~99% usage
//! (c) sudden spike past the limit
//! (d) a leak that plateaus well below the limit
//! (e) thrash: a working set slightly larger than what fits, with pressure
//! (f)-(j) the shapes of real services: see shapes.rs
//!
//! `--bin` runs another daemon binary (the forecaster before a change) and
//! `--label` names the results; the table then sets the other label's
//! results (target/scenarios/results-<label>.json) beside this run's.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use oomwatch_tests::{ChildGuard, Daemon, PsiCgroup, Tail, TestCgroup, Value, disk_dir, memhog};
use serde_json::json;

use crate::{run, workspace_root};

mod shapes;

const MIB: u64 = 1 << 20;

#[derive(clap::Args)]
pub struct ScenarioArgs {
    /// Only these scenarios (a,b,c,d,e,f,g,h,i,j).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Shorter runs (1 run of each, 20 s of (b)): for CI and iterating.
    #[arg(long)]
    quick: bool,
    /// Runs of each of (a) and (f)-(j) (default 5, 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// First seed of the shapes (f)-(j); run i uses seed + i - 1.
    #[arg(long, default_value_t = 15)]
    seed: u64,
    /// The daemon binary to run (default: target/release/oomwatch, built first).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Name of this run's results; the table compares with the other of
    /// "before" and "after" when its results exist.
    #[arg(long, default_value = "after")]
    label: String,
}

struct Row {
    scenario: &'static str,
    run: usize,
    kill_s: Option<f64>,
    warning_s: Option<f64>,
    critical_s: Option<f64>,
    extra: String,
    false_alerts: Vec<String>,
    target: &'static str,
    met: bool,
}

fn secs(t: u64, t0: u64) -> f64 {
    t.saturating_sub(t0) as f64 / 1e9
}

fn alert_is(v: &Value, alert: &str, severity: &str, state: &str) -> bool {
    v["kind"] == "alert" && v["alert"] == alert && v["severity"] == severity && v["state"] == state
}

/// Alerts that fired for `cgroup` other than the expected ones.
fn unexpected_firings(tail: &Tail, cgroup: &str, expected: &[&str]) -> Vec<String> {
    tail.seen
        .iter()
        .filter(|(v, _)| v["kind"] == "alert" && v["state"] == "firing" && v["cgroup"] == cgroup)
        .map(|(v, _)| format!("{}/{}", v["alert"].as_str().unwrap_or("?"), v["severity"].as_str().unwrap_or("?")))
        .filter(|a| !expected.contains(&a.as_str()))
        .collect()
}

fn leak(daemon: &Daemon, run: usize) -> Row {
    let mut tail = Tail::start(daemon, &[]);
    let cg = TestCgroup::new("scn-a", Some(256 * MIB));
    std::thread::sleep(Duration::from_millis(2000));
    let t0 = oomwatch_tests::monotonic_ns();
    let mut hog = ChildGuard(cg.spawn(memhog().args(["leak", "32", "8"])));
    let _ = hog.wait_timeout(Duration::from_secs(90));
    let pid = hog.pid();
    let kill = tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid).map(|(_, t)| secs(t, t0));
    let at = |alert, sev| tail.seen.iter().find(|(v, _)| v["cgroup"] == cg.path.as_str() && alert_is(v, alert, sev, "firing")).map(|(_, t)| secs(*t, t0));
    let (warning, critical) = (at("oom_forecast", "warning"), at("oom_forecast", "critical"));
    tail.wait_for(Duration::from_secs(3), |v| v["cgroup"] == cg.path.as_str() && alert_is(v, "oom_kill", "critical", "firing"));
    let false_alerts = unexpected_firings(&tail, &cg.path, &["oom_forecast/warning", "oom_forecast/critical", "oom_kill/critical"]);
    let lead = |t: Option<f64>| kill.zip(t).map(|(k, t)| k - t);
    let met = lead(warning).is_some_and(|l| l >= 15.0) && lead(critical).is_some_and(|l| l >= 5.0) && false_alerts.is_empty();
    Row {
        scenario: "a: linear leak",
        run,
        kill_s: kill,
        warning_s: warning,
        critical_s: critical,
        extra: format!(
            "lead: warning {} critical {}",
            lead(warning).map_or("-".into(), |l| format!("{l:.1}s")),
            lead(critical).map_or("-".into(), |l| format!("{l:.1}s"))
        ),
        false_alerts,
        target: "warning >= 15 s and critical >= 5 s before the kill",
        met,
    }
}

fn silent(daemon: &Daemon, scenario: &'static str, cg: &PsiCgroup, args: &[&str], secs_: u64, note: String) -> Row {
    let mut tail = Tail::start(daemon, &[]);
    std::thread::sleep(Duration::from_millis(2500));
    let mut hog = ChildGuard(cg.spawn(memhog().args(args)));
    let done = hog.wait_timeout(Duration::from_secs(secs_ + 60));
    // Collect what arrived during the run.
    tail.wait_for(Duration::from_millis(1500), |_| false);
    let killed = cg.memcg.oom_kills();
    let mut false_alerts = unexpected_firings(&tail, &cg.memcg.path, &[]);
    if cg.pressure_path != cg.memcg.path {
        false_alerts.extend(unexpected_firings(&tail, &cg.pressure_path, &[]));
    }
    let met = false_alerts.is_empty() && killed == 0 && done.is_some_and(|s| s.success());
    Row {
        scenario,
        run: 1,
        kill_s: None,
        warning_s: None,
        critical_s: None,
        extra: format!("{note}; kernel kills {killed}"),
        false_alerts,
        target: "no alerts at all",
        met,
    }
}

fn cache_heavy(daemon: &Daemon, quick: bool) -> Row {
    let cg = PsiCgroup::new("scn-b", Some(128 * MIB));
    let data = disk_dir("scn-b");
    let file = data.0.join("big.bin");
    let secs_ = if quick { 20 } else { 60 };
    let row = silent(daemon, "b: cache-heavy", &cg, &["cache", file.to_str().unwrap(), "512", &secs_.to_string(), "16"], secs_, String::new());
    let peak: u64 = cg.memcg.read("memory.max_usage_in_bytes").trim().parse().unwrap_or(0);
    let psi = std::fs::read_to_string(cg.pressure_file()).unwrap_or_default();
    let avg10 = psi.lines().next().and_then(|l| l.split("avg10=").nth(1)?.split_whitespace().next()).unwrap_or("?").to_owned();
    Row { extra: format!("{secs_} s, peak usage {:.1}% of the limit, PSI some avg10 {avg10}% at the end{}", peak as f64 * 100.0 / (128 * MIB) as f64, row.extra), ..row }
}

fn plateau(daemon: &Daemon) -> Row {
    let cg = TestCgroup::new("scn-d", Some(1024 * MIB));
    // memhog leak never exits: bound it.
    let mut tail = Tail::start(daemon, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let hog = ChildGuard(cg.spawn(memhog().args(["leak", "32", "8", "128"])));
    std::thread::sleep(Duration::from_secs(40));
    drop(hog);
    tail.wait_for(Duration::from_millis(1500), |_| false);
    let false_alerts = unexpected_firings(&tail, &cg.path, &[]);
    Row {
        scenario: "d: plateau",
        run: 1,
        kill_s: None,
        warning_s: None,
        critical_s: None,
        extra: "8 MiB/s from 32 to 128 MiB in a 1 GiB limit, then flat; 40 s".into(),
        met: false_alerts.is_empty() && cg.oom_kills() == 0,
        false_alerts,
        target: "no alerts at all",
    }
}

fn spike(daemon: &Daemon) -> Row {
    let mut tail = Tail::start(daemon, &[]);
    let cg = TestCgroup::new("scn-c", Some(128 * MIB));
    std::thread::sleep(Duration::from_millis(1500));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "400"])));
    let _ = hog.wait_timeout(Duration::from_secs(30));
    let pid = hog.pid();
    let kill = tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid);
    let alert = tail.wait_for(Duration::from_secs(5), |v| v["cgroup"] == cg.path.as_str() && alert_is(v, "oom_kill", "critical", "firing"));
    let delay_ms = kill.as_ref().zip(alert.as_ref()).and_then(|((k, _), (a, _))| Some((a["ktime_ns"].as_u64()? as f64 - k["ktime_ns"].as_u64()? as f64) / 1e6));
    let false_alerts = unexpected_firings(&tail, &cg.path, &["oom_kill/critical", "oom_forecast/warning", "oom_forecast/critical"]);
    Row {
        scenario: "c: spike",
        run: 1,
        kill_s: None,
        warning_s: None,
        critical_s: None,
        extra: format!("oom_kill alert {} after the kernel event", delay_ms.map_or("never".into(), |d| format!("{d:.2} ms"))),
        met: delay_ms.is_some_and(|d| d <= 10.0) && false_alerts.is_empty(),
        false_alerts,
        target: "oom_kill alert within 10 ms of the kernel event",
    }
}

fn thrash(daemon: &Daemon, threshold: f64) -> Row {
    let mut tail = Tail::start(daemon, &[]);
    let cg = PsiCgroup::new("scn-e", Some(64 * MIB));
    let data = disk_dir("scn-e");
    let file = data.0.join("hot.bin");
    std::thread::sleep(Duration::from_millis(2500));
    // 52 MiB anonymous plus a 32 MiB file read over and over: the hot set
    // is larger than the 64 MiB that fit, so it refaults all the time.
    let _hog = ChildGuard(cg.spawn(memhog().args(["cache", file.to_str().unwrap(), "32", "45", "52"])));
    let start = Instant::now();
    let mut crossed: Option<Instant> = None;
    while start.elapsed() < Duration::from_secs(40) && crossed.is_none() {
        let text = std::fs::read_to_string(cg.pressure_file()).unwrap_or_default();
        let avg10: f64 = text.lines().next().and_then(|l| l.split("avg10=").nth(1)?.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
        if avg10 >= threshold {
            crossed = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let crossed_ns = crossed.map(|c| oomwatch_tests::monotonic_ns() - c.elapsed().as_nanos() as u64);
    let alert = tail.wait_for(Duration::from_secs(15), |v| v["cgroup"] == cg.pressure_path.as_str() && alert_is(v, "memory_pressure", "warning", "firing"));
    let delay = crossed_ns.zip(alert.as_ref()).map(|(c, (_, at))| (*at as f64 - c as f64) / 1e9);
    Row {
        scenario: "e: thrash",
        run: 1,
        kill_s: None,
        warning_s: None,
        critical_s: None,
        extra: format!(
            "PSI some avg10 crossed {threshold}% {}; memory_pressure alert {}",
            if crossed.is_some() { "yes" } else { "never" },
            delay.map_or("not seen".into(), |d| format!("{d:.2} s after"))
        ),
        met: delay.is_some_and(|d| d <= 3.0),
        false_alerts: Vec::new(),
        target: "pressure alert within 3 s of PSI crossing the threshold",
    }
}

/// The daemon's own default, from `oomwatch check --print-defaults` (xtask
/// cannot link the daemon crate: its build needs what `setup` installs).
fn default_pressure_threshold(bin: &std::path::Path) -> Result<f64> {
    let text = crate::cmd_output(Command::new(bin).args(["check", "--print-defaults"]))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("some_avg10_percent = ")?.parse().ok())
        .context("some_avg10_percent missing from `oomwatch check --print-defaults`")
}

pub fn run_scenarios(args: ScenarioArgs) -> Result<()> {
    let root = workspace_root();
    let bin = match &args.bin {
        Some(b) => std::fs::canonicalize(b).with_context(|| format!("--bin {}", b.display()))?,
        None => {
            crate::build()?;
            root.join("target/release/oomwatch")
        }
    };
    run(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "oomwatch-tests", "--bins"]))?;
    if !crate::is_root() {
        anyhow::bail!("scenarios cause real OOM kills in test cgroups and need root");
    }
    // SAFETY: set before any thread that reads the environment starts.
    unsafe {
        std::env::set_var("OOMWATCH_BIN", &bin);
        std::env::set_var("OOMWATCH_MEMHOG", root.join("target/release/memhog"));
    }
    println!("scenarios: daemon {}, label {:?}", bin.display(), args.label);
    let daemon = Daemon::start(&[]);
    let threshold = default_pressure_threshold(&bin)?;
    let mut rows = classic(&args, &daemon, threshold);
    rows.extend(shaped(&args, &daemon));
    print_table(&rows, threshold);
    save_and_compare(&root, &args.label, &rows)
}

fn runs(args: &ScenarioArgs) -> usize {
    args.runs.unwrap_or(if args.quick { 1 } else { 5 })
}

fn wanted(args: &ScenarioArgs, s: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| o == s)
}

/// (f)-(j), `runs` of each with consecutive seeds.
fn shaped(args: &ScenarioArgs, daemon: &Daemon) -> Vec<Row> {
    let mut rows = Vec::new();
    for i in 1..=runs(args) {
        let seed = args.seed + i as u64 - 1;
        let shapes: [(&str, &str, &dyn Fn() -> Row); 5] = [
            ("f", "flat sawtooth", &|| shapes::flat_sawtooth(daemon, i, seed, args.quick)),
            ("g", "leak under GC", &|| shapes::gc_leak(daemon, i, seed)),
            ("h", "step", &|| shapes::step(daemon, i, seed)),
            ("i", "exponential", &|| shapes::exponential(daemon, i, seed)),
            ("j", "pod child leak", &|| shapes::pod(daemon, i, seed)),
        ];
        for (key, name, f) in shapes {
            if wanted(args, key) {
                println!("scenarios: ({key}) {name}, run {i}, seed {seed}");
                let r = f();
                println!("  -> {}{}", if r.met { "met" } else { "NOT MET" }, format_args!(": {}", r.extra));
                rows.push(r);
            }
        }
    }
    rows
}

fn classic(args: &ScenarioArgs, daemon: &Daemon, threshold: f64) -> Vec<Row> {
    let want = |s: &str| wanted(args, s);
    let mut rows = Vec::new();
    if want("a") {
        for i in 1..=runs(args) {
            println!("scenarios: (a) linear leak, run {i}");
            rows.push(leak(daemon, i));
        }
    }
    if want("b") {
        println!("scenarios: (b) cache-heavy");
        rows.push(cache_heavy(daemon, args.quick));
    }
    if want("c") {
        println!("scenarios: (c) spike");
        rows.push(spike(daemon));
    }
    if want("d") {
        println!("scenarios: (d) plateau");
        rows.push(plateau(daemon));
    }
    if want("e") {
        println!("scenarios: (e) thrash");
        rows.push(thrash(daemon, threshold));
    }
    rows
}

fn print_table(rows: &[Row], threshold: f64) {
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}s"));
    println!("\n{:<18} {:>3} {:>7} {:>8} {:>8}  {:<5}  details", "scenario", "run", "kill", "warning", "critical", "met");
    for r in rows {
        println!(
            "{:<18} {:>3} {:>7} {:>8} {:>8}  {:<5}  {}{}",
            r.scenario,
            r.run,
            f(r.kill_s),
            f(r.warning_s),
            f(r.critical_s),
            if r.met { "yes" } else { "NO" },
            r.extra,
            if r.false_alerts.is_empty() { String::new() } else { format!("; false alerts: {}", r.false_alerts.join(", ")) }
        );
    }
    println!("targets: (a) warning >= 15 s and critical >= 5 s before the kill, every run; (b), (d) no alerts; (c) kill alert <= 10 ms; (e) pressure alert <= 3 s after PSI crosses {threshold}%; (f), (h) no alerts; (g), (j) warning >= 15 s before the kill; (i) warning before the kill");
}

/// Writes target/scenarios/results-<label>.json (and results.json) and,
/// when the other label's results exist, a before/after table per scenario.
fn save_and_compare(root: &std::path::Path, label: &str, rows: &[Row]) -> Result<()> {
    let out: Vec<_> = rows
        .iter()
        .map(|r| json!({"scenario": r.scenario, "run": r.run, "kill_s": r.kill_s, "warning_s": r.warning_s, "critical_s": r.critical_s, "details": r.extra, "false_alerts": r.false_alerts, "target": r.target, "met": r.met}))
        .collect();
    let dir: PathBuf = root.join("target/scenarios");
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(&out)?;
    std::fs::write(dir.join("results.json"), &text).context("writing target/scenarios/results.json")?;
    let mine = dir.join(format!("results-{label}.json"));
    std::fs::write(&mine, &text).with_context(|| format!("writing {}", mine.display()))?;
    println!("results: {}", mine.display());
    let other_label = if label == "before" { "after" } else { "before" };
    let Ok(other) = std::fs::read_to_string(dir.join(format!("results-{other_label}.json"))) else { return Ok(()) };
    let other: Vec<Value> = serde_json::from_str(&other).context("reading the other label's results")?;
    let (before, after) = if label == "before" { (out, other) } else { (other, out) };
    println!("\n{:<18}  {:<44}  {:<44}", "scenario", "before (met, runs: lead or false alerts)", "after");
    let mut names: Vec<&str> = Vec::new();
    for name in after.iter().filter_map(|r| r["scenario"].as_str()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        println!("{name:<18}  {:<44}  {:<44}", summarize(&before, name), summarize(&after, name));
    }
    Ok(())
}

/// "3/5 met; warning lead 21.0 19.5 ..." or the false alerts, for one scenario.
fn summarize(results: &[Value], scenario: &str) -> String {
    let rows: Vec<&Value> = results.iter().filter(|r| r["scenario"] == scenario).collect();
    if rows.is_empty() {
        return "not run".into();
    }
    let met = rows.iter().filter(|r| r["met"] == true).count();
    let each: Vec<String> = rows
        .iter()
        .map(|r| match (r["kill_s"].as_f64(), r["warning_s"].as_f64()) {
            (Some(k), Some(w)) => format!("{:.1}", k - w),
            (Some(_), None) => "none".into(),
            _ if r["false_alerts"].as_array().is_some_and(|a| !a.is_empty()) || r["warning_s"].is_number() => "ALERT".into(),
            _ => "quiet".into(),
        })
        .collect();
    format!("{met}/{} met; {}", rows.len(), each.join(" "))
}
