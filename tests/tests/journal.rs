//! The journal on file systems that fail (a full tmpfs and a read-only
//! mount, each mounted by the test under a temporary directory and
//! unmounted by a drop guard), and the daemon's journal across restarts,
//! crashes and faults, with real OOM kills in `oomwatch-test-*` cgroups.
//! These need root: without it they fail, unless OOMWATCH_SKIP_PRIVILEGED=1
//! says to skip them. The journal on ordinary directories is covered by the
//! unit tests of oomwatch::outputs::journal.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use oomwatch::{
    outputs::journal::{Journal, JournalConfig, JournalReader, Query},
    wire::{Attribution, Constraint, Event, EventBody, OomKill, PressureEvent, Trigger, Victim, Workload},
};
use oomwatch_tests::{
    ChildGuard, Daemon, PsiCgroup, Tail, TempDir, TestCgroup, Value, disk_dir, memhog, metric_value, oomwatch_bin, require_root, signal, temp_dir,
};

fn kill(pid: u32, cgroup: &str, t: SystemTime) -> Event {
    let kill = OomKill {
        victim: Victim { pid, ..Default::default() },
        trigger: Trigger::default(),
        attribution: Attribution::Exact,
        constraint: Constraint::Memcg,
        limit_cgroup: None,
        limit_cgroup_usage_bytes: None,
        limit_bytes: None,
        workload: Workload { unit: Some(format!("unit-{}.service", pid % 3)), ..Default::default() },
        main_process: None,
        history: None,
        oom_control: None,
        unavailable: Vec::new(),
        cgroup_id: None,
        cgroup_from: None,
        exit_latency_ms: None,
        why: None,
        kernel_report: None,
        incident: None,
        throttled_for_s: None,
        top_consumers: Vec::new(),
        limit_history: None,
        composition: None,
    };
    Event { body: EventBody::OomKill(Box::new(kill)), time: oomwatch::wire::rfc3339(t), cgroup: cgroup.into(), ktime_ns: Some(1), seq: 0 }
}

/// A high-rate event, made `padding` bytes larger to fill a disk sooner.
fn pressure(cgroup: &str, t: SystemTime, padding: usize) -> Event {
    Event {
        body: EventBody::Pressure(PressureEvent {
            trigger: format!("some 150000 2000000{}", " ".repeat(padding)),
            some_avg10: Some(12.5),
            full_avg10: Some(3.25),
            some_total_us: Some(123_456_789),
            full_total_us: Some(9_876_543),
        }),
        time: oomwatch::wire::rfc3339(t),
        cgroup: cgroup.into(),
        ktime_ns: None,
        seq: 0,
    }
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A tmpfs of `size` bytes on `<temp dir>/mnt`, unmounted (and the
/// directory removed) on drop, even when the test fails.
struct Tmpfs {
    mnt: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    fn mount(name: &str, size: u64, read_only: bool) -> Self {
        let dir = temp_dir(&format!("journal-{name}"));
        let mnt = dir.0.join("mnt");
        fs::create_dir(&mnt).unwrap_or_else(|e| panic!("{}: {e}", mnt.display()));
        let data = CString::new(format!("size={size},mode=0755")).unwrap_or_else(|e| panic!("{e}"));
        let flags = if read_only { libc::MS_RDONLY } else { 0 } | libc::MS_NOSUID | libc::MS_NODEV;
        let fstype = c"tmpfs";
        let target = c_path(&mnt);
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) };
        assert_eq!(rc, 0, "mounting a tmpfs on {}: {}", mnt.display(), io::Error::last_os_error());
        Self { mnt, _dir: dir }
    }

    fn remount_read_only(&self) {
        let target = c_path(&self.mnt);
        let flags = libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        // SAFETY: valid NUL-terminated path; a remount takes no source or type.
        let rc = unsafe { libc::mount(std::ptr::null(), target.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
        assert_eq!(rc, 0, "remounting {} read-only: {}", self.mnt.display(), io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = c_path(&self.mnt);
        // SAFETY: valid NUL-terminated path. Lazy, so a file still open
        // (a failed test's journal) cannot keep the mount.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_full_disk_drops_with_a_reason_and_writes_resume_when_space_returns() {
    if !require_root("a_full_disk_drops_with_a_reason_and_writes_resume_when_space_returns") {
        return;
    }
    let fs = Tmpfs::mount("full", 4 << 20, false);
    let dir = fs.mnt.join("oomwatch");
    let mut cfg = JournalConfig::new(&dir);
    // Retention must not be what saves the day here.
    cfg.retention.max_bytes = 1 << 30;
    cfg.batch_linger = Duration::from_millis(10);
    let j = Journal::open(cfg).unwrap_or_else(|e| panic!("{e}"));
    // Room for the journal to start, then fill what is left.
    let ballast = fs.mnt.join("ballast");
    fs::write(&ballast, vec![1u8; 2 << 20]).unwrap_or_else(|e| panic!("{e}"));

    let deadline = Instant::now() + Duration::from_secs(60);
    while j.stats().dropped.get("disk_full").copied().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the disk never filled: {:?}", j.stats());
        for _ in 0..200 {
            j.append_event(&mut pressure("/fill", SystemTime::now(), 1000));
        }
        j.flush(Duration::from_secs(10));
    }
    let stats = j.stats();
    assert_eq!(stats.dropped.get("io_error"), Some(&0), "a full disk is counted as disk_full: {stats:?}");
    // The writer is alive: flushes complete, and failing writes go on
    // being counted (a small transaction may still fit; a batch does not).
    let before = stats.dropped["disk_full"];
    for _ in 0..200 {
        j.append_event(&mut pressure("/fill", SystemTime::now(), 1000));
    }
    assert!(j.flush(Duration::from_secs(10)), "the writer must keep draining while the disk is full");
    assert!(j.stats().dropped["disk_full"] > before, "{:?}", j.stats());

    fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));
    // Within a retry interval or two, a batch and a kill are durable again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (first, kept) = loop {
        let first = j.append_event(&mut pressure("/after", SystemTime::now(), 1000)).seq();
        for _ in 0..199 {
            j.append_event(&mut pressure("/after", SystemTime::now(), 1000));
        }
        let seq = j.append_event(&mut kill(2, "/k", SystemTime::now())).seq();
        if j.wait_durable(seq, Duration::from_millis(1500)) {
            break (first, seq);
        }
        assert!(Instant::now() < deadline, "writes did not resume after space returned: {:?}", j.stats());
    };
    // The kill commits ahead of the queued batch (incidents first): the
    // batch follows in the next commit.
    assert!(j.flush(Duration::from_secs(10)), "the batch behind the kill is written: {:?}", j.stats());
    let r = j.reader().unwrap_or_else(|e| panic!("{e}"));
    let after = r.query(&Query { after_seq: Some(first - 1), ..Default::default() }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.len(), 201, "the whole batch after the space returned is kept");
    assert_eq!(after.last().map(|e| e.seq), Some(kept));
    j.close();
    // And the journal opens cleanly afterwards.
    let j = Journal::open(JournalConfig::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    assert!(j.moved_aside().is_none());
}

#[test]
fn a_read_only_state_dir_is_one_clear_error() {
    if !require_root("a_read_only_state_dir_is_one_clear_error") {
        return;
    }
    // A state directory that does not exist on a read-only mount...
    let ro = Tmpfs::mount("ro", 1 << 20, true);
    let missing = ro.mnt.join("oomwatch");
    let e = Journal::open(JournalConfig::new(&missing)).err().expect("a read-only mount cannot hold a journal");
    assert!(e.is_read_only(), "{e}");
    let text = e.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&missing.display().to_string()) && text.contains("not writable"), "{text}");

    // ...and one that exists, with a journal, when the mount turns read-only.
    let fs = Tmpfs::mount("ro-later", 4 << 20, false);
    let dir = fs.mnt.join("oomwatch");
    let j = Journal::open(JournalConfig::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    let seq = j.append_event(&mut kill(3, "/k", SystemTime::now())).seq();
    j.close();
    fs.remount_read_only();
    let e = Journal::open(JournalConfig::new(&dir)).err().expect("read-only now");
    assert!(e.is_read_only(), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
    // Reading still works there.
    let r = JournalReader::open(&dir).unwrap_or_else(|e| panic!("reading a journal on a read-only mount: {e}"));
    assert_eq!(r.query(&Query::default()).unwrap_or_else(|e| panic!("{e}")).last().map(|e| e.seq), Some(seq));
    assert!(!r.facts().unwrap_or_else(|e| panic!("{e}")).writable);
}

// ------------------------------------------------- the daemon's journal

const MIB: u64 = 1 << 20;

/// `oomwatch history --json --state-dir DIR ARGS...`, parsed; fails the
/// test when it exits non-zero or prints anything but event lines.
fn history(state: &Path, args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(oomwatch_bin())
        .args(["history", "--json", "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("oomwatch history: {e}"));
    assert!(out.status.success(), "oomwatch history {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("history printed non-JSON {l:?}: {e}")))
        .collect()
}

fn daemon_on(state: &Path, extra: &[&str]) -> Daemon {
    let state = state.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["--state-dir", state];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// Runs a hog in `cg` until the kernel OOM-kills it; returns its pid.
fn oom_kill_in(cg: &TestCgroup) -> u32 {
    let before = cg.oom_kills();
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "64"])));
    let status = hog.wait_timeout(Duration::from_secs(30)).expect("the hog should be killed within 30 s");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "hog: {status}");
    assert_eq!(cg.oom_kills(), before + 1, "the kernel counts the kill in {}", cg.dir.display());
    hog.pid()
}

fn seen_kill(tail: &mut Tail, pid: u32) -> Value {
    tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill for pid {pid} on the tail; saw {:?}", tail.seen))
        .0
}

fn kill_pids(events: &[Value]) -> Vec<u64> {
    events.iter().filter(|e| e["kind"] == "oom_kill").filter_map(|e| e["victim"]["pid"].as_u64()).collect()
}

/// `oomwatch alerts --json` of a running daemon.
fn alerts(daemon: &Daemon) -> Value {
    let out = std::process::Command::new(oomwatch_bin())
        .args(["alerts", "--json", "--history", "0", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap_or_else(|e| panic!("oomwatch alerts: {e}"));
    assert!(out.status.success(), "oomwatch alerts: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("oomwatch alerts --json: {e}"))
}

fn kill_alert_of(cgroup: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["key"]["alert"] == "oom_kill" && v["key"]["cgroup"] == cgroup
}

fn write_file(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.0.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_str().expect("UTF-8").to_owned()
}

#[test]
fn a_restart_keeps_seqs_growing_the_kills_and_the_firing_alerts() {
    if !require_root("a_restart_keeps_seqs_growing_the_kills_and_the_firing_alerts") {
        return;
    }
    let dir = temp_dir("journal-restart");
    let state = dir.0.join("state");
    let cg = TestCgroup::new("restart", Some(16 * MIB));
    let mut first = daemon_on(&state, &[]);
    let mut tail = Tail::start(&first, &[]);
    let pid1 = oom_kill_in(&cg);
    let seq1 = seen_kill(&mut tail, pid1)["seq"].as_u64().expect("seq");
    tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "alert" && v["cgroup"] == cg.path.as_str() && v["state"] == "firing")
        .unwrap_or_else(|| panic!("no oom_kill alert firing for {}; saw {:?}", cg.path, tail.seen));
    first.stop();

    // The restarted daemon resolves kill alerts after 10 s without a kill.
    let config = write_file(&dir, "oomwatch.toml", "[alerts.oom_kill]\nresolve_after = \"10s\"\n");
    let second = daemon_on(&state, &["--config", &config]);
    let mut tail = Tail::start(&second, &[]);
    let report = alerts(&second);
    let active = report["active"].as_array().expect("active alerts");
    let restored = active.iter().find(|a| kill_alert_of(&cg.path)(a)).unwrap_or_else(|| panic!("the firing kill alert was not restored: {report}"));
    assert_eq!(restored["state"], "firing", "{restored}");
    let history_of_alerts = report["history"].as_array().expect("alert history");
    assert!(
        history_of_alerts.iter().any(|t| kill_alert_of(&cg.path)(t) && t["state"] == "firing"),
        "the alert history from before the restart is shown: {report}"
    );

    let pid2 = oom_kill_in(&cg);
    let seq2 = seen_kill(&mut tail, pid2)["seq"].as_u64().expect("seq");
    assert!(seq2 > seq1, "seqs keep growing across a restart: {seq1} then {seq2}");
    // The kill alert was firing already: it is not announced again, and it
    // resolves (a transition, journalled) once the kills stop.
    let (resolved, _) = tail
        .wait_for(Duration::from_secs(40), |v| v["kind"] == "alert" && v["cgroup"] == cg.path.as_str() && v["state"] != "firing")
        .unwrap_or_else(|| panic!("the restored kill alert never resolved; saw {:?}\n{}", tail.seen, second.log_text()));
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    assert!(
        !tail.seen.iter().any(|(v, _)| v["kind"] == "alert" && v["cgroup"] == cg.path.as_str() && v["state"] == "firing"),
        "a restored firing alert was announced again: {:?}",
        tail.seen
    );

    let kills = history(&state, &["--kind", "oom_kill", "--cgroup", &cg.path]);
    assert_eq!(kill_pids(&kills), vec![u64::from(pid1), u64::from(pid2)], "{kills:?}");
    // The resolution was just published; durable within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    let transitions = loop {
        let t: Vec<String> = history(&state, &["--kind", "alert", "--cgroup", &cg.path])
            .iter()
            .map(|a| a["state"].as_str().unwrap_or("?").to_owned())
            .collect();
        if t.len() >= 2 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(transitions, vec!["firing", "resolved"], "one firing, one resolved across the restart");

    // `oomwatch check` says where the journal is, how large and old, and that it is writable.
    let out = std::process::Command::new(oomwatch_bin()).args(["check", "--json", "--state-dir"]).arg(&state).output().unwrap_or_else(|e| panic!("{e}"));
    let check: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("oomwatch check --json: {e}"));
    let facts = &check["journal"];
    assert_eq!(facts["path"], state.join("journal.db").display().to_string(), "{check}");
    assert_eq!(facts["writable"], true, "{facts}");
    assert!(facts["events"].as_u64().is_some_and(|n| n >= 4) && facts["size_bytes"].as_u64().is_some_and(|n| n > 0), "{facts}");
    assert!(facts["oldest_event_age"].is_object(), "{facts}");
    let item = check["items"].as_array().and_then(|i| i.iter().find(|i| i["name"] == "journal")).unwrap_or_else(|| panic!("{check}"));
    assert!(item["ok"] == true && item["detail"].as_str().is_some_and(|d| d.contains("oldest event") && d.contains("writable")), "{item}");
}

#[test]
fn a_kill_seen_on_the_tail_survives_a_sigkill_of_the_daemon() {
    if !require_root("a_kill_seen_on_the_tail_survives_a_sigkill_of_the_daemon") {
        return;
    }
    let dir = temp_dir("journal-sigkill");
    let state = dir.0.join("state");
    let cg = TestCgroup::new("sigkill", Some(16 * MIB));
    let mut first = daemon_on(&state, &[]);
    let mut tail = Tail::connect(&first);
    let pid = oom_kill_in(&cg);
    let seq = seen_kill(&mut tail, pid)["seq"].as_u64().expect("seq");
    // At once: no shutdown, no flush.
    signal(first.pid(), libc::SIGKILL);
    first.stop();

    let second = daemon_on(&state, &[]);
    let kills = history(&state, &["--kind", "oom_kill", "--cgroup", &cg.path]);
    assert_eq!(kills.iter().map(|k| (k["seq"].as_u64(), k["victim"]["pid"].as_u64())).collect::<Vec<_>>(), vec![(Some(seq), Some(u64::from(pid)))]);
    // The kill was seen: after the crash it is not taken for one the
    // daemon missed (two reconciliation passes decide).
    let mut tail = Tail::connect(&second);
    let missed = tail.wait_for(Duration::from_secs(14), |v| v["kind"] == "unobserved_kills" && v["cgroup"] == cg.path.as_str());
    assert!(missed.is_none(), "a kill journalled before the crash was reported as unobserved: {missed:?}");
    let next = oom_kill_in(&cg);
    assert!(seen_kill(&mut tail, next)["seq"].as_u64().expect("seq") > seq, "seqs never go back after a crash");
}

#[test]
fn a_kill_while_the_daemon_is_down_is_reported_once() {
    if !require_root("a_kill_while_the_daemon_is_down_is_reported_once") {
        return;
    }
    let dir = temp_dir("journal-down");
    let state = dir.0.join("state");
    let cg = TestCgroup::new("down", Some(16 * MIB));
    let mut first = daemon_on(&state, &[]);
    // Let the sampler admit the cgroup before the stop.
    std::thread::sleep(Duration::from_secs(2));
    first.stop();
    oom_kill_in(&cg);

    let mut second = daemon_on(&state, &[]);
    let mut tail = Tail::connect(&second);
    let (missed, _) = tail
        .wait_for(Duration::from_secs(25), |v| v["kind"] == "unobserved_kills" && v["cgroup"] == cg.path.as_str())
        .unwrap_or_else(|| panic!("the kill while the daemon was down was not reported; saw {:?}\n{}", tail.seen, second.log_text()));
    assert_eq!(missed["count"], 1, "{missed}");
    // A crash right after the report must not make the next run report it again.
    std::thread::sleep(Duration::from_millis(300));
    signal(second.pid(), libc::SIGKILL);
    second.stop();

    let third = daemon_on(&state, &[]);
    let mut tail = Tail::connect(&third);
    let again = tail.wait_for(Duration::from_secs(14), |v| v["kind"] == "unobserved_kills" && v["cgroup"] == cg.path.as_str());
    assert!(again.is_none(), "reported again after a second restart: {again:?}\n{}", third.log_text());
    let reported = history(&state, &["--kind", "unobserved_kills", "--cgroup", &cg.path]);
    assert_eq!(reported.len(), 1, "kept in the journal, once: {reported:?}");
}

/// A systemd service restarted while oomwatch was down (an upgrade): its
/// cgroup is made again under the same path, and the new cgroup's kill
/// counter starts at 0, below the count the last run kept for the path.
#[test]
fn a_kill_in_a_cgroup_made_again_while_the_daemon_is_down_is_reported_in_that_cgroup() {
    if !require_root("a_kill_in_a_cgroup_made_again_while_the_daemon_is_down_is_reported_in_that_cgroup") {
        return;
    }
    let dir = temp_dir("journal-again");
    let state = dir.0.join("state");
    let cg = TestCgroup::new("again-down", Some(16 * MIB));
    let mut first = daemon_on(&state, &[]);
    first.wait_tracked(&cg.path, Duration::from_secs(30));
    let mut tail = Tail::connect(&first);
    for _ in 0..2 {
        let pid = oom_kill_in(&cg);
        seen_kill(&mut tail, pid);
    }
    first.stop();

    std::fs::remove_dir(&cg.dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", cg.dir.display()));
    std::fs::create_dir(&cg.dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", cg.dir.display()));
    cg.set_limit(16 * MIB);
    oom_kill_in(&cg);
    assert_eq!(cg.oom_kills(), 1, "the cgroup made again counts from 0");

    let second = daemon_on(&state, &[]);
    let mut tail = Tail::connect(&second);
    let (missed, _) = tail
        .wait_for(Duration::from_secs(25), |v| v["kind"] == "unobserved_kills" && v["cgroup"] == cg.path.as_str())
        .unwrap_or_else(|| panic!("the kill in the cgroup made again was not reported there; saw {:?}\n{}", tail.seen, second.log_text()));
    assert_eq!(missed["count"], 1, "{missed}");
}

#[test]
fn a_corrupted_journal_is_moved_aside_and_the_daemon_runs() {
    if !require_root("a_corrupted_journal_is_moved_aside_and_the_daemon_runs") {
        return;
    }
    let dir = temp_dir("journal-corrupt");
    let state = dir.0.join("state");
    fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
    let journal = state.join("journal.db");
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(&journal, &garbage).unwrap_or_else(|e| panic!("{e}"));

    let daemon = daemon_on(&state, &[]);
    let log = daemon.log_text();
    let named: Vec<&str> = log.lines().filter(|l| l.contains(&journal.display().to_string()) && l.contains("damaged")).collect();
    assert_eq!(named.len(), 1, "one line names the damaged file:\n{log}");
    let aside: Vec<PathBuf> = fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p != &journal && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("journal.db.")) && fs::read(p).is_ok_and(|b| b == garbage))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside, unchanged: {:?}", fs::read_dir(&state).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>()));
    assert!(named[0].contains(&aside[0].display().to_string()), "the line names where it went: {}", named[0]);
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, "oomwatch_journal_moved_aside_total"), Some(1.0), "{metrics}");
    assert_eq!(metric_value(&metrics, "oomwatch_journal_enabled"), Some(1.0));

    let cg = TestCgroup::new("corrupt", Some(16 * MIB));
    let mut tail = Tail::connect(&daemon);
    let pid = oom_kill_in(&cg);
    let seq = seen_kill(&mut tail, pid)["seq"].as_u64().expect("seq");
    // Durable within milliseconds; history reads it from the new journal.
    let deadline = Instant::now() + Duration::from_secs(5);
    // (Only this cgroup: other tests on the host kill too.)
    while kill_pids(&history(&state, &["--kind", "oom_kill", "--cgroup", &cg.path])) != vec![u64::from(pid)] {
        assert!(Instant::now() < deadline, "kill {seq} not in the new journal");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_read_only_state_dir_leaves_the_daemon_serving_without_a_journal() {
    if !require_root("a_read_only_state_dir_leaves_the_daemon_serving_without_a_journal") {
        return;
    }
    let ro = Tmpfs::mount("daemon-ro", 1 << 20, true);
    let state = ro.mnt.join("oomwatch");
    let daemon = daemon_on(&state, &[]);
    let log = daemon.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&state.display().to_string()) && l.contains("not writable")).collect();
    assert_eq!(lines.len(), 1, "one clear line:\n{log}");
    assert!(lines[0].contains("without a journal"), "{}", lines[0]);
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_journal_enabled"), Some(0.0));

    let cg = TestCgroup::new("ro", Some(16 * MIB));
    let mut tail = Tail::connect(&daemon);
    let pid = oom_kill_in(&cg);
    seen_kill(&mut tail, pid);

    let out = std::process::Command::new(oomwatch_bin()).args(["check", "--state-dir"]).arg(&state).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("journal")).unwrap_or_else(|| panic!("check says nothing of the journal:\n{text}"));
    assert!(line.contains("not writable"), "{line}");
}

#[test]
fn a_full_state_dir_drops_with_a_reason_while_the_daemon_serves() {
    if !require_root("a_full_state_dir_drops_with_a_reason_while_the_daemon_serves") {
        return;
    }
    let fs_ = Tmpfs::mount("daemon-full", 2 << 20, false);
    let state = fs_.mnt.join("oomwatch");
    let daemon = daemon_on(&state, &[]);
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_journal_enabled"), Some(1.0));
    // Fill what is left, a page at a time to the last one.
    let ballast = fs_.mnt.join("ballast");
    {
        use std::io::Write as _;
        let mut f = fs::File::create(&ballast).unwrap_or_else(|e| panic!("{e}"));
        while f.write_all(&[7u8; 4096]).is_ok() {}
    }

    let cg = TestCgroup::new("full", Some(16 * MIB));
    let mut tail = Tail::connect(&daemon);
    let dropped = |m: &str| metric_value(m, "oomwatch_journal_dropped_total{reason=\"disk_full\"}").unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut kills = 0;
    while dropped(&daemon.metrics()) == 0.0 {
        assert!(Instant::now() < deadline, "no drop counted after {kills} kills on a full disk:\n{}", daemon.metrics());
        let pid = oom_kill_in(&cg);
        // Every kill reaches the tail, full disk or not.
        seen_kill(&mut tail, pid);
        kills += 1;
    }
    let metrics = daemon.metrics();
    assert!(metrics.contains("oomwatch_journal_dropped_total{reason=\"disk_full\"}"), "{metrics}");
    assert!(oomwatch_tests::http_get(daemon.port, "/healthz").is_ok_and(|b| b.starts_with("ok")), "healthy on a full disk");
    let log = daemon.log_text();
    let full_lines = log.lines().filter(|l| l.contains("counted as disk_full")).count();
    assert_eq!(full_lines, 1, "one line for the episode, however many drops:\n{log}");

    // Space returns: the next kills are kept again.
    fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = oom_kill_in(&cg);
        seen_kill(&mut tail, pid);
        std::thread::sleep(Duration::from_secs(1));
        if kill_pids(&history(&state, &["--kind", "oom_kill"])).contains(&u64::from(pid)) {
            assert!(daemon.log_text().contains("writes resumed"), "{}", daemon.log_text());
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume after space returned:\n{}", daemon.log_text());
    }
    println!("full disk: {kills} kill(s) until the first drop; writes resumed after space returned");
}

#[test]
fn history_reads_a_journal_the_daemon_is_writing() {
    if !require_root("history_reads_a_journal_the_daemon_is_writing") {
        return;
    }
    let dir = temp_dir("journal-concurrent");
    let state = dir.0.join("state");
    let daemon = daemon_on(&state, &[]);
    let cg = TestCgroup::new("concurrent", Some(16 * MIB));
    let (reads, hogs) = std::thread::scope(|scope| {
        let storm = scope.spawn(|| {
            let mut n = 0;
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "64"])));
                hog.wait_timeout(Duration::from_secs(30));
                n += 1;
            }
            n
        });
        let mut reads = 0;
        let mut last_count = 0;
        while !storm.is_finished() {
            let events = history(&state, &[]);
            let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
            assert_eq!(seqs.len(), events.len(), "every event has a seq");
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs in order, no duplicate: {seqs:?}");
            let count = kill_pids(&events).len();
            assert!(count >= last_count, "a later read lost kills: {last_count} then {count}");
            last_count = count;
            reads += 1;
        }
        (reads, storm.join().unwrap_or_else(|_| panic!("the kill storm panicked")))
    });
    assert!(reads >= 5, "only {reads} reads during the storm");
    let deadline = Instant::now() + Duration::from_secs(5);
    while kill_pids(&history(&state, &["--kind", "oom_kill", "--cgroup", &cg.path])).len() < hogs {
        assert!(Instant::now() < deadline, "not every kill of the storm ({hogs}) is in the journal");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("history: {reads} consistent reads while the daemon journalled {hogs} kills");
    drop(daemon);
}

/// Every event a tail client read in one run of the daemon, until the
/// daemon died under it.
fn drain(tail: &mut Tail, for_: Duration) {
    tail.wait_for(for_, |_| false);
}

/// Ends a background loop when dropped, also when the test fails: a scope
/// would otherwise wait for it forever.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn repeated_sigkills_during_a_kill_storm_and_pressure_keep_every_seen_kill() {
    if !require_root("repeated_sigkills_during_a_kill_storm_and_pressure_keep_every_seen_kill") {
        return;
    }
    const CRASHES: usize = 5;
    let dir = temp_dir("journal-storm");
    let state = dir.0.join("state");
    // Low thresholds turn the thrashing cgroup's stalls into a stream of
    // pressure and reclaim_stall events beside the kills.
    let flags = ["--psi-stall", "50ms", "--psi-window", "500ms", "--stall-threshold", "200us"];
    let kills_cg = TestCgroup::new("storm-kills", Some(16 * MIB));
    let thrash = PsiCgroup::new("storm-psi", Some(64 * MIB));
    let data = disk_dir("storm");
    let file = data.0.join("stream.bin");
    let _thrasher = ChildGuard(thrash.spawn(memhog().args(["cache", file.to_str().expect("UTF-8"), "256", "600", "48"])));
    let storming = std::sync::atomic::AtomicBool::new(true);

    // (seq, pid) of every kill a tail client saw, over every run.
    let mut seen_kills: Vec<(u64, u64)> = Vec::new();
    let mut high_seq = 0;
    let mut events_seen = 0;
    std::thread::scope(|scope| {
        let storm = scope.spawn(|| {
            let mut n = 0;
            while storming.load(std::sync::atomic::Ordering::Relaxed) {
                let mut hog = ChildGuard(kills_cg.spawn(memhog().args(["hog", "64"])));
                hog.wait_timeout(Duration::from_secs(30));
                n += 1;
            }
            n
        });
        let stop_storm = StopOnDrop(&storming);
        for crash in 0..=CRASHES {
            let mut daemon = daemon_on(&state, &flags);
            let log = daemon.log_text();
            assert!(!log.contains("damaged") && !log.contains("moved it to"), "run {crash}: the journal did not open as it was:\n{log}");
            // Everything seen before the last crash is in the journal.
            let kept: std::collections::HashSet<(u64, u64)> = history(&state, &["--kind", "oom_kill"])
                .iter()
                .filter_map(|k| Some((k["seq"].as_u64()?, k["victim"]["pid"].as_u64()?)))
                .collect();
            let lost: Vec<_> = seen_kills.iter().filter(|k| !kept.contains(k)).collect();
            assert!(lost.is_empty(), "run {crash}: kills seen on the tail but not in the journal (seq, pid): {lost:?}\n{}", daemon.log_text());
            if crash == CRASHES {
                break;
            }
            let mut tail = Tail::connect(&daemon);
            drain(&mut tail, Duration::from_millis(2500));
            // Die right after a kill reached the client: the worst moment.
            tail.wait_for(Duration::from_secs(15), |v| v["kind"] == "oom_kill")
                .unwrap_or_else(|| panic!("run {crash}: no kill on the tail during the storm; saw {:?}", tail.seen));
            signal(daemon.pid(), libc::SIGKILL);
            daemon.stop();
            drain(&mut tail, Duration::from_millis(200));
            let seqs: Vec<u64> = tail.seen.iter().filter_map(|(v, _)| v["seq"].as_u64()).collect();
            assert!(seqs.iter().all(|s| *s > high_seq), "run {crash}: a seq went back (the last run reached {high_seq}): {seqs:?}");
            high_seq = seqs.iter().copied().max().unwrap_or(high_seq);
            events_seen += seqs.len();
            seen_kills.extend(
                tail.seen.iter().filter(|(v, _)| v["kind"] == "oom_kill").filter_map(|(v, _)| Some((v["seq"].as_u64()?, v["victim"]["pid"].as_u64()?))),
            );
        }
        drop(stop_storm);
        let hogs = storm.join().unwrap_or_else(|_| panic!("the kill storm panicked"));
        println!(
            "storm: {CRASHES} SIGKILLs, {hogs} hogs, {} kills and {events_seen} events seen on the tail, all kills kept; last seq {high_seq}",
            seen_kills.len()
        );
    });
    let kinds: std::collections::BTreeSet<String> =
        history(&state, &[]).iter().filter_map(|e| e["kind"].as_str().map(str::to_owned)).collect();
    println!("storm: kinds journalled {kinds:?}");
    assert!(seen_kills.len() >= CRASHES, "at least one kill per run: {seen_kills:?}");
}
