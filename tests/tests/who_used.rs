//! Who used the memory, on real kills: a parent's limit hit by two
//! children (one holding, one growing), and a kill driven by tmpfs. The
//! kill event names the children largest first with their usage, the
//! parent's own last minute, its memory by kind, and says so in `why`.

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use oomwatch_tests::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A host with more cgroups than the default `--max-cgroups` (other tests
/// make thousands for a while) would leave this file's new ones untracked.
const TRACK_OURS: [&str; 2] = ["--max-cgroups", "65536"];

/// The kills of this file one at a time: they share the kernel's
/// allowance of OOM reports (10 in 5 s).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn usage(cg: &TestCgroup) -> u64 {
    cg.read("memory.usage_in_bytes").trim().parse::<u64>().or_else(|_| cg.read("memory.current").trim().parse()).unwrap_or(0)
}

fn killed(hog: &mut ChildGuard) {
    let status = hog.wait_timeout(Duration::from_secs(60)).expect("OOM-killed within 60 s");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status}");
}

/// The kill of `pid` as the daemon keeps it now (replayed: amended by the
/// kernel's report once joined), waiting up to 10 s for `ready`.
fn replayed_kill(daemon: &Daemon, pid: u32, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = None;
    for _ in 0..10 {
        let mut late = Tail::start(daemon, &["--since", "5m", "--kind", "oom_kill"]);
        if let Some((v, _)) = late.wait_for(Duration::from_secs(3), |v| v["victim"]["pid"] == pid) {
            if ready(&v) {
                return v;
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("the kill of {pid} never got ready; last seen {last:?}\n{}", daemon.log_text());
}

/// A parent with a 64 MiB limit and two children: `holder` holds 40 MiB,
/// `grower` grows until the parent's limit is hit. The OOM killer takes
/// the largest task (the holder); the grower triggered it.
#[test]
fn nested_limits_name_the_children_that_held_the_memory() {
    if !require_root("nested_limits_name_the_children_that_held_the_memory") {
        return;
    }
    let _serial = one_at_a_time();
    let daemon = Daemon::start(&TRACK_OURS);
    let mut tail = Tail::connect(&daemon);
    let parent = TestCgroup::new("who-pod", Some(64 * MIB));
    let holder = parent.child("holder", None);
    let grower = parent.child("grower", None);
    for cg in [&parent, &holder, &grower] {
        daemon.wait_tracked(&cg.path, Duration::from_secs(20));
    }
    let mut hold = ChildGuard(holder.spawn(memhog().args(["hold", "40", "600"])));
    let deadline = Instant::now() + Duration::from_secs(20);
    while usage(&holder) < 40 * MIB {
        assert!(Instant::now() < deadline, "the holder never reached 40 MiB");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Samples of the holder at 40 MiB, and a parent flat before the growth.
    std::thread::sleep(Duration::from_secs(3));
    let grow = ChildGuard(grower.spawn(memhog().args(["leak", "1", "6"])));
    killed(&mut hold);
    let (kill, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hold.pid())
        .unwrap_or_else(|| panic!("no oom_kill for the holder; saw {:?}\n{}", tail.seen, daemon.log_text()));
    println!("kill: top_consumers {}\nlimit_history {}\ncomposition {}\nwhy: {}", kill["top_consumers"], kill["limit_history"], kill["composition"], kill["why"]);

    assert_eq!(kill["cgroup"], holder.path.as_str());
    assert_eq!(kill["limit_cgroup"], parent.path.as_str(), "the parent's limit was hit");
    assert_eq!(kill["trigger"]["pid"], grow.pid(), "the grower asked for the page that did not fit");
    // Both children, largest first, with what they held at the last sample.
    let children: Vec<&Value> = kill["top_consumers"].as_array().expect("top_consumers").iter().filter(|c| c.get("cgroup").is_some()).collect();
    assert_eq!(children.len(), 2, "{}", kill["top_consumers"]);
    assert_eq!(children[0]["cgroup"], holder.path.as_str());
    assert_eq!((children[0]["victim"].as_bool(), children[0].get("trigger")), (Some(true), None));
    let held = children[0]["bytes"].as_u64().unwrap();
    assert!((40 * MIB..=44 * MIB).contains(&held), "the holder held 40 MiB and its allocator's change: {held}");
    assert_eq!(children[1]["cgroup"], grower.path.as_str());
    assert_eq!((children[1]["trigger"].as_bool(), children[1].get("victim")), (Some(true), None));
    let grown = children[1]["bytes"].as_u64().unwrap();
    assert!(grown > 0 && grown < held && held + grown <= 64 * MIB, "the grower below the holder, both under the limit: {grown}");
    // The parent's own last minute, against its limit.
    let h = &kill["limit_history"];
    assert_eq!(h["limit_bytes"], 64 * MIB, "{h}");
    let usages: Vec<u64> = h["usage_bytes"].as_array().expect("usage_bytes").iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(usages.len() >= 3 && usages.iter().all(|&u| u <= 64 * MIB), "{h}");
    assert!(usages.iter().any(|&u| u >= 40 * MIB), "the parent held the holder's 40 MiB: {h}");
    assert_eq!(h["usage_bytes"].as_array().unwrap().len(), h["seconds_ago"].as_array().unwrap().len());
    // The sentence names both, with their roles.
    let why = kill["why"].as_str().expect("why");
    assert!(why.contains(&format!("because {} hit its 64 MiB limit", parent.path)), "{why}");
    assert!(why.contains("; it used 64 MiB of 64 MiB, growing "), "the parent grew with the grower: {why}");
    assert!(why.contains(&format!("; {} holds ", holder.path)) && why.contains(" (the victim's), "), "{why}");
    assert!(why.contains(&format!(", {} ", grower.path)) && why.contains(" (the trigger's)"), "{why}");

    // `tail` draws the parent's last minute under the why: bars on a
    // terminal (script(1) gives it one), numbers through a pipe.
    let tail_args = format!("tail --since 5m --kind oom_kill --count 1 --cgroup {} --socket {}", holder.path, daemon.socket.display());
    let piped = Command::new(oomwatch_bin()).args(tail_args.split(' ')).output().unwrap();
    let piped = String::from_utf8_lossy(&piped.stdout);
    let usage_line = piped.lines().nth(2).unwrap_or_default().trim_start();
    assert!(usage_line.starts_with(&format!("usage of {}, last 60 s: -", parent.path)) && usage_line.ends_with(" (limit 64.0MiB)"), "{piped}");
    let on_terminal = terminal(&format!("{} {tail_args}", oomwatch_bin().display()));
    println!("tail on a terminal:\n{on_terminal}");
    assert!(on_terminal.contains(&format!("usage of {}, last 60 s: ", parent.path)) && on_terminal.contains('█'), "{on_terminal}");
    let status = terminal(&format!("{} status --top 0 --socket {}", oomwatch_bin().display(), daemon.socket.display()));
    let row = status.lines().find(|l| l.ends_with(parent.path.as_str())).unwrap_or_else(|| panic!("{status}"));
    println!("status on a terminal:\n{}\n{row}", status.lines().nth(1).unwrap_or_default());
    assert!(status.contains("LAST 60s") && row.contains('█'), "the parent at its limit: {status}");
}

/// What a command prints on a terminal: run under script(1).
fn terminal(command: &str) -> String {
    let out = Command::new("script").args(["-qec", command, "/dev/null"]).output().expect("script(1)");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// A tmpfs this test mounted; lazily unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 of the mount this guard made.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A process writing a tmpfs file (shared memory, charged to its cgroup)
/// is killed at 64 MiB: the composition and `why` say it was tmpfs.
#[test]
fn a_tmpfs_kill_is_named_as_such() {
    if !require_root("a_tmpfs_kill_is_named_as_such") {
        return;
    }
    let _serial = one_at_a_time();
    let state = temp_dir("who-state");
    let state_arg = state.0.to_str().expect("a UTF-8 temp path").to_owned();
    let daemon = Daemon::start(&[TRACK_OURS[0], TRACK_OURS[1], "--state-dir", &state_arg]);
    let mut tail = Tail::connect(&daemon);
    // The kernel may hold back a report (others' kills use its allowance):
    // then again after its 5 s window.
    for attempt in 0..3 {
        let cg = TestCgroup::new("who-shm", Some(64 * MIB));
        daemon.wait_tracked(&cg.path, Duration::from_secs(20));
        let dir = temp_dir("who-tmpfs");
        let mnt = dir.0.join("mnt");
        fs::create_dir(&mnt).unwrap();
        assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=512m", "oomwatch-test-tmpfs"]).arg(&mnt).status().unwrap().success());
        let _tmpfs = Tmpfs(mnt.clone());
        let mut hog = ChildGuard(cg.spawn(memhog().arg("shm").arg(mnt.join("segment")).arg("256")));
        killed(&mut hog);
        let pid = hog.pid();
        tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid).expect("the kill");
        let (explained, _) = tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "kill_explained" && v["pid"] == pid).expect("kill_explained");
        if explained["kernel_report"].get("missing").is_some() {
            eprintln!("attempt {attempt}: the kernel printed no report ({}); again after its window", explained["kernel_report"]["missing"]);
            std::thread::sleep(Duration::from_secs(6));
            continue;
        }
        let kill = replayed_kill(&daemon, pid, |v| v.get("kernel_report").is_some());
        println!("composition {}\nwhy: {}", kill["composition"], kill["why"]);
        let c = &kill["composition"];
        assert_eq!(*c, kill["kernel_report"]["composition"], "the kernel's, at the kill");
        assert!(c.get("sampled_seconds_ago").is_none(), "{c}");
        let shmem = c["shmem_bytes"].as_u64().expect("shmem_bytes");
        assert!(shmem >= 48 * MIB && shmem > c["anon_bytes"].as_u64().unwrap_or(0), "shmem dominates: {c}");
        let why = kill["why"].as_str().unwrap();
        assert!(why.contains(&format!("; {} MiB of it is tmpfs/shmem", shmem / MIB)) || why.contains(" of it is tmpfs/shmem"), "{why}");
        // The top consumer among tasks is the victim itself.
        let tasks: Vec<&Value> = kill["top_consumers"].as_array().expect("top_consumers").iter().filter(|c| c.get("pid").is_some()).collect();
        assert_eq!(tasks.first().map(|t| (t["pid"].clone(), t["victim"].clone())), Some((pid.into(), true.into())), "{}", kill["top_consumers"]);
        // The journal keeps the kill as published (why from the daemon's
        // sample) and the report's amendment (why naming tmpfs).
        let out = Command::new(oomwatch_bin()).args(["history", "--json", "--kind", "oom_kill,kill_explained", "--state-dir", &state_arg]).output().unwrap();
        let journal: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let kept = |kind: &str| journal.iter().find(|v| v["kind"] == kind && (v["pid"] == pid || v["victim"]["pid"] == pid)).unwrap_or_else(|| panic!("no {kind} of {pid} in the journal: {journal:?}"));
        assert!(kept("oom_kill")["why"].as_str().is_some_and(|w| w.starts_with(&format!("memhog (pid {pid}) was killed because {}", cg.path))));
        assert_eq!(kept("kill_explained")["why"], kill["why"]);
        return;
    }
    panic!("three kills in a row without a report");
}
