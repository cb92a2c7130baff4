//! `cargo xtask vm-test`: the real scenarios of the integration tests, inside
//! a Debian 6.1 VM under QEMU (pure cgroup v2, kprobes available). The host's
//! kernel is a 6.18 with a hybrid cgroup layout; this is the second column
//! of the kernel matrix.
//!
//! Two guests boot the same kernel. The busybox guest (an initramfs, tests/vm/)
//! runs the daemon by hand through the kill and pressure scenarios. The
//! systemd guest (systemd.rs, tests/vm/systemd/) is a Debian bookworm disk
//! with systemd as PID 1: the Debian package is installed with apt and the
//! daemon runs under its unit, through install, reload, restart, upgrade,
//! stop, remove and purge.
//!
//! Guests only report; the assertions are here, in report.rs and
//! systemd_report.rs, against what they printed on the serial console.
//! Everything a run produces stays in target/vm/ (console logs, qemu logs,
//! the images) for debugging.

mod cpio;
mod image;
mod report;
mod report_episodes;
mod rootfs;
mod systemd;
mod systemd_report;

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{apt, run as run_cmd, workspace_root};

const QEMU: &str = "qemu-system-x86_64";
/// Lines of console shown when something went wrong.
const CONSOLE_TAIL: usize = 80;
/// A run takes about 15 s on an idle host, and took 112 s (and once more than
/// 120) on a 2-core host at load 10-15; the margin is for such a machine.
const TIMEOUT_SECS: u64 = 300;
/// The systemd guest takes about four minutes under TCG on a busy 2-core
/// host (boot 20 s, apt install 50 s, restarts, remove, purge); the margin
/// is for a busier one.
const SYSTEMD_TIMEOUT_SECS: u64 = 600;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// The daemon started by hand in a busybox initramfs: the kill and pressure scenarios.
    Busybox,
    /// Debian bookworm with systemd as PID 1: the package and the unit.
    Systemd,
}

#[derive(clap::Args, Clone, Debug)]
pub struct VmTestArgs {
    /// Run only this scenario of the busybox guest (repeatable); default: all of them.
    #[arg(long = "scenario", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(report::SCENARIO_NAMES))]
    pub scenarios: Vec<String>,
    /// Boot only this guest (repeatable); default: both, busybox first (the
    /// systemd guest compares its probes with the busybox guest's).
    #[arg(long = "guest", value_name = "GUEST")]
    pub guests: Vec<Guest>,
    /// Give up on the busybox VM after this many seconds.
    #[arg(long, default_value_t = TIMEOUT_SECS, value_name = "SECS")]
    pub timeout: u64,
    /// Give up on the systemd VM after this many seconds.
    #[arg(long, default_value_t = SYSTEMD_TIMEOUT_SECS, value_name = "SECS")]
    pub systemd_timeout: u64,
    /// Instead of the checks, try each hardening directive not in the unit
    /// on its own in the systemd guest and report what it breaks.
    #[arg(long)]
    pub hardening_matrix: bool,
    /// With --hardening-matrix: only the candidates whose name contains this (repeatable).
    #[arg(long, value_name = "TEXT", requires = "hardening_matrix")]
    pub hardening_only: Vec<String>,
}

impl Default for VmTestArgs {
    fn default() -> Self {
        Self { scenarios: Vec::new(), guests: Vec::new(), timeout: TIMEOUT_SECS, systemd_timeout: SYSTEMD_TIMEOUT_SECS, hardening_matrix: false, hardening_only: Vec::new() }
    }
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

pub fn run(args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let target = target_dir();
    let vm_dir = target.join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;

    apt::ensure(&["qemu-system-x86", "busybox-static"])?;
    let kernel = image::ensure_kernel(&vm_dir)?;
    println!("vm-test: kernel {} {} ({})", kernel.package, kernel.version, kernel.vmlinuz.display());

    crate::setup::setup()?;
    run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "oomwatch", "-p", "oomwatch-tests"]))?;
    let guests = if args.guests.is_empty() { vec![Guest::Busybox, Guest::Systemd] } else { args.guests.clone() };
    let probes_file = vm_dir.join(format!("busybox-probes-{}.json", kernel.package));
    if guests.contains(&Guest::Busybox) && !args.hardening_matrix {
        let probes = run_busybox(args, &kernel, &vm_dir, &target)?;
        fs::write(&probes_file, serde_json::to_string_pretty(&probes)?).with_context(|| format!("writing {}", probes_file.display()))?;
    }
    if guests.contains(&Guest::Systemd) || args.hardening_matrix {
        // The reference: this run's busybox guest, or the last one on this kernel.
        let reference: Option<BTreeMap<String, f64>> = fs::read_to_string(&probes_file).ok().and_then(|t| serde_json::from_str(&t).ok());
        systemd::run(args, &kernel, &vm_dir, &target, reference.as_ref(), &probes_file)?;
    }
    println!("vm-test: {:.0} s in all", started.elapsed().as_secs_f64());
    Ok(())
}

/// The busybox guest; returns the probes that attached there.
fn run_busybox(args: &VmTestArgs, kernel: &image::Kernel, vm_dir: &Path, target: &Path) -> Result<BTreeMap<String, f64>> {
    let started = Instant::now();
    let root = workspace_root();
    let release = target.join("release");
    let (oomwatch, memhog) = (release.join("oomwatch"), release.join("memhog"));
    let initrd = image::build_initramfs(
        vm_dir,
        &root.join("tests/vm"),
        &[
            image::GuestBinary { host: &oomwatch, guest: "usr/bin/oomwatch" },
            image::GuestBinary { host: &memhog, guest: "usr/bin/memhog" },
        ],
    )?;
    let prepared = started.elapsed();

    let scenarios: Vec<&str> =
        if args.scenarios.is_empty() { report::SCENARIO_NAMES.to_vec() } else { args.scenarios.iter().map(String::as_str).collect() };
    let mut append = "console=ttyS0 psi=1 quiet panic=-1".to_owned();
    if !args.scenarios.is_empty() {
        // Unknown NAME=value words on the kernel command line become init's environment.
        append.push_str(&format!(" OOMWATCH_SCENARIOS={}", scenarios.join(",")));
    }
    println!("vm-test: booting {} under TCG, busybox guest (scenarios: {})", kernel.package, scenarios.join(", "));
    let boot = boot(&kernel.vmlinuz, &initrd, vm_dir, "busybox", &append, &[], Duration::from_secs(args.timeout))?;
    boot.fail_unless_exited(args.timeout)?;
    let booted = boot.elapsed;

    let results = report::Results::parse(&boot.console);
    let verdict = report::check(&results, &scenarios, kernel);
    verdict.print();
    println!(
        "vm-test: busybox guest: {:.0} s in all ({:.0} s preparing, {:.0} s in the VM)",
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        booted.as_secs_f64()
    );
    if !verdict.failures.is_empty() {
        return boot.fail(format!(
            "{} of {} expectations failed on the 6.1 busybox guest (the FAIL lines above)",
            verdict.failures.len(),
            verdict.failures.len() + verdict.passed.len()
        ));
    }
    Ok(results.probes_attached())
}

#[derive(clap::Args, Clone, Debug)]
pub struct KmsgCaptureArgs {
    /// Where the <scenario>.kmsg files go.
    #[arg(long, default_value = "oomwatch/tests/fixtures/kmsg/6.1", value_name = "DIR")]
    pub out: PathBuf,
    /// Only these scenarios (of tests/vm/kmsg_capture.sh); default: all.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

/// Boots the 6.1 guest with tests/vm/kmsg_capture.sh instead of the test
/// driver: real OOM kills (memcg, shmem, memory.oom.group, a rate-limited
/// storm, hostile names, a global OOM), each scenario's /dev/kmsg records
/// written to OUT/<scenario>.kmsg exactly as the guest read them.
pub fn capture_kmsg(args: &KmsgCaptureArgs) -> Result<()> {
    let root = workspace_root();
    let target = target_dir();
    let vm_dir = target.join("vm-kmsg");
    fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    apt::ensure(&["qemu-system-x86", "busybox-static"])?;
    let kernel = image::ensure_kernel(&target.join("vm"))?;
    run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "oomwatch-tests", "--bins"]))?;
    let release = target.join("release");
    let (memhog, capture) = (release.join("memhog"), release.join("kmsg_capture"));
    let initrd = image::build_initramfs(
        &vm_dir,
        &root.join("tests/vm"),
        &[
            image::GuestBinary { host: &memhog, guest: "usr/bin/memhog" },
            image::GuestBinary { host: &capture, guest: "usr/bin/kmsg_capture" },
        ],
    )?;
    let mut append = "console=ttyS0 quiet panic=-1 OOMWATCH_KMSG_CAPTURE=1".to_owned();
    if !args.scenarios.is_empty() {
        append.push_str(&format!(" OOMWATCH_KMSG_SCENARIOS={}", args.scenarios.join(",")));
    }
    println!("vm-kmsg-capture: booting {} under TCG", kernel.package);
    let boot = boot(&kernel.vmlinuz, &initrd, &vm_dir, "busybox", &append, &[], Duration::from_secs(args.timeout))?;
    if matches!(boot.outcome, Outcome::TimedOut) || !boot.console.contains("OOMWATCH-KMSG-END") {
        print_console_tail(&boot.console);
        bail!("vm-kmsg-capture: the guest did not finish (console: {})", vm_dir.join("console.log").display());
    }
    let kernel_release = boot.console.lines().find_map(|l| l.strip_prefix("OOMWATCH-KMSG-KERNEL ")).unwrap_or("?").trim().to_owned();
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut files: Vec<(String, String)> = Vec::new();
    for line in boot.console.lines() {
        let Some(rest) = line.strip_prefix("OOMWATCH-KMSG ") else { continue };
        let Some((scenario, record)) = rest.split_once(' ') else { continue };
        match files.iter_mut().find(|(s, _)| s == scenario) {
            Some((_, text)) => {
                text.push_str(record);
                text.push('\n');
            }
            None => files.push((scenario.to_owned(), format!("{record}\n"))),
        }
    }
    for (scenario, text) in &files {
        let path = args.out.join(format!("{scenario}.kmsg"));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("vm-kmsg-capture: {} ({} records, kernel {kernel_release})", path.display(), text.lines().count());
    }
    Ok(())
}

enum Outcome {
    Exited(ExitStatus),
    TimedOut,
}

struct Boot {
    console: String,
    outcome: Outcome,
    elapsed: Duration,
    console_log: PathBuf,
    qemu_log: PathBuf,
}

impl Boot {
    fn fail<T>(&self, why: String) -> Result<T> {
        print_console_tail(&self.console);
        bail!("vm-test: {why} (full console: {})", self.console_log.display())
    }

    /// A guest that ran out of time, or a QEMU that failed, is a failure
    /// with the console's last lines, never a skip.
    fn fail_unless_exited(&self, timeout: u64) -> Result<()> {
        match &self.outcome {
            Outcome::TimedOut => self.fail(format!("the VM did not finish within {timeout} s; qemu was killed")),
            Outcome::Exited(status) if !status.success() => {
                let log = fs::read_to_string(&self.qemu_log).unwrap_or_default();
                self.fail(format!("{QEMU} exited with {status}: {}", log.trim().replace('\n', " | ")))
            }
            Outcome::Exited(_) => Ok(()),
        }
    }
}

/// Boots the kernel and initrd with `extra` QEMU arguments (disks), records
/// the console to vm_dir/NAME-console.log (console.log for busybox, as
/// before) and prints the guest's "vm-driver:" progress lines live.
fn boot(vmlinuz: &Path, initrd: &Path, vm_dir: &Path, name: &str, append: &str, extra: &[OsString], timeout: Duration) -> Result<Boot> {
    let prefix = if name == "busybox" { String::new() } else { format!("{name}-") };
    let console_path = vm_dir.join(format!("{prefix}console.log"));
    let qemu_log_path = vm_dir.join(format!("{prefix}qemu.log"));
    let mut console_file = fs::File::create(&console_path).with_context(|| format!("creating {}", console_path.display()))?;
    let qemu_log = fs::File::create(&qemu_log_path).with_context(|| format!("creating {}", qemu_log_path.display()))?;

    let started = Instant::now();
    // KVM does not work on these machines; TCG does, at a few times slower.
    let mut child = Command::new(QEMU)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .args(extra)
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(qemu_log)
        .spawn()
        .with_context(|| format!("cannot start {QEMU} (package qemu-system-x86)"))?;
    let pid = child.id();

    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = {
        let console = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut line = Vec::new();
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = console_file.write_all(&buf[..n]);
                console.lock().unwrap().extend_from_slice(&buf[..n]);
                // Progress lines from the driver, live, so a slow run is not silent.
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let text = String::from_utf8_lossy(&line);
                        for mark in ["vm-driver: ", "vm-initramfs: "] {
                            if let Some(at) = text.find(mark) {
                                println!("  [{:>5.1}s] {}", started.elapsed().as_secs_f64(), text[at + mark.len()..].trim_end());
                            }
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
        })
    };

    let deadline = started + timeout;
    let outcome = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {QEMU} (pid {pid})"))? {
            break Outcome::Exited(status);
        }
        if Instant::now() >= deadline {
            // Child::kill signals exactly the pid we started.
            let _ = child.kill();
            let _ = child.wait();
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let elapsed = started.elapsed();
    let console = String::from_utf8_lossy(&console.lock().unwrap()).replace('\r', "");

    if let Outcome::Exited(status) = &outcome
        && console.trim().is_empty()
    {
        let log = fs::read_to_string(&qemu_log_path).unwrap_or_default();
        bail!("{QEMU} exited ({status}) before the guest printed anything: {}", log.trim().replace('\n', " | "));
    }
    Ok(Boot { console, outcome, elapsed, console_log: console_path, qemu_log: qemu_log_path })
}

fn print_console_tail(console: &str) {
    let lines: Vec<&str> = console.lines().collect();
    let from = lines.len().saturating_sub(CONSOLE_TAIL);
    println!("---- last {} lines of the VM console ----", lines.len() - from);
    for l in &lines[from..] {
        println!("{l}");
    }
    println!("---- end of console ----");
}
