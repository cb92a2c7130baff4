//! The usage walk on the real kernel: a BPF cgroup iterator reads every
//! tracked cgroup's memory page counter in one read(2) a tick, and what it
//! reads is what the cgroup's own usage file says.

use std::time::{Duration, Instant};

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

fn usage_file(cg: &TestCgroup) -> u64 {
    cg.read("memory.usage_in_bytes").trim().parse::<u64>().or_else(|_| cg.read("memory.current").trim().parse()).unwrap_or(0)
}

fn reads(metrics: &str, source: &str) -> f64 {
    metric_value(metrics, &format!("oomwatch_cgroup_usage_reads_total{{source=\"{source}\"}}"))
        .unwrap_or_else(|| panic!("no {source} reads series in:\n{metrics}"))
}

#[test]
fn the_walk_reads_each_cgroup_as_its_usage_file_does() {
    if !require_root("the_walk_reads_each_cgroup_as_its_usage_file_does") {
        return;
    }
    let held = TestCgroup::new("walk-held", Some(128 * MIB));
    let empty = TestCgroup::new("walk-empty", None);
    let hog = ChildGuard(held.spawn(memhog().args(["hold", "24", "120"])));
    // Only this test's cgroups: their ancestors (the machine's, where the
    // builds run) move all the time and are read from their files.
    let daemon = Daemon::start(&["--max-cgroups", "65536", "--include", "*oomwatch-test-walk-*"]);
    daemon.wait_tracked(&held.path, Duration::from_secs(30));
    daemon.wait_tracked(&empty.path, Duration::from_secs(30));
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, "oomwatch_probe_attached{probe=\"cgroup_usage_walk\"}"), Some(1.0), "{}", daemon.log_text());

    // The holder has allocated its 24 MiB once its usage stops moving; the
    // daemon's value must then be the file's, to the byte, within a tick.
    let series = |cg: &TestCgroup| format!("oomwatch_cgroup_memory_usage_bytes{{cgroup=\"{}\"}}", cg.path);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = usage_file(&held);
        let seen = metric_value(&daemon.metrics(), &series(&held)).map(|v| v as u64);
        let after = usage_file(&held);
        if before == after && seen == Some(before) && before >= 24 * MIB {
            break;
        }
        assert!(Instant::now() < deadline, "walk and file never agreed: file {before} / {after}, daemon {seen:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(metric_value(&daemon.metrics(), &series(&empty)), Some(usage_file(&empty) as f64), "an empty cgroup: 0 or what the kernel charged it");

    // A cgroup with tasks is not still to the page (the kernel's per-CPU
    // charge caches move its counter): only the empty one stays. Once
    // idle (10 reads unchanged), it is read by walks only (every 5th
    // tick), never from its file.
    drop(hog);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(40);
    let end = loop {
        let start = daemon.metrics();
        std::thread::sleep(Duration::from_secs(6));
        let end = daemon.metrics();
        let walked = reads(&end, "walk") - reads(&start, "walk");
        let from_files = reads(&end, "file") - reads(&start, "file");
        if from_files == 0.0 && walked >= 1.0 {
            break end;
        }
        assert!(Instant::now() < deadline, "idle cgroups still read from files: {from_files} file reads, {walked} by the walk in 6 s");
    };
    assert_eq!(metric_value(&end, "oomwatch_kernel_program_errors_total{program=\"cgroup_usage\"}"), Some(0.0));

    // `oomwatch check` tries the walk too.
    let check = std::process::Command::new(oomwatch_bin()).arg("check").output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    let line = out.lines().find(|l| l.contains("probe cgroup_usage_walk")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("[ok") && line.contains("cgroup iterator attaches"), "{line}");
}
