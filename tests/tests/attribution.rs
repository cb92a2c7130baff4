//! Exact attribution with real kills: the cgroup whose limit was hit is
//! named even when it is an ancestor, simultaneous kills are not mixed up,
//! and a cgroup removed right after its kill still has its name. Usage and
//! limits at the kill come from the kernel program, and the daemon reads no
//! cgroupfs or procfs file on the kill path.

use std::time::Duration;

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

fn kill_of(tail: &mut Tail, pid: u32) -> Value {
    tail.wait_for(Duration::from_secs(15), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill for pid {pid}; saw {:?}", tail.seen))
        .0
}

/// How many cgroupfs/procfs files the daemon read explaining this victim's
/// kill, from its debug line ("kill of pid N: explained in X us, K
/// cgroupfs/procfs files read; ...").
fn files_read_on_kill_path(daemon: &Daemon, pid: u32) -> u32 {
    let log = daemon.log_text();
    let needle = format!("kill of pid {pid}: explained in ");
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no kill-path line for pid {pid} in the daemon log:\n{log}"));
    line.split(" us, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kill-path line: {line}"))
}

#[test]
fn parent_limit_is_named_as_limit_cgroup() {
    if !require_root("parent_limit_is_named_as_limit_cgroup") {
        return;
    }
    let daemon = Daemon::start(&["--log-level", "debug"]);
    let mut tail = Tail::start(&daemon, &[]);
    let parent = TestCgroup::new("parent", Some(64 * MIB));
    let child = parent.child("child", None);
    // Let the sampler see both before the kill, as in a real workload.
    std::thread::sleep(Duration::from_millis(1500));

    let mut hog = ChildGuard(child.spawn(memhog().args(["leak", "16", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("hog killed");
    let kill = kill_of(&mut tail, hog.pid());
    assert_eq!(kill["cgroup"], child.path.as_str(), "the victim's own cgroup");
    assert_eq!(kill["limit_cgroup"], parent.path.as_str(), "the ancestor whose limit was hit");
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["limit_bytes"], 64 * MIB);
    let usage = kill["limit_cgroup_usage_bytes"].as_u64().unwrap();
    assert!(usage > 48 * MIB, "limit cgroup usage {usage} near its limit");
    assert_eq!(files_read_on_kill_path(&daemon, hog.pid()), 0, "the verdict came from the kill record alone");

    // The ramp before the kill: the leak grew for a while, so several points.
    let ramp = &kill["history"];
    let ws = ramp["working_set_bytes"].as_array().expect("history.working_set_bytes");
    assert!(!ws.is_empty(), "history attached: {ramp}");
    assert_eq!(ws.len(), ramp["seconds_ago"].as_array().unwrap().len());

    let metrics = daemon.metrics();
    let series = format!("oomwatch_oom_kills_total{{cgroup=\"{}\",constraint=\"memcg\",namespace=\"\",pod=\"\",container=\"\",main_process=\"\"}}", child.path);
    assert_eq!(metric_value(&metrics, &series), Some(1.0), "{series}");
    let limit = format!("oomwatch_cgroup_memory_limit_bytes{{cgroup=\"{}\"}}", parent.path);
    assert_eq!(metric_value(&metrics, &limit), Some((64 * MIB) as f64), "{limit}");
    assert_eq!(
        metric_value(&metrics, &format!("oomwatch_cgroup_memory_limit_bytes{{cgroup=\"{}\"}}", child.path)),
        None,
        "an unlimited cgroup has no limit series"
    );
}

/// The kill record's usage and limit are the kernel's page counter at the
/// moment of the kill: the limit is the cgroup's limit file, and the usage
/// is at most the peak the cgroup's own file recorded (v1
/// `memory.max_usage_in_bytes`, v2 `memory.peak`) and within the per-CPU
/// charge stock and what reclaim freed just before the kill of it.
#[test]
fn usage_and_limit_at_the_kill_come_from_the_kernel_and_match_the_cgroup_files() {
    if !require_root("usage_and_limit_at_the_kill_come_from_the_kernel_and_match_the_cgroup_files") {
        return;
    }
    let daemon = Daemon::start(&["--log-level", "debug"]);
    let mut tail = Tail::start(&daemon, &[]);
    let cg = TestCgroup::new("atkill", Some(64 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("hog killed");
    let kill = kill_of(&mut tail, hog.pid());
    let (limit_file, peak_file) = if memory_hierarchy().v1 {
        ("memory.limit_in_bytes", "memory.max_usage_in_bytes")
    } else {
        ("memory.max", "memory.peak")
    };
    let file = |name: &str| -> u64 {
        let text = cg.read(name);
        text.trim().parse().unwrap_or_else(|_| panic!("{}/{name}: {text:?}", cg.path))
    };
    let (limit, peak) = (file(limit_file), file(peak_file));
    assert_eq!(kill["limit_cgroup"], cg.path.as_str());
    assert_eq!(kill["limit_bytes"], limit, "{limit_file}");
    let usage = kill["limit_cgroup_usage_bytes"].as_u64().unwrap();
    eprintln!("at the kill: usage {usage} (from the record), {peak_file} {peak}, {limit_file} {limit}");
    assert!(usage <= peak && usage <= limit, "usage at the kill {usage}, {peak_file} {peak}, limit {limit}");
    assert!(peak - usage <= 2 * MIB, "usage at the kill {usage} is the peak {peak} less at most the charge stock");
    assert_eq!(files_read_on_kill_path(&daemon, hog.pid()), 0, "no cgroup file read on the kill path");
}

/// The kill record holds the victim's memory cgroup and 7 ancestors; a
/// limit further up is found in its files, read right after the kill.
#[test]
fn a_limit_above_the_levels_the_kernel_reads_is_read_from_files() {
    if !require_root("a_limit_above_the_levels_the_kernel_reads_is_read_from_files") {
        return;
    }
    let daemon = Daemon::start(&["--log-level", "debug"]);
    let mut tail = Tail::start(&daemon, &[]);
    let top = TestCgroup::new("deep", Some(64 * MIB));
    // 9 levels below the limit: the record's 8 end below it.
    let mut chain = vec![top.child("d1", None)];
    for i in 2..=9 {
        let next = chain.last().unwrap().child(&format!("d{i}"), None);
        chain.push(next);
    }
    let victim = chain.last().unwrap();
    let mut hog = ChildGuard(victim.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("hog killed");
    let kill = kill_of(&mut tail, hog.pid());
    assert_eq!(kill["cgroup"], victim.path.as_str());
    assert_eq!(kill["limit_cgroup"], top.path.as_str(), "the limit 9 levels up");
    assert_eq!(kill["limit_bytes"], 64 * MIB);
    assert!(files_read_on_kill_path(&daemon, hog.pid()) > 0, "the levels above the record's are read from files");
    drop(hog);
    // Children before parents.
    while let Some(cg) = chain.pop() {
        drop(cg);
    }
}

#[test]
fn simultaneous_sibling_kills_are_each_attributed_to_their_own_cgroup() {
    if !require_root("simultaneous_sibling_kills_are_each_attributed_to_their_own_cgroup") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &[]);
    let cgroups: Vec<TestCgroup> = (0..3).map(|i| TestCgroup::new(&format!("sib{i}"), Some(48 * MIB))).collect();
    let mut hogs: Vec<ChildGuard> = cgroups.iter().map(|cg| ChildGuard(cg.spawn(memhog().args(["hog", "200"])))).collect();
    for h in &mut hogs {
        h.wait_timeout(Duration::from_secs(30)).expect("hog killed");
    }
    for (cg, hog) in cgroups.iter().zip(&hogs) {
        let kill = kill_of(&mut tail, hog.pid());
        assert_eq!(kill["cgroup"], cg.path.as_str(), "pid {} belongs to {}", hog.pid(), cg.path);
        assert_eq!(kill["limit_cgroup"], cg.path.as_str());
        assert_eq!(kill["attribution"], "exact");
        assert_eq!(cg.oom_kills(), 1, "kernel count for {}", cg.path);
    }
}

#[test]
fn a_cgroup_removed_right_after_the_kill_keeps_its_name() {
    if !require_root("a_cgroup_removed_right_after_the_kill_keeps_its_name") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &[]);
    let cg = TestCgroup::new("gone", Some(48 * MIB));
    let path = cg.path.clone();
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("hog killed");
    let pid = hog.pid();
    drop(hog);
    drop(cg); // rmdir as soon as the victim is reaped
    let kill = kill_of(&mut tail, pid);
    assert_eq!(kill["cgroup"], path.as_str());
    let (exit, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "victim_exit" && v["pid"] == pid)
        .expect("victim_exit");
    assert_eq!(exit["cgroup"], path.as_str(), "the exit event names the removed cgroup");
    // And a client that connects later gets the same story from the backlog.
    let mut late = Tail::start(&daemon, &["--since", "1m"]);
    let (replayed, _) = late
        .wait_for(Duration::from_secs(5), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .expect("replayed kill");
    assert_eq!(replayed["cgroup"], path.as_str());
    assert!(replayed["exit_latency_ms"].as_f64().is_some(), "the replay carries the confirmed exit: {replayed}");
}

#[test]
fn status_lists_a_test_cgroup_with_its_limit() {
    if !require_root("status_lists_a_test_cgroup_with_its_limit") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let cg = TestCgroup::new("status", Some(128 * MIB));
    let _hold = ChildGuard(cg.spawn(memhog().args(["hold", "32", "60"])));
    std::thread::sleep(Duration::from_millis(2500));
    let out = std::process::Command::new(oomwatch_bin())
        .args(["status", "--json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cgroup"] == cg.path.as_str())
        .unwrap_or_else(|| panic!("{} not in status: {report}", cg.path))
        .clone();
    assert_eq!(row["limit_bytes"], 128 * MIB);
    let ws = row["working_set_bytes"].as_u64().unwrap();
    assert!((30 * MIB..64 * MIB).contains(&ws), "working set {ws}");
    let headroom = row["headroom_percent"].as_f64().unwrap();
    assert!(headroom > 50.0 && headroom < 80.0, "headroom {headroom}");
}
