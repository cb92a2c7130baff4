//! Developer tasks. `cargo xtask test` is what CI runs; `cargo xtask run`
//! starts the daemon with embedded defaults.

mod apt;
mod scenarios;
mod bench;
mod fuzz;
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
    /// The integration scenarios inside a Debian 6.1 VM (QEMU, TCG): the second kernel of the matrix.
    VmTest(vm::VmTestArgs),
    /// Real OOM kills in the 6.1 VM, the kernel's reports from /dev/kmsg written to files (parser fixtures).
    VmKmsgCapture(vm::KmsgCaptureArgs),
    /// Performance figures against their targets (prints a table, writes target/bench/results.json).
    Bench(bench::BenchArgs),
    /// Fuzz the parsers of kernel and untrusted input (cargo-fuzz, nightly) for --seconds each.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> Result<()> {
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
        Task::VmTest(args) => vm::run(&args),
        Task::VmKmsgCapture(args) => vm::capture_kmsg(&args),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(&args),
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
