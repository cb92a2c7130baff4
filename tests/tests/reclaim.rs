//! Reclaim stalls in a contained memory cgroup, observed through the
//! daemon's real outputs: /metrics, `oomwatch status --json` and the event
//! stream. The workload holds anonymous memory just under the cgroup's
//! limit and streams a file larger than the limit, so every read charges a
//! page that the cgroup must reclaim first.
//!
//! Assertions are qualitative (stalls counted, attributed to the right
//! cgroup and process); durations depend on the machine. Stalls of 100 ms
//! are rare on an idle host, so the daemon runs with a low
//! `--stall-threshold` to exercise the event path.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

/// A file on a real disk (page cache that can be reclaimed), not on tmpfs,
/// where it would be shmem; removed on drop.
struct DiskFile(PathBuf);

impl DiskFile {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from("/var/tmp");
        assert!(dir.is_dir(), "/var/tmp is needed for a file on disk");
        Self(dir.join(format!("oomwatch-test-{}.dat", unique(name))))
    }
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn status_json(daemon: &Daemon) -> Value {
    let out = Command::new(oomwatch_bin())
        .args(["status", "--json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("run oomwatch status");
    assert!(out.status.success(), "oomwatch status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn reclaim_stalls_reach_metrics_status_and_tail() {
    if !require_root("reclaim_stalls_reach_metrics_status_and_tail") {
        return;
    }
    let mut daemon = Daemon::start(&["--stall-threshold", "200us"]);
    let mut tail = Tail::start(&daemon, &["--kind", "reclaim_stall"]);
    let cg = TestCgroup::new("reclaim", Some(96 * MIB));
    let file = DiskFile::new("reclaim");
    let file_arg = file.0.to_str().unwrap().to_owned();
    let mut hog = ChildGuard(cg.spawn(memhog().args(["cache", &file_arg, "400", "20", "70"])));
    let pid = hog.pid();

    let series = format!("oomwatch_cgroup_reclaim_stalls_total{{cgroup=\"{}\"}}", cg.path);
    let stalls = wait_until(Duration::from_secs(60), || metric_value(&daemon.metrics(), &series).filter(|&v| v > 0.0))
        .unwrap_or_else(|| panic!("{series} never became > 0; metrics:\n{}", daemon.metrics()));
    println!("{series} = {stalls}");
    let metrics = daemon.metrics();
    let count = format!("oomwatch_cgroup_reclaim_stall_seconds_count{{cgroup=\"{}\"}}", cg.path);
    assert!(metric_value(&metrics, &count).is_some_and(|v| v > 0.0), "{count} in:\n{metrics}");
    let inf = format!("oomwatch_cgroup_reclaim_stall_seconds_bucket{{le=\"+Inf\",cgroup=\"{}\"}}", cg.path);
    assert_eq!(metric_value(&metrics, &inf), metric_value(&metrics, &count), "+Inf bucket equals the count");
    assert_eq!(metric_value(&metrics, "oomwatch_probe_attached{probe=\"reclaim_memcg_end\"}"), Some(1.0));

    // The hog is among the top stallers, in its own cgroup.
    let staller = wait_until(Duration::from_secs(30), || {
        let status = status_json(&daemon);
        let top = status["top_stallers"].as_array().expect("top_stallers in status --json").clone();
        top.into_iter().find(|s| s["pid"] == pid)
    })
    .unwrap_or_else(|| panic!("pid {pid} not among the top stallers: {}", status_json(&daemon)["top_stallers"]));
    assert_eq!(staller["cgroup"], cg.path.as_str(), "{staller}");
    assert_eq!(staller["comm"], "memhog", "{staller}");
    assert!(staller["count"].as_u64().is_some_and(|c| c > 0), "{staller}");
    assert!(staller["max_ms"].as_f64().unwrap() <= staller["total_ms"].as_f64().unwrap(), "{staller}");

    // Stalls over the threshold become events for that process.
    let (event, _) = tail
        .wait_for(Duration::from_secs(30), |v| v["kind"] == "reclaim_stall" && v["pid"] == pid)
        .unwrap_or_else(|| panic!("no reclaim_stall event for pid {pid}; saw {:?}", tail.seen));
    assert_eq!(event["cgroup"], cg.path.as_str(), "{event}");
    assert_eq!(event["comm"], "memhog", "{event}");
    assert_eq!(event["reclaim_kind"], "memcg", "the cgroup's limit made it reclaim: {event}");
    assert!(event["duration_ms"].as_f64().is_some_and(|d| d >= 0.2), "at least the threshold: {event}");
    assert!(event["tid"].as_u64().is_some() && event["suppressed"].as_u64().is_some(), "{event}");
    assert!(event["nr_reclaimed"].as_u64().is_some() && event["order"].as_i64().is_some(), "this kernel's format has both: {event}");
    assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");

    // The live exposition passes promtool, histogram and all.
    let exposition = daemon.metrics();
    match Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(mut child) => {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}");
        }
        Err(e) => println!("NOTE: promtool not runnable ({e}): exposition not linted (apt-get install prometheus)"),
    }

    // The whole workload (20 s), then what each program cost per run.
    let _ = hog.wait_timeout(Duration::from_secs(40));
    print_program_costs(daemon.pid());
    daemon.stop();
}

/// Average run time per invocation of the daemon's programs, when the
/// kernel collects it (`sysctl kernel.bpf_stats_enabled=1`; not changed here).
fn print_program_costs(daemon_pid: u32) {
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "1") {
        println!("(kernel.bpf_stats_enabled=0: no per-program run times)");
        return;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{daemon_pid}/fdinfo")) else { return };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        let (Some(id), Some(time), Some(runs)) = (field("prog_id:"), field("run_time_ns:"), field("run_cnt:")) else { continue };
        if runs == 0 {
            continue;
        }
        let name = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().skip_while(|w| *w != "name").nth(1).map(str::to_owned))
            .unwrap_or_else(|| format!("prog {id}"));
        println!("bpf program {name:<20} {runs:>8} runs, {:>7.1} ns per run", time as f64 / runs as f64);
    }
}
