//! Builds the kernel programs (oomwatch-ebpf) with aya-build and embeds them.
//! Needs the toolchain pieces that `cargo xtask setup` installs into .tools/.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().context("oomwatch lives in the workspace")?;
    let tools_bin = workspace.join(".tools").join("bin");
    let linker = tools_bin.join("bpf-linker");
    println!("cargo:rerun-if-changed={}", linker.display());

    if !linker.exists() {
        bail!(
            "bpf-linker is missing ({}): run `cargo xtask setup` once to install the eBPF toolchain, then build again",
            linker.display()
        );
    }
    let rust_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false);
    if !rust_src {
        bail!("the nightly toolchain's rust-src is missing: run `cargo xtask setup` once, then build again");
    }

    // The nested cargo build that aya-build runs must find the project's linker.
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin];
    paths.extend(env::split_paths(&path));
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    // aya-build relays the nested cargo's progress as warnings on every
    // build; keep only what matters (errors and real warnings).
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };

    let ebpf_dir = workspace.join("oomwatch-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 workspace path")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "oomwatch-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
