//! The guest: Debian's 6.1 kernel, taken out of its package into target/vm/
//! (never installed into the host's /boot), and an initramfs of busybox,
//! oomwatch, memhog, their shared libraries and the driver in tests/vm/.
//! The systemd guest (systemd.rs) boots the same kernel with a small
//! initramfs of busybox and the few modules that mount its root disk.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::cpio::{Archive, Entry};
use crate::{cmd_output, run};

/// The meta-package whose dependency names the current Debian 12 kernel.
const KERNEL_META: &str = "linux-image-amd64";
const BUSYBOX: &str = "/bin/busybox";
/// What the systemd guest's initramfs loads to mount its root disk (Debian
/// builds virtio and ext4 as modules); their dependencies come along.
/// crc32c: ext4's checksums ask the crypto API for it at mount time.
const ROOT_DISK_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

pub struct Kernel {
    /// e.g. linux-image-6.1.0-48-amd64
    pub package: String,
    /// e.g. 6.1.172-1
    pub version: String,
    pub vmlinuz: PathBuf,
    /// ROOT_DISK_MODULES and their dependencies as NAME.ko, and `order`:
    /// their names, one a line, in an order insmod can load them.
    pub modules: PathBuf,
}

/// The kernel image, downloaded and unpacked once; later runs reuse it.
pub fn ensure_kernel(vm_dir: &Path) -> Result<Kernel> {
    let kernels = vm_dir.join("kernel");
    let package = match kernel_package() {
        Ok(p) => p,
        // Offline, or no package lists: a kernel unpacked earlier still serves.
        Err(e) => match cached_packages(&kernels).pop() {
            Some(p) => {
                println!("vm-test: {e:#}; using the cached {p}");
                p
            }
            None => return Err(e),
        },
    };
    if !package.starts_with("linux-image-6.1.") {
        bail!("`apt-cache depends {KERNEL_META}` names {package}, not a 6.1 kernel: this test targets Debian 12's 6.1");
    }
    let dir = kernels.join(&package);
    let vmlinuz = dir.join("vmlinuz");
    let modules = dir.join("modules");
    if vmlinuz.exists() && modules.join("order").exists() {
        let version = fs::read_to_string(dir.join("version")).unwrap_or_default().trim().to_owned();
        return Ok(Kernel { package, version, vmlinuz, modules });
    }
    // Unpacked by an older xtask without the modules: unpack again.
    let _ = fs::remove_dir_all(&dir);

    let download = kernels.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    println!("vm-test: downloading {package} (about 70 MB, once)");
    let mut get = Command::new("apt-get");
    get.current_dir(&download).arg("download").arg(&package);
    if crate::is_root() {
        // apt drops to the _apt user for downloads, who cannot write here.
        get.args(["-o", "APT::Sandbox::User=root"]);
    }
    run(&mut get).with_context(|| format!("apt-get download {package} (in {})", download.display()))?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb in {}", download.display()))?;
    let version = cmd_output(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?.trim().to_owned();

    // boot/ (8 MB) and a dozen modules: everything the scenarios use is built
    // in (BPF, kprobes, memcg, PSI, tracefs, cgroup2), only the systemd
    // guest's root disk needs modules.
    let staging = kernels.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    extract(&deb, &staging, "./boot")?;
    extract_root_disk_modules(&deb, &staging)?;
    let boot = staging.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        fs::read_dir(&boot)
            .with_context(|| format!("reading {}", boot.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .with_context(|| format!("{} has no boot/{prefix}*", deb.display()))
    };
    fs::rename(find("vmlinuz-")?, staging.join("vmlinuz"))?;
    fs::rename(find("config-")?, staging.join("config"))?;
    fs::remove_dir_all(&boot)?;
    fs::write(staging.join("version"), format!("{version}\n"))?;
    fs::rename(&staging, &dir).with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    fs::remove_dir_all(&download)?;
    Ok(Kernel { package, version, vmlinuz, modules })
}

/// Unpacks the package's modules (390 MB) for a moment, resolves
/// ROOT_DISK_MODULES' dependencies with busybox's depmod (the package ships
/// no modules.dep: its postinst makes one) and keeps only those.
fn extract_root_disk_modules(deb: &Path, staging: &Path) -> Result<()> {
    let all = staging.join("all-modules");
    fs::create_dir_all(&all)?;
    extract(deb, &all, "./lib/modules")?;
    let versions = all.join("lib/modules");
    let release = fs::read_dir(&versions)
        .with_context(|| format!("reading {}", versions.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} has no lib/modules/RELEASE", deb.display()))?;
    run(Command::new(BUSYBOX).arg("depmod").arg("-b").arg(&all).arg(&release)).context("busybox depmod")?;
    let dep_file = versions.join(&release).join("modules.dep");
    let deps = parse_modules_dep(&fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?);
    let order = load_order(&deps, ROOT_DISK_MODULES)?;
    let out = staging.join("modules");
    fs::create_dir_all(&out)?;
    for name in &order {
        let (path, _) = &deps[name];
        fs::copy(versions.join(&release).join(path), out.join(format!("{name}.ko"))).with_context(|| format!("copying {path}"))?;
    }
    fs::write(out.join("order"), order.join("\n") + "\n")?;
    fs::remove_dir_all(&all)?;
    Ok(())
}

/// modules.dep: "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko ..." as
/// name -> (path, names of its dependencies).
fn parse_modules_dep(text: &str) -> std::collections::BTreeMap<String, (String, Vec<String>)> {
    let name = |path: &str| path.rsplit('/').next().unwrap_or(path).split('.').next().unwrap_or(path).replace('-', "_");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(path, deps)| (name(path), (path.to_owned(), deps.split_whitespace().map(name).collect())))
        .collect()
}

/// Dependencies before the modules that need them.
fn load_order(deps: &std::collections::BTreeMap<String, (String, Vec<String>)>, wanted: &[&str]) -> Result<Vec<String>> {
    fn visit(name: &str, deps: &std::collections::BTreeMap<String, (String, Vec<String>)>, out: &mut Vec<String>, depth: usize) -> Result<()> {
        if out.iter().any(|n| n == name) {
            return Ok(());
        }
        if depth > 64 {
            bail!("modules.dep: a dependency cycle through {name}");
        }
        let (_, needs) = deps.get(name).with_context(|| format!("modules.dep has no module {name}"))?;
        for d in needs.iter().rev() {
            visit(d, deps, out, depth + 1)?;
        }
        out.push(name.to_owned());
        Ok(())
    }
    let mut out = Vec::new();
    for w in wanted {
        visit(w, deps, &mut out, 0)?;
    }
    Ok(out)
}

fn kernel_package() -> Result<String> {
    let depends = || cmd_output(Command::new("apt-cache").args(["depends", KERNEL_META]));
    let parse = |text: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_owned)
    };
    if let Some(p) = depends().ok().as_deref().and_then(parse) {
        return Ok(p);
    }
    // A fresh machine may have no package lists yet.
    if crate::is_root() {
        run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
        if let Some(p) = depends().ok().as_deref().and_then(parse) {
            return Ok(p);
        }
    }
    bail!("`apt-cache depends {KERNEL_META}` names no linux-image package (run apt-get update as root)")
}

fn cached_packages(kernels: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(kernels)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("vmlinuz").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x MEMBER`, without a shell.
fn extract(deb: &Path, into: &Path, member: &str) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .arg(member)
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("cannot start tar")?;
    let dpkg = dpkg.wait()?;
    if !dpkg.success() || !tar.success() {
        bail!("extracting {member} from {} failed (dpkg-deb {dpkg}, tar {tar})", deb.display());
    }
    Ok(())
}

/// What goes into the image besides busybox and the driver.
pub struct GuestBinary<'a> {
    pub host: &'a Path,
    /// Where it lands in the guest, e.g. usr/bin/oomwatch.
    pub guest: &'a str,
}

/// Builds `vm_dir/initrd.gz` from the given binaries and tests/vm/.
pub fn build_initramfs(vm_dir: &Path, guest_files: &Path, binaries: &[GuestBinary]) -> Result<PathBuf> {
    let mut a = Archive::default();
    for dir in ["proc", "sys", "dev", "run", "tmp", "root"] {
        a.add(dir, Entry::Dir);
    }
    // The kernel opens /dev/console for init's stdio before anything is
    // mounted; without this node init starts with no output at all.
    a.add("dev/console", Entry::CharDev { major: 5, minor: 1 });

    add_file(&mut a, Path::new(BUSYBOX), "bin/busybox", 0o755)?;
    let applets = cmd_output(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "bin/busybox") {
        a.add(applet, Entry::Symlink("/bin/busybox".into()));
    }

    let mut libs = shared_libraries(Path::new(BUSYBOX))?;
    for b in binaries {
        if !b.host.exists() {
            bail!("{} is missing: it should have been built by `cargo build --release -p oomwatch -p oomwatch-tests`", b.host.display());
        }
        add_file(&mut a, b.host, b.guest, 0o755)?;
        libs.extend(shared_libraries(b.host)?);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        // fs::read follows symlinks: the guest gets the file at the path the
        // loader looks for.
        add_file(&mut a, lib, &lib.to_string_lossy(), 0o755)?;
    }

    add_file(&mut a, &guest_files.join("init"), "init", 0o755)?;
    add_file(&mut a, &guest_files.join("driver.sh"), "vm/driver.sh", 0o644)?;
    add_file(&mut a, &guest_files.join("kmsg_capture.sh"), "vm/kmsg_capture.sh", 0o644)?;

    let cpio = vm_dir.join("initrd.cpio");
    fs::write(&cpio, a.to_bytes()).with_context(|| format!("writing {}", cpio.display()))?;
    let gz = vm_dir.join("initrd.gz");
    let out = fs::File::create(&gz).with_context(|| format!("creating {}", gz.display()))?;
    // -n: no name or timestamp in the header, so the same inputs give the same image.
    run(Command::new("gzip").args(["-n", "-6", "-c"]).arg(&cpio).stdout(out)).context("gzip of the initramfs")?;
    fs::remove_file(&cpio)?;
    Ok(gz)
}

fn add_file(a: &mut Archive, host: &Path, guest: &str, mode: u32) -> Result<()> {
    let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
    a.add(guest, Entry::File { mode, data });
    Ok(())
}

/// The libraries `ldd` resolves for a binary, the loader included.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("cannot start ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd's way of saying "static": nothing to copy.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable") || text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", bin.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("a library is not found: {line}");
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no path.
        let path = line.split_once("=>").map_or(line, |(_, p)| p).trim();
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn modules_load_after_what_they_need() {
        let deps = parse_modules_dep(
            "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
             kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_ring.ko:\n",
        );
        let order = load_order(&deps, &["virtio_blk", "ext4"]).unwrap();
        assert_eq!(order, ["virtio_ring", "virtio", "virtio_blk", "crc16", "mbcache", "jbd2", "ext4"]);
        assert!(load_order(&deps, &["nope"]).unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn missing_library_is_an_error() {
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}
