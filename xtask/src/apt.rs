//! Debian packages the tests need (real servers, tools), installed when missing.

use std::process::Command;

use anyhow::{Result, bail};

use crate::run;

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn ensure(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!("missing Debian packages {}: install them (apt-get install {}) or run as root", missing.join(" "), missing.join(" "));
    }
    println!("xtask: installing {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        // Another apt (unattended upgrades, a second session) may hold the
        // lock for a while: wait for it rather than fail.
        c.args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    if run(apt(&["install", "-y", "--no-install-recommends"]).args(&missing)).is_err() {
        // A fresh machine may have no package lists yet.
        run(&mut apt(&["update"]))?;
        run(apt(&["install", "-y", "--no-install-recommends"]).args(&missing))?;
    }
    Ok(())
}
