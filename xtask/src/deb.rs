//! `cargo xtask deb`: the Debian package, built from a staged tree with
//! Debian's own tools (dpkg-deb, dpkg-shlibdeps; lintian when it can be
//! installed), laid out as debhelper would lay it out.
//!
//! Why not cargo-deb: it is a `cargo install` (minutes of build on every new
//! machine, and a version to pin to rustc 1.95) around the same dpkg-deb;
//! here every tool comes from dpkg-dev, which the machines already have, and
//! the maintainer scripts are debhelper's own systemd snippets, committed in
//! deploy/debian/ where they can be read and are checked by lintian.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cmd_output, run, workspace_root};

pub const PACKAGE: &str = "oomwatch";
/// Debian policy: daemons and tools only root runs go to /usr/sbin; the man
/// pages are in section 8 to match. deploy/systemd/oomwatch.service starts
/// this path.
pub const BINARY: &str = "usr/sbin/oomwatch";
/// Bookworm ships units in /lib (the /usr move waits for trixie).
const UNIT: &str = "lib/systemd/system/oomwatch.service";
const CONFFILE: &str = "etc/oomwatch/oomwatch.toml";
const DOC: &str = "usr/share/doc/oomwatch";
const MAINTAINER: &str = "oomwatch maintainers <maintainers@oomwatch.example>";
/// Used by the unit (ExecReload=/bin/kill); priority important, on every
/// Debian host, but not in a minbase system.
const EXTRA_DEPENDS: &[&str] = &["procps"];

#[derive(clap::Args, Clone, Debug, Default)]
pub struct DebArgs {
    /// Skip lintian (it is run, and must report nothing, by default).
    #[arg(long)]
    pub no_lintian: bool,
}

pub struct Built {
    pub deb: PathBuf,
    pub version: String,
}

/// The version of every crate in the workspace (xtask's is inherited from
/// `[workspace.package]`): also the package version, Debian-native.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

pub fn run_task(args: &DebArgs) -> Result<()> {
    crate::build()?;
    let built = build_package(&crate::vm::target_dir().join("release/oomwatch"))?;
    print_contents(&built.deb)?;
    if !args.no_lintian {
        lintian(&built.deb)?;
    }
    println!("deb: {}", built.deb.display());
    Ok(())
}

/// Stages, builds and returns target/deb/oomwatch_VERSION_ARCH.deb from a
/// release binary that was already built.
pub fn build_package(binary: &Path) -> Result<Built> {
    // dpkg-shlibdeps; it brings binutils (strip).
    crate::apt::ensure(&["dpkg-dev"])?;
    let root = workspace_root();
    let version = version().to_owned();
    check_binary_version(binary, &version)?;
    check_changelog(&root.join("deploy/debian/changelog"), &version)?;

    let arch = cmd_output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
    let out_dir = crate::vm::target_dir().join("deb");
    // debhelper's layout: debian/control for dpkg-shlibdeps, the package
    // tree in debian/PACKAGE.
    let build = out_dir.join("build");
    let _ = fs::remove_dir_all(&build);
    let stage = build.join("debian").join(PACKAGE);
    fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    fs::write(build.join("debian/control"), format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"))?;

    let staged_bin = stage.join(BINARY);
    install(&stage, BINARY, &fs::read(binary).with_context(|| format!("reading {}", binary.display()))?, 0o755)?;
    // What dh_strip does: no symbols, no .comment/.note sections.
    run(Command::new("strip").args(["--remove-section=.comment", "--remove-section=.note", "--strip-unneeded"]).arg(&staged_bin))?;

    let unit = fs::read_to_string(root.join("deploy/systemd/oomwatch.service")).context("reading deploy/systemd/oomwatch.service")?;
    if !unit.lines().any(|l| l == format!("ExecStart=/{BINARY} daemon --config /{CONFFILE}")) {
        bail!("deploy/systemd/oomwatch.service must start /{BINARY} with --config /{CONFFILE}, where the package puts them");
    }
    install(&stage, UNIT, unit.as_bytes(), 0o644)?;

    let defaults = cmd_output(Command::new(binary).args(["check", "--print-defaults"]))?;
    install(&stage, CONFFILE, defaults.as_bytes(), 0o644)?;

    for (name, page) in man_pages(binary)? {
        install(&stage, &format!("usr/share/man/man8/{name}.8.gz"), &gzip(&page)?, 0o644)?;
    }
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/oomwatch"),
        ("zsh", "usr/share/zsh/vendor-completions/_oomwatch"),
        ("fish", "usr/share/fish/vendor_completions.d/oomwatch.fish"),
    ] {
        let script = cmd_output(Command::new(binary).args(["completions", shell]))?;
        install(&stage, path, script.as_bytes(), 0o644)?;
    }

    let copyright = fs::read_to_string(root.join("deploy/debian/copyright")).context("reading deploy/debian/copyright")?;
    install(&stage, &format!("{DOC}/copyright"), with_bundled_crates(&copyright)?.as_bytes(), 0o644)?;
    // A native package (upstream builds it): changelog.gz, not changelog.Debian.gz.
    let changelog = fs::read(root.join("deploy/debian/changelog"))?;
    install(&stage, &format!("{DOC}/changelog.gz"), &gzip(&changelog)?, 0o644)?;

    let overrides = fs::read(root.join("deploy/debian/lintian-overrides")).context("reading deploy/debian/lintian-overrides")?;
    install(&stage, &format!("usr/share/lintian/overrides/{PACKAGE}"), &overrides, 0o644)?;

    let control_dir = stage.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    for script in ["postinst", "prerm", "postrm"] {
        let text = fs::read(root.join("deploy/debian").join(script)).with_context(|| format!("reading deploy/debian/{script}"))?;
        write_mode(&control_dir.join(script), &text, 0o755)?;
    }
    write_mode(&control_dir.join("conffiles"), format!("/{CONFFILE}\n").as_bytes(), 0o644)?;
    write_mode(&control_dir.join("md5sums"), md5sums(&stage, &[CONFFILE])?.as_bytes(), 0o644)?;

    let shlibs = cmd_output(Command::new("dpkg-shlibdeps").current_dir(&build).args(["-O", "-e"]).arg(format!("debian/{PACKAGE}/{BINARY}")))
        .context("dpkg-shlibdeps (package dpkg-dev)")?;
    let depends = depends_line(&shlibs)?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: OOM kills, memory pressure and OOM forecasts per cgroup (eBPF)\n \
         oomwatch traces the kernel's OOM kills and memory reclaim with eBPF\n \
         programs and tells which workload was killed, which task triggered the\n \
         kill and which cgroup limit was hit. It forecasts kills from each\n \
         cgroup's memory trend, raises alerts before they happen, serves\n \
         Prometheus metrics and streams events to `oomwatch tail`.\n \
         .\n \
         The package runs the daemon as a hardened systemd service.\n",
        installed_size_kib(&stage)?
    );
    write_mode(&control_dir.join("control"), control.as_bytes(), 0o644)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let _ = fs::remove_file(&deb);
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb))?;
    Ok(Built { deb, version })
}

fn check_binary_version(binary: &Path, version: &str) -> Result<()> {
    let said = cmd_output(Command::new(binary).arg("--version"))?;
    if said.trim() != format!("oomwatch {version}") {
        bail!("{} says {:?}, the workspace version is {version}: rebuild it", binary.display(), said.trim());
    }
    Ok(())
}

/// The newest changelog entry must be this version: a release bumps both.
fn check_changelog(path: &Path, version: &str) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let top = text.lines().next().unwrap_or_default();
    if !top.starts_with(&format!("{PACKAGE} ({version}) ")) {
        bail!("{}: the newest entry is {top:?}, not version {version} of the workspace Cargo.toml: add an entry", path.display());
    }
    Ok(())
}

fn install(stage: &Path, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let dest = stage.join(path);
    let mut dir = dest.parent().expect("paths have a directory").to_path_buf();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Directories 0755 whatever the umask, as dh_fixperms leaves them.
    while dir.starts_with(stage) && dir != stage {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        dir.pop();
    }
    write_mode(&dest, data, mode)
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // -n: no name or time stamp, so the same input gives the same bytes.
    let mut child = Command::new("gzip").args(["-9", "-n", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("cannot start gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// oomwatch(8) and oomwatch-SUB(8) for every subcommand, as the binary
/// generates them.
fn man_pages(binary: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    // The binary names its subcommands when asked for one it does not have.
    let out = Command::new(binary).args(["man", "@list"]).output().context("oomwatch man")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let subs = err.split_once("one of: ").map(|(_, l)| l.trim()).with_context(|| format!("`oomwatch man @list` did not list the subcommands: {err}"))?;
    let mut pages = vec![("oomwatch".to_owned(), man_page(binary, None)?)];
    for sub in subs.split(", ").filter(|s| !s.is_empty()) {
        pages.push((format!("oomwatch-{sub}"), man_page(binary, Some(sub))?));
    }
    Ok(pages)
}

fn man_page(binary: &Path, sub: Option<&str>) -> Result<Vec<u8>> {
    let out = Command::new(binary).arg("man").args(sub).output().context("oomwatch man")?;
    let name = sub.map_or("oomwatch".to_owned(), |s| format!("oomwatch-{s}"));
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains(&format!(".TH {name} 8")) {
        bail!("`oomwatch man {}` gave no {name}(8) page: {}", sub.unwrap_or(""), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

fn md5sums(stage: &Path, exclude: &[&str]) -> Result<String> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    files.retain(|f| !f.starts_with("DEBIAN/") && !exclude.contains(&f.as_str()));
    files.sort();
    let out = cmd_output(Command::new("md5sum").current_dir(stage).args(&files))?;
    Ok(out)
}

fn collect_files(stage: &Path, dir: &Path, into: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            collect_files(stage, &path, into)?;
        } else {
            into.push(path.strip_prefix(stage).expect("under the stage").to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    let mut kib = 0;
    for f in files.iter().filter(|f| !f.starts_with("DEBIAN/")) {
        kib += fs::metadata(stage.join(f))?.len().div_ceil(1024);
    }
    Ok(kib)
}

/// `shlibs:Depends=...` from dpkg-shlibdeps, plus what the unit runs.
fn depends_line(shlibdeps: &str) -> Result<String> {
    let libs = shlibdeps
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {shlibdeps}"))?;
    let mut deps: Vec<&str> = libs.split(", ").map(str::trim).filter(|d| !d.is_empty()).collect();
    deps.extend(EXTRA_DEPENDS);
    Ok(deps.join(", "))
}

/// The binary links every crate of oomwatch's dependency graph statically:
/// their licenses go in the copyright file's header as a generated Comment.
fn with_bundled_crates(copyright: &str) -> Result<String> {
    with_crates(copyright, &bundled_crates()?)
}

/// The copyright file with `crates` (name -> (version, license)) listed in
/// the header paragraph's Comment field.
fn with_crates(copyright: &str, crates: &BTreeMap<String, (String, String)>) -> Result<String> {
    let mut comment = String::from(
        "Comment: The binary statically links these Rust crates (name version:\n license, as each declares it). Texts of the GPL family and Apache-2.0\n are in /usr/share/common-licenses/.\n .\n",
    );
    for (name, (version, license)) in crates {
        comment.push_str(&format!(" {name} {version}: {license}\n"));
    }
    let Some((header, rest)) = copyright.split_once("\n\n") else {
        bail!("deploy/debian/copyright has no header paragraph");
    };
    Ok(format!("{header}\n{comment}\n{rest}"))
}

fn bundled_crates() -> Result<BTreeMap<String, (String, String)>> {
    let meta: Value = serde_json::from_str(&cmd_output(
        Command::new("cargo").current_dir(workspace_root()).args(["metadata", "--format-version", "1", "--locked", "--filter-platform"]).arg(host_triple()?),
    )?)?;
    linked_crates(&meta)
}

/// The crates.io crates `oomwatch` links, from `cargo metadata` output.
fn linked_crates(meta: &Value) -> Result<BTreeMap<String, (String, String)>> {
    let packages: BTreeMap<&str, &Value> =
        meta["packages"].as_array().context("cargo metadata: no packages")?.iter().filter_map(|p| Some((p["id"].as_str()?, p))).collect();
    let nodes: BTreeMap<&str, &Value> =
        meta["resolve"]["nodes"].as_array().context("cargo metadata: no resolve")?.iter().filter_map(|n| Some((n["id"].as_str()?, n))).collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == PACKAGE && p["source"].is_null())
        .map(|(id, _)| *id)
        .context("cargo metadata: no oomwatch package")?;
    // Normal (linked) dependencies only: no build scripts, no dev-dependencies.
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for dep in nodes.get(id).and_then(|n| n["deps"].as_array()).into_iter().flatten() {
            let linked = dep["dep_kinds"].as_array().is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null()));
            if let (true, Some(pkg)) = (linked, dep["pkg"].as_str())
                && seen.insert(pkg)
            {
                todo.push(pkg);
            }
        }
    }
    let mut out = BTreeMap::new();
    for id in seen {
        let p = packages[id];
        if p["source"].is_null() {
            continue; // this workspace: the Files: * paragraph
        }
        let name = p["name"].as_str().unwrap_or("?").to_owned();
        let license = p["license"].as_str().unwrap_or("(none declared)").to_owned();
        out.insert(name, (p["version"].as_str().unwrap_or("?").to_owned(), license));
    }
    Ok(out)
}

fn host_triple() -> Result<String> {
    let v = cmd_output(Command::new("rustc").arg("-vV"))?;
    v.lines().find_map(|l| l.strip_prefix("host: ")).map(str::to_owned).context("rustc -vV names no host")
}

fn print_contents(deb: &Path) -> Result<()> {
    println!("{}", cmd_output(Command::new("dpkg-deb").arg("--info").arg(deb))?.trim_end());
    println!("{}", cmd_output(Command::new("dpkg-deb").arg("--contents").arg(deb))?.trim_end());
    Ok(())
}

/// Every tag lintian reports (errors, warnings, info, pedantic) is printed;
/// errors and warnings fail the task.
fn lintian(deb: &Path) -> Result<()> {
    crate::apt::ensure(&["lintian"])?;
    let out = Command::new("lintian")
        .args(["--display-info", "--pedantic", "--display-experimental", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("cannot start lintian")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = text.lines().filter(|l| l.len() > 2 && l.as_bytes()[1] == b':').collect();
    println!("lintian: {}", if tags.is_empty() { "no tags".to_owned() } else { format!("{} tags", tags.len()) });
    for t in &tags {
        println!("  {t}");
    }
    let bad: Vec<&&str> = tags.iter().filter(|t| t.starts_with("E:") || t.starts_with("W:")).collect();
    if !bad.is_empty() || !out.status.success() {
        bail!("lintian: {} errors or warnings (above); {}", bad.len(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_are_dpkg_shlibdeps_and_what_the_unit_runs() {
        let d = depends_line("shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)\n").unwrap();
        assert_eq!(d, "libc6 (>= 2.34), libgcc-s1 (>= 4.2), procps");
        assert!(depends_line("nothing\n").is_err());
    }

    #[test]
    fn the_changelog_must_name_the_workspace_version() {
        let dir = std::env::temp_dir().join(format!("oomwatch-deb-changelog-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("changelog");
        fs::write(&path, "oomwatch (0.1.0) unstable; urgency=medium\n").unwrap();
        assert!(check_changelog(&path, "0.1.0").is_ok());
        let e = check_changelog(&path, "0.2.0").unwrap_err().to_string();
        assert!(e.contains("0.2.0") && e.contains("add an entry"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_committed_changelog_is_this_version() {
        check_changelog(&workspace_root().join("deploy/debian/changelog"), version()).unwrap();
    }

    #[test]
    fn bundled_crates_go_in_the_header_paragraph() {
        let text = fs::read_to_string(workspace_root().join("deploy/debian/copyright")).unwrap();
        // Fixed crates: the unit tests run as nobody too, who cannot run cargo.
        let crates = BTreeMap::from([
            ("aya".to_owned(), ("0.14.0".to_owned(), "MIT OR Apache-2.0".to_owned())),
            ("tokio".to_owned(), ("1.0.0".to_owned(), "MIT".to_owned())),
        ]);
        let with = with_crates(&text, &crates).unwrap();
        let header = with.split("\n\n").next().unwrap();
        assert!(header.starts_with("Format: ") && header.contains("\nComment: The binary statically links"), "{header}");
        // Every continuation line of the field is indented, as deb822 wants.
        let comment = header.split_once("\nComment:").unwrap().1;
        assert!(comment.lines().skip(1).all(|l| l.starts_with(' ')), "{comment}");
        assert!(comment.contains(" tokio 1.0.0: MIT") && comment.contains(" aya "), "{comment}");
    }

    #[test]
    fn only_linked_crates_io_crates_are_bundled() {
        let pkg = |id: &str, src: bool| {
            serde_json::json!({"id": id, "name": id, "version": "1.0.0", "license": "MIT",
                "source": if src { Value::from("registry+https://github.com/rust-lang/crates.io-index") } else { Value::Null }})
        };
        let dep = |id: &str, kind: Value| serde_json::json!({"pkg": id, "dep_kinds": [{"kind": kind}]});
        let meta = serde_json::json!({
            "packages": [pkg("oomwatch", false), pkg("oomwatch-common", false), pkg("tokio", true), pkg("cc", true), pkg("btf-rs", true), pkg("proptest", true)],
            "resolve": {"nodes": [
                {"id": "oomwatch", "deps": [dep("oomwatch-common", Value::Null), dep("tokio", Value::Null), dep("cc", "build".into()), dep("proptest", "dev".into())]},
                {"id": "oomwatch-common", "deps": [dep("btf-rs", Value::Null)]},
            ]}
        });
        let crates = linked_crates(&meta).unwrap();
        assert_eq!(crates.keys().map(String::as_str).collect::<Vec<_>>(), ["btf-rs", "tokio"]);
    }
}
