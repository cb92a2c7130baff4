//! `cargo xtask fuzz`: the parsers that read kernel or untrusted input, under
//! libFuzzer. The cargo-fuzz project is `tests/fuzz` (its own workspace, so
//! normal builds never need nightly); one target per file in
//! `tests/fuzz/fuzz_targets/`, seeds committed in `tests/fuzz/corpus/<target>/`.
//!
//! Targets with a `tests/fuzz/dicts/<target>.dict` get it as a libFuzzer
//! dictionary. cargo-fuzz is installed into `.tools/` like bpf-linker. Each run reads the
//! committed seeds and writes what it finds to `target/fuzz/corpus/<target>/`,
//! so the committed corpus only changes when someone minimizes into it.
//! A crash, a failed assertion, a timeout or an oversized allocation fails
//! the run and names the reproducer (`tests/fuzz/artifacts/<target>/`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    run as run_cmd,
    setup::{self, NIGHTLY, tools_dir},
    workspace_root,
};

pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds per target in `--smoke` (what `cargo xtask test` runs).
pub const SMOKE_SECONDS: u64 = 10;

#[derive(clap::Args, Clone, Debug)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// A short run of every target (10 s each), as `cargo xtask test` does.
    #[arg(long, conflicts_with = "seconds")]
    pub smoke: bool,
    /// Only this target (repeat for several); default: every target.
    #[arg(long = "target", value_name = "T")]
    pub targets: Vec<String>,
}

impl FuzzArgs {
    pub fn smoke() -> Self {
        Self { seconds: SMOKE_SECONDS, smoke: true, targets: Vec::new() }
    }
}

pub fn fuzz_dir() -> PathBuf {
    workspace_root().join("tests/fuzz")
}

fn cargo_fuzz_path() -> PathBuf {
    tools_dir().join("bin").join("cargo-fuzz")
}

/// The fuzz build has its own target dir: sanitizer flags would otherwise
/// rebuild the normal build's dependencies.
fn target_dir() -> PathBuf {
    workspace_root().join("target/fuzz")
}

/// Every file in `tests/fuzz/fuzz_targets/` is a target.
pub fn all_targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_owned))
        .collect();
    targets.sort();
    Ok(targets)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let bin = cargo_fuzz_path();
    let installed = Command::new(&bin)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}", tools_dir().display());
    run_cmd(Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION])
        .arg("--root")
        .arg(tools_dir())
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN"))
    .context("installing cargo-fuzz failed")
}

/// `cargo-fuzz fuzz <sub> --fuzz-dir tests/fuzz --target-dir target/fuzz`, on nightly.
fn cargo_fuzz(sub: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz_path());
    cmd.current_dir(workspace_root())
        .arg("fuzz")
        .arg(sub)
        .arg("--fuzz-dir")
        .arg(fuzz_dir())
        .arg("--target-dir")
        .arg(target_dir())
        // cargo-fuzz runs `cargo build` with -Z flags: it needs nightly.
        .env("RUSTUP_TOOLCHAIN", NIGHTLY)
        .env_remove("RUSTC");
    cmd
}

struct Outcome {
    target: String,
    seconds: f64,
    summary: String,
    /// Why the run failed: the reproducer's path, or where the log is.
    failure: Option<String>,
    reproducer: Option<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let seconds = if args.smoke { SMOKE_SECONDS } else { args.seconds };
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let all = all_targets()?;
    let targets = if args.targets.is_empty() {
        all.clone()
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };

    // oomwatch's build.rs builds the eBPF programs: it needs bpf-linker too.
    setup::setup()?;
    ensure_cargo_fuzz()?;
    let started = Instant::now();
    println!("fuzz: building {} target(s) (nightly, AddressSanitizer)", targets.len());
    let mut build = cargo_fuzz("build");
    if targets.len() == 1 {
        build.arg(&targets[0]);
    }
    run_cmd(&mut build).context("building the fuzz targets failed")?;
    println!("fuzz: built in {:.0}s", started.elapsed().as_secs_f64());

    let mut outcomes = Vec::new();
    for target in &targets {
        let outcome = run_target(target, seconds)?;
        println!("fuzz {:<14} {:>4.0}s  {}", outcome.target, outcome.seconds, outcome.summary);
        outcomes.push(outcome);
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    println!("fuzz: {} target(s), {:.0}s in all", outcomes.len(), started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        for o in &failed {
            match &o.reproducer {
                Some(r) => println!(
                    "fuzz: {} FAILED on {r}; replay with `PATH=.tools/bin:$PATH cargo +nightly fuzz run --fuzz-dir tests/fuzz {} {r}`",
                    o.target, o.target
                ),
                None => println!("fuzz: {} FAILED: {}", o.target, o.failure.as_deref().unwrap_or("")),
            }
        }
        bail!(
            "{} fuzz target(s) failed: {}",
            failed.len(),
            failed.iter().map(|o| format!("{} ({})", o.target, o.failure.as_deref().unwrap_or(""))).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

fn run_target(target: &str, seconds: u64) -> Result<Outcome> {
    let root = workspace_root();
    let scratch = target_dir().join("corpus").join(target);
    let seeds = fuzz_dir().join("corpus").join(target);
    let logs = target_dir().join("logs");
    fs::create_dir_all(&scratch)?;
    fs::create_dir_all(&seeds)?;
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let started = Instant::now();
    // libFuzzer writes new inputs to the first corpus directory only.
    let mut cmd = cargo_fuzz("run");
    cmd.arg(target).arg(&scratch).arg(&seeds).arg("--");
    // Keywords of the format (tests/fuzz/dicts/<target>.dict), where one exists.
    let dict = fuzz_dir().join("dicts").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let status = cmd
        .arg(format!("-max_total_time={seconds}"))
        // One input taking seconds is a bug (the inputs are bounded).
        .arg("-timeout=10")
        // Inputs are at most 256 KiB: an allocation of 128 MiB is amplification.
        .arg("-malloc_limit_mb=128")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("running cargo-fuzz for {target}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();

    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let coverage = text
        .lines()
        .rev()
        .find_map(|l| l.split_once(" cov: ").map(|(_, r)| r.split_whitespace().next().unwrap_or("?").to_owned()))
        .unwrap_or_else(|| "?".into());
    let corpus = fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    let runs = stat("number_of_executed_units");
    let summary = match (runs, stat("average_exec_per_sec")) {
        (Some(runs), Some(per_sec)) => format!(
            "{runs} execs ({per_sec}/s), coverage {coverage}, corpus {corpus}, peak RSS {} MB",
            stat("peak_rss_mb").unwrap_or(0)
        ),
        _ => "no libFuzzer statistics".to_owned(),
    };
    if status.success() {
        return Ok(Outcome { target: target.to_owned(), seconds: elapsed, summary, failure: None, reproducer: None });
    }

    // "Test unit written to tests/fuzz/artifacts/<target>/crash-..."
    let reproducer = text
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim().to_owned()))
        .map(|p| {
            let p = Path::new(&p);
            if p.is_absolute() { p.to_path_buf() } else { root.join(p) }
        });
    // What went wrong (the panic, or libFuzzer's timeout/OOM report), not
    // the sanitizer's stack dump: that stays in the log.
    println!("---- fuzz {target} (full log: {}) ----", log_path.display());
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer") || l.contains("ERROR: AddressSanitizer"))
        .unwrap_or(lines.len().saturating_sub(20));
    for line in lines.iter().skip(first).take(12) {
        println!("{line}");
    }
    println!("----");
    let reproducer = reproducer.map(|p| p.strip_prefix(&root).unwrap_or(&p).display().to_string());
    let failure = match &reproducer {
        Some(p) => p.clone(),
        None => format!("no reproducer written ({status}); see {}", log_path.display()),
    };
    Ok(Outcome { target: target.to_owned(), seconds: elapsed, summary, failure: Some(failure), reproducer })
}

/// Used by `cargo xtask test`.
pub fn smoke() -> Result<()> {
    run(&FuzzArgs::smoke())
}
