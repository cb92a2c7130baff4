//! Developer tasks. `cargo xtask test` is what CI runs; `cargo xtask run`
//! starts the daemon with embedded defaults.

mod apt;
mod scenarios;
mod bench;
mod deb;
mod fuzz;
mod layers;
mod python;
mod setup;
mod test;
mod vm;

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "oomwatch developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the eBPF build needs (rust-src, bpf-linker) into .tools/.
    Setup,
    /// Build the daemon (release), with its embedded eBPF programs.
    Build,
    /// Build and run the daemon as root with embedded defaults; extra args go to `oomwatch daemon`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit, integration (root, real kernel), and the rest of the suite.
    Test(test::TestArgs),
    /// Real workloads against the daemon, measured: lead time before kills, false alerts.
    Scenarios(scenarios::ScenarioArgs),
    /// The Debian package (target/deb/oomwatch_VERSION_ARCH.deb), checked by lintian.
    Deb(deb::DebArgs),
    /// The integration scenarios inside a Debian 6.1 VM (QEMU, TCG): the second kernel of the matrix.
    VmTest(vm::VmTestArgs),
    /// Real OOM kills in the 6.1 VM, the kernel's reports from /dev/kmsg written to files (parser fixtures).
    VmKmsgCapture(vm::KmsgCaptureArgs),
    /// Performance figures against their targets (prints a table, writes target/bench/results.json).
    Bench(bench::BenchArgs),
    /// The daemon crate's module graph against its layering, and long functions (--check fails on any).
    Layers(layers::LayersArgs),
    /// Fuzz the parsers of kernel and untrusted input (cargo-fuzz, nightly) for --seconds each.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> Result<()> {
    forget_cargo_run_env();
    match Cli::parse().command {
        Task::Setup => setup::setup(),
        Task::Build => build(),
        Task::Run { args } => {
            build()?;
            let bin = workspace_root().join("target/release/oomwatch");
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("the daemon loads eBPF programs and needs root: run `sudo -E cargo xtask run`");
            }
            let err = Command::new(&bin).arg("daemon").args(args).exec();
            Err(err).with_context(|| format!("exec {}", bin.display()))
        }
        Task::Test(args) => test::run(args),
        Task::Scenarios(args) => scenarios::run_scenarios(args),
        Task::Deb(args) => deb::run_task(&args),
        Task::VmTest(args) => vm::run(&args),
        Task::VmKmsgCapture(args) => vm::capture_kmsg(&args),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Layers(args) => layers::run(&args),
    }
}

/// `cargo run` describes the package it runs (xtask) in CARGO_MANIFEST_DIR,
/// CARGO_PKG_* and the like. Passed on to the cargo commands xtask runs,
/// they change build-script fingerprints (ring's reruns when
/// CARGO_MANIFEST_DIR changes), so `cargo xtask run` and a plain `cargo
/// build` would rebuild ring, rustls and oomwatch each time one follows
/// the other.
fn forget_cargo_run_env() {
    let describes_xtask = |k: &str| {
        k == "CARGO_MANIFEST_DIR"
            || k == "CARGO_MANIFEST_PATH"
            || k == "CARGO_CRATE_NAME"
            || k == "CARGO_BIN_NAME"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_RUSTC_CURRENT_DIR"
            || k.starts_with("CARGO_PKG_")
    };
    let keys: Vec<_> = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).filter(|k| describes_xtask(k)).collect();
    for k in keys {
        // SAFETY: first thing in main, before any thread is started.
        unsafe { std::env::remove_var(k) };
    }
}

pub fn build() -> Result<()> {
    setup::setup()?;
    run(Command::new("cargo").current_dir(workspace_root()).args(["build", "--release", "-p", "oomwatch"]))
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cmd_output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
