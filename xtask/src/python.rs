//! Python packages the tests need, in a virtual environment under target/:
//! the OTLP test receiver (tests/otlp/receiver.py) decodes requests with the
//! official opentelemetry-proto package. The tests use
//! target/test-venv/bin/python3 when it exists (tests/src/otlp.rs).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{run, workspace_root};

pub fn ensure_test_venv() -> Result<PathBuf> {
    let root = workspace_root();
    let requirements = root.join("tests/otlp/requirements.txt");
    let venv = root.join("target/test-venv");
    let python = venv.join("bin/python3");
    // The requirements as last installed: unchanged means nothing to do.
    let stamp = venv.join("installed-requirements.txt");
    let wanted = fs::read_to_string(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(python);
    }
    println!("xtask: installing the Python packages of {} into {}", requirements.display(), venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("creating the test virtualenv failed (Debian: apt-get install python3-venv)")?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements))
        .with_context(|| format!("pip install -r {} failed", requirements.display()))?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}
