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
use serde_json::{Value, json};

use super::{
    Ctx, MIB, Report, Row, Target, fmt_num, median, metric_samples, peer::Peer, procfs, ratio,
    series_count,
};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const GROUP: &str = "footprint, 1000 cgroups";

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let plan = Plan::new(ctx);
    let workload = Workload::create(ctx, &plan);
    let daemon = Daemon::start(&[]);
    let tracked = wait_tracked(&daemon, plan.cgroups)?;
    std::thread::sleep(plan.settle);
    let own = Footprint::measure(&daemon, plan.window)?;
    own.print(tracked);
    let peer = NodeExporter::start();
    let scrapes = Scrapes::alternate(&daemon, peer.as_ref().ok(), plan.scrapes)?;
    let peer_rss = peer
        .as_ref()
        .ok()
        .and_then(|p| procfs::rss_mib(p.peer.pid()));
    if let Err(e) = &peer {
        rep.note(format!("node_exporter peer not measured: {e:#}"));
    }
    report_rows(rep, &plan, &own, &scrapes, peer_rss);
    let peer_detail = match &peer {
        Ok(_) => scrapes.peer_detail(peer_rss),
        Err(e) => json!({"error": format!("{e:#}")}),
    };
    rep.detail(
        "footprint",
        detail(&plan, tracked, &own, &scrapes, peer_detail),
    );
    drop(peer);
    drop(daemon);
    drop(workload);
    Ok(())
}

/// Sizes and windows of the run.
struct Plan {
    cgroups: usize,
    /// Cgroups with a small process in them.
    busy: usize,
    settle: Duration,
    window: Duration,
    scrapes: usize,
}

impl Plan {
    fn new(ctx: &Ctx) -> Self {
        Self {
            cgroups: 1000,
            busy: 5,
            settle: ctx.pick(Duration::from_secs(15), Duration::from_secs(5)),
            window: ctx.pick(Duration::from_secs(60), Duration::from_secs(10)),
            scrapes: ctx.pick(20, 7),
        }
    }
}

/// The cgroups, half with a limit, and the processes in the first few.
struct Workload {
    // Fields drop in order: the processes leave before their cgroups go.
    _procs: Vec<ChildGuard>,
    _cgroups: Vec<TestCgroup>,
}

impl Workload {
    fn create(ctx: &Ctx, plan: &Plan) -> Self {
        let t = Instant::now();
        let cgroups: Vec<TestCgroup> = (0..plan.cgroups)
            .map(|i| TestCgroup::new(&format!("bench-fp{i}"), (i % 2 == 0).then_some(256 * MIB)))
            .collect();
        let procs = cgroups[..plan.busy]
            .iter()
            .map(|cg| ChildGuard(cg.spawn(ctx.memhog().args(["hold", "4", "3600"]))))
            .collect();
        println!(
            "footprint: {} cgroups created in {:.1} s",
            plan.cgroups,
            t.elapsed().as_secs_f64()
        );
        Self {
            _procs: procs,
            _cgroups: cgroups,
        }
    }
}

/// Waits (up to 60 s) until the daemon tracks `n` cgroups; how many it tracks.
fn wait_tracked(daemon: &Daemon, n: usize) -> Result<f64> {
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
    Ok(tracked)
}

/// The daemon's RSS and CPU over a window once it settled, and its /metrics.
struct Footprint {
    used: procfs::CpuUse,
    rss: f64,
    rss_max: f64,
    hwm: Option<f64>,
    fds: usize,
    threads: Option<u64>,
    series: usize,
    body_bytes: usize,
}

impl Footprint {
    fn measure(daemon: &Daemon, window: Duration) -> Result<Self> {
        let pid = daemon.pid();
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
        Ok(Self {
            used,
            rss,
            rss_max,
            hwm,
            fds,
            threads,
            series: series_count(&body),
            body_bytes: body.len(),
        })
    }

    fn print(&self, tracked: f64) {
        println!(
            "footprint: tracked {tracked}, RSS {:.1} MiB (max {:.1}, HWM {:?}), CPU {:.3}% of a core over {:.0} s (schedstat {:.3}%), {} series, {} bytes",
            self.rss,
            self.rss_max,
            self.hwm,
            self.used.percent,
            self.used.seconds,
            self.used.sched_percent,
            self.series,
            self.body_bytes
        );
    }
}

/// Scrape times of oomwatch and node_exporter, taken alternately so drift
/// of a shared machine hits both.
struct Scrapes {
    ours_ms: Vec<f64>,
    ours_median: f64,
    peer_ms: Vec<f64>,
    peer_median: Option<f64>,
    peer_series: Option<usize>,
    peer_bytes: Option<usize>,
}

impl Scrapes {
    fn alternate(daemon: &Daemon, peer: Option<&NodeExporter>, n: usize) -> Result<Self> {
        let mut ours_ms = Vec::new();
        let mut peer_ms = Vec::new();
        let mut peer_series = None;
        let mut peer_bytes = None;
        let time_get = |port: u16| -> Result<(f64, String)> {
            let t = Instant::now();
            let body = http_get(port, "/metrics")?;
            Ok((t.elapsed().as_secs_f64() * 1e3, body))
        };
        for _ in 0..n {
            ours_ms.push(time_get(daemon.port)?.0);
            if let Some(p) = peer {
                let (ms, b) = time_get(p.port)?;
                peer_ms.push(ms);
                peer_series = Some(series_count(&b));
                peer_bytes = Some(b.len());
            }
        }
        Ok(Self {
            ours_median: median(&ours_ms),
            peer_median: (!peer_ms.is_empty()).then(|| median(&peer_ms)),
            ours_ms,
            peer_ms,
            peer_series,
            peer_bytes,
        })
    }

    fn peer_detail(&self, rss: Option<f64>) -> Value {
        json!({"rss_mib": rss, "scrape_ms": self.peer_ms, "scrape_median_ms": self.peer_median, "series": self.peer_series, "body_bytes": self.peer_bytes})
    }
}

fn report_rows(
    rep: &mut Report,
    plan: &Plan,
    own: &Footprint,
    scrapes: &Scrapes,
    peer_rss: Option<f64>,
) {
    let pair = |ours: f64, p: Option<f64>, unit: &str| {
        p.map(|p| format!("node_exporter {} {unit} ({})", fmt_num(p), ratio(ours, p)))
            .unwrap_or_default()
    };
    let g = GROUP;
    rep.row(
        Row::new(g, "daemon RSS (VmRSS)", own.rss, "MiB")
            .target(Target::AtMost(20.0))
            .peer(pair(own.rss, peer_rss, "MiB")),
    );
    if let Some(hwm) = own.hwm {
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
            format!("daemon CPU over {:.0} s", own.used.seconds),
            own.used.percent,
            "% core",
        )
        .target(Target::AtMost(0.5)),
    );
    let series = own.series as f64;
    rep.row(
        Row::new(g, "series on /metrics (host)", series, "").peer(
            scrapes
                .peer_series
                .map(|s| format!("node_exporter {s} ({})", ratio(series, s as f64)))
                .unwrap_or_default(),
        ),
    );
    rep.row(
        Row::new(
            g,
            format!("scrape time, median of {}", plan.scrapes),
            scrapes.ours_median,
            "ms",
        )
        .peer(pair(scrapes.ours_median, scrapes.peer_median, "ms")),
    );
}

fn detail(plan: &Plan, tracked: f64, own: &Footprint, scrapes: &Scrapes, peer: Value) -> Value {
    let n = plan.cgroups;
    json!({
        "cgroups_created": n, "with_limit": n / 2, "with_process": plan.busy,
        "tracked": tracked, "settle_s": plan.settle.as_secs(), "window_s": own.used.seconds,
        "rss_mib": own.rss, "rss_max_mib": own.rss_max, "hwm_mib": own.hwm, "fds": own.fds, "threads": own.threads,
        "cpu_seconds": own.used.cpu_seconds, "cpu_percent": own.used.percent, "cpu_sched_percent": own.used.sched_percent,
        "series": own.series, "body_bytes": own.body_bytes,
        "scrape_ms": scrapes.ours_ms, "scrape_median_ms": scrapes.ours_median,
        "node_exporter": peer,
    })
}

/// prometheus-node-exporter on a free loopback port.
struct NodeExporter {
    peer: Peer,
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
        let mut peer = Peer::spawn(
            Command::new(NODE_EXPORTER)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            libc::SIGTERM,
            &format!("starting {NODE_EXPORTER}"),
        )?;
        peer.wait_ready(
            "node_exporter",
            Duration::from_secs(20),
            &format!("not answering on 127.0.0.1:{port}"),
            |_| http_get(port, "/metrics").is_ok_and(|b| b.contains("node_")),
        )?;
        // First scrape warms its collectors; give it a moment to settle.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Self { peer, port })
    }
}
