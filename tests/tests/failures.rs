//! Faults and bad input: what oomwatch does, through its real outputs.
//! Each test here backs a row of the README's "Failure modes" table.

use std::time::{Duration, Instant};

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

/// The tests here that cause kills run one at a time: every daemon sees
/// every kill on the host. A daemon told to drop the next kill record
/// (`--inject-drop-kills`) would drop another test's; and in step, the
/// no-BTF tests' kills move a second tracked cgroup's oom_kill counter in
/// the other's daemon at the same moment, so the counters tell nothing.
static ONE_KILLER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_killer_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_KILLER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn kills_the_daemon_did_not_see_are_reconciled_from_kernel_counters() {
    if !require_root("kills_the_daemon_did_not_see_are_reconciled_from_kernel_counters") {
        return;
    }
    let _one_at_a_time = one_killer_at_a_time();
    // Lose the next kill record, as a full ring buffer would.
    let daemon = Daemon::start(&["--inject-drop-kills", "1"]);
    let mut tail = Tail::start(&daemon, &[]);
    let cg = TestCgroup::new("unseen", Some(48 * MIB));
    // The reconciler compares the kernel's counters with what it saw: it
    // must know the cgroup (and its zero count) before the kill.
    daemon.wait_tracked(&cg.path, Duration::from_secs(30));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    assert_eq!(cg.oom_kills(), 1);
    let (event, _) = tail
        .wait_for(Duration::from_secs(20), |v| v["kind"] == "unobserved_kills" && v["cgroup"] == cg.path.as_str())
        .unwrap_or_else(|| panic!("no unobserved_kills for {}; saw {:?}\n{}", cg.path, tail.seen, daemon.log_text()));
    assert_eq!(event["count"], 1);
    assert!(tail.seen.iter().all(|(v, _)| !(v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid())), "the kill itself was dropped");
    assert!(metric_value(&daemon.metrics(), "oomwatch_oom_kills_unobserved_total").is_some_and(|n| n >= 1.0));
    assert!(daemon.log_text().contains("did not observe (kernel counts") && daemon.log_text().contains(&cg.path), "logged with the cgroup");
}

/// A cgroup removed and made again under the same path (a systemd
/// service restarted after an OOM kill, within the daemon's removal grace)
/// is a new cgroup whose oom_kill counter starts again at 0. Before, the
/// daemon kept the old cgroup's count as the new one's baseline, so a kill
/// it did not see there was never found in the cgroup: the reconciler put
/// it on "/".
#[test]
fn a_kill_not_seen_in_a_cgroup_made_again_is_found_in_that_cgroup() {
    if !require_root("a_kill_not_seen_in_a_cgroup_made_again_is_found_in_that_cgroup") {
        return;
    }
    let _one_at_a_time = one_killer_at_a_time();
    let cg = TestCgroup::new("again", Some(48 * MIB));
    for _ in 0..2 {
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
        hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    }
    assert_eq!(cg.oom_kills(), 2);
    // Lose the next kill record, as a full ring buffer would.
    let daemon = Daemon::start(&["--inject-drop-kills", "1"]);
    let mut tail = Tail::start(&daemon, &["--kind", "unobserved_kills"]);
    daemon.wait_tracked(&cg.path, Duration::from_secs(30));

    std::fs::remove_dir(&cg.dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", cg.dir.display()));
    let usage_series = format!("oomwatch_cgroup_memory_usage_bytes{{cgroup=\"{}\"", cg.path);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.metrics().contains(&usage_series) {
        assert!(Instant::now() < deadline, "the daemon still tracks {} 30 s after its rmdir", cg.path);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::create_dir(&cg.dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", cg.dir.display()));
    cg.set_limit(48 * MIB);
    assert_eq!(cg.oom_kills(), 0, "a new cgroup counts from 0");
    daemon.wait_tracked(&cg.path, Duration::from_secs(30));

    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    assert_eq!(cg.oom_kills(), 1);
    let (event, _) = tail
        .wait_for(Duration::from_secs(20), |v| v["kind"] == "unobserved_kills")
        .unwrap_or_else(|| panic!("no unobserved_kills; saw {:?}\n{}", tail.seen, daemon.log_text()));
    assert_eq!(event["cgroup"], cg.path.as_str(), "{event}");
    assert_eq!(event["count"], 1, "{event}");
}


#[test]
fn without_btf_the_daemon_runs_and_says_attribution_is_approximate() {
    if !require_root("without_btf_the_daemon_runs_and_says_attribution_is_approximate") {
        return;
    }
    let _one_at_a_time = one_killer_at_a_time();
    // Known before the kill, as a workload's cgroup is: should /proc come
    // too late, its kill counter is compared with a count taken before.
    // Made before the daemon starts, so that its first scan finds it.
    let cg = TestCgroup::new("nobtf", Some(48 * MIB));
    let daemon = Daemon::start(&["--btf", "/nonexistent/vmlinux"]);
    let log = daemon.log_text();
    assert!(log.contains("/nonexistent/vmlinux") && log.contains("approximately"), "{log}");
    let mut tail = Tail::start(&daemon, &["--kind", "kill_seen", "--kind", "oom_kill"]);
    daemon.wait_tracked(&cg.path, Duration::from_secs(30));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    let (kill, _) = tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid()).expect("kill event");
    // A first word only where the kernel named the victim's cgroup: here
    // /proc is read first, and the kill is the first line.
    assert!(tail.seen.iter().all(|(v, _)| v["kind"] != "kill_seen"), "{:?}", tail.seen);
    assert_eq!(kill["attribution"], "approximate", "{kill}");
    assert_eq!(kill["cgroup"], cg.path.as_str(), "still the right cgroup, from /proc");
    // From /proc when read before the victim began exiting, else from the
    // cgroup's own oom_kill counter or the kernel's report: never the "/"
    // cgroup v1 shows for an exiting task.
    assert!(["proc_cgroup", "oom_kill_counter", "kernel_report"].iter().any(|from| kill["cgroup_from"] == *from), "{kill}");
    // Usage and limits cannot come from the kernel without BTF: the
    // cgroup files are read after the kill, and still name the limit.
    assert_eq!(kill["limit_cgroup"], cg.path.as_str(), "{kill}");
    assert_eq!(kill["limit_bytes"], 48 * MIB, "{kill}");
    assert!(kill["unavailable"].as_array().unwrap().iter().any(|u| u.as_str().is_some_and(|s| s.starts_with("victim task"))), "{kill}");
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, "oomwatch_probe_attached{probe=\"oom_victim_task\"}"), Some(0.0));
    // No usage walk without BTF: every cgroup is read from its file.
    assert_eq!(metric_value(&metrics, "oomwatch_probe_attached{probe=\"cgroup_usage_walk\"}"), Some(0.0));
    assert_eq!(metric_value(&metrics, "oomwatch_cgroup_usage_reads_total{source=\"walk\"}"), Some(0.0));
    assert!(metric_value(&metrics, "oomwatch_cgroup_usage_reads_total{source=\"file\"}").is_some_and(|n| n > 0.0), "{metrics}");
    let check = std::process::Command::new(oomwatch_bin()).args(["check", "--btf", "/nonexistent/vmlinux"]).output().unwrap();
    assert!(check.status.success(), "missing BTF is not fatal");
    assert!(String::from_utf8_lossy(&check.stdout).contains("approximate"));
}

/// The victim reaped before /proc was read (forced, as it happens on a
/// busy host): the kernel's oom_kill counter of the test cgroup names it,
/// not the root cgroup /proc would have shown.
#[test]
fn without_btf_a_victim_gone_from_proc_is_found_by_its_cgroups_kill_counter() {
    if !require_root("without_btf_a_victim_gone_from_proc_is_found_by_its_cgroups_kill_counter") {
        return;
    }
    let _one_at_a_time = one_killer_at_a_time();
    let cg = TestCgroup::new("nobtf-gone", Some(48 * MIB));
    let daemon = Daemon::start(&["--btf", "/nonexistent/vmlinux", "--inject-victim-gone"]);
    let mut tail = Tail::start(&daemon, &[]);
    daemon.wait_tracked(&cg.path, Duration::from_secs(30));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    let (kill, _) = tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid()).expect("kill event");
    assert_eq!(cg.oom_kills(), 1, "the kernel counted it in the test cgroup");
    assert_eq!(kill["cgroup"], cg.path.as_str(), "{kill}");
    assert_eq!(kill["attribution"], "approximate", "{kill}");
    // The counter, unless another kill on the host moved a second one at
    // the same moment: then the kernel's report, never a guess.
    assert!(kill["cgroup_from"] == "oom_kill_counter" || kill["cgroup_from"] == "kernel_report", "{kill}");
    assert_eq!(kill["limit_cgroup"], cg.path.as_str(), "{kill}");
    assert_eq!(kill["limit_bytes"], 48 * MIB, "{kill}");
}

#[test]
fn tracefs_is_mounted_when_missing_or_the_error_is_one_line() {
    if !require_root("tracefs_is_mounted_when_missing_or_the_error_is_one_line") {
        return;
    }
    let dir = temp_dir("tracefs");
    let mountpoint = dir.0.join("tracing");
    std::fs::create_dir(&mountpoint).unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: unmounts only the mount this test made.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let _unmount = Unmount(mountpoint.clone());
    let mut daemon = Daemon::start(&["--tracefs", mountpoint.to_str().unwrap()]);
    assert!(daemon.log_text().contains(&format!("mounted tracefs at {}", mountpoint.display())), "{}", daemon.log_text());
    assert!(mountpoint.join("events/oom/mark_victim/format").exists());
    daemon.stop();

    let out = std::process::Command::new(oomwatch_bin())
        .args(["daemon", "--listen", "127.0.0.1:0", "--tracefs", "/nonexistent/tracing", "--socket"])
        .arg(dir.0.join("e.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("oomwatch: ") && last.contains("/nonexistent/tracing") && last.contains("mount -t tracefs"), "{err}");
}

#[test]
fn without_root_the_daemon_names_the_missing_capability() {
    if !require_root("without_root_the_daemon_names_the_missing_capability") {
        return;
    }
    let dir = temp_dir("noroot");
    // SAFETY: chmod of our own temp dir so uid 65534 may bind its socket
    // there; sticky, as /tmp, or the daemon refuses it as replaceable.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let err = one_line_refusal(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"])
            .arg(oomwatch_bin())
            .args(["daemon", "--listen", "127.0.0.1:0", "--socket"])
            .arg(dir.0.join("e.sock")),
    );
    assert!(err.contains("CAP_BPF") && err.contains("root"), "{err}");
}

#[test]
fn tail_reconnects_when_the_daemon_restarts() {
    if !require_root("tail_reconnects_when_the_daemon_restarts") {
        return;
    }
    let _one_at_a_time = one_killer_at_a_time();
    let mut first = Daemon::start(&[]);
    let socket = first.socket.clone();
    let port = first.port.to_string();
    let mut tail = Tail::start(&first, &["--kind", "oom_kill"]);
    first.stop();
    // A new daemon on the same socket, as systemd would restart it.
    let second = Daemon::start_at(&socket, &port, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let cg = TestCgroup::new("restart", Some(48 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    tail.wait_for(Duration::from_secs(15), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid())
        .unwrap_or_else(|| panic!("tail did not follow the restarted daemon\n{}", second.log_text()));
    let err = tail.stderr();
    assert!(err.contains("daemon went away; reconnecting") && err.contains("reconnected"), "{err}");
}

#[test]
fn a_slow_tail_client_is_told_it_lagged_and_never_slows_the_daemon() {
    if !require_root("a_slow_tail_client_is_told_it_lagged_and_never_slows_the_daemon") {
        return;
    }
    let _one_at_a_time = one_killer_at_a_time();
    let dir = temp_dir("lag");
    let config = write_config(&dir, "[daemon]\nstream_buffer = 8\n[reclaim]\nstall_threshold = \"1us\"\nmin_interval = \"1ms\"\n");
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    // A client that asks for the stream and then does not read it.
    let mut stalled = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    std::io::Write::write_all(&mut stalled, b"{\"op\":\"tail\"}\n").unwrap();
    let mut healthy = Tail::start(&daemon, &[]);
    let cg = TestCgroup::new("lag", Some(64 * MIB));
    let data = disk_dir("lag");
    let file = data.0.join("f.bin");
    let _work = ChildGuard(cg.spawn(memhog().args(["cache", file.to_str().unwrap(), "256", "20", "40"])));
    // Events keep flowing to the healthy client while the other one stalls.
    let flowing = healthy.wait_for(Duration::from_secs(20), |v| v["kind"] == "reclaim_stall").is_some();
    assert!(flowing, "the daemon kept publishing");
    // Let the stalled client fall far behind while events keep coming.
    std::thread::sleep(Duration::from_secs(8));
    // Now read: the daemon learns what this client missed when it catches
    // up, and says so in the stream.
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reader = std::io::BufReader::new(stalled);
    let lagged = std::io::BufRead::lines(reader)
        .take(100_000)
        .map_while(Result::ok)
        .find(|l| l.contains("\"kind\":\"lagged\""))
        .expect("a lagged record");
    let v: Value = serde_json::from_str(&lagged).unwrap();
    assert!(metric_value(&daemon.metrics(), "oomwatch_stream_dropped_events_total").is_some_and(|n| n >= 1.0), "drops are counted");
    assert!(v["dropped"].as_u64().is_some_and(|n| n >= 1), "{v}");
}

#[test]
fn memory_comes_back_after_5000_cgroups_come_and_go() {
    if !require_root("memory_comes_back_after_5000_cgroups_come_and_go") {
        return;
    }
    let dir = temp_dir("churn");
    let config = write_config(&dir, "[cgroups]\nmax_cgroups = 10000\nremoval_grace = \"2s\"\n");
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    // One warm-up round first: what the daemon sizes once (the journal's
    // page cache, the id-to-path cache, the allocator's arenas) is not a
    // leak; what grows with every round of churn is.
    churn_round(&daemon, "churn-warmup");
    wait_removed_expired(&daemon);
    let start = rss_kib(daemon.pid());
    let mut peak = start;
    for round in 0..10 {
        let batch: Vec<TestCgroup> = (0..500).map(|i| TestCgroup::new(&format!("churn{round}-{i}"), Some(256 * MIB))).collect();
        std::thread::sleep(Duration::from_secs(3));
        peak = peak.max(rss_kib(daemon.pid()));
        drop(batch);
        std::thread::sleep(Duration::from_secs(1));
    }
    let tracked_at_peak = peak;
    // Removed cgroups stay for the grace period, then leave the model.
    wait_removed_expired(&daemon);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut end = rss_kib(daemon.pid());
    while Instant::now() < deadline && end > start + start / 10 {
        std::thread::sleep(Duration::from_secs(2));
        end = rss_kib(daemon.pid());
    }
    println!("cgroup churn: RSS {start} KiB at start, {tracked_at_peak} KiB at the peak with 500 cgroups, {end} KiB after 5,000 came and went");
    assert!(peak > start, "the churn was visible to the daemon");
    assert!(end <= start + start / 10, "RSS back within 10%: start {start} KiB, end {end} KiB");
}

/// 500 cgroups that the daemon sees come and go.
fn churn_round(daemon: &Daemon, name: &str) {
    let batch: Vec<TestCgroup> = (0..500).map(|i| TestCgroup::new(&format!("{name}-{i}"), Some(256 * MIB))).collect();
    daemon.wait_tracked(&batch[499].path, Duration::from_secs(30));
    drop(batch);
}

/// Until the removed cgroups' grace period has passed and they left the model.
fn wait_removed_expired(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if metric_value(&daemon.metrics(), "oomwatch_cgroups{state=\"removed\"}").is_some_and(|n| n < 10.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("removed cgroups did not expire (leave the model) within 30 s:\n{}", daemon.log_text());
}
