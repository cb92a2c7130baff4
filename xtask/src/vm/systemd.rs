//! The systemd guest: Debian bookworm (rootfs.rs) on the same 6.1 kernel as
//! the busybox guest, systemd as PID 1. The package built by `cargo xtask
//! deb` is installed with apt inside, and tests/vm/systemd/driver.sh runs
//! its checks as a unit, reporting on the serial console.
//!
//! Boot: a small initramfs of our own (busybox, the virtio and ext4 modules
//! of the kernel package, tests/vm/systemd/init) mounts the cached root disk
//! (a QEMU snapshot: the image is never written), copies this run's files
//! onto it and switch_roots to systemd.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    VmTestArgs, boot,
    cpio::{Archive, Entry},
    image::Kernel,
    report::Results,
    rootfs, systemd_report,
};
use crate::workspace_root;

const DRIVER_UNIT: &str = "oomwatch-vm-test.service";

/// Directives the unit does not set, each tried on its own by
/// `--hardening-matrix` (name; directives separated by ';'; a shell command
/// that prepares the host, e.g. a sysctl). The findings are in the comments
/// of deploy/systemd/oomwatch.service.
const HARDENING_CANDIDATES: &[(&str, &str, &str)] = &[
    ("baseline (the unit as shipped)", "", ""),
    ("no CAP_SYS_ADMIN", "CapabilityBoundingSet=~CAP_SYS_ADMIN", ""),
    ("no CAP_SYS_ADMIN, perf_event_paranoid=2", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "sysctl -q kernel.perf_event_paranoid=2"),
    ("no CAP_SYS_RESOURCE", "CapabilityBoundingSet=~CAP_SYS_RESOURCE", ""),
    ("no CAP_DAC_READ_SEARCH", "CapabilityBoundingSet=~CAP_DAC_READ_SEARCH", ""),
    ("no CAP_BPF, CAP_PERFMON", "CapabilityBoundingSet=~CAP_BPF CAP_PERFMON", ""),
    ("User=nobody + ambient capabilities", "User=nobody;AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_SYS_RESOURCE", ""),
    ("ProtectControlGroups", "ProtectControlGroups=yes", ""),
    ("ProtectProc=invisible", "ProtectProc=invisible", ""),
    ("ProcSubset=pid", "ProcSubset=pid", ""),
    ("PrivateUsers", "PrivateUsers=yes", ""),
    ("PrivateNetwork", "PrivateNetwork=yes", ""),
    ("SystemCallFilter=~@privileged", "SystemCallFilter=~@privileged", ""),
    ("SystemCallFilter=~@debug", "SystemCallFilter=~@debug", ""),
];

pub fn run(args: &VmTestArgs, kernel: &Kernel, vm_dir: &Path, target: &Path, reference: Option<&BTreeMap<String, f64>>, reference_file: &Path) -> Result<()> {
    let started = Instant::now();
    let base = rootfs::ensure(vm_dir)?;
    match base.built_in {
        Some(s) => println!("vm-test: built the base image {} in {s:.0} s (cold)", base.path.display()),
        None => println!("vm-test: base image {} (cached)", base.path.display()),
    }
    let image_s = started.elapsed().as_secs_f64();
    let package = crate::deb::build_package(&target.join("release/oomwatch"))?;
    println!("vm-test: package {}", package.deb.display());

    let mut env = String::new();
    if args.hardening_matrix {
        env.push_str("OOMWATCH_CHECKS='boot install active hardening'\n");
    }
    let initrd = build_initramfs(vm_dir, kernel, &package.deb, &target.join("release/memhog"), &env, &args.hardening_only)?;
    let prepared_s = started.elapsed().as_secs_f64();

    let append = "console=ttyS0 psi=1 quiet panic=-1 systemd.show_status=0";
    let mut disk = OsString::from("file=");
    disk.push(&base.path);
    disk.push(",format=raw,if=virtio,snapshot=on");
    println!("vm-test: booting {} under TCG, systemd guest (Debian {})", kernel.package, rootfs::SUITE);
    let boot = boot(&kernel.vmlinuz, &initrd, vm_dir, "systemd", append, &["-drive".into(), disk], Duration::from_secs(args.systemd_timeout))?;
    boot.fail_unless_exited(args.systemd_timeout)?;

    let results = Results::parse(&boot.console);
    if args.hardening_matrix {
        let names: Vec<&str> = HARDENING_CANDIDATES
            .iter()
            .map(|(name, ..)| *name)
            .filter(|name| args.hardening_only.is_empty() || name.starts_with("baseline") || args.hardening_only.iter().any(|o| name.contains(o.as_str())))
            .collect();
        let verdict = systemd_report::hardening_matrix(&results, &names);
        verdict.print();
        if !verdict.failures.is_empty() {
            return boot.fail("the baseline of the hardening matrix failed (above)".into());
        }
        return Ok(());
    }
    let timings = systemd_report::Timings { image_s, image_cold: base.built_in.is_some(), prepared_s, vm_s: boot.elapsed.as_secs_f64() };
    let verdict = systemd_report::check(&results, &boot.console, reference, reference_file, &package.version, &timings);
    verdict.print();
    println!(
        "vm-test: systemd guest: {:.0} s in all (base image {:.0} s{}, package and initramfs {:.0} s, {:.0} s in the VM)",
        started.elapsed().as_secs_f64(),
        image_s,
        if base.built_in.is_some() { ", built now" } else { ", cached" },
        prepared_s - image_s,
        boot.elapsed.as_secs_f64()
    );
    if !verdict.failures.is_empty() {
        return boot.fail(format!(
            "{} of {} expectations failed on the systemd guest (the FAIL lines above)",
            verdict.failures.len(),
            verdict.failures.len() + verdict.passed.len()
        ));
    }
    Ok(())
}

/// vm_dir/systemd-initrd.gz: busybox, the root disk's modules, the init
/// script, and under payload/ what the init copies onto the root disk.
fn build_initramfs(vm_dir: &Path, kernel: &Kernel, deb: &Path, memhog: &Path, env: &str, only: &[String]) -> Result<std::path::PathBuf> {
    let guest = workspace_root().join("tests/vm/systemd");
    let mut a = Archive::default();
    for dir in ["proc", "sys", "dev", "newroot"] {
        a.add(dir, Entry::Dir);
    }
    a.add("dev/console", Entry::CharDev { major: 5, minor: 1 });
    a.add("bin/busybox", file(Path::new("/bin/busybox"), 0o755)?);
    a.add("init", file(&guest.join("init"), 0o755)?);
    let order = fs::read_to_string(kernel.modules.join("order")).with_context(|| format!("reading {}", kernel.modules.join("order").display()))?;
    a.add("modules/order", Entry::File { mode: 0o644, data: order.clone().into_bytes() });
    for name in order.lines().filter(|l| !l.is_empty()) {
        a.add(&format!("modules/{name}.ko"), file(&kernel.modules.join(format!("{name}.ko")), 0o644)?);
    }

    let deb_name = deb.file_name().context("the package has a file name")?.to_string_lossy().into_owned();
    a.add(&format!("payload/root/vm/{deb_name}"), file(deb, 0o644)?);
    a.add("payload/root/vm/memhog", file(memhog, 0o755)?);
    a.add("payload/root/vm/driver.sh", file(&guest.join("driver.sh"), 0o644)?);
    a.add("payload/root/vm/env", Entry::File { mode: 0o644, data: env.as_bytes().to_vec() });
    let hardening: String = HARDENING_CANDIDATES
        .iter()
        .filter(|(name, ..)| only.is_empty() || name.starts_with("baseline") || only.iter().any(|o| name.contains(o.as_str())))
        .map(|(name, directives, setup)| format!("{name}\t{directives}\t{setup}\n"))
        .collect();
    a.add("payload/root/vm/hardening", Entry::File { mode: 0o644, data: hardening.into_bytes() });
    a.add(&format!("payload/etc/systemd/system/{DRIVER_UNIT}"), file(&guest.join(DRIVER_UNIT), 0o644)?);
    a.add(&format!("payload/etc/systemd/system/multi-user.target.wants/{DRIVER_UNIT}"), Entry::Symlink(format!("/etc/systemd/system/{DRIVER_UNIT}")));

    let gz = vm_dir.join("systemd-initrd.gz");
    let out = fs::File::create(&gz).with_context(|| format!("creating {}", gz.display()))?;
    let cpio = vm_dir.join("systemd-initrd.cpio");
    fs::write(&cpio, a.to_bytes()).with_context(|| format!("writing {}", cpio.display()))?;
    // -1: the package is already compressed; the kernel unpacks faster than it would read more.
    crate::run(std::process::Command::new("gzip").args(["-n", "-1", "-c"]).arg(&cpio).stdout(out)).context("gzip of the initramfs")?;
    fs::remove_file(&cpio)?;
    Ok(gz)
}

fn file(path: &Path, mode: u32) -> Result<Entry> {
    Ok(Entry::File { mode, data: fs::read(path).with_context(|| format!("reading {}", path.display()))? })
}
