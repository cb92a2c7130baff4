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
    run_cmd(Command::new("cargo").current_dir(&root).args(UNIT_TEST_ARGS))?;
    if crate::is_root() {
        section("unit tests again as an unprivileged user (nobody): none may need root");
        unit_tests_unprivileged(&root)?;
    }
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
    // Every test binary runs, so one failure does not hide the next.
    run_cmd(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "--release", "--no-fail-fast", "-p", "oomwatch-tests", "--", "--nocapture", "--test-threads=2"])
        .env("OOMWATCH_BIN", &bin))?;

    section("Debian package, checked by lintian (cargo xtask deb)");
    crate::deb::run_task(&crate::deb::DebArgs::default())?;

    section("kernel matrix: the scenarios in a Debian 6.1 VM, and the package under systemd (cargo xtask vm-test)");
    crate::vm::run(&crate::vm::VmTestArgs::default())?;
    Ok(())
}

const UNIT_TEST_ARGS: &[&str] = &["test", "--release", "--workspace", "--exclude", "oomwatch-ebpf", "--exclude", "oomwatch-tests"];

/// Runs every unit-test binary as uid/gid 65534 in a scratch directory:
/// `cargo xtask test --unit` must pass for a developer without root, and
/// a unit test that quietly needs root would only show on their machine.
fn unit_tests_unprivileged(root: &std::path::Path) -> Result<()> {
    let mut args: Vec<&str> = UNIT_TEST_ARGS.to_vec();
    args.extend(["--no-run", "--message-format=json"]);
    let out = crate::cmd_output(Command::new("cargo").current_dir(root).args(&args))?;
    let binaries: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == true)
        .filter_map(|v| v["executable"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(!binaries.is_empty(), "no unit-test binaries found in cargo's output");
    let scratch = std::env::temp_dir().join(format!("oomwatch-unit-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // Sticky, as /tmp: the daemon refuses a socket directory that other
    // users could change, and the socket unit tests bind below this one.
    std::fs::set_permissions(&scratch, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    let result = binaries.iter().try_for_each(|bin| {
        run_cmd(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin, "--quiet"])
                .current_dir(&scratch)
                .env("HOME", &scratch)
                .env("TMPDIR", &scratch),
        )
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// prometheus (with promtool), prometheus-alertmanager (with amtool),
/// prometheus-pushgateway, and systemd for `systemd-analyze verify`.
pub const ECOSYSTEM_PACKAGES: &[&str] = &[
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-pushgateway",
    "systemd",
    // tests/tests/runtime.rs: a private dockerd and containerd, and the image they run.
    "docker.io",
    "busybox-static",
];

pub fn run(args: TestArgs) -> Result<()> {
    run_suite(&args)?;
    println!("\nxtask test: all passed");
    Ok(())
}

fn section(name: &str) {
    println!("\n==== {name} ====");
}
