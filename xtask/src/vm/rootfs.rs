//! The systemd guest's root disk: a minimal Debian bookworm made by
//! debootstrap from the Debian mirror the host's apt uses, turned into an
//! ext4 image with `mkfs.ext4 -d` (no loop mount, no mount at all).
//!
//! The image is cached in target/vm/rootfs/KEY/, KEY a hash of everything
//! that goes into it, so a machine pays for debootstrap (about 40 s) once;
//! runs boot it with QEMU's snapshot=on and never change it. What a run
//! brings (the package, the driver) is copied in by the initramfs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd_output, run};

pub const SUITE: &str = "bookworm";
/// systemd as PID 1; procps for /bin/kill (the unit's ExecReload, and a
/// Depends of the package); busybox for wget (the checks read /metrics).
/// No udev: no check needs device units, and coldplug costs seconds under TCG.
const PACKAGES: &[&str] = &["systemd", "systemd-sysv", "procps", "busybox"];
/// Units that would hold the console (getty), wait for input at first boot
/// (firstboot), or wake up during a run (timers).
const MASKED: &[&str] = &[
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "systemd-firstboot.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
];
/// Sparse: only what debootstrap wrote takes room (about 200 MB). The rest
/// is for the package, the state directory and the journal during a run.
const IMAGE_BYTES: u64 = 2 << 30;
/// Bump when the customisation below changes in a way the key cannot see.
const FORMAT: u32 = 2;

pub struct BaseImage {
    pub path: PathBuf,
    /// Seconds spent building it now; None when the cached one served.
    pub built_in: Option<f64>,
}

pub fn ensure(vm_dir: &Path) -> Result<BaseImage> {
    let mirror = mirror()?;
    let manifest = format!(
        "format {FORMAT}\nsuite {SUITE}\nmirror {mirror}\nvariant minbase\npackages {}\nmasked {}\nsize {}G\n",
        PACKAGES.join(","),
        MASKED.join(","),
        IMAGE_BYTES >> 30
    );
    let key = sha256(&manifest)?;
    let base = vm_dir.join("rootfs");
    let dir = base.join(&key[..16]);
    let image = dir.join("root.img");
    if image.exists() {
        return Ok(BaseImage { path: image, built_in: None });
    }
    if !crate::is_root() {
        bail!("building the systemd guest's root disk needs root (debootstrap chroots and makes device nodes): run as root");
    }
    crate::apt::ensure(&["debootstrap", "e2fsprogs"])?;
    // Images of other inputs are stale: one base image per machine.
    if base.exists() {
        for e in fs::read_dir(&base)?.filter_map(|e| e.ok()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let started = Instant::now();
    let partial = base.join(format!("{}.partial", &key[..16]));
    let _ = fs::remove_dir_all(&partial);
    let tree = partial.join("tree");
    fs::create_dir_all(&partial)?;
    println!("vm-test: debootstrap {SUITE} from {mirror} ({}; once per machine, about a minute)", PACKAGES.join(", "));
    let log = partial.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", PACKAGES.join(",")), SUITE])
        .arg(&tree)
        .arg(&mirror)
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(partial.join("debootstrap.err"))?)
        .status()
        .context("cannot start debootstrap")?;
    if !status.success() {
        let err = fs::read_to_string(partial.join("debootstrap.err")).unwrap_or_default();
        let out = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = out.lines().chain(err.lines()).rev().take(15).collect();
        bail!(
            "debootstrap {SUITE} {mirror} failed ({status}); last lines:\n{}\n(logs in {})",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            partial.display()
        );
    }
    customise(&tree, &key)?;
    let img = partial.join("root.img");
    // Sized here (sparse), so mkfs neither creates the file nor says so.
    fs::File::create(&img).and_then(|f| f.set_len(IMAGE_BYTES)).with_context(|| format!("creating {}", img.display()))?;
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "oomwatch-root", "-d"]).arg(&tree).arg(&img)).context("mkfs.ext4 -d")?;
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("manifest"), &manifest)?;
    fs::rename(&img, &image)?;
    fs::remove_dir_all(&partial)?;
    Ok(BaseImage { path: image, built_in: Some(started.elapsed().as_secs_f64()) })
}

/// What a host has that debootstrap does not make, and nothing that waits
/// for a person.
fn customise(tree: &Path, key: &str) -> Result<()> {
    let write = |path: &str, text: &str| -> Result<()> {
        let p = tree.join(path);
        fs::create_dir_all(p.parent().expect("a directory"))?;
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    // Pass 0: the disk is a throwaway snapshot; no fsck at each boot.
    write("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 0\n")?;
    write("etc/hostname", "oomwatch-vm\n")?;
    write("etc/hosts", "127.0.0.1 localhost\n127.0.1.1 oomwatch-vm\n::1 localhost ip6-localhost ip6-loopback\n")?;
    // A machine id makes this boot not the first: nothing asks for a locale.
    write("etc/machine-id", &format!("{}\n", &key[..32]))?;
    for unit in MASKED {
        let link = tree.join("etc/systemd/system").join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).with_context(|| format!("masking {unit}"))?;
    }
    // debootstrap's downloads (40 MB) are not needed in the image, nor the
    // package lists (50 MB): the VM has no network, and apt resolves a local
    // package's dependencies from what is installed. Parsing the lists cost
    // apt 20-40 s per command under TCG.
    let keep_archive: fn(&str) -> bool = |n| !n.ends_with(".deb");
    let keep_list: fn(&str) -> bool = |n| n == "partial" || n == "lock";
    for (dir, keep) in [("var/cache/apt/archives", keep_archive), ("var/lib/apt/lists", keep_list)] {
        let dir = tree.join(dir);
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.filter_map(|e| e.ok()) {
            if !keep(&e.file_name().to_string_lossy()) {
                fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    for cache in ["var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"] {
        let _ = fs::remove_file(tree.join(cache));
    }
    Ok(())
}

fn sha256(text: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().context("cannot start sha256sum")?;
    child.stdin.take().expect("piped").write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    if !out.status.success() || hex.len() != 64 {
        bail!("sha256sum failed: {}", out.status);
    }
    Ok(hex)
}

/// The Debian mirror the host's apt uses for SUITE (the machines reach no
/// other); OOMWATCH_VM_MIRROR overrides it.
pub fn mirror() -> Result<String> {
    if let Ok(m) = std::env::var("OOMWATCH_VM_MIRROR") {
        return Ok(m);
    }
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else { continue };
        let found = match f.extension().and_then(|x| x.to_str()) {
            Some("sources") => mirror_in_deb822(&text),
            Some("list") => mirror_in_one_line_format(&text),
            _ if f.ends_with("sources.list") => mirror_in_one_line_format(&text),
            _ => None,
        };
        if let Some(m) = found {
            return Ok(m);
        }
    }
    let listed = cmd_output(Command::new("ls").arg("/etc/apt/sources.list.d")).unwrap_or_default();
    bail!("no apt source for {SUITE} main in /etc/apt/sources.list or sources.list.d ({}); set OOMWATCH_VM_MIRROR", listed.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `deb [opts] URI SUITE COMPONENTS...`
fn mirror_in_one_line_format(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace().filter(|w| !(w.starts_with('[') || w.ends_with(']') || w.contains('=')));
        if words.next()? != "deb" {
            return None;
        }
        let (uri, suite) = (words.next()?, words.next()?);
        (suite == SUITE && words.any(|c| c == "main")).then(|| uri.to_owned())
    })
}

/// deb822 stanzas: Types, URIs, Suites, Components.
fn mirror_in_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<&str> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default()
        };
        if field("Types").contains(&"deb")
            && field("Suites").contains(&SUITE)
            && field("Components").contains(&"main")
            && let Some(uri) = field("URIs").first()
        {
            return Some((*uri).to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suites_mirror_is_found_in_either_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(mirror_in_deb822(deb822).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(mirror_in_deb822("Types: deb\nURIs: http://x\nSuites: bookworm-security\nComponents: main\n"), None);
        let list = "# deb http://old bookworm main\ndeb-src http://src bookworm main\ndeb [arch=amd64] http://mirror.example/debian bookworm main contrib\n";
        assert_eq!(mirror_in_one_line_format(list).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(mirror_in_one_line_format("deb http://x bookworm contrib\n"), None);
    }
}
