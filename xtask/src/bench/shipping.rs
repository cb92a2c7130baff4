//! Shipping (journald, OTLP, file sinks, delivered from the journal by the
//! daemon's workers in `outputs::shipping`):
//! - per-event cost of each output and the backlog drain rate after an
//!   outage, from the `shipping` bench of the oomwatch crate
//!   (`oomwatch/benches/shipping.rs`);
//! - delivery latency of real OOM kills through the real daemon, one at a
//!   time, from the kill's kernel time to its arrival at the OTLP test
//!   receiver (`tests/otlp/receiver.py`, official opentelemetry-proto
//!   decoding) and in the `[[sinks.file]]` file. The journal's fsync is in
//!   that path: a sink only sees a committed event.
//! - a 200-kill storm through the same daemon, counted at the receiver and
//!   in the file against the kernel's per-cgroup counters.
//!
//! Clocks: the event's `ktime_ns` is CLOCK_MONOTONIC at `oom/mark_victim`.
//! The file's arrival is stamped here with CLOCK_MONOTONIC (the file is
//! polled every millisecond, so up to ~1 ms late). The receiver stamps
//! `received_unix_nano` with CLOCK_REALTIME (Python's time.time_ns() once
//! the request body is read); the kill is put on that clock with the
//! REALTIME - MONOTONIC offset read here before the kills (the tightest of
//! several bracketed reads), so NTP slewing during the bench is the only error.

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use oomwatch_tests::{ChildGuard, Daemon, Tail, TempDir, TestCgroup, monotonic_ns, otlp::OtlpReceiver};
use serde_json::{Value, json};

use super::{
    Ctx, MIB, Report, Row, Target, cargo_bench_json, latency::kill_one, metric_delta, metric_samples, percentile_of,
};

const GROUP: &str = "shipping";
/// Kill -> receiver with the journal's fsync in the path.
const LATENCY_P99_MS: f64 = 50.0;

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let mut detail = serde_json::Map::new();
    detail.insert("bench".into(), per_event_cost(ctx, rep)?);
    let python = crate::python::ensure_test_venv()?;
    // SAFETY: the figures run one after another on this thread; nothing reads the environment concurrently.
    unsafe { std::env::set_var("OOMWATCH_PYTHON", &python) };
    let mut pipeline = Pipeline::start()?;
    detail.insert("latency".into(), delivery_latency(ctx, rep, &mut pipeline)?);
    detail.insert("storm".into(), storm(ctx, rep, &mut pipeline)?);
    rep.detail("shipping", Value::Object(detail));
    Ok(())
}

// ------------------------------------------------- per-event cost, drain

fn num(v: &Value, path: &[&str]) -> Result<f64> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .with_context(|| format!("shipping bench: no {} in its JSON", path.join(".")))
}

fn per_event_cost(ctx: &Ctx, rep: &mut Report) -> Result<Value> {
    let drain_events: u64 = ctx.pick(20_000, 5_000);
    let args = [
        ("--iters", ctx.pick(20_000u64, 5_000)),
        ("--journald-entries", ctx.pick(2_000, 500)),
        ("--drain-events", drain_events),
    ];
    let args: Vec<String> = args.iter().flat_map(|(k, v)| [k.to_string(), v.to_string()]).collect();
    let v = cargo_bench_json("shipping", &args)?;
    let bytes = num(&v, &["event_json_bytes"])?;
    // (figure, JSON key, events per call, target in CPU µs per event)
    let costs: [(&str, &str, f64, Option<f64>); 8] = [
        ("record built once per event (JSON + human line)", "record_build_us", 1.0, Some(50.0)),
        ("journald entry encoded", "journald_encode_us", 1.0, Some(50.0)),
        ("OTLP protobuf, batch of 1", "otlp_protobuf_encode_1_us", 1.0, Some(100.0)),
        ("OTLP protobuf, per event in a batch of 100", "otlp_protobuf_encode_100_us", 100.0, Some(50.0)),
        ("OTLP JSON, batch of 1", "otlp_json_encode_1_us", 1.0, None),
        ("OTLP JSON, per event in a batch of 100", "otlp_json_encode_100_us", 100.0, Some(100.0)),
        ("file append (no fsync)", "file_append_us", 1.0, Some(50.0)),
        ("file append + fdatasync", "file_append_fdatasync_us", 1.0, None),
    ];
    for (figure, key, per_call, target) in costs {
        let cpu = num(&v, &[key, "cpu_us"])? / per_call;
        let wall = num(&v, &[key, "wall_us"])? / per_call;
        let mut row = Row::new(GROUP, format!("per event: {figure}, CPU"), cpu, "us")
            .peer(format!("wall {wall:.1} us"));
        if let Some(t) = target {
            row = row.target(Target::AtMost(t));
        }
        rep.row(row);
    }
    match num(&v, &["journald_send", "send_cpu_us_per_entry"]) {
        Ok(cpu) => rep.row(
            Row::new(GROUP, "per event: journald send (native protocol), CPU", cpu, "us")
                .target(Target::AtMost(50.0))
                .peer(format!(
                    "wall {:.1} us; {} of {} stored by a private journald",
                    num(&v, &["journald_send", "send_us_per_entry"]).unwrap_or(f64::NAN),
                    v["journald_send"]["stored"],
                    v["journald_send"]["entries"]
                )),
        ),
        Err(_) => rep.row(Row::text(GROUP, "per event: journald send", format!("not run: {}", v["journald_send"]))),
    }
    println!("shipping: event JSON {bytes:.0} B, load {}", v["load_average"]);
    drain_rows(rep, &v, drain_events)?;
    Ok(v)
}

/// Events per second a sink catches up at, from a backlog of N kills.
fn drain_rows(rep: &mut Report, v: &Value, events: u64) -> Result<()> {
    let drains = v["backlog_drain"].as_object().context("shipping bench: no backlog_drain")?;
    for (sink, d) in drains {
        let rate = num(d, &["events_per_s"])?;
        let secs = num(d, &["seconds"])?;
        println!("shipping: {sink} drained a backlog of {events} kills in {secs:.2} s ({rate:.0} events/s)");
        rep.row(
            Row::new(GROUP, format!("backlog drain after an outage, {sink} ({events} kills)"), rate, "events/s")
                .target(Target::AtLeast(1_000.0))
                .shown(format!("{rate:.0} events/s ({secs:.2} s)")),
        );
    }
    Ok(())
}

// ---------------------------------------------------- the real pipeline

/// The daemon with an OTLP sink at the test receiver and a file sink, and a
/// watcher of that file. Stopped (receiver, daemon, watcher) on drop.
struct Pipeline {
    watcher: FileWatcher,
    daemon: Daemon,
    receiver: OtlpReceiver,
    _dir: TempDir,
}

impl Pipeline {
    fn start() -> Result<Self> {
        let receiver = OtlpReceiver::start(&[]);
        let dir = oomwatch_tests::temp_dir("bench-shipping");
        let file = dir.0.join("events.json");
        let config = oomwatch_tests::write_config(
            &dir,
            &format!(
                "[sinks.journald]\nenabled = false\n\n[[sinks.otlp]]\nendpoint = \"{}\"\n\n[[sinks.file]]\npath = \"{}\"\nmax_size_mib = 256\n",
                receiver.endpoint(),
                file.display()
            ),
        );
        let daemon = Daemon::start(&["--config", config.to_str().context("config path")?]);
        let watcher = FileWatcher::start(file);
        Ok(Self { watcher, daemon, receiver, _dir: dir })
    }

    /// Every oom_kill log record the receiver decoded: (victim pid, record
    /// uid, `received_unix_nano` of its request).
    fn received_kills(&self) -> Vec<(u64, String, u64)> {
        let mut out = Vec::new();
        for r in self.receiver.requests().iter().filter(|r| r.get("decode_error").is_none()) {
            let at = r["received_unix_nano"].as_u64().unwrap_or(0);
            for rl in r["request"]["resource_logs"].as_array().into_iter().flatten() {
                for sl in rl["scope_logs"].as_array().into_iter().flatten() {
                    for log in sl["log_records"].as_array().into_iter().flatten() {
                        if log["event_name"] != "oomwatch.oom_kill" {
                            continue;
                        }
                        let pid = attribute(log, "process.pid").and_then(|p| p.parse().ok());
                        let uid = attribute(log, "log.record.uid").unwrap_or_default();
                        if let Some(pid) = pid {
                            out.push((pid, uid, at));
                        }
                    }
                }
            }
        }
        out
    }
}

/// An OTLP attribute's value as text (MessageToDict gives int64 as a string).
fn attribute(log: &Value, key: &str) -> Option<String> {
    let a = log["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    let v = a["value"].as_object()?.values().next()?;
    Some(v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
}

/// Reads the lines appended to the sink's file every millisecond, stamping
/// each with CLOCK_MONOTONIC when it was first seen.
struct FileWatcher {
    lines: mpsc::Receiver<(Value, u64)>,
    seen: Vec<(Value, u64)>,
    stop: Arc<AtomicBool>,
}

impl FileWatcher {
    fn start(path: PathBuf) -> Self {
        let (tx, lines) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || follow(&path, &tx, &stopped));
        Self { lines, seen: Vec::new(), stop }
    }

    /// The first line (seen so far or within `timeout`) that `pred` accepts.
    fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<(Value, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(hit) = self.seen.iter().find(|(v, _)| pred(v)) {
                return Some(hit.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return None,
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn follow(path: &Path, tx: &mpsc::Sender<(Value, u64)>, stop: &AtomicBool) {
    let mut offset = 0u64;
    let mut partial = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
        let Ok(mut f) = std::fs::File::open(path) else { continue };
        if f.metadata().map(|m| m.len()).unwrap_or(0) <= offset || f.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else { continue };
        let at = monotonic_ns();
        offset += n as u64;
        partial.extend_from_slice(&buf);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            if let Ok(v) = serde_json::from_slice(&line) {
                let _ = tx.send((v, at));
            }
        }
    }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC in ns, from the tightest bracketed read.
fn realtime_offset_ns() -> i128 {
    let realtime = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    (0..20)
        .map(|_| {
            let m0 = monotonic_ns() as i128;
            let r = realtime();
            let m1 = monotonic_ns() as i128;
            (m1 - m0, r - (m0 + m1) / 2)
        })
        .min()
        .map(|(_, off)| off)
        .unwrap_or(0)
}

// ------------------------------------------------------- kill -> receiver

fn delivery_latency(ctx: &Ctx, rep: &mut Report, p: &mut Pipeline) -> Result<Value> {
    let kills = ctx.pick(50, 30);
    let cg = TestCgroup::new("bench-shipping", Some(32 * MIB));
    p.daemon.wait_tracked(&cg.path, Duration::from_secs(20));
    let (mut to_otlp, mut to_file) = (Vec::with_capacity(kills), Vec::with_capacity(kills));
    // The daemon's live stream, before the journal: what the sinks add to it.
    let mut socket = Tail::connect(&p.daemon);
    let mut to_socket = Vec::with_capacity(kills);
    let offset = realtime_offset_ns();
    let metrics_before = p.daemon.metrics();
    for i in 0..kills {
        let pid = kill_one(ctx, &cg)?;
        let (ev, file_at) = p
            .watcher
            .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
            .with_context(|| format!("kill {i}: pid {pid} not in the file sink within 10 s"))?;
        let ktime = ev["ktime_ns"].as_u64().context("oom_kill event without ktime_ns")?;
        let (_, socket_at) = socket
            .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
            .with_context(|| format!("kill {i}: pid {pid} not on the event socket within 10 s"))?;
        to_socket.push(socket_at.saturating_sub(ktime) as f64 / 1e6);
        let received = wait_received(p, pid, Duration::from_secs(10))
            .with_context(|| format!("kill {i}: pid {pid} not at the OTLP receiver within 10 s"))?;
        to_otlp.push((received as i128 - (ktime as i128 + offset)) as f64 / 1e6);
        to_file.push(file_at.saturating_sub(ktime) as f64 / 1e6);
        std::thread::sleep(Duration::from_millis(50));
    }
    let commits = JournalCommits::between(&metrics_before, &p.daemon.metrics());
    drop(socket);
    latency_rows(rep, kills, &to_otlp, &to_file, &commits);
    let socket_p50 = percentile_of(&to_socket, 50.0);
    println!("shipping: {kills} kills, kernel -> event socket (before the journal): p50 {socket_p50:.1} ms, p99 {:.1} ms", percentile_of(&to_socket, 99.0));
    rep.row(Row::new(GROUP, "kill -> daemon's event socket p50 (before the journal, same kills)", socket_p50, "ms"));
    Ok(json!({
        "journal_commits": commits.count, "journal_commit_mean_ms": commits.mean_ms, "journal_commits_over_50ms": commits.over_50ms,
        "kills": kills, "limit_bytes": 32 * MIB, "realtime_minus_monotonic_ns": offset.to_string(),
        "kill_to_otlp_receiver_ms": to_otlp, "kill_to_event_socket_ms": to_socket, "kill_to_file_ms": to_file,
        "clocks": "ktime_ns (CLOCK_MONOTONIC) + offset vs received_unix_nano (CLOCK_REALTIME); file: CLOCK_MONOTONIC, polled every 1 ms",
    }))
}

fn wait_received(p: &Pipeline, pid: u32, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((_, _, at)) = p.received_kills().into_iter().find(|(k, _, _)| *k == u64::from(pid)) {
            return Some(at);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The daemon's journal transactions (begin to fsync'd commit) during the
/// kills, from `oomwatch_journal_commit_seconds`: the part of the latency
/// that is this machine's disk.
struct JournalCommits {
    count: f64,
    mean_ms: f64,
    over_50ms: f64,
}

impl JournalCommits {
    fn between(before: &str, after: &str) -> Self {
        const NAME: &str = "oomwatch_journal_commit_seconds";
        let count = metric_delta(before, after, &format!("{NAME}_count"));
        let sum = metric_delta(before, after, &format!("{NAME}_sum"));
        let within = |text: &str| {
            metric_samples(text, &format!("{NAME}_bucket"))
                .iter()
                .find(|(labels, _)| {
                    labels.strip_prefix("le=\"").and_then(|l| l.trim_end_matches('"').parse::<f64>().ok()) == Some(0.05)
                })
                .map_or(0.0, |(_, v)| *v)
        };
        Self { count, mean_ms: sum * 1e3 / count.max(1.0), over_50ms: count - (within(after) - within(before)) }
    }

    fn text(&self) -> String {
        format!(
            "journal commits meanwhile: {:.0}, mean {:.1} ms, {:.0} over 50 ms",
            self.count, self.mean_ms, self.over_50ms
        )
    }
}

fn latency_rows(rep: &mut Report, kills: usize, to_otlp: &[f64], to_file: &[f64], commits: &JournalCommits) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    println!("shipping: {} (load average {load})", commits.text());
    for (sink, v) in [("OTLP receiver", to_otlp), ("file", to_file)] {
        let (p50, p99, max) = (percentile_of(v, 50.0), percentile_of(v, 99.0), percentile_of(v, 100.0));
        println!("shipping: {kills} kills, kernel -> {sink}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
        rep.row(Row::new(GROUP, format!("kill -> {sink} p50 ({kills} real kills)"), p50, "ms"));
        rep.row(
            Row::new(GROUP, format!("kill -> {sink} p99 (journal fsync in the path)"), p99, "ms")
                .target(Target::AtMost(LATENCY_P99_MS))
                .peer(format!("max {max:.1} ms; {}; load {load}", commits.text())),
        );
    }
}

// ------------------------------------------------------------ the storm

/// Bursts of 10 concurrent hogs in 10 of 20 cgroups every second.
fn storm(ctx: &Ctx, rep: &mut Report, p: &mut Pipeline) -> Result<Value> {
    let hogs_wanted = ctx.pick(200, 60);
    let cgroups: Vec<TestCgroup> = (0..20).map(|i| TestCgroup::new(&format!("bench-shipstorm{i}"), Some(32 * MIB))).collect();
    let before: Vec<u64> = cgroups.iter().map(TestCgroup::oom_kills).collect();
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let mut hogs: Vec<ChildGuard> = Vec::with_capacity(hogs_wanted);
    for round in 0.. {
        if hogs.len() >= hogs_wanted {
            break;
        }
        if let Some(wait) = (t0 + Duration::from_secs(round as u64)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for j in 0..10.min(hogs_wanted - hogs.len()) {
            let cg = &cgroups[(round * 10 + j) % cgroups.len()];
            hogs.push(ChildGuard(cg.spawn(ctx.memhog().args(["hog", "128"]))));
        }
    }
    let mut killed = HashSet::new();
    for h in &mut hogs {
        if h.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.signal() == Some(libc::SIGKILL)) {
            killed.insert(u64::from(h.pid()));
        }
    }
    let storm_s = t0.elapsed().as_secs_f64();
    let kernel: u64 = cgroups.iter().zip(&before).map(|(c, b)| c.oom_kills().saturating_sub(*b)).sum();
    let counted = StormCount::wait(p, &killed, Duration::from_secs(30));
    drop(hogs);
    storm_rows(rep, hogs_wanted, kernel, &killed, &counted, storm_s);
    Ok(json!({
        "hogs": hogs_wanted, "oom_killed_hogs": killed.len(), "kernel_per_cgroup": kernel, "storm_seconds": storm_s,
        "at_receiver": counted.otlp, "otlp_duplicates": counted.duplicates, "in_file": counted.file,
        "all_delivered_after_s": counted.settled_s,
    }))
}

struct StormCount {
    otlp: usize,
    duplicates: usize,
    file: usize,
    /// From the last hog's death until both sinks had every kill (or the wait ended).
    settled_s: f64,
}

impl StormCount {
    fn wait(p: &mut Pipeline, killed: &HashSet<u64>, timeout: Duration) -> Self {
        let t = Instant::now();
        loop {
            p.watcher.drain();
            let received = p.received_kills();
            let mut uids: BTreeMap<String, usize> = BTreeMap::new();
            let mut pids = HashSet::new();
            for (pid, uid, _) in received.iter().filter(|(pid, _, _)| killed.contains(pid)) {
                pids.insert(*pid);
                *uids.entry(uid.clone()).or_default() += 1;
            }
            let file: HashSet<u64> = p
                .watcher
                .seen
                .iter()
                .filter(|(v, _)| v["kind"] == "oom_kill")
                .filter_map(|(v, _)| v["victim"]["pid"].as_u64())
                .filter(|pid| killed.contains(pid))
                .collect();
            let done = pids.len() == killed.len() && file.len() == killed.len();
            if done || t.elapsed() > timeout {
                return Self {
                    otlp: pids.len(),
                    duplicates: uids.values().map(|n| n - 1).sum(),
                    file: file.len(),
                    settled_s: t.elapsed().as_secs_f64(),
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn storm_rows(rep: &mut Report, hogs: usize, kernel: u64, killed: &HashSet<u64>, c: &StormCount, storm_s: f64) {
    let n = killed.len();
    println!(
        "shipping storm: {hogs} hogs, {n} OOM-killed (kernel per-cgroup +{kernel}) in {storm_s:.1} s; OTLP receiver {}/{n} ({} duplicates), file {}/{n}, complete {:.1} s after the last kill",
        c.otlp, c.duplicates, c.file, c.settled_s
    );
    for (sink, got) in [("OTLP receiver", c.otlp), ("file", c.file)] {
        rep.row(
            Row::new(GROUP, format!("{hogs}-kill storm through the daemon, at the {sink}"), got as f64, "")
                .target(Target::AtLeast(n as f64))
                .shown(format!("{got}/{n} delivered")),
        );
    }
    rep.row(Row::new(GROUP, "storm: last kill -> every kill in both sinks", c.settled_s, "s"));
    if kernel != n as u64 {
        rep.note(format!("shipping storm: kernel per-cgroup counters moved by {kernel}, {n} hogs died by SIGKILL"));
    }
}
