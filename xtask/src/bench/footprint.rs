//! Footprint at default settings with 1,000 real memory cgroups (half with a
//! limit, a few with a small process): daemon RSS and CPU over a window
//! after it settled, series on /metrics, and scrape time.
//!
//! Peer, same run: prometheus-node-exporter on a loopback port; its RSS and
//! scrape time, scraped alternately with oomwatch so drift hits both.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use oomwatch_tests::{ChildGuard, Daemon, TestCgroup, http_get};
use serde_json::json;

use super::{Ctx, Report, Row, Target, median, metric_samples, procfs, ratio, series_count};

const MIB: u64 = 1 << 20;
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let n = 1000usize;
    let busy = 5usize;
    let settle = ctx.pick(Duration::from_secs(15), Duration::from_secs(5));
    let window = ctx.pick(Duration::from_secs(60), Duration::from_secs(10));
    let scrapes = ctx.pick(20usize, 7);

    let t = Instant::now();
    let cgroups: Vec<TestCgroup> = (0..n)
        .map(|i| TestCgroup::new(&format!("bench-fp{i}"), (i % 2 == 0).then_some(256 * MIB)))
        .collect();
    let _procs: Vec<ChildGuard> = cgroups[..busy]
        .iter()
        .map(|cg| ChildGuard(cg.spawn(ctx.memhog().args(["hold", "4", "3600"]))))
        .collect();
    println!(
        "footprint: {n} cgroups created in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let daemon = Daemon::start(&[]);
    let pid = daemon.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    let tracked = loop {
        let m = daemon.metrics();
        let tracked = metric_samples(&m, "oomwatch_cgroups")
            .iter()
            .find(|(l, _)| l.contains("state=\"tracked\""))
            .map(|(_, v)| *v)
            .unwrap_or(0.0);
        if tracked >= n as f64 || Instant::now() > deadline {
            break tracked;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if tracked < n as f64 {
        bail!("the daemon tracks {tracked} cgroups after 60 s, expected at least {n}");
    }
    std::thread::sleep(settle);

    let cpu = procfs::CpuWindow::start(pid).context("daemon /proc stat")?;
    let mut rss_max = 0.0f64;
    procfs::sample_until(Instant::now() + window, Duration::from_secs(1), || {
        rss_max = rss_max.max(procfs::rss_mib(pid).unwrap_or(0.0));
    });
    let used = cpu.end().context("daemon /proc stat")?;
    let rss = procfs::rss_mib(pid).context("daemon VmRSS")?;
    let hwm = procfs::status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let threads = procfs::status_kib(pid, "Threads");
    let body = daemon.metrics();
    let series = series_count(&body);
    println!(
        "footprint: tracked {tracked}, RSS {rss:.1} MiB (max {rss_max:.1}, HWM {hwm:?}), CPU {:.3}% of a core over {:.0} s (schedstat {:.3}%), {series} series, {} bytes",
        used.percent,
        used.seconds,
        used.sched_percent,
        body.len()
    );

    // Scrapes: oomwatch and node_exporter alternately.
    let peer = NodeExporter::start();
    let mut ours_ms = Vec::new();
    let mut peer_ms = Vec::new();
    let mut peer_series = None;
    let mut peer_bytes = None;
    let time_get = |port: u16| -> Result<(f64, String)> {
        let t = Instant::now();
        let body = http_get(port, "/metrics")?;
        Ok((t.elapsed().as_secs_f64() * 1e3, body))
    };
    for _ in 0..scrapes {
        ours_ms.push(time_get(daemon.port)?.0);
        if let Ok(p) = &peer {
            let (ms, b) = time_get(p.port)?;
            peer_ms.push(ms);
            peer_series = Some(series_count(&b));
            peer_bytes = Some(b.len());
        }
    }
    let ours_scrape = median(&ours_ms);
    let peer_scrape = (!peer_ms.is_empty()).then(|| median(&peer_ms));
    let peer_rss = peer
        .as_ref()
        .ok()
        .and_then(|p| procfs::rss_mib(p.child.pid()));
    if let Err(e) = &peer {
        rep.note(format!("node_exporter peer not measured: {e:#}"));
    }
    let pair = |ours: f64, p: Option<f64>, unit: &str| {
        p.map(|p| {
            format!(
                "node_exporter {} {unit} ({})",
                super::fmt_num(p),
                ratio(ours, p)
            )
        })
        .unwrap_or_default()
    };

    let g = "footprint, 1000 cgroups";
    rep.row(
        Row::new(g, "daemon RSS (VmRSS)", rss, "MiB")
            .target(Target::AtMost(20.0))
            .peer(pair(rss, peer_rss, "MiB")),
    );
    if let Some(hwm) = hwm {
        rep.row(Row::new(
            g,
            "daemon peak RSS since start (VmHWM)",
            hwm,
            "MiB",
        ));
    }
    rep.row(
        Row::new(
            g,
            format!("daemon CPU over {:.0} s", used.seconds),
            used.percent,
            "% core",
        )
        .target(Target::AtMost(0.5)),
    );
    rep.row(
        Row::new(g, "series on /metrics (host)", series as f64, "").peer(
            peer_series
                .map(|s| format!("node_exporter {s} ({})", ratio(series as f64, s as f64)))
                .unwrap_or_default(),
        ),
    );
    rep.row(
        Row::new(
            g,
            format!("scrape time, median of {scrapes}"),
            ours_scrape,
            "ms",
        )
        .peer(pair(ours_scrape, peer_scrape, "ms")),
    );
    rep.detail(
        "footprint",
        json!({
            "cgroups_created": n, "with_limit": n / 2, "with_process": busy,
            "tracked": tracked, "settle_s": settle.as_secs(), "window_s": used.seconds,
            "rss_mib": rss, "rss_max_mib": rss_max, "hwm_mib": hwm, "fds": fds, "threads": threads,
            "cpu_seconds": used.cpu_seconds, "cpu_percent": used.percent, "cpu_sched_percent": used.sched_percent,
            "series": series, "body_bytes": body.len(),
            "scrape_ms": ours_ms, "scrape_median_ms": ours_scrape,
            "node_exporter": match &peer {
                Ok(_) => json!({"rss_mib": peer_rss, "scrape_ms": peer_ms, "scrape_median_ms": peer_scrape, "series": peer_series, "body_bytes": peer_bytes}),
                Err(e) => json!({"error": format!("{e:#}")}),
            },
        }),
    );
    drop(peer);
    drop(daemon);
    Ok(())
}

/// prometheus-node-exporter on a free loopback port, stopped by its pid.
struct NodeExporter {
    child: ChildGuard,
    port: u16,
}

impl NodeExporter {
    fn start() -> Result<Self> {
        if !std::path::Path::new(NODE_EXPORTER).exists() {
            crate::apt::ensure(&["prometheus-node-exporter"])?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {NODE_EXPORTER}"))?;
        let mut me = Self {
            child: ChildGuard(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = me.child.0.try_wait() {
                bail!("node_exporter exited at start: {s}");
            }
            if http_get(port, "/metrics").is_ok_and(|b| b.contains("node_")) {
                // First scrape warms its collectors; give it a moment to settle.
                std::thread::sleep(Duration::from_secs(1));
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("node_exporter not answering on 127.0.0.1:{port} after 20 s")
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the pid we started.
        unsafe { libc::kill(self.child.pid() as i32, libc::SIGTERM) };
        let _ = self.child.wait_timeout(Duration::from_secs(5));
        // ChildGuard's own drop kills (SIGKILL) and reaps if still running.
    }
}
