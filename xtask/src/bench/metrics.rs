//! `/metrics` for 10,000 cgroups: render time and body size, from the
//! `metrics` bench of the oomwatch crate (a synthetic model rendered
//! through `Metrics::render`, as a scrape does, without HTTP).

use anyhow::{Context as _, Result};

use super::{Ctx, Report, Row, Target, cargo_bench_json};

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let cgroups = 10_000;
    let runs = ctx.pick(21, 5);
    let v = cargo_bench_json(
        "metrics",
        &[
            "--cgroups".into(),
            cgroups.to_string(),
            "--runs".into(),
            runs.to_string(),
        ],
    )?;
    let g = "/metrics, 10000 cgroups";
    for (key, label) in [("text", "text 0.0.4"), ("openmetrics", "OpenMetrics")] {
        let f = &v[key];
        let ms = f["median_ms"]
            .as_f64()
            .with_context(|| format!("metrics bench: no {key}.median_ms in {v}"))?;
        let bytes = f["body_bytes"].as_f64().unwrap_or(0.0);
        let series = f["series"].as_u64().unwrap_or(0);
        println!(
            "metrics {label}: median {ms:.1} ms (min {:.1}, max {:.1}), {:.1} MiB, {series} series",
            f["min_ms"].as_f64().unwrap_or(0.0),
            f["max_ms"].as_f64().unwrap_or(0.0),
            bytes / 1048576.0
        );
        rep.row(
            Row::new(g, format!("render {label}, median of {runs}"), ms, "ms")
                .target(Target::AtMost(50.0)),
        );
        rep.row(Row::new(
            g,
            format!("body {label} ({series} series)"),
            bytes / 1048576.0,
            "MiB",
        ));
    }
    rep.detail("metrics", v);
    Ok(())
}
