//! The durable journal on this machine's disk, from the `journal` bench of
//! the oomwatch crate (`oomwatch/benches/journal.rs`, the journal as the
//! daemon opens it, without the daemon): a kill's time from append to
//! durable (fsync'd) with and without a 20,000 events/s background, the
//! sustained append rate, bytes per kill, the file after 100,000 mixed
//! events, and the kill summary over a journal of 1,000,000 events. The
//! disk's own fsync time is shown beside the kill latency: no commit can be
//! faster than it.

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{Ctx, MIB, Report, Row, Target, cargo_bench_json};

const GROUP: &str = "journal";

fn num(v: &Value, path: &[&str]) -> Result<f64> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .with_context(|| format!("journal bench: no {} in its JSON", path.join(".")))
}

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let events: u64 = ctx.pick(1_000_000, 100_000);
    let kills: u64 = ctx.pick(500, 100);
    let dir = ctx.data_dir().join("journal");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let v = cargo_bench_json(
        "journal",
        &[
            "--dir".into(),
            dir.display().to_string(),
            "--events".into(),
            events.to_string(),
            "--kills".into(),
            kills.to_string(),
        ],
    )?;
    let floor = format!(
        "disk fsync p50 {:.1} / p99 {:.1} ms",
        num(&v, &["fsync_floor", "p50_ms"])?,
        num(&v, &["fsync_floor", "p99_ms"])?
    );
    for (key, label) in [
        ("kill_latency_idle", "idle"),
        ("kill_latency_under_20k_per_s", "under 20k events/s"),
    ] {
        let p50 = num(&v, &[key, "p50_ms"])?;
        let p99 = num(&v, &[key, "p99_ms"])?;
        println!("journal kill append->durable, {label}: p50 {p50:.2} ms, p99 {p99:.2} ms ({kills} kills; {floor})");
        rep.row(Row::new(GROUP, format!("kill durable p50, {label}"), p50, "ms").peer(floor.clone()));
        rep.row(
            Row::new(GROUP, format!("kill durable p99, {label}"), p99, "ms")
                .target(Target::AtMost(5.0))
                .peer(floor.clone()),
        );
    }
    let paced = num(&v, &["throughput", "paced_events"])?;
    let secs = num(&v, &["throughput", "paced_seconds_to_durable"])?;
    let dropped: u64 = v["throughput"]["paced_dropped"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let sustained = paced / secs.max(1e-9);
    println!("journal sustained: {sustained:.0} events/s durable, {dropped} dropped (offered 20000/s)");
    rep.row(
        Row::new(GROUP, "events sustained (offered 20000/s, batched)", sustained, "events/s")
            .target(Target::AtLeast(20_000.0 * 0.98))
            .shown(format!("{sustained:.0} events/s, {dropped} dropped")),
    );
    let peak = num(&v, &["throughput", "unpaced_events_per_s"])?;
    rep.row(Row::new(GROUP, "events accepted, appended as fast as possible", peak, "events/s"));
    let per_kill = num(&v, &["size", "bytes_per_kill_on_disk"])?;
    let json = num(&v, &["size", "kill_json_bytes"])?;
    rep.row(Row::new(GROUP, format!("bytes per kill on disk (JSON {json:.0} B)"), per_kill, "B"));
    let mixed = num(&v, &["size", "mixed_file_bytes"])?;
    rep.row(Row::new(GROUP, "file after 100000 mixed events", mixed / MIB as f64, "MiB"));
    let big = &v["big_journal"];
    for (key, label) in [("summary_by_workload", "by workload"), ("summary_by_cgroup", "by cgroup")] {
        // The first run, as `oomwatch history --summary` is: a fresh process.
        let first = num(big, &[key, "first_ms"])?;
        rep.row(
            Row::new(GROUP, format!("history --summary {label}, {events} events"), first, "ms")
                .target(Target::AtMost(1000.0)),
        );
    }
    let fill = num(big, &["fill_events_per_s"])?;
    println!(
        "journal of {events} events: {:.0} MiB, filled at {fill:.0} events/s, opened in {:.1} ms",
        num(big, &["file_mib"])?,
        num(big, &["open_ms"])?
    );
    rep.detail("journal", v);
    Ok(())
}
