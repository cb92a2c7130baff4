//! `cargo xtask vm-test`: the real scenarios of the integration tests, inside
//! a Debian 6.1 VM under QEMU (pure cgroup v2, kprobes available). The host's
//! kernel is a 6.18 with a hybrid cgroup layout; this is the second column
//! of the kernel matrix.
//!
//! The guest is driven by tests/vm/ (busybox sh) and only reports; the
//! assertions are here, in report.rs, against what it printed on the serial
//! console. Everything the run produces stays in target/vm/ (console.log,
//! qemu.log, the image) for debugging.

mod cpio;
mod image;
mod report;

use std::{
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
/// A run takes about 15 s; the margin is for a loaded CI machine, and keeps
/// the whole vm-test under 5 minutes even with a fresh package install.
const TIMEOUT_SECS: u64 = 120;

#[derive(clap::Args, Clone, Debug)]
pub struct VmTestArgs {
    /// Run only this scenario (repeatable); default: all of them.
    #[arg(long = "scenario", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(report::SCENARIO_NAMES))]
    pub scenarios: Vec<String>,
    /// Give up on the VM after this many seconds (the whole run must stay under 5 minutes).
    #[arg(long, default_value_t = TIMEOUT_SECS, value_name = "SECS")]
    pub timeout: u64,
}

impl Default for VmTestArgs {
    fn default() -> Self {
        Self { scenarios: Vec::new(), timeout: TIMEOUT_SECS }
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
    let release = target.join("release");
    let (oomwatch, memhog) = (release.join("oomwatch"), release.join("memhog"));
    let initrd = image::build_initramfs(
        &vm_dir,
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
    println!("vm-test: booting {} under TCG (scenarios: {})", kernel.package, scenarios.join(", "));
    let boot = boot(&kernel.vmlinuz, &initrd, &vm_dir, &append, Duration::from_secs(args.timeout))?;
    let console_log = vm_dir.join("console.log");
    let booted = boot.elapsed;

    let fail = |why: String| -> Result<()> {
        print_console_tail(&boot.console);
        bail!("vm-test: {why} (full console: {})", console_log.display())
    };
    match boot.outcome {
        Outcome::TimedOut => return fail(format!("the VM did not finish within {} s; qemu was killed", args.timeout)),
        Outcome::Exited(status) if !status.success() => {
            let log = fs::read_to_string(vm_dir.join("qemu.log")).unwrap_or_default();
            return fail(format!("{QEMU} exited with {status}: {}", log.trim().replace('\n', " | ")));
        }
        Outcome::Exited(_) => {}
    }

    let results = report::Results::parse(&boot.console);
    let verdict = report::check(&results, &scenarios, &kernel);
    verdict.print();
    println!(
        "vm-test: {:.0} s in all ({:.0} s preparing, {:.0} s in the VM)",
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        booted.as_secs_f64()
    );
    if !verdict.failures.is_empty() {
        return fail(format!(
            "{} of {} expectations failed on the 6.1 guest (the FAIL lines above)",
            verdict.failures.len(),
            verdict.failures.len() + verdict.passed.len()
        ));
    }
    Ok(())
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
    let boot = boot(&kernel.vmlinuz, &initrd, &vm_dir, &append, Duration::from_secs(args.timeout))?;
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
}

fn boot(vmlinuz: &Path, initrd: &Path, vm_dir: &Path, append: &str, timeout: Duration) -> Result<Boot> {
    let console_path = vm_dir.join("console.log");
    let qemu_log_path = vm_dir.join("qemu.log");
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
                        if let Some(at) = text.find("vm-driver: ") {
                            println!("  [{:>5.1}s] {}", started.elapsed().as_secs_f64(), text[at + 11..].trim_end());
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
    Ok(Boot { console, outcome, elapsed })
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
