//! Workload names (issue 17): what naming a new container costs, and what
//! the names cost the daemon in memory.
//!
//! - Per lookup, from the `runtime_lookup` bench of the oomwatch crate
//!   (`oomwatch/benches/runtime_lookup.rs`: the real records of
//!   `readers/runtime/testdata/` laid out as each runtime lays them out,
//!   next to 100 other containers per runtime).
//! - The real daemon with 1,000 named containers: a Docker data root in a
//!   temp dir with 1,000 `containers/<id>/config.v2.json` records (the
//!   cri-dockerd fixture, each with its own id, name and pod), and 1,000
//!   empty cgroups `docker-<id>.scope` (systemd driver naming) under one
//!   `oomwatch-test-bench-names-*` cgroup. Its RSS once every container is
//!   named, against the same daemon with `[workloads] enabled = false` over
//!   the same cgroups, in the same run.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use oomwatch_tests::{Daemon, TempDir, TestCgroup, temp_dir, write_config};
use serde_json::{Value, json};

use super::{Ctx, Report, Row, Target, cargo_bench_json, median, metric_samples, procfs, ratio};

const GROUP: &str = "workload names";
const CONTAINERS: usize = 1000;
/// A lookup happens once per new container, off the kill path.
const LOOKUP_TARGET_US: f64 = 100.0;
/// Names of 1,000 containers (name, image, pod, namespace, container and
/// the path they belong to): a few KiB each at most.
const RSS_TARGET_MIB: f64 = 4.0;
const FIXTURE: &str = "oomwatch/src/readers/runtime/testdata/docker-cri-dockerd.config.v2.json";

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let lookups = lookup_cost(ctx, rep)?;
    let footprint = named_footprint(ctx, rep)?;
    rep.detail(
        "names",
        json!({"runtime_lookup": lookups, "daemon": footprint}),
    );
    Ok(())
}

// ---------------------------------------------------------------- per lookup

fn lookup_cost(ctx: &Ctx, rep: &mut Report) -> Result<Value> {
    let iters: u32 = ctx.pick(20_000, 2_000);
    let v = cargo_bench_json("runtime_lookup", &["--iters".into(), iters.to_string()])?;
    let others = v["others_per_runtime"].as_u64().unwrap_or(0);
    let us = |section: &str, key: &str| {
        v[section][key]
            .as_f64()
            .with_context(|| format!("runtime_lookup bench: no {section}.{key} in its JSON"))
    };
    for (key, label) in [
        ("docker_with_hint", "Docker config.v2.json"),
        ("containerd_with_hint", "containerd bundle config.json"),
        ("crio_with_hint", "CRI-O config.json"),
        ("podman_with_hint", "podman config.json"),
        ("containerd_no_hint", "containerd, runtime not in the path"),
        ("crio_no_hint", "CRI-O, runtime not in the path"),
    ] {
        let value = us("lookup_us", key)?;
        println!(
            "names: lookup {label}: {value:.1} us ({iters} iterations, {others} other containers per runtime)"
        );
        rep.row(
            Row::new(
                GROUP,
                format!("lookup per new container, {label}"),
                value,
                "us",
            )
            .target(Target::AtMost(LOOKUP_TARGET_US)),
        );
    }
    let scan = us("kubelet_us", "container_log_scan")?;
    rep.row(
        Row::new(
            GROUP,
            format!("kubelet log-link scan ({others} links)"),
            scan,
            "us",
        )
        .target(Target::AtMost(LOOKUP_TARGET_US)),
    );
    for (key, label) in [
        ("docker_config_v2", "Docker config.v2.json"),
        ("containerd_config", "containerd config.json"),
        ("crio_config", "CRI-O config.json"),
    ] {
        rep.row(Row::new(
            GROUP,
            format!("parse alone, {label}"),
            us("parse_us", key)?,
            "us",
        ));
    }
    Ok(v)
}

// ---------------------------------------------------------------- daemon RSS

fn named_footprint(ctx: &Ctx, rep: &mut Report) -> Result<Value> {
    let settle = ctx.pick(Duration::from_secs(10), Duration::from_secs(3));
    let window = ctx.pick(Duration::from_secs(10), Duration::from_secs(3));
    let host = FakeDockerHost::create(CONTAINERS)?;

    let started = Instant::now();
    let on = start_daemon(&host, true)?;
    let lookups = wait_named(&on, &host)?;
    let to_name = started.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let rss_on = rss_median(&on, window)?;
    drop(on);

    let off = start_daemon(&host, false)?;
    wait_tracked(&off, &host)?;
    std::thread::sleep(settle);
    let rss_off = rss_median(&off, window)?;
    drop(off);
    drop(host);

    let added = rss_on - rss_off;
    println!(
        "names: {CONTAINERS} containers named in {to_name:.1} s after the start ({lookups} lookups); RSS {rss_on:.1} MiB named, {rss_off:.1} MiB with [workloads] off"
    );
    rep.row(
        Row::new(
            GROUP,
            format!("daemon RSS, {CONTAINERS} named containers"),
            rss_on,
            "MiB",
        )
        .peer(format!(
            "[workloads] off {rss_off:.1} MiB ({})",
            ratio(rss_on, rss_off)
        )),
    );
    rep.row(
        Row::new(
            GROUP,
            format!("RSS added by {CONTAINERS} names"),
            added,
            "MiB",
        )
        .target(Target::AtMost(RSS_TARGET_MIB)),
    );
    rep.row(Row::new(
        GROUP,
        format!("{CONTAINERS} containers named, from daemon start"),
        to_name,
        "s",
    ));
    Ok(json!({
        "containers": CONTAINERS, "lookups": lookups, "seconds_to_name_all": to_name,
        "settle_s": settle.as_secs(), "window_s": window.as_secs(),
        "rss_named_mib": rss_on, "rss_workloads_off_mib": rss_off, "rss_added_mib": added,
    }))
}

/// A Docker data root with `n` container records and a `docker-<id>.scope`
/// cgroup for each. Dropping it removes the cgroups, then their parent and
/// the data root.
struct FakeDockerHost {
    data_root: TempDir,
    scopes: Vec<PathBuf>,
    /// The cgroup the scopes are in, as the daemon names it.
    parent_path: String,
    parent: Option<TestCgroup>,
}

impl FakeDockerHost {
    fn create(n: usize) -> Result<Self> {
        let t = Instant::now();
        let fixture_path = crate::workspace_root().join(FIXTURE);
        let text = fs::read_to_string(&fixture_path)
            .with_context(|| format!("reading {}", fixture_path.display()))?;
        let fixture: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", fixture_path.display()))?;
        let parent = TestCgroup::new("bench-names", None);
        sweep_stale(&parent.dir);
        let mut host = Self {
            data_root: temp_dir("bench-names-docker"),
            scopes: Vec::with_capacity(n),
            parent_path: parent.path.clone(),
            parent: Some(parent),
        };
        let parent_dir = host
            .parent
            .as_ref()
            .map(|p| p.dir.clone())
            .unwrap_or_default();
        for i in 0..n {
            let id = format!("{:08x}{i:056x}", std::process::id());
            let dir = host.data_root.0.join("containers").join(&id);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            fs::write(
                dir.join("config.v2.json"),
                record(&fixture, &id, i).to_string(),
            )
            .with_context(|| format!("writing {}/config.v2.json", dir.display()))?;
            let scope = parent_dir.join(format!("docker-{id}.scope"));
            fs::create_dir(&scope).with_context(|| format!("mkdir {}", scope.display()))?;
            host.scopes.push(scope);
        }
        println!(
            "names: {n} container records and cgroups created in {:.1} s under {}",
            t.elapsed().as_secs_f64(),
            parent_dir.display()
        );
        Ok(host)
    }

    /// How many of our scopes a metric's samples name.
    fn ours(&self, samples: &[(String, f64)], also: impl Fn(&str) -> bool) -> usize {
        let prefix = format!("cgroup=\"{}/docker-", self.parent_path);
        samples
            .iter()
            .filter(|(l, _)| l.contains(&prefix) && also(l))
            .count()
    }
}

impl Drop for FakeDockerHost {
    fn drop(&mut self) {
        for scope in self.scopes.iter().rev() {
            if let Err(e) = fs::remove_dir(scope) {
                eprintln!("warning: could not remove {}: {e}", scope.display());
            }
        }
        // The parent (a TestCgroup) goes once it is empty, then the data root.
        self.parent.take();
    }
}

/// One container's record: the cri-dockerd fixture with its own id, name
/// and pod.
fn record(fixture: &Value, id: &str, i: usize) -> Value {
    let mut r = fixture.clone();
    r["ID"] = json!(id);
    r["Name"] = json!(format!(
        "/k8s_frontend_web-{i}_shop_1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b_0"
    ));
    r["State"]["Pid"] = json!(100_000 + i);
    r["Config"]["Labels"]["io.kubernetes.pod.name"] = json!(format!("web-{i}"));
    r
}

/// Scopes an earlier run left in its `oomwatch-test-bench-names-*` cgroup
/// when it was killed before its guards ran: the harness's own sweep only
/// removes `oomwatch-test-*` cgroups, so the empty `docker-*.scope`
/// children go here first. Only parents whose creator is gone are touched.
fn sweep_stale(ours: &Path) {
    let Some(own) = ours.parent() else { return };
    let Ok(entries) = fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("oomwatch-test-bench-names-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(pid, 0) only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone || entry.path() == ours {
            continue;
        }
        let Ok(children) = fs::read_dir(entry.path()) else {
            continue;
        };
        for child in children.flatten() {
            if child.file_name().to_string_lossy().starts_with("docker-") {
                let _ = fs::remove_dir(child.path());
            }
        }
        if fs::remove_dir(entry.path()).is_ok() {
            println!(
                "names: removed {} (left by an earlier run)",
                entry.path().display()
            );
        }
    }
}

fn start_daemon(host: &FakeDockerHost, names: bool) -> Result<Daemon> {
    let dir = temp_dir("bench-names-config");
    let config = write_config(
        &dir,
        &format!(
            "[workloads]\nenabled = {names}\ndocker_data_root = {:?}\n",
            host.data_root.0.display().to_string()
        ),
    );
    let config = config
        .to_str()
        .context("config path is not UTF-8")?
        .to_owned();
    let daemon = Daemon::start(&["--config", &config]);
    // The daemon read its config at the start; `dir` can go.
    drop(dir);
    Ok(daemon)
}

/// Waits (up to 120 s) until every container is named on
/// `oomwatch_cgroup_info`; returns the lookups counter then.
fn wait_named(daemon: &Daemon, host: &FakeDockerHost) -> Result<f64> {
    let n = host.scopes.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = daemon.metrics();
        let lookups = metric_samples(&m, "oomwatch_workload_lookups_total")
            .first()
            .map_or(0.0, |(_, v)| *v);
        let named = host.ours(&metric_samples(&m, "oomwatch_cgroup_info"), |l| {
            l.contains("container_name=\"k8s_frontend_web-") && l.contains("pod=\"web-")
        });
        if lookups >= n as f64 && named >= n {
            return Ok(lookups);
        }
        if Instant::now() > deadline {
            bail!(
                "after 120 s the daemon named {named} of {n} containers ({lookups} lookups):\n{}",
                daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits (up to 120 s) until the daemon samples every scope.
fn wait_tracked(daemon: &Daemon, host: &FakeDockerHost) -> Result<()> {
    let n = host.scopes.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = daemon.metrics();
        let tracked = host.ours(
            &metric_samples(&m, "oomwatch_cgroup_memory_usage_bytes"),
            |_| true,
        );
        if tracked >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after 120 s the daemon tracks {tracked} of {n} container cgroups");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Median VmRSS over `window`, sampled each second.
fn rss_median(daemon: &Daemon, window: Duration) -> Result<f64> {
    let pid = daemon.pid();
    let mut samples = Vec::new();
    procfs::sample_until(Instant::now() + window, Duration::from_secs(1), || {
        samples.extend(procfs::rss_mib(pid));
    });
    if samples.is_empty() {
        bail!("no VmRSS for the daemon (pid {pid})");
    }
    Ok(median(&samples))
}
