//! Memory pressure from the kernel's PSI: a cgroup that thrashes at its
//! limit shows growing stall counters, and a PSI trigger event arrives.

use std::time::Duration;

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

#[test]
fn thrashing_cgroup_raises_a_pressure_event_and_its_counters_grow() {
    if !require_root("thrashing_cgroup_raises_a_pressure_event_and_its_counters_grow") {
        return;
    }
    let daemon = Daemon::start(&["--psi-stall", "50ms", "--psi-window", "2s"]);
    let mut tail = Tail::start(&daemon, &["--kind", "pressure"]);
    let cg = PsiCgroup::new("psi", Some(64 * MIB));
    // Let the daemon find the cgroup and place a trigger on it.
    let placed = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        metric_value(&daemon.metrics(), &format!("oomwatch_cgroup_memory_pressure_waiting_seconds_total{{cgroup=\"{}\"}}", cg.pressure_path)).is_some()
    });
    assert!(placed, "the daemon tracks PSI of {}", cg.pressure_path);
    std::thread::sleep(Duration::from_millis(2500));
    let series = format!("oomwatch_cgroup_memory_pressure_waiting_seconds_total{{cgroup=\"{}\"}}", cg.pressure_path);
    let before = metric_value(&daemon.metrics(), &series).unwrap();

    // Anonymous memory just under the limit plus a file stream far larger
    // than it: the cgroup reclaims its own page cache all the time.
    let data = disk_dir("psi");
    let file = data.0.join("stream.bin");
    let _hog = ChildGuard(cg.spawn(memhog().args(["cache", file.to_str().unwrap(), "256", "30", "48"])));

    let (event, _) = tail
        .wait_for(Duration::from_secs(25), |v| v["kind"] == "pressure" && v["cgroup"] == cg.pressure_path.as_str())
        .unwrap_or_else(|| panic!("no pressure event for {}; saw {:?}", cg.pressure_path, tail.seen));
    assert!(event["trigger"].as_str().is_some_and(|t| t.starts_with("some ")), "{event}");
    assert!(event["some_total_us"].as_u64().is_some_and(|t| t > 0), "{event}");

    let after = metric_value(&daemon.metrics(), &series).unwrap();
    assert!(after > before, "{series} grew: {before} -> {after}");
    let kernel = std::fs::read_to_string(cg.pressure_file()).unwrap();
    let total_us: u64 = kernel.split("total=").nth(1).and_then(|t| t.split_whitespace().next()?.parse().ok()).unwrap();
    assert!(total_us > 0, "the kernel's own counter moved too: {kernel}");
    assert!(
        metric_value(&daemon.metrics(), "oomwatch_psi_triggers_active").is_some_and(|n| n >= 2.0),
        "host and cgroup triggers held"
    );
}
