//! `cargo xtask setup`: everything the eBPF build needs, installed into `.tools/`
//! inside the checkout. Idempotent: a second run only checks and returns.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd_output, run, workspace_root};

pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const NIGHTLY: &str = "nightly";

/// Where the project keeps the tools it builds for itself.
pub fn tools_dir() -> PathBuf {
    workspace_root().join(".tools")
}

pub fn bpf_linker_path() -> PathBuf {
    tools_dir().join("bin").join("bpf-linker")
}

pub fn setup() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    println!("setup: ready (bpf-linker {BPF_LINKER_VERSION} in {})", tools_dir().join("bin").display());
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let installed = cmd_output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
        .context("rustup is needed to build the eBPF programs (nightly toolchain)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: installing rust-src for the {NIGHTLY} toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn installed_bpf_linker_version(linker: &Path) -> Option<String> {
    let out = Command::new(linker).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn ensure_bpf_linker() -> Result<()> {
    let linker = bpf_linker_path();
    if let Some(version) = installed_bpf_linker_version(&linker)
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    // bpf-linker must link exactly the LLVM that the nightly rustc uses, and no
    // matching LLVM development package exists, so point its build at the
    // toolchain's own libLLVM through a tiny llvm-config shim.
    let sysroot = cmd_output(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(["--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());
    let lib_dir = sysroot.join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}; is the nightly toolchain complete?", lib_dir.display()))?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" -> major 22, "22.1"
    let llvm_version = libllvm
        .trim_start_matches("libLLVM.so.")
        .split('-')
        .next()
        .unwrap_or_default()
        .to_owned();
    let llvm_major = llvm_version.split('.').next().unwrap_or_default().to_owned();
    if llvm_major.parse::<u32>().is_err() {
        bail!("cannot read the LLVM version from {libllvm}");
    }

    let shim = tools_dir().join("llvm-shim");
    fs::create_dir_all(shim.join("bin"))?;
    fs::create_dir_all(shim.join("lib"))?;
    for name in ["libLLVM.so".to_owned(), libllvm.clone()] {
        let link = shim.join("lib").join(&name);
        let _ = fs::remove_file(&link);
        symlink(lib_dir.join(&libllvm), &link).with_context(|| format!("linking {}", link.display()))?;
    }
    let llvm_config = shim.join("bin/llvm-config");
    fs::write(
        &llvm_config,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo {llvm_version}.0;; --libdir) echo {lib};; --prefix) echo {prefix};; *) echo;; esac\n",
            lib = shim.join("lib").display(),
            prefix = shim.display()
        ),
    )?;
    fs::set_permissions(&llvm_config, fs::Permissions::from_mode(0o755))?;

    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} toolchain's LLVM {llvm_version} (about a minute)");
    run(Command::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args(["install", "--locked", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features"])
        .args(["--features", &format!("llvm-{llvm_major}")])
        .arg("--root")
        .arg(tools_dir())
        .env("LLVM_PREFIX", &shim)
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN"))
    .context("building bpf-linker failed")?;
    if installed_bpf_linker_version(&linker).is_none() {
        bail!("bpf-linker was built but {} does not run", linker.display());
    }
    Ok(())
}
