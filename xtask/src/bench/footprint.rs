//! Footprint at default settings with 1,000 and 10,000 real memory cgroups
//! (children of one `oomwatch-test-*` parent, half with a limit, a few with
//! a small process): daemon RSS, peak RSS (VmHWM), CPU over a window after
//! it settled while both it and the peer are scraped every 15 s as
//! Prometheus would, daemon CPU per cgroup per sampler tick, series on
//! /metrics, and scrape time.
//!
//! Peer, same run: prometheus-node-exporter on a loopback port; its RSS,
//! CPU over the same window, and scrape time, scraped alternately with
//! oomwatch so drift hits both.

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
/// deploy/systemd/oomwatch.service's LimitNOFILE.
const NOFILE: &str = "--nofile=65536:65536";
/// The daemon's default `cgroups.sample_interval`.
const SAMPLE_INTERVAL_S: f64 = 1.0;

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    for size in Size::ALL {
        measure(ctx, rep, size)?;
    }
    Ok(())
}

/// One host size and its targets.
#[derive(Clone, Copy)]
struct Size {
    cgroups: usize,
    group: &'static str,
    rss_mib: f64,
    /// Peak RSS since start: a memory limit set for an agent is set against it.
    peak_mib: f64,
    cpu_percent: f64,
    scrape_ms: Option<f64>,
}

impl Size {
    const ALL: [Size; 2] = [
        Size { cgroups: 1000, group: "footprint, 1000 cgroups", rss_mib: 20.0, peak_mib: 32.0, cpu_percent: 0.5, scrape_ms: None },
        Size { cgroups: 10_000, group: "footprint, 10000 cgroups", rss_mib: 40.0, peak_mib: 40.0, cpu_percent: 1.0, scrape_ms: Some(50.0) },
    ];
}

fn measure(ctx: &Ctx, rep: &mut Report, size: Size) -> Result<()> {
    let plan = Plan::new(ctx, size);
    let workload = Workload::create(ctx, &plan);
    // 10,000 is over the default cap (cgroups.max_cgroups = 4096): a host
    // that size raises it, and so does this run. The sampler keeps a file
    // open per cgroup (3 on v1 near the limit): the daemon gets the
    // open-file limit its systemd unit sets (LimitNOFILE=65536) where this
    // shell may give it, not this shell's.
    let cap = (size.cgroups + 1000).to_string();
    let args = ["--max-cgroups", cap.as_str()];
    let daemon = if nofile_raisable() {
        Daemon::start_under(&["prlimit", NOFILE], &args)
    } else {
        Daemon::start(&args)
    };
    let tracked = wait_tracked(&daemon, size.cgroups, plan.track_within)?;
    if tracked < size.cgroups as f64 {
        let why = fd_limit_cause(daemon.pid());
        let shown = format!("{tracked} of {} (open-file limit, see note)", size.cgroups);
        rep.row(Row::new(size.group, "cgroups tracked", tracked, "").shown(shown));
        rep.note(format!("{}: the figures below are for {tracked} tracked cgroups ({why})", size.group));
    }
    std::thread::sleep(plan.settle);
    let peer = NodeExporter::start();
    if let Err(e) = &peer {
        rep.peer_failed("footprint", "node_exporter", e);
    }
    let own = Footprint::measure(&daemon, peer.as_ref().ok(), plan.window)?;
    own.print(tracked);
    let scrapes = Scrapes::alternate(&daemon, peer.as_ref().ok(), plan.scrapes)?;
    let peer_rss = peer.as_ref().ok().and_then(|p| procfs::rss_mib(p.peer.pid()));
    report_rows(rep, &plan, tracked, &own, &scrapes, peer_rss);
    let peer_detail = match &peer {
        Ok(_) => scrapes.peer_detail(peer_rss, own.peer_cpu.as_ref()),
        Err(e) => json!({"error": format!("{e:#}")}),
    };
    let key = format!("footprint_{}", size.cgroups);
    rep.detail(&key, detail(&plan, tracked, &own, &scrapes, peer_detail));
    drop(peer);
    drop(daemon);
    let t = Instant::now();
    drop(workload);
    println!("footprint: {} cgroups removed in {:.1} s", size.cgroups, t.elapsed().as_secs_f64());
    Ok(())
}

/// Sizes and windows of the run.
struct Plan {
    size: Size,
    /// Cgroups with a small process in them.
    busy: usize,
    track_within: Duration,
    settle: Duration,
    window: Duration,
    scrapes: usize,
}

impl Plan {
    fn new(ctx: &Ctx, size: Size) -> Self {
        Self {
            size,
            busy: 5,
            // inotify brings new cgroups in as they appear; a cold start
            // walks them all at about 0.2 ms each.
            track_within: Duration::from_secs(60 + size.cgroups as u64 / 100),
            settle: ctx.pick(Duration::from_secs(15), Duration::from_secs(5)),
            window: ctx.pick(Duration::from_secs(60), Duration::from_secs(15)),
            scrapes: ctx.pick(20, 7),
        }
    }
}

/// The cgroups under one parent, half with a limit, and the processes in
/// the first few.
struct Workload {
    // Fields drop in order: the processes leave before their cgroups go,
    // and the children before their parent.
    _procs: Vec<ChildGuard>,
    _cgroups: Vec<TestCgroup>,
    _parent: TestCgroup,
}

impl Workload {
    fn create(ctx: &Ctx, plan: &Plan) -> Self {
        let t = Instant::now();
        let parent = TestCgroup::new("bench-fp", None);
        let cgroups: Vec<TestCgroup> = (0..plan.size.cgroups)
            .map(|i| parent.child(&format!("c{i}"), (i % 2 == 0).then_some(256 * MIB)))
            .collect();
        let procs = cgroups[..plan.busy]
            .iter()
            .map(|cg| ChildGuard(cg.spawn(ctx.memhog().args(["hold", "4", "3600"]))))
            .collect();
        println!(
            "footprint: {} cgroups created under {} in {:.1} s",
            plan.size.cgroups,
            parent.path,
            t.elapsed().as_secs_f64()
        );
        Self {
            _procs: procs,
            _cgroups: cgroups,
            _parent: parent,
        }
    }
}

/// Whether this process may give the daemon the unit's open-file limit
/// (needs CAP_SYS_RESOURCE above the current hard limit).
fn nofile_raisable() -> bool {
    Command::new("prlimit")
        .args([NOFILE, "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the daemon tracks fewer cgroups than exist: its open-file limit.
fn fd_limit_cause(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("?")
        .to_owned();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    format!(
        "the daemon holds {open} files, its open-file hard limit here is {hard} and this sandbox \
         cannot raise it (no CAP_SYS_RESOURCE); a cgroup needs 1, 3 on v1 once near its limit; \
         the systemd unit sets 65536"
    )
}

/// Waits (up to `within`) until the daemon tracks `n` cgroups, or until the
/// count has not moved for 10 s; how many it tracks.
fn wait_tracked(daemon: &Daemon, n: usize, within: Duration) -> Result<f64> {
    let t = Instant::now();
    let mut last = (0.0, Instant::now());
    let tracked = loop {
        let m = daemon.metrics();
        let tracked = metric_samples(&m, "oomwatch_cgroups")
            .iter()
            .find(|(l, _)| l.contains("state=\"tracked\""))
            .map(|(_, v)| *v)
            .unwrap_or(0.0);
        if tracked != last.0 {
            last = (tracked, Instant::now());
        }
        let stalled = tracked >= 1000.0 && last.1.elapsed() > Duration::from_secs(10);
        if tracked >= n as f64 || stalled || t.elapsed() > within {
            break tracked;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if tracked < n.min(1000) as f64 {
        // What the daemon says of the others, its files and its last words:
        // a full run once saw 3 tracked for 160 s and left nothing to go on.
        let m = daemon.metrics();
        let counts: Vec<String> = metric_samples(&m, "oomwatch_cgroups")
            .iter()
            .map(|(l, v)| format!("{l}={v}"))
            .collect();
        let log = daemon.log_text();
        let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "the daemon tracks {tracked} cgroups after {} s, expected at least {n}; counts: {}; {}; daemon log tail:\n{}",
            within.as_secs(),
            counts.join(", "),
            fd_limit_cause(daemon.pid()),
            tail.join("\n")
        );
    }
    println!("footprint: daemon tracks {tracked} cgroups after {:.1} s", t.elapsed().as_secs_f64());
    Ok(tracked)
}

/// The daemon's RSS and CPU over a window once it settled (and the peer's
/// CPU over the same window), and its /metrics.
struct Footprint {
    used: procfs::CpuUse,
    peer_cpu: Option<procfs::CpuUse>,
    rss: f64,
    rss_max: f64,
    hwm: Option<f64>,
    fds: usize,
    threads: Option<u64>,
    series: usize,
    body_bytes: usize,
}

/// How often Prometheus scrapes by default.
const SCRAPE_EVERY: Duration = Duration::from_secs(15);

impl Footprint {
    fn measure(daemon: &Daemon, peer: Option<&NodeExporter>, window: Duration) -> Result<Self> {
        let pid = daemon.pid();
        let cpu = procfs::CpuWindow::start(pid).context("daemon /proc stat")?;
        let peer_window = peer.and_then(|p| procfs::CpuWindow::start(p.peer.pid()));
        let mut rss_max = 0.0f64;
        let mut next_scrape = Instant::now();
        procfs::sample_until(Instant::now() + window, Duration::from_secs(1), || {
            rss_max = rss_max.max(procfs::rss_mib(pid).unwrap_or(0.0));
            if Instant::now() >= next_scrape {
                next_scrape += SCRAPE_EVERY;
                let _ = http_get(daemon.port, "/metrics");
                if let Some(p) = peer {
                    let _ = http_get(p.port, "/metrics");
                }
            }
        });
        let used = cpu.end().context("daemon /proc stat")?;
        let peer_cpu = peer_window.and_then(|w| w.end());
        let rss = procfs::rss_mib(pid).context("daemon VmRSS")?;
        let hwm = procfs::status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        let threads = procfs::status_kib(pid, "Threads");
        let body = daemon.metrics();
        Ok(Self {
            used,
            peer_cpu,
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

    /// Daemon CPU per tracked cgroup per sampler tick, in microseconds:
    /// all the daemon's work over the window (scrapes included), so an
    /// upper bound on what the sampler costs.
    fn per_cgroup_tick_us(&self, tracked: f64) -> f64 {
        let ticks = self.used.seconds / SAMPLE_INTERVAL_S;
        self.used.cpu_seconds * 1e6 / ticks / tracked.max(1.0)
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

    fn peer_detail(&self, rss: Option<f64>, cpu: Option<&procfs::CpuUse>) -> Value {
        json!({"rss_mib": rss, "cpu_percent": cpu.map(|c| c.percent), "scrape_ms": self.peer_ms, "scrape_median_ms": self.peer_median, "series": self.peer_series, "body_bytes": self.peer_bytes})
    }
}

fn node_exporter(ours: f64, p: Option<f64>, unit: &str) -> String {
    p.map(|p| format!("node_exporter {} {unit} ({})", fmt_num(p), ratio(ours, p)))
        .unwrap_or_default()
}

fn report_rows(
    rep: &mut Report,
    plan: &Plan,
    tracked: f64,
    own: &Footprint,
    scrapes: &Scrapes,
    peer_rss: Option<f64>,
) {
    let size = plan.size;
    let g = size.group;
    rep.row(
        Row::new(g, "daemon RSS (VmRSS)", own.rss, "MiB")
            .target(Target::AtMost(size.rss_mib))
            .peer(node_exporter(own.rss, peer_rss, "MiB")),
    );
    if let Some(hwm) = own.hwm {
        rep.row(
            Row::new(g, "daemon peak RSS since start (VmHWM)", hwm, "MiB")
                .target(Target::AtMost(size.peak_mib)),
        );
    }
    let peer_cpu = own.peer_cpu.as_ref().map(|c| c.percent);
    rep.row(
        Row::new(
            g,
            format!(
                "daemon CPU over {:.0} s, scraped every {} s",
                own.used.seconds,
                SCRAPE_EVERY.as_secs()
            ),
            own.used.percent,
            "% core",
        )
        .target(Target::AtMost(size.cpu_percent))
        .peer(node_exporter(own.used.percent, peer_cpu, "% core")),
    );
    rep.row(Row::new(
        g,
        "daemon CPU per cgroup per 1 s sampler tick (all daemon work)",
        own.per_cgroup_tick_us(tracked),
        "us",
    ));
    let series = own.series as f64;
    rep.row(
        Row::new(g, "series on /metrics (host)", series, "")
            .peer(
                scrapes
                    .peer_series
                    .map(|s| format!("node_exporter {s} ({})", ratio(series, s as f64)))
                    .unwrap_or_default(),
            )
            .shown(format!("{} ({:.1} MiB)", own.series, own.body_bytes as f64 / MIB as f64)),
    );
    let mut scrape = Row::new(
        g,
        format!("/metrics scrape (render + read), median of {}", plan.scrapes),
        scrapes.ours_median,
        "ms",
    )
    .peer(node_exporter(scrapes.ours_median, scrapes.peer_median, "ms"));
    if let Some(t) = size.scrape_ms {
        scrape = scrape.target(Target::AtMost(t));
    }
    rep.row(scrape);
}

fn detail(plan: &Plan, tracked: f64, own: &Footprint, scrapes: &Scrapes, peer: Value) -> Value {
    let n = plan.size.cgroups;
    json!({
        "cgroups_created": n, "with_limit": n / 2, "with_process": plan.busy,
        "tracked": tracked, "settle_s": plan.settle.as_secs(), "window_s": own.used.seconds,
        "rss_mib": own.rss, "rss_max_mib": own.rss_max, "hwm_mib": own.hwm, "fds": own.fds, "threads": own.threads,
        "cpu_seconds": own.used.cpu_seconds, "cpu_percent": own.used.percent, "cpu_sched_percent": own.used.sched_percent,
        "cpu_per_cgroup_tick_us": own.per_cgroup_tick_us(tracked),
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
