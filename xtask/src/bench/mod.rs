//! `cargo xtask bench`: performance figures against their targets, measured
//! on this machine in one run, with peers (node_exporter, bpftrace, BCC's
//! libbpf tools) measured in the same run so ratios stay meaningful on a
//! noisy shared machine. The bench installs the peers it needs
//! ([`PEER_PACKAGES`]); a peer that cannot run fails the command.
//!
//! Benchmarks print numbers; they are not tests. A missed target is shown
//! as such and does not fail the command. The command fails only when a
//! figure could not be measured at all, and says why.
//!
//! Every figure is a module with `run(&Ctx, &mut Report)`:
//! - `latency`: real OOM kills, kernel timestamp to an `oomwatch tail --json`
//!   client; bpftrace on the same tracepoint as the peer.
//! - `storm`: 200 kills in 20 s over 20 cgroups, checked against the
//!   kernel's own counters.
//! - `explain`: the kernel's OOM report read from /dev/kmsg: kill latency
//!   with it on and off (a daemon without CAP_SYSLOG) in one run, kill ->
//!   `kill_explained`, daemon CPU in a 200-kill storm with it on and off.
//! - `reclaim`: per-program eBPF run time (kernel.bpf_stats_enabled) during a
//!   reclaiming workload, events/s, events lost, daemon CPU. Programs are
//!   found at run time from the daemon's fds, so new probes (vmscan) appear
//!   without changes here.
//! - `footprint`: 1,000 and 10,000 real cgroups, daemon RSS, peak RSS and
//!   CPU over 60 s, CPU per cgroup per tick, series count, scrape time;
//!   node_exporter as the peer.
//! - `metrics`: `/metrics` render time for 10,000 cgroups
//!   (`oomwatch/benches/metrics.rs`).
//! - `read-cost`: the sampler's cgroup file reads (`oomwatch/benches/cgroup_read.rs`).
//! - `journal`: the durable journal on this machine's disk: kill durable
//!   latency, sustained events/s, bytes per kill, the kill summary over
//!   1,000,000 events (`oomwatch/benches/journal.rs`).
//! - `shipping`: per-event cost of each sink and backlog drain rate
//!   (`oomwatch/benches/shipping.rs`); real kills through the daemon to the
//!   OTLP test receiver and the file sink: latency p50/p99, a 200-kill storm.
//! - `names`: workload names: a runtime record lookup per new container
//!   (`oomwatch/benches/runtime_lookup.rs`), and the daemon's RSS with 1,000
//!   named containers against the same with `[workloads] enabled = false`.

mod bpf;
mod explain;
mod footprint;
mod journal;
mod latency;
mod metrics;
mod names;
mod peer;
mod procfs;
mod readcost;
mod reclaim;
mod shipping;
mod storm;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::workspace_root;

pub const MIB: u64 = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Only these figures (comma-separated): latency, storm, explain, reclaim, footprint, metrics, read-cost, journal, shipping, names.
    #[arg(long, value_delimiter = ',', value_name = "FIGURE,...")]
    only: Vec<String>,
    /// Short runs for iterating (fewer kills, shorter windows); the numbers are noisier.
    #[arg(long)]
    quick: bool,
    /// Add a traced pass to the latency figure that splits each kill's latency
    /// (kernel wakeup, daemon, tail, pipe) with bpftrace on the daemon's syscalls.
    #[arg(long)]
    breakdown: bool,
    /// Where to write the JSON results (default: <target>/bench/results.json).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Skip the build step (the binaries must exist).
    #[arg(long)]
    no_build: bool,
}

type Figure = fn(&Ctx, &mut Report) -> Result<()>;

/// Reclaim first: the exit program's fast path is what runs on a host with
/// no recent kill, so it is measured before this bench's own kills.
const FIGURES: &[(&str, Figure)] = &[
    ("reclaim", reclaim::run),
    ("latency", latency::run),
    ("storm", storm::run),
    ("explain", explain::run),
    ("footprint", footprint::run),
    ("metrics", metrics::run),
    ("read-cost", readcost::run),
    ("journal", journal::run),
    ("shipping", shipping::run),
    ("names", names::run),
];

/// What every figure needs.
pub struct Ctx {
    pub quick: bool,
    pub breakdown: bool,
    pub target_dir: PathBuf,
    pub oomwatch: PathBuf,
    pub memhog: PathBuf,
}

impl Ctx {
    /// Points at the release binaries, which must exist by now.
    fn new(args: &BenchArgs) -> Result<Self> {
        let target = target_dir();
        let ctx = Ctx {
            quick: args.quick,
            breakdown: args.breakdown,
            oomwatch: target.join("release/oomwatch"),
            memhog: target.join("release/memhog"),
            target_dir: target,
        };
        for bin in [&ctx.oomwatch, &ctx.memhog] {
            if !bin.exists() {
                bail!(
                    "{} is missing: build with `cargo build --release -p oomwatch -p oomwatch-tests`",
                    bin.display()
                );
            }
        }
        // The harness (oomwatch-tests) starts the daemon from $OOMWATCH_BIN.
        // SAFETY: still single-threaded; nothing reads the environment concurrently.
        unsafe { std::env::set_var("OOMWATCH_BIN", &ctx.oomwatch) };
        Ok(ctx)
    }

    /// Full or quick variant of a parameter.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    pub fn memhog(&self) -> Command {
        let mut c = Command::new(&self.memhog);
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    }

    /// A directory on a real disk (page cache, not tmpfs) for bench data.
    pub fn data_dir(&self) -> PathBuf {
        self.target_dir.join("bench").join("data")
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    Exactly(f64),
}

impl Target {
    fn holds(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
            Target::Exactly(t) => v == t,
        }
    }

    fn show(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("<= {} {unit}", trim_num(t)),
            Target::AtLeast(t) => format!(">= {} {unit}", trim_num(t)),
            Target::Exactly(t) => format!("= {} {unit}", trim_num(t)),
        }
    }
}

fn trim_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub group: &'static str,
    pub figure: String,
    pub value: Option<f64>,
    pub unit: String,
    /// How the value is shown (defaults to the number with its unit).
    pub shown: Option<String>,
    pub target: Option<Target>,
    /// Peer figure and ratio measured in the same run, if any.
    pub peer: String,
}

impl Row {
    pub fn new(group: &'static str, figure: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            group,
            figure: figure.into(),
            value: Some(value),
            unit: unit.into(),
            shown: None,
            target: None,
            peer: String::new(),
        }
    }

    /// A row that carries a text only (e.g. "not run").
    pub fn text(group: &'static str, figure: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            group,
            figure: figure.into(),
            value: None,
            unit: String::new(),
            shown: Some(text.into()),
            target: None,
            peer: String::new(),
        }
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    pub fn peer(mut self, p: impl Into<String>) -> Self {
        self.peer = p.into();
        self
    }

    pub fn shown(mut self, s: impl Into<String>) -> Self {
        self.shown = Some(s.into());
        self
    }

    pub fn pass(&self) -> Option<bool> {
        Some(self.target?.holds(self.value?))
    }

    fn measured(&self) -> String {
        if let Some(s) = &self.shown {
            return s.clone();
        }
        match self.value {
            Some(v) => format!("{} {}", fmt_num(v), self.unit)
                .trim_end()
                .to_owned(),
            None => "-".into(),
        }
    }
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if (v.fract() == 0.0 && a < 1e15) || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Ratio text "oomwatch/peer = x".
pub fn ratio(ours: f64, peer: f64) -> String {
    if peer > 0.0 {
        format!("{:.2}x", ours / peer)
    } else {
        "n/a".into()
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Raw numbers per figure, for the JSON file.
    pub details: serde_json::Map<String, Value>,
    pub errors: Vec<(String, String)>,
    /// Things a reader should know (e.g. host-wide counters moved by others).
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, r: Row) {
        self.rows.push(r);
    }

    pub fn detail(&mut self, figure: &str, v: Value) {
        self.details.insert(figure.to_owned(), v);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// A peer that could not run: its comparison is a figure that could not
    /// be measured, so the command fails with the reason (not a note).
    pub fn peer_failed(&mut self, figure: &str, peer: &str, e: &anyhow::Error) {
        println!("{figure}: peer {peer} could not run: {e:#}");
        self.errors
            .push((format!("{figure} (peer {peer})"), format!("{e:#}")));
    }

    fn table(&self) -> String {
        let head = [
            "figure",
            "measured",
            "target",
            "result",
            "peer, same run (oomwatch/peer)",
        ];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                let result = match r.pass() {
                    Some(true) => "pass".to_owned(),
                    Some(false) => "MISS".to_owned(),
                    None => String::new(),
                };
                [
                    format!("{}: {}", r.group, r.figure),
                    r.measured(),
                    r.target.map(|t| t.show(&r.unit)).unwrap_or_default(),
                    result,
                    r.peer.clone(),
                ]
            })
            .collect();
        let mut w = head.map(str::len);
        for c in &cells {
            for (i, s) in c.iter().enumerate() {
                w[i] = w[i].max(s.chars().count());
            }
        }
        let line = |c: &[String; 5]| {
            let mut s = String::new();
            for (i, cell) in c.iter().enumerate() {
                let pad = w[i] - cell.chars().count();
                if i == 1 {
                    let _ = write!(s, "{}{cell}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = String::new();
        out.push_str(&line(&head.map(String::from)));
        out.push('\n');
        out.push_str(
            &w.iter()
                .map(|n| "-".repeat(*n))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.push('\n');
        for c in &cells {
            out.push_str(&line(c));
            out.push('\n');
        }
        out
    }

    fn write_json(&self, out: &Path, quick: bool, started: &str, secs: f64) -> Result<()> {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = self.json(quick, started, secs);
        std::fs::write(out, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", out.display()))
    }

    fn print_summary(&self, quick: bool, started: &str, secs: f64, out: &Path) {
        println!(
            "\n==== oomwatch bench{} ({started}, {secs:.0} s) ====\n",
            if quick { " --quick" } else { "" },
        );
        print!("{}", self.table());
        for n in &self.notes {
            println!("note: {n}");
        }
        let missed = self.rows.iter().filter(|r| r.pass() == Some(false)).count();
        println!(
            "\n{} figures, {} targets missed; JSON: {}",
            self.rows.len(),
            missed,
            out.display()
        );
    }

    /// The command fails only when a figure could not be measured at all.
    fn fail_if_unmeasured(&self) -> Result<()> {
        if self.errors.is_empty() {
            return Ok(());
        }
        for (f, e) in &self.errors {
            println!(
                "could not measure {f}: {}",
                e.lines().next().unwrap_or_default()
            );
        }
        bail!(
            "{} figure(s) could not be measured: {}",
            self.errors.len(),
            self.errors
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn json(&self, quick: bool, started: &str, secs: f64) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "group": r.group,
                    "figure": r.figure,
                    "value": r.value,
                    "unit": r.unit,
                    "measured": r.measured(),
                    "target": r.target.map(|t| match t {
                        Target::AtMost(v) => json!({"at_most": v}),
                        Target::AtLeast(v) => json!({"at_least": v}),
                        Target::Exactly(v) => json!({"exactly": v}),
                    }),
                    "pass": r.pass(),
                    "peer": (!r.peer.is_empty()).then(|| r.peer.clone()),
                })
            })
            .collect();
        json!({
            "started": started,
            "seconds": secs,
            "quick": quick,
            "machine": machine(),
            "figures": rows,
            "details": self.details,
            "notes": self.notes,
            "errors": self.errors.iter().map(|(f, e)| json!({"figure": f, "error": e})).collect::<Vec<_>>(),
        })
    }
}

fn machine() -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": read("/proc/loadavg"),
        "mem_total_kib": procfs::meminfo("MemTotal"),
    })
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn run(args: BenchArgs) -> Result<()> {
    let selected = select(&args.only)?;
    if !crate::is_root() {
        bail!(
            "the benchmarks load eBPF programs and create cgroups: run as root (`sudo -E cargo xtask bench`)"
        );
    }
    if !args.no_build {
        build(&selected)?;
    }
    let ctx = Ctx::new(&args)?;
    remove_stale_cgroups();

    let started = humantime_now();
    let t0 = Instant::now();
    let mut report = Report::default();
    install_peers(&selected, &mut report);
    for (name, figure) in selected {
        measure(name, *figure, &ctx, &mut report);
    }
    let out = args
        .out
        .unwrap_or_else(|| ctx.target_dir.join("bench/results.json"));
    report.write_json(&out, args.quick, &started, t0.elapsed().as_secs_f64())?;
    report.print_summary(args.quick, &started, t0.elapsed().as_secs_f64(), &out);
    report.fail_if_unmeasured()
}

/// Debian packages of the peers each figure compares with: bpftrace, BCC's
/// libbpf tools (CO-RE: they need no kernel headers, which the Python BCC
/// tools compile against and this kind of host lacks), node_exporter, and
/// bpftool for program names. Installed by the bench only, before anything
/// is measured; `cargo xtask test` never needs them.
const PEER_PACKAGES: &[(&str, &[&str])] = &[
    ("reclaim", &["bpftrace", "libbpf-tools", "bpftool"]),
    ("latency", &["bpftrace"]),
    ("storm", &["bpftrace"]),
    ("footprint", &["prometheus-node-exporter"]),
];

fn install_peers(selected: &[&(&str, Figure)], report: &mut Report) {
    let mut packages: Vec<&str> = PEER_PACKAGES
        .iter()
        .filter(|(figure, _)| selected.iter().any(|(n, _)| n == figure))
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    packages.sort_unstable();
    packages.dedup();
    if packages.is_empty() {
        return;
    }
    if let Err(e) = crate::apt::ensure(&packages) {
        println!("bench: peers could not be installed: {e:#}");
        report
            .errors
            .push(("peers (apt-get install)".to_owned(), format!("{e:#}")));
    }
}

/// The figures named by `--only` (all without it), in [`FIGURES`] order.
fn select(only: &[String]) -> Result<Vec<&'static (&'static str, Figure)>> {
    for f in only {
        if !FIGURES.iter().any(|(name, _)| name == f) {
            bail!(
                "--only: unknown figure '{f}' (expected: {})",
                FIGURES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(FIGURES
        .iter()
        .filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n))
        .collect())
}

/// Runs one figure; an error or a panic is recorded as "could not measure"
/// so the figures after it still run.
fn measure(name: &str, figure: Figure, ctx: &Ctx, report: &mut Report) {
    println!(
        "\n==== bench: {name}{} ====",
        if ctx.quick { " (quick)" } else { "" }
    );
    let t = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| figure(ctx, report)));
    let err = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        ),
    };
    match err {
        None => println!("bench {name}: done in {:.0} s", t.elapsed().as_secs_f64()),
        Some(e) => {
            let first = e.lines().next().unwrap_or_default().to_owned();
            println!("bench {name}: COULD NOT MEASURE: {first}");
            report.errors.push((name.to_string(), e));
        }
    }
}

fn humantime_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Builds what the selected figures run, before anything is measured (no
/// compiler competes with a measurement).
fn build(selected: &[&(&str, Figure)]) -> Result<()> {
    crate::setup::setup()?;
    let root = workspace_root();
    crate::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "oomwatch",
        "-p",
        "oomwatch-tests",
    ]))?;
    let benches: Vec<&str> = selected
        .iter()
        .filter_map(|(n, _)| match *n {
            "metrics" => Some("metrics"),
            "read-cost" => Some("cgroup_read"),
            "shipping" => Some("shipping"),
            "names" => Some("runtime_lookup"),
            _ => None,
        })
        .collect();
    if !benches.is_empty() {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .args(["bench", "-p", "oomwatch", "--no-run"]);
        for b in benches {
            cmd.args(["--bench", b]);
        }
        crate::run(&mut cmd)?;
    }
    Ok(())
}

/// Runs a `harness = false` bench of the oomwatch crate and parses the JSON
/// object it prints last.
pub fn cargo_bench_json(bench: &str, args: &[String]) -> Result<Value> {
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args(["bench", "--quiet", "-p", "oomwatch", "--bench", bench, "--"])
        .args(args)
        .output()
        .with_context(|| format!("running cargo bench --bench {bench}"))?;
    if !out.status.success() {
        bail!(
            "cargo bench --bench {bench} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("bench {bench} printed no JSON: {stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("bench {bench}: bad JSON {line}"))
}

// ---------------------------------------------------------------- helpers

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile_of(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, p)
}

pub fn median(v: &[f64]) -> f64 {
    percentile_of(v, 50.0)
}

/// Sum of every sample of metric `name` (any labels) in a text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    metric_samples(exposition, name)
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// How far metric `name` (all labels summed) moved between two scrapes.
pub fn metric_delta(before: &str, after: &str, name: &str) -> f64 {
    metric_sum(after, name) - metric_sum(before, name)
}

/// Samples of metric `name`: (labels text, value).
pub fn metric_samples(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.rfind('}')?;
                (r[..end].to_owned(), r[end + 1..].trim())
            } else if rest.starts_with(' ') {
                (String::new(), rest.trim())
            } else {
                return None;
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some((labels, value))
        })
        .collect()
}

/// Number of series (sample lines) in an exposition.
pub fn series_count(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

pub fn ensure_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// Cgroups left under our own memory cgroup by an earlier run that was
/// killed before its drop guards ran (the harness's sweep: only empty ones
/// whose creating process is gone; nothing is killed here).
fn remove_stale_cgroups() {
    let h = oomwatch_tests::memory_hierarchy();
    oomwatch_tests::sweep_stale_test_cgroups(&h.mount.join(h.own.trim_start_matches('/')));
}
