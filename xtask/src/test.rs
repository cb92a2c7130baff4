//! `cargo xtask test`: the whole suite, as CI runs it on a fresh machine.

use std::process::Command;

use anyhow::Result;

use crate::{run as run_cmd, workspace_root};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only unit tests (no root needed).
    #[arg(long)]
    unit: bool,
}

pub fn run_suite(args: &TestArgs) -> Result<()> {
    crate::build()?;
    let root = workspace_root();
    let bin = root.join("target/release/oomwatch");

    section("unit tests");
    run_cmd(Command::new("cargo").current_dir(&root).args(["test", "--release", "--workspace", "--exclude", "oomwatch-ebpf", "--exclude", "oomwatch-tests"]))?;
    // Benches are not built by `cargo test`: keep them compiling.
    run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "--benches", "-p", "oomwatch"]))?;
    if args.unit {
        return Ok(());
    }

    section("fuzz smoke (cargo xtask fuzz --smoke)");
    crate::fuzz::smoke()?;

    section("integration tests (root, real kernel, real OOM kills)");
    if !crate::is_root() && std::env::var("OOMWATCH_SKIP_PRIVILEGED").as_deref() != Ok("1") {
        println!("note: not root: the privileged tests will fail (set OOMWATCH_SKIP_PRIVILEGED=1 to skip them)");
    }
    // The real servers and tools tests/tests/ecosystem.rs runs (the tests
    // themselves never install anything).
    crate::apt::ensure(ECOSYSTEM_PACKAGES)?;
    // The OTLP receiver of tests/tests/shipping.rs (official opentelemetry-proto).
    crate::python::ensure_test_venv()?;
    run_cmd(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "--release", "-p", "oomwatch-tests", "--", "--nocapture", "--test-threads=2"])
        .env("OOMWATCH_BIN", &bin))?;

    section("kernel matrix: the scenarios in a Debian 6.1 VM (cargo xtask vm-test)");
    crate::vm::run(&crate::vm::VmTestArgs::default())?;
    Ok(())
}

/// prometheus (with promtool), prometheus-alertmanager (with amtool),
/// prometheus-pushgateway, and systemd for `systemd-analyze verify`.
pub const ECOSYSTEM_PACKAGES: &[&str] = &["prometheus", "prometheus-alertmanager", "prometheus-pushgateway", "systemd"];

pub fn run(args: TestArgs) -> Result<()> {
    run_suite(&args)?;
    println!("\nxtask test: all passed");
    Ok(())
}

fn section(name: &str) {
    println!("\n==== {name} ====");
}
