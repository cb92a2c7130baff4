//! The journal (outputs/journal) on this machine's disk: what a kill costs
//! to make durable, how many high-rate events a second it sustains, how big
//! it gets, and how fast `oomwatch history` queries answer over a large
//! journal. Prints one JSON object on stdout for `cargo xtask bench`:
//!
//!   cargo bench -p oomwatch --bench journal -- [--dir DIR] [--events N] [--kills N]
//!
//! DIR is where the journals are made (default: the temp dir; the daemon's
//! default is /var/lib/oomwatch, on the root file system like /tmp here).
//! N events (default 1,000,000) fill the journal the summary and newest-kills
//! queries run over. Targets: kill p99 append-to-durable < 5 ms; 20,000
//! events/s sustained; summary over 1,000,000 events < 1 s.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use oomwatch::{
    wire::{
        AlertEvent, AlertName, AlertState, Attribution, Constraint, Event, EventBody, OomKill, PressureEvent, Ramp,
        ReclaimKindName, ReclaimStall, Severity, Trigger, Victim, Workload,
    },
    outputs::journal::{
        Appended, Journal, JournalConfig, JournalReader, Order, Query, SummaryBy, SummaryQuery,
    },
};

const MIB: u64 = 1 << 20;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn cgroup(i: u64) -> String {
    let pod = i % 500;
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod:08x}_{:04x}_4abc_8def_{:012x}.slice/cri-containerd-{:064x}.scope",
        pod * 7,
        pod * 7919,
        u128::from(pod) * 0x9e37_79b9_7f4a_7c15
    )
}

/// A kill as the daemon writes it: every victim field, the trigger, the
/// workload, and 60 s of the cgroup's history (one sample a second).
fn kill(i: u64, t: SystemTime) -> Event {
    let samples = 60u32;
    let usage: Vec<u64> = (0..samples).map(|s| 200 * MIB + u64::from(s) * 5 * MIB + (i % 977) * 4096).collect();
    let k = OomKill {
        victim: Victim {
            pid: 10_000 + (i % 50_000) as u32,
            tgid: Some(10_000 + (i % 50_000) as u32),
            comm: Some("java".into()),
            uid: Some(1000),
            oom_score_adj: Some(985),
            total_vm_bytes: Some(3_221_225_472),
            anon_rss_bytes: Some(512 * MIB - 8192),
            file_rss_bytes: Some(12 * MIB),
            shmem_rss_bytes: Some(0),
            pgtables_bytes: Some(2 * MIB),
        },
        trigger: Trigger { pid: 10_001, tid: 10_017, comm: "GC Thread#0".into(), cgroup: Some(cgroup(i)) },
        attribution: Attribution::Exact,
        constraint: Constraint::Memcg,
        limit_cgroup: Some(cgroup(i)),
        limit_cgroup_usage_bytes: Some(512 * MIB),
        limit_bytes: Some(512 * MIB),
        workload: Workload {
            unit: None,
            container_id: Some(format!("{:064x}", (i % 500) as u128 * 0x9e37_79b9_7f4a_7c15)),
            runtime: Some("containerd".into()),
            pod_uid: Some(format!("{:08x}-{:04x}-4abc-8def-{:012x}", i % 500, (i % 500) * 7, (i % 500) * 7919)),
            qos: Some("burstable".into()),
            ..Default::default()
        },
        main_process: None,
        history: Some(Ramp {
            seconds_ago: (0..samples).rev().collect(),
            working_set_bytes: usage.iter().map(|u| u - 3 * MIB).collect(),
            usage_bytes: usage,
            pressure_some_avg10: (0..samples).map(|s| s as f32 * 0.37).collect(),
            limit_bytes: None,
        }),
        oom_control: None,
        unavailable: vec!["oom_control".into()],
        cgroup_id: Some(4242 + i),
        cgroup_from: None,
        exit_latency_ms: Some(1.7),
        why: None,
        kernel_report: None,
        incident: None,
        throttled_for_s: None,
        top_consumers: Vec::new(),
        limit_history: None,
        composition: None,
    };
    Event { body: EventBody::OomKill(Box::new(k)), time: oomwatch::wire::rfc3339(t), cgroup: cgroup(i), ktime_ns: Some(i), seq: 0 }
}

fn pressure(i: u64, t: SystemTime) -> Event {
    Event {
        body: EventBody::Pressure(PressureEvent {
            trigger: "some 150000 2000000".into(),
            some_avg10: Some(12.5 + (i % 50) as f64),
            full_avg10: Some(3.25),
            some_total_us: Some(123_456_789 + i),
            full_total_us: Some(9_876_543 + i),
        }),
        time: oomwatch::wire::rfc3339(t),
        cgroup: cgroup(i),
        ktime_ns: None,
        seq: 0,
    }
}

fn stall(i: u64, t: SystemTime) -> Event {
    Event {
        body: EventBody::ReclaimStall(ReclaimStall {
            pid: 7 + (i % 1000) as u32,
            tid: 8 + (i % 1000) as u32,
            comm: "postgres".into(),
            duration_ms: 104.5 + (i % 100) as f64,
            reclaim_kind: ReclaimKindName::Memcg,
            nr_reclaimed: Some(32),
            order: Some(0),
            suppressed: (i % 7) as u32,
        }),
        time: oomwatch::wire::rfc3339(t),
        cgroup: cgroup(i),
        ktime_ns: Some(i),
        seq: 0,
    }
}

fn alert(i: u64, t: SystemTime) -> Event {
    Event {
        body: EventBody::Alert(AlertEvent {
            alert: AlertName::OomForecast,
            severity: Severity::Warning,
            state: AlertState::Firing,
            value: Some(42.0),
            summary: format!("{} reaches its limit in 42 s at the current rate", cgroup(i)),
            firing_since: Some(oomwatch::wire::rfc3339(t)),
            workload: None,
        }),
        time: oomwatch::wire::rfc3339(t),
        cgroup: cgroup(i),
        ktime_ns: None,
        seq: 0,
    }
}

/// The mix of a busy host: mostly pressure and stalls, an alert in 25, a
/// kill in 50.
fn mixed(i: u64, t: SystemTime) -> Event {
    match i % 100 {
        0 | 50 => kill(i, t),
        1..=4 => alert(i, t),
        5..=34 => stall(i, t),
        _ => pressure(i, t),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Dir(PathBuf);

impl Dir {
    fn new(base: &Path, name: &str) -> Self {
        let p = base.join(format!("oomwatch-bench-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Path, max_bytes: u64) -> Journal {
    let mut cfg = JournalConfig::new(dir);
    cfg.retention.max_bytes = max_bytes;
    Journal::open(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Append-to-durable of `n` kills, one at a time, each waited for; with
/// `background` high-rate events a second appended meanwhile by another
/// thread.
fn kill_latency(base: &Path, n: usize, background: u64, spacing: Duration) -> serde_json::Value {
    let dir = Dir::new(base, "latency");
    let j = std::sync::Arc::new(open(&dir.0, 1 << 30));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = (background > 0).then(|| {
        let (j, stop) = (j.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * background as f64) as u64;
                while i < due {
                    j.append_event(&mut mixed_high_rate(i, SystemTime::now()));
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            i
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let mut e = kill(i, SystemTime::now());
        let t = Instant::now();
        let a = j.append_event(&mut e);
        assert!(matches!(a, Appended::Queued(_)), "{a:?}");
        assert!(j.wait_durable(a.seq(), Duration::from_secs(10)), "kill {i} not durable in 10 s");
        lat.push(ms(t.elapsed()));
        // Kills come apart in time: each is its own commit and fsync, and
        // back to back they would queue on each other (and, under load, on
        // the disk the background events need).
        std::thread::sleep(spacing);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let fed = feeder.map(|f| f.join().unwrap_or(0)).unwrap_or(0);
    let stats = j.stats();
    lat.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "kills": n,
        "background_events_per_s": background,
        "background_events": fed,
        "kill_spacing_ms": ms(spacing),
        "p50_ms": percentile(&lat, 0.5),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": lat.last(),
        "dropped": stats.dropped,
        "commit_p50_bucket_ms": bucket_percentile(&stats.commit_latency, 0.5),
    })
}

fn bucket_percentile(h: &oomwatch::outputs::journal::Histogram, p: f64) -> Option<f64> {
    let want = (h.count as f64 * p).ceil() as u64;
    h.cumulative().into_iter().find(|(_, c)| *c >= want.max(1)).map(|(b, _)| b * 1e3)
}

fn mixed_high_rate(i: u64, t: SystemTime) -> Event {
    if i.is_multiple_of(4) { stall(i, t) } else { pressure(i, t) }
}

/// High-rate events: as fast as one thread can append, and paced at
/// `rate` a second for `secs`.
fn throughput(base: &Path, rate: u64, secs: u64) -> serde_json::Value {
    let dir = Dir::new(base, "rate");
    let j = open(&dir.0, 1 << 30);
    let n = 200_000u64;
    let t = Instant::now();
    let mut append_ns = Duration::ZERO;
    for i in 0..n {
        let mut e = mixed_high_rate(i, SystemTime::now());
        let a = Instant::now();
        j.append_event(&mut e);
        append_ns += a.elapsed();
    }
    assert!(j.flush(Duration::from_secs(120)));
    let unpaced = t.elapsed();
    let unpaced_dropped: u64 = j.stats().dropped.values().sum();
    j.close();

    let dir = Dir::new(base, "paced");
    let j = open(&dir.0, 1 << 30);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while i < due {
            j.append_event(&mut mixed_high_rate(i, SystemTime::now()));
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(j.flush(Duration::from_secs(60)));
    let drained = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let stats = j.stats();
    serde_json::json!({
        "unpaced_events": n,
        "unpaced_events_per_s": (n - unpaced_dropped) as f64 / unpaced.as_secs_f64(),
        "unpaced_dropped": unpaced_dropped,
        "append_call_ns": append_ns.as_nanos() as f64 / n as f64,
        "paced_target_per_s": rate,
        "paced_events": i,
        "paced_seconds_to_durable": drained.as_secs_f64(),
        "paced_dropped": stats.dropped,
        "paced_cpu_us_per_event": cpu * 1e6 / i.max(1) as f64,
        "paced_cpu_share_of_a_core": cpu / drained.as_secs_f64(),
        "commits": stats.commit_latency.count,
        "commit_p50_bucket_ms": bucket_percentile(&stats.commit_latency, 0.5),
        "commit_p99_bucket_ms": bucket_percentile(&stats.commit_latency, 0.99),
    })
}

/// CPU time of this process (every thread: the caller's serialization,
/// the writer, the checkpointer), which the machine's load does not inflate
/// the way it does wall time.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The database file after a clean close (the WAL is checkpointed into it
/// and removed).
fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn sizes(base: &Path) -> serde_json::Value {
    let dir = Dir::new(base, "size");
    let kills = 10_000u64;
    let j = open(&dir.0, 1 << 30);
    let t = SystemTime::now();
    let json_len = serde_json::to_string(&kill(1, t)).map(|s| s.len()).unwrap_or(0);
    for i in 0..kills {
        j.append_event(&mut kill(i, t));
    }
    j.close();
    let kill_file = file_bytes(&dir.0.join("journal.db"));
    drop(dir);

    let dir = Dir::new(base, "mixed");
    let j = open(&dir.0, 1 << 30);
    let n = 100_000u64;
    let mut json_bytes = 0u64;
    for i in 0..n {
        let mut e = mixed(i, t);
        json_bytes += serde_json::to_string(&e).map(|s| s.len() as u64).unwrap_or(0);
        j.append_event(&mut e);
    }
    j.close();
    let mixed_file = file_bytes(&dir.0.join("journal.db"));
    serde_json::json!({
        "kill_json_bytes": json_len,
        "bytes_per_kill_on_disk": kill_file as f64 / kills as f64,
        "mixed_events": n,
        "mixed_json_bytes": json_bytes,
        "mixed_file_bytes": mixed_file,
        "mixed_file_mib": mixed_file as f64 / MIB as f64,
    })
}

fn big_journal(base: &Path, n: u64) -> serde_json::Value {
    let dir = Dir::new(base, "big");
    let j = open(&dir.0, 4 << 30);
    // Thirty days of events, oldest first.
    let span = Duration::from_secs(30 * 86_400);
    let start = SystemTime::now() - span;
    let step = span.as_secs_f64() / n as f64;
    let fill = Instant::now();
    for i in 0..n {
        let t = start + Duration::from_secs_f64(step * i as f64);
        j.append_event(&mut mixed(i, t));
        if i % 50_000 == 49_999 {
            assert!(j.flush(Duration::from_secs(120)));
        }
    }
    assert!(j.flush(Duration::from_secs(120)));
    let fill_s = fill.elapsed().as_secs_f64();
    let held_kills = j.stats().events_by_kind.get("oom_kill").copied().unwrap_or(0);
    j.close();
    let file = file_bytes(&dir.0.join("journal.db"));

    let t = Instant::now();
    let reopened = open(&dir.0, 4 << 30);
    let open_ms = ms(t.elapsed());
    drop(reopened);

    let r = JournalReader::open(&dir.0).unwrap_or_else(|e| panic!("{e}"));
    let time = |f: &dyn Fn() -> usize| {
        let mut best = f64::MAX;
        let mut rows = 0;
        let first = Instant::now();
        rows = rows.max(f());
        let first_ms = ms(first.elapsed());
        for _ in 0..5 {
            let t = Instant::now();
            rows = f();
            best = best.min(ms(t.elapsed()));
        }
        serde_json::json!({ "first_ms": first_ms, "best_ms": best, "rows": rows })
    };
    let summary = time(&|| r.summary(&SummaryQuery::default()).map(|v| v.len()).unwrap_or(0));
    let summary_workload =
        time(&|| r.summary(&SummaryQuery { by: SummaryBy::Workload, ..Default::default() }).map(|v| v.len()).unwrap_or(0));
    let summary_glob = time(&|| {
        r.summary(&SummaryQuery {
            since: Some(SystemTime::now() - Duration::from_secs(7 * 86_400)),
            cgroup: Some(glob::Pattern::new("/kubepods.slice/*pod0000001*").unwrap_or_else(|e| panic!("{e}"))),
            ..Default::default()
        })
        .map(|v| v.len())
        .unwrap_or(0)
    });
    let newest_kills = time(&|| {
        r.query(&Query { kinds: vec!["oom_kill".into()], order: Order::NewestFirst, limit: Some(100), ..Default::default() })
            .map(|v| v.len())
            .unwrap_or(0)
    });
    let last = r.last_seq().unwrap_or(0);
    let replay = time(&|| r.query(&Query { after_seq: Some(last.saturating_sub(10_000)), ..Default::default() }).map(|v| v.len()).unwrap_or(0));
    let last_hour = time(&|| {
        r.query(&Query { since: Some(SystemTime::now() - Duration::from_secs(3600)), ..Default::default() })
            .map(|v| v.len())
            .unwrap_or(0)
    });
    let cgroup_kills = time(&|| {
        r.query(&Query {
            kinds: vec!["oom_kill".into()],
            cgroup: Some(glob::Pattern::new("*pod0000002a*").unwrap_or_else(|e| panic!("{e}"))),
            order: Order::NewestFirst,
            limit: Some(20),
            ..Default::default()
        })
        .map(|v| v.len())
        .unwrap_or(0)
    });
    let facts = time(&|| r.facts().map(|f| f.events as usize).unwrap_or(0));
    serde_json::json!({
        "events": n,
        "kills": held_kills,
        "fill_seconds": fill_s,
        "fill_events_per_s": n as f64 / fill_s,
        "file_bytes": file,
        "file_mib": file as f64 / MIB as f64,
        "open_ms": open_ms,
        "summary_by_cgroup": summary,
        "summary_by_workload": summary_workload,
        "summary_7_days_glob": summary_glob,
        "newest_100_kills": newest_kills,
        "replay_last_10000": replay,
        "last_hour": last_hour,
        "newest_20_kills_of_one_cgroup_glob": cgroup_kills,
        "facts": facts,
    })
}

/// The disk's own floor: a 4 KiB append and fdatasync, as often as the
/// kills above. No store that makes a kill durable can beat it.
fn fsync_floor(base: &Path, n: usize) -> serde_json::Value {
    use std::io::Write as _;
    let dir = Dir::new(base, "fsync");
    let _ = std::fs::create_dir_all(&dir.0);
    let path = dir.0.join("probe");
    let mut f = match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => f,
        Err(e) => return serde_json::json!({ "error": format!("{}: {e}", path.display()) }),
    };
    let page = vec![7u8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if f.write_all(&page).and_then(|()| f.sync_data()).is_err() {
            break;
        }
        lat.push(ms(t.elapsed()));
        std::thread::sleep(Duration::from_millis(5));
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({ "syncs": lat.len(), "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99) })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base: PathBuf = arg(&args, "--dir", std::env::temp_dir());
    let events: u64 = arg(&args, "--events", 1_000_000);
    let kills: usize = arg(&args, "--kills", 500);
    let floor = fsync_floor(&base, kills);
    let idle = kill_latency(&base, kills, 0, Duration::from_millis(20));
    let loaded = kill_latency(&base, kills, 20_000, Duration::from_millis(50));
    let rate = throughput(&base, 20_000, 5);
    let size = sizes(&base);
    let big = big_journal(&base, events);
    let out = serde_json::json!({
        "bench": "journal",
        "dir": base,
        "targets": { "kill_p99_ms": 5.0, "events_per_s": 20_000, "summary_1m_ms": 1000.0 },
        "fsync_floor": floor,
        "kill_latency_idle": idle,
        "kill_latency_under_20k_per_s": loaded,
        "throughput": rate,
        "size": size,
        "big_journal": big,
    });
    println!("{out}");
}
