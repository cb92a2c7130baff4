//! A daemon that starts while a cgroup is OOM-killed over and over: a
//! crash-looping container on a host whose oomwatch restarts or is
//! upgraded. A file of its own: the kills make the kernel rate-limit its
//! OOM reports host-wide for a few seconds, and other tests read them.

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt as _,
    process::Stdio,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

/// Hogs killed one after the other from this many threads: on two CPUs,
/// about 50 kills a second, so several land while the daemon attaches its
/// programs one by one.
const KILLERS: usize = 4;

/// Until stopped, starts hogs in `cg` and keeps each one the kernel killed,
/// with when its death was seen (monotonic ns).
fn kill_loop(cg: &TestCgroup, stop: &std::sync::atomic::AtomicBool) -> Vec<(u32, u64)> {
    let mut killed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "128"]).stdout(Stdio::null()).stderr(Stdio::null())));
        let status = hog.wait_timeout(Duration::from_secs(10)).expect("a 128 MiB hog under a 32 MiB limit is killed");
        if status.signal() == Some(libc::SIGKILL) {
            killed.push((hog.pid(), monotonic_ns()));
        }
    }
    killed
}

/// Before: the victim-task part joined the kill record before the loader
/// asked for it, while the rows still attached. Each kill then went out
/// whole from the tracepoint part and again, half, at the next kill on the
/// CPU: counted twice, the half one once credited to another test's
/// container. And a first kill read before the cgroup's first sample was
/// "the host ran out of memory" (its limit count, read after the kill,
/// had not moved), which pages as a host OOM.
#[test]
fn a_daemon_started_amid_kills_reports_each_kill_once_and_none_as_the_host() {
    if !require_root("a_daemon_started_amid_kills_reports_each_kill_once_and_none_as_the_host") {
        return;
    }
    let cg = Arc::new(TestCgroup::new("amid", Some(32 * MIB)));
    let mut killers = Crowd::default();
    for _ in 0..KILLERS {
        let cg = cg.clone();
        killers.spawn(move |stop| kill_loop(&cg, stop));
    }
    let started = Instant::now();
    while cg.oom_kills() < 10 {
        assert!(started.elapsed() < Duration::from_secs(20), "the hogs are not being killed: {} kills", cg.oom_kills());
        std::thread::sleep(Duration::from_millis(20));
    }

    let before_start = cg.oom_kills();
    let daemon = Daemon::start(&[]);
    let ready_ns = monotonic_ns();
    let during_start = cg.oom_kills() - before_start;
    assert!(during_start > 0, "no kill while the daemon started: the test proves nothing");
    let mut tail = Tail::start(&daemon, &["--kind", "oom_kill", "--since", "5m"]);
    std::thread::sleep(Duration::from_secs(2));
    let killed: Vec<(u32, u64)> = killers.finish().into_iter().flatten().collect();

    // Every hog that died well after the daemon was ready has its kill told.
    let after_ready: Vec<u32> = killed.iter().filter(|&&(_, at)| at > ready_ns + 100_000_000).map(|&(pid, _)| pid).collect();
    assert!(after_ready.len() >= 10, "{} kills after the daemon was ready", after_ready.len());
    for pid in &after_ready {
        tail.wait_for(Duration::from_secs(10), |v| v["victim"]["pid"] == *pid).unwrap_or_else(|| panic!("no oom_kill for pid {pid}\n{}", daemon.log_text()));
    }
    // A second record of a kill came at the next kill on the CPU: there is
    // none left, so whatever was coming is here.
    let _ = tail.wait_for(Duration::from_secs(1), |_| false);

    let ours: HashMap<u32, u64> = killed.iter().copied().collect();
    let mut told: HashMap<u64, Vec<&serde_json::Value>> = HashMap::new();
    for (event, _) in &tail.seen {
        if let Some(pid) = event["victim"]["pid"].as_u64()
            && ours.contains_key(&(pid as u32))
        {
            told.entry(pid).or_default().push(event);
        }
    }
    let twice: Vec<_> = told.iter().filter(|(_, events)| events.len() > 1).collect();
    assert!(twice.is_empty(), "kills told more than once: {twice:#?}");
    let host: Vec<_> = told.values().flatten().filter(|e| e["constraint"] == "global").collect();
    assert!(host.is_empty(), "kills at a 32 MiB cgroup limit told as the host running out: {host:#?}");
    for event in told.values().flatten() {
        assert!(matches!(event["constraint"].as_str(), Some("memcg" | "unknown")), "{event}");
        assert!(event["cgroup"] == cg.path.as_str() || event["cgroup"] == "unknown", "{event}");
    }
    let kills_from_start = told.len() as f64;
    assert!(kills_from_start >= after_ready.len() as f64);

    // A kill published unplaced is counted once its report places it, or
    // as published after a 5 s hold (at the next 5 s reconciliation).
    let counted_of = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("oomwatch_oom_kills_total{") && (l.contains(&format!("cgroup=\"{}\"", cg.path)) || l.contains("cgroup=\"unknown\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut metrics = daemon.metrics();
    while counted_of(&metrics) < kills_from_start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        metrics = daemon.metrics();
    }
    for program in ["mark_victim", "mark_victim_task"] {
        let series = format!("oomwatch_kernel_program_errors_total{{program=\"{program}\"}}");
        assert_eq!(metric_value(&metrics, &series), Some(0.0), "{series}: a kill record sent incomplete\n{metrics}");
    }
    let counted = counted_of(&metrics);
    assert_eq!(counted, kills_from_start, "each kill counted once in oomwatch_oom_kills_total:\n{metrics}");
    assert!(!metrics.contains("constraint=\"global\""), "{metrics}");
    println!(
        "{} kills in all, {during_start} while the daemon started, {} told; the kernel counted {}",
        killed.len(),
        told.len(),
        cg.oom_kills()
    );
    // The kernel's OOM report rate limit (10 every 5 s) is host-wide: let it
    // pass before the next test binary kills and reads reports.
    std::thread::sleep(Duration::from_secs(5));
}
