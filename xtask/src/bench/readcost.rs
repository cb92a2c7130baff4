//! The sampler's cgroup file reads on this machine's cgroupfs: cost per call
//! of each reader and per cgroup per tick on the sampler's schedule, from
//! the `cgroup_read` bench of the oomwatch crate, run on an
//! `oomwatch-test-*` cgroup with a limit and a small process in it.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use oomwatch_tests::{ChildGuard, TestCgroup};

use super::{Ctx, MIB, Report, Row, Target, cargo_bench_json};

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let cg = TestCgroup::new("bench-readcost", Some(256 * MIB));
    let _hog = ChildGuard(cg.spawn(ctx.memhog().args(["hold", "16", "600"])));
    // The sampler's pattern: 1,000 cgroups read in turn (half with a limit, as in the footprint figure).
    let n = 1000;
    let rotation: Vec<TestCgroup> = (0..n)
        .map(|i| TestCgroup::new("bench-rotation", (i % 2 == 0).then_some(256 * MIB)))
        .collect();
    let parent = cg
        .dir
        .parent()
        .context("cgroup parent")?
        .display()
        .to_string();
    // TestCgroup names are oomwatch-test-<name>-<pid>-<n>.
    let prefix = format!("oomwatch-test-bench-rotation-{}-", std::process::id());
    std::thread::sleep(Duration::from_millis(300));
    let iters = ctx.pick(20_000, 2_000);
    let v = cargo_bench_json(
        "cgroup_read",
        &[
            "--dir".into(),
            cg.dir.display().to_string(),
            "--iters".into(),
            iters.to_string(),
            "--parent".into(),
            parent,
            "--prefix".into(),
            prefix,
        ],
    )?;
    drop(rotation);
    let g = "sampler read cost per cgroup (µs)";
    let tick = v["sampler"]["us_per_cgroup_tick_limited"]
        .as_f64()
        .with_context(|| format!("cgroup_read bench: no sampler figure in {v}"))?;
    let full = v["sampler"]["full_every_s"].as_f64().unwrap_or(30.0);
    rep.row(
        Row::new(
            g,
            format!(
                "each tick, cgroup {} with a limit (full read every {full:.0} s; {})",
                v["version"].as_str().unwrap_or("?"),
                match v["rotation"]["cgroups"].as_u64() {
                    Some(n) => format!("{n} cgroups read in turn"),
                    None => "one cgroup, hot loop".into(),
                }
            ),
            tick,
            "µs",
        ),
    );
    // No target here: this models the worst case (every limited cgroup's
    // counters polled each tick). The daemon polls them only near the limit
    // and skips full reads of cgroups that did not move; the budget that
    // matters (<= 0.5% of a core with 1,000 cgroups) is the footprint figure.
    if let Some(hot) = v["sampler"]["us_per_cgroup_tick_hot"].as_f64() {
        rep.row(Row::new(
            g,
            "each tick, hot cgroup (>80% of limit: full read every tick)",
            hot,
            "µs",
        ));
    }
    for (k, label) in [
        ("poller_usage", "CgroupPoller::usage, 1000 cgroups in turn"),
        (
            "poller_events",
            "CgroupPoller::events, 1000 cgroups in turn",
        ),
        ("read_memory", "read_memory, 1000 cgroups in turn"),
    ] {
        if let Some(us) = v["rotation"]["us_per_call"][k].as_f64() {
            rep.row(Row::new(g, format!("{label}, per call"), us, "µs"));
        }
    }
    usage_walk(&v, rep)?;
    for (k, label) in [
        ("poller_usage", "CgroupPoller::usage"),
        ("poller_events", "CgroupPoller::events"),
        ("read_usage", "read_usage (open+read)"),
        ("read_events", "read_events (open+read)"),
        ("read_memory", "read_memory (full sample)"),
    ] {
        if let Some(us) = v["us_per_call"][k].as_f64() {
            rep.row(Row::new(
                g,
                format!("{label}, per call, one cgroup hot loop"),
                us,
                "µs",
            ));
        }
    }
    println!("read cost: {v}");
    rep.detail("read_cost", v);
    Ok(())
}

/// The usage walk over the same 1,000 cgroups (`kernel::usage_walk`): per
/// cgroup, beside the file read it replaces, and whether its values are
/// the files'. Without it the daemon reads files: a walk that cannot run
/// here is a failed figure.
fn usage_walk(v: &serde_json::Value, rep: &mut Report) -> Result<()> {
    let g = "sampler read cost per cgroup (µs)";
    let walk = &v["rotation"]["walk"];
    if let Some(e) = walk["error"].as_str() {
        bail!("the usage walk could not run: {e}");
    }
    let (Some(per_cgroup), Some(read), Some(differ)) =
        (walk["us_per_cgroup"].as_f64(), walk["cgroups_read"].as_u64(), walk["differ_from_files"].as_u64())
    else {
        bail!("cgroup_read bench: no usage walk figure in {v}");
    };
    let cgroups = v["rotation"]["cgroups"].as_u64().unwrap_or(0);
    let file = v["rotation"]["us_per_call"]["poller_usage"].as_f64();
    let mut row = Row::new(
        g,
        format!("usage walk (BPF cgroup iterator), {cgroups} cgroups in one read, per cgroup"),
        per_cgroup,
        "µs",
    );
    if let Some(file) = file {
        row = row.peer(format!("CgroupPoller::usage {} µs ({:.2}x)", super::fmt_num(file), per_cgroup / file));
    }
    rep.row(row);
    rep.row(
        Row::new(g, "usage walk: cgroups it read, of the rotation", read as f64, "")
            .target(Target::Exactly(cgroups as f64)),
    );
    rep.row(
        Row::new(g, "usage walk: values that differ from the cgroup's file", differ as f64, "")
            .target(Target::Exactly(0.0)),
    );
    Ok(())
}
