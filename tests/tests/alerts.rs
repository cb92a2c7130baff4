//! Early warning through the daemon's real outputs: a leak is warned about
//! before the kernel kills it, a cache-heavy workload stays silent, sinks
//! deliver (a dead one does not block), and bad configuration is refused.

use std::time::Duration;

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

fn firing(v: &Value, alert: &str, severity: &str, cgroup: &str) -> bool {
    v["kind"] == "alert" && v["state"] == "firing" && v["alert"] == alert && v["severity"] == severity && v["cgroup"] == cgroup
}

#[test]
fn a_leak_is_warned_about_before_the_kill() {
    if !require_root("a_leak_is_warned_about_before_the_kill") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &[]);
    let cg = TestCgroup::new("leak", Some(192 * MIB));
    std::thread::sleep(Duration::from_millis(1500));
    // 8 MiB/s from 16 MiB: the kill comes about 22 s later.
    let mut hog = ChildGuard(cg.spawn(memhog().args(["leak", "16", "8"])));
    let (warning, warned_at) = tail
        .wait_for(Duration::from_secs(40), |v| firing(v, "oom_forecast", "warning", &cg.path))
        .unwrap_or_else(|| panic!("no warning; saw {:?}", tail.seen));
    let (_, critical_at) = tail
        .wait_for(Duration::from_secs(40), |v| firing(v, "oom_forecast", "critical", &cg.path))
        .unwrap_or_else(|| panic!("no critical warning; saw {:?}", tail.seen));
    hog.wait_timeout(Duration::from_secs(60)).expect("the leak is killed");
    let (_, killed_at) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid())
        .expect("the kill");
    assert!(warned_at < critical_at && critical_at < killed_at, "warning, then critical, then the kill");
    let lead_s = (killed_at - warned_at) as f64 / 1e9;
    let critical_lead_s = (killed_at - critical_at) as f64 / 1e9;
    println!("leak: warning {lead_s:.1} s and critical {critical_lead_s:.1} s before the kill");
    assert!(lead_s > 5.0, "warning lead {lead_s:.1} s");
    assert!(warning["summary"].as_str().is_some_and(|s| s.contains("limit")), "{warning}");
    tail.wait_for(Duration::from_secs(5), |v| firing(v, "oom_kill", "critical", &cg.path)).expect("the kill alert");

    let alerts = std::process::Command::new(oomwatch_bin()).args(["alerts", "--json", "--socket"]).arg(&daemon.socket).output().unwrap();
    let report: Value = serde_json::from_slice(&alerts.stdout).unwrap();
    let kinds: Vec<&str> = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"]["cgroup"] == cg.path.as_str() && t["state"] == "firing")
        .map(|t| t["key"]["alert"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["oom_forecast", "oom_forecast", "oom_kill"], "history of firings, no duplicates");
    let metrics = daemon.metrics();
    let series = format!("oomwatch_alerts_firing{{alert=\"oom_kill\",severity=\"critical\",cgroup=\"{}\"}}", cg.path);
    assert_eq!(metric_value(&metrics, &series), Some(1.0), "{series}");
}

/// Two garbage-collected heaps side by side (about a minute): one fills
/// to 86% of its limit and frees, every 4 s, and must raise nothing; the
/// other leaks 2 MiB/s under the same pattern and must be warned about,
/// in words that say so, at least 15 s before the kill.
#[test]
fn a_gc_heap_raises_no_alert_and_a_leak_under_one_is_warned() {
    if !require_root("a_gc_heap_raises_no_alert_and_a_leak_under_one_is_warned") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &[]);
    let healthy = TestCgroup::new("gc", Some(256 * MIB));
    let leaking = TestCgroup::new("gcleak", Some(256 * MIB));
    std::thread::sleep(Duration::from_millis(1500));
    let _heap = ChildGuard(healthy.spawn(memhog().args(["sawtooth", "60", "220", "2", "4", "70"])));
    // Peaks from 140 MiB climbing 2 MiB/s: the kill about 58 s in.
    let mut leak = ChildGuard(leaking.spawn(memhog().args(["sawtooth", "50", "140", "2", "4", "300", "2"])));
    leak.wait_timeout(Duration::from_secs(100)).expect("the leak under the GC is killed");
    let (_, killed_at) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == leak.pid())
        .unwrap_or_else(|| panic!("no kill event; saw {:?}", tail.seen));
    let (warning, warned_at) = tail
        .wait_for(Duration::from_secs(1), |v| firing(v, "oom_forecast", "warning", &leaking.path))
        .unwrap_or_else(|| panic!("no warning for the leak under the GC; saw {:?}", tail.seen));
    let lead_s = (killed_at - warned_at) as f64 / 1e9;
    println!("leak under GC: warning {lead_s:.1} s before the kill: {}", warning["summary"]);
    assert!(lead_s >= 15.0, "warning lead {lead_s:.1} s");
    assert!(warning["summary"].as_str().is_some_and(|s| s.contains("under a GC pattern")), "{warning}");
    let noise: Vec<&Value> = tail.seen.iter().map(|(v, _)| v).filter(|v| v["kind"] == "alert" && v["cgroup"] == healthy.path.as_str()).collect();
    assert!(noise.is_empty(), "the healthy heap raised {noise:?}");
    assert_eq!(healthy.oom_kills(), 0);
}

#[test]
fn a_cache_heavy_workload_at_its_limit_raises_no_alert() {
    if !require_root("a_cache_heavy_workload_at_its_limit_raises_no_alert") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &["--kind", "alert"]);
    let cg = TestCgroup::new("cache", Some(64 * MIB));
    let data = disk_dir("cache");
    let file = data.0.join("big.bin");
    // Re-read a file 4x the limit for 20 s: the cgroup sits at its limit,
    // full of page cache, and never needs to kill anything.
    let mut hog = ChildGuard(cg.spawn(memhog().args(["cache", file.to_str().unwrap(), "256", "20", "8"])));
    let status = hog.wait_timeout(Duration::from_secs(90)).expect("the cache workload ends by itself");
    assert!(status.success(), "not killed: {status}");
    assert!(cg.oom_kills() == 0);
    let usage_peak: u64 = cg.read("memory.max_usage_in_bytes").trim().parse().unwrap_or(64 * MIB);
    assert!(usage_peak > 56 * MIB, "the workload did fill its limit ({usage_peak})");
    let alert = tail.wait_for(Duration::from_secs(2), |v| v["cgroup"] == cg.path.as_str() && v["state"] == "firing");
    assert!(alert.is_none(), "no alert for page cache: {alert:?}");
}

#[test]
fn sinks_deliver_and_a_dead_sink_never_blocks() {
    if !require_root("sinks_deliver_and_a_dead_sink_never_blocks") {
        return;
    }
    let hook = HttpCapture::start();
    let dir = temp_dir("sinks");
    let exec_out = dir.0.join("exec.env");
    let config = write_config(
        &dir,
        &format!(
            r#"
[[sinks.webhook]]
url = "http://127.0.0.1:{dead}/down"
timeout = "500ms"

[[sinks.webhook]]
url = "http://127.0.0.1:{port}/hook"

[[sinks.exec]]
command = ["/bin/sh", "-c", "env | grep ^OOMWATCH_ > {out}.tmp; cat > {out}.json; mv {out}.tmp {out}"]
env = {{ TEAM = "infra" }}
timeout = "5s"
"#,
            dead = closed_port(),
            port = hook.port,
            out = exec_out.display()
        ),
    );
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let mut tail = Tail::start(&daemon, &[]);
    let cg = TestCgroup::new("sinks", Some(48 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid()).expect("kill event despite a dead sink");

    let body = hook
        .wait_for(Duration::from_secs(10), |v| v["alert"] == "oom_kill" && v["cgroup"] == cg.path.as_str())
        .expect("the webhook received the kill alert");
    assert_eq!(body["state"], "firing");
    assert_eq!(body["severity"], "critical");
    // The kill's why, as the kill event says it.
    let why = format!("memhog (pid {}) was killed because {} hit its 48 MiB limit", hog.pid(), cg.path);
    assert!(body["description"].as_str().is_some_and(|d| d.starts_with(&why)), "{body}");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !exec_out.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let env = std::fs::read_to_string(&exec_out).expect("the exec hook ran");
    assert!(env.contains("OOMWATCH_ALERT=oom_kill"), "{env}");
    assert!(env.contains(&format!("OOMWATCH_CGROUP={}", cg.path)), "{env}");
    assert!(env.contains(&format!("OOMWATCH_DESCRIPTION={why}")), "{env}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(format!("{}.json", exec_out.display())).unwrap()).unwrap();
    assert_eq!(json["key"]["alert"], "oom_kill");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let m = daemon.metrics();
        let v = metric_value(&m, "oomwatch_alert_notifications_total{sink=\"webhook\",result=\"failed\"}");
        if v.is_some_and(|v| v >= 1.0) || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(failed.is_some_and(|v| v >= 1.0), "the dead sink's failure is counted");
    assert!(daemon.log_text().contains("webhook sink"), "and logged");
}

fn refused(config: &str, key: &str) {
    let dir = temp_dir("badcfg");
    let path = write_config(&dir, config);
    for args in [vec!["check", "--config"], vec!["daemon", "--listen", "127.0.0.1:1", "--config"]] {
        let err = one_line_refusal(std::process::Command::new(oomwatch_bin()).args(&args).arg(&path));
        assert!(err.contains(path.to_str().unwrap()) && err.contains(key), "{args:?}: {err}");
    }
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    refused("[cgroups]\nmax_cgroups = \"many\"\n", "cgroups.max_cgroups");
    refused("[alerts.oom_forecast]\nwarn_eta = \"60s\"\n", "alerts.oom_forecast.warn_eta");
    refused("[alerts.oom_forecast]\nwarning_eta = \"10s\"\ncritical_eta = \"30s\"\n", "alerts.oom_forecast.critical_eta");
}

#[test]
fn a_broken_config_on_sighup_keeps_the_running_one() {
    if !require_root("a_broken_config_on_sighup_keeps_the_running_one") {
        return;
    }
    let hook = HttpCapture::start();
    let dir = temp_dir("reload");
    let config = write_config(&dir, "[alerts.oom_kill]\nresolve_after = \"5m\"\n");
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);

    std::fs::write(&config, "[alerts.oom_kill]\nresolve_after = 5\n").unwrap();
    signal(daemon.pid(), libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !daemon.log_text().contains("keeping the running configuration") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.log_text();
    assert!(log.contains("keeping the running configuration") && log.contains("alerts.oom_kill.resolve_after"), "{log}");
    assert!(http_get(daemon.port, "/healthz").unwrap().starts_with("ok"), "still serving");

    // A valid file with a new sink takes effect on the next SIGHUP.
    std::fs::write(&config, format!("[[sinks.webhook]]\nurl = \"http://127.0.0.1:{}/\"\n", hook.port)).unwrap();
    signal(daemon.pid(), libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !daemon.log_text().contains("SIGHUP: reloaded") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let cg = TestCgroup::new("reload", Some(48 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    hook.wait_for(Duration::from_secs(10), |v| v["alert"] == "oom_kill" && v["cgroup"] == cg.path.as_str())
        .expect("the sink added by the reload delivers");
}
