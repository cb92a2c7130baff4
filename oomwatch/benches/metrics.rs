//! `/metrics` render cost for a large synthetic host: a model with N cgroups
//! (default 10,000; `--cgroups N`), laid out like a Kubernetes node (pods of
//! four containers under the kubelet's systemd slices), each with a full
//! memory sample, PSI, and kills on one in a hundred. Renders the body as
//! `GET /metrics` does (`Metrics::render`), text 0.0.4 and OpenMetrics, and
//! prints one JSON object on stdout for `cargo xtask bench`:
//!
//!   cargo bench -p oomwatch --bench metrics -- [--cgroups N] [--runs R]
//!
//! No network and no root: the model is filled through its public inputs
//! (`admit`, `observe_full`, `observe_pressure`, `record_kill`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use oomwatch::{
    model::{Model, ModelConfig},
    outputs::metrics::Metrics,
    readers::{MemoryEvents, MemorySample, Pressure, PsiLine},
    wire::Constraint,
};

const MIB: u64 = 1 << 20;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Paths of a node with `n` cgroups: pod slices of 4 containers each.
fn paths(n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let qos = ["burstable", "besteffort"];
    let mut pod = 0usize;
    while out.len() < n {
        let q = qos[pod % 2];
        let uid = format!(
            "{:08x}_{:04x}_4{:03x}_8{:03x}_{:012x}",
            pod,
            pod % 0xffff,
            pod % 0xfff,
            pod % 0xfff,
            pod * 7919
        );
        let pod_path = format!("/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice");
        out.push(pod_path.clone());
        for c in 0..4 {
            if out.len() >= n {
                break;
            }
            let id = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                pod,
                c,
                pod * 31 + c,
                0xdead_beef_u64
            );
            out.push(format!("{pod_path}/cri-containerd-{id}.scope"));
        }
        pod += 1;
    }
    out
}

fn model(n: usize) -> Arc<Model> {
    let model = Arc::new(Model::new(ModelConfig {
        max_cgroups: n + 16,
        ..ModelConfig::default()
    }));
    let now = Instant::now();
    for (i, path) in paths(n).iter().enumerate() {
        let i = i as u64;
        model.admit(path, 10_000 + i, std::path::Path::new("/x"));
        let usage = (16 + i % 512) * MIB;
        let inactive = usage / 5;
        let sample = MemorySample {
            usage_bytes: usage,
            limit_bytes: (!i.is_multiple_of(3)).then_some(1024 * MIB),
            inactive_file_bytes: Some(inactive),
            active_file_bytes: Some(usage / 10),
            anon_bytes: Some(usage / 2),
            file_bytes: Some(usage / 3),
            working_set_bytes: usage - inactive,
            swap_usage_bytes: Some(0),
            events: MemoryEvents {
                max: Some(i % 7),
                oom_kill: Some(i % 100 / 99),
                ..MemoryEvents::default()
            },
            failcnt: Some(i % 7),
            ..MemorySample::default()
        };
        model.observe_full(path, &sample, sample.failcnt, now);
        let line = |avg: f64, total: u64| PsiLine {
            avg10: avg,
            avg60: avg / 2.0,
            avg300: avg / 4.0,
            total_us: total,
        };
        model.observe_pressure(
            path,
            Pressure {
                some: line(0.5, i * 1000),
                full: Some(line(0.1, i * 100)),
            },
        );
        if i.is_multiple_of(100) {
            model.record_kill(path, Constraint::Memcg, Some("app"), now);
        }
    }
    model
}

struct Timing {
    median: Duration,
    min: Duration,
    max: Duration,
    bytes: usize,
    series: usize,
}

fn time_render(m: &Metrics, openmetrics: bool, runs: usize) -> Timing {
    let body = m.render(openmetrics); // warm-up (allocator, caches)
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let b = m.render(openmetrics);
            let d = t.elapsed();
            std::hint::black_box(b);
            d
        })
        .collect();
    times.sort();
    Timing {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        bytes: body.len(),
        series: body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
    }
}

fn json(t: &Timing) -> serde_json::Value {
    serde_json::json!({
        "median_ms": t.median.as_secs_f64() * 1e3,
        "min_ms": t.min.as_secs_f64() * 1e3,
        "max_ms": t.max.as_secs_f64() * 1e3,
        "body_bytes": t.bytes,
        "series": t.series,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--cgroups", 10_000);
    let runs = arg(&args, "--runs", 21).max(1);
    let t = Instant::now();
    let model = model(n);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let tracked = model.counts().tracked;
    let metrics = Metrics::new(model, None, Vec::new(), Arc::default(), None);
    let text = time_render(&metrics, false, runs);
    let om = time_render(&metrics, true, runs);
    let out = serde_json::json!({
        "bench": "metrics_render",
        "cgroups": n,
        "tracked": tracked,
        "runs": runs,
        "model_build_ms": build_ms,
        "text": json(&text),
        "openmetrics": json(&om),
    });
    println!("{out}");
}
