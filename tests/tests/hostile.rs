//! What hostile input does to the daemon, through its real outputs: process
//! and cgroup names chosen by an attacker, configurations at and past the
//! edges of every range, readers that hang up, a task that panics. Each
//! test backs a row of the README's "Security and failure modes" section.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    io::Read as _,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use oomwatch::wire::printable;
use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

/// A victim's comm: the kernel keeps 15 bytes of the name exec'd. It
/// clears the screen, forges a line, is not UTF-8 and turns text red.
const HOSTILE_COMM: &[u8] = b"\x1b[2J\nFAKE\xff\x1b[31m";

/// The characters a terminal would act on in `out`, each with what
/// surrounds it: C0 controls but the line feed, DEL, C1 controls, and
/// bytes that are not UTF-8. Empty when `out` is safe to print.
fn raw_controls(out: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(out) else {
        let e = std::str::from_utf8(out).unwrap_err();
        let at = e.valid_up_to();
        return vec![format!("not UTF-8 at byte {at}: {:?}", String::from_utf8_lossy(&out[at.saturating_sub(20)..(at + 20).min(out.len())]))];
    };
    text.char_indices()
        .filter(|&(_, c)| c != '\n' && c.is_control())
        .map(|(i, c)| format!("{c:?} in {:?}", &text[text.floor_char_boundary(i.saturating_sub(30))..text.ceil_char_boundary((i + 30).min(text.len()))]))
        .collect()
}

fn assert_printable(what: &str, out: &[u8]) {
    let found = raw_controls(out);
    assert!(found.is_empty(), "{what} passes raw control characters through: {found:?}\n{}", String::from_utf8_lossy(out));
}

/// A command whose comm is `comm`: a symlink of that name to memhog, exec'd.
fn memhog_named(dir: &Path, comm: &[u8]) -> Command {
    let link = dir.join(OsStr::from_bytes(comm));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(memhog_bin(), &link).unwrap();
    let mut cmd = Command::new(link);
    // memhog reads its mode from argv; argv[0] stays plain.
    cmd.arg0("memhog");
    cmd
}

/// A label value as the text exposition writes it.
fn label_escaped(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn run(args: &[&str], socket: &Path) -> std::process::Output {
    Command::new(oomwatch_bin()).args(args).arg("--socket").arg(socket).output().unwrap()
}

/// The hostile cgroup name: escape sequences (clear screen, OSC window
/// title ended by BEL), quotes, a backslash, bytes that are not UTF-8, and
/// a newline when the kernel takes one (it refuses them: EINVAL).
fn hostile_cgroup_name(parent: &TestCgroup) -> Vec<u8> {
    let base = b"\x1b[2J\x1b]0;pwned\x07\"q'\\\xff\xfe".to_vec();
    let with_newline = [b"nl\n".as_slice(), &base].concat();
    let probe = parent.dir.join(OsStr::from_bytes(&[b"oomwatch-test-".as_slice(), &with_newline].concat()));
    if fs::create_dir(&probe).is_ok() {
        let _ = fs::remove_dir(&probe);
        return with_newline;
    }
    println!("this kernel refuses a newline in a cgroup name; testing without one");
    base
}

#[test]
fn hostile_process_and_cgroup_names_are_escaped_in_every_output() {
    if !require_root("hostile_process_and_cgroup_names_are_escaped_in_every_output") {
        return;
    }
    let _one_at_a_time = KILLS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("hostile");
    let hook = dir.0.join("hook.sh");
    fs::write(&hook, format!("printf '%s\\n%s\\n' \"$OOMWATCH_CGROUP\" \"$OOMWATCH_SUMMARY\" > '{}'/exec-$$.out\n", dir.0.display())).unwrap();
    let config = write_config(&dir, &format!("[[sinks.exec]]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"5s\"\n", hook.display()));
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let mut tail = Tail::start(&daemon, &[]);
    let human_tail_out = dir.0.join("tail.txt");
    let human_tail = ChildGuard(
        Command::new(oomwatch_bin())
            .arg("tail")
            .arg("--socket")
            .arg(&daemon.socket)
            .stdout(fs::File::create(&human_tail_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let parent = TestCgroup::new("hostile", None);
    let name = hostile_cgroup_name(&parent);
    let cg = parent.child_raw(&name, Some(64 * MIB));
    // The daemon finds new cgroups by inotify; give it a moment to track this one.
    std::thread::sleep(Duration::from_millis(1500));
    let mut hog = ChildGuard(cg.spawn(memhog_named(&dir.0, HOSTILE_COMM).args(["hog", "256"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("the hog is killed");
    assert_eq!(cg.oom_kills(), 1);

    // JSON carries the names exactly (the comm as the kernel's bytes read
    // as UTF-8, lossily; the cgroup with its invalid bytes as \xNN).
    let pid = hog.pid();
    let (kill, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill for pid {pid}; saw {:?}", tail.seen));
    let comm = String::from_utf8_lossy(HOSTILE_COMM).into_owned();
    assert_eq!(kill["victim"]["comm"], comm.as_str(), "{kill}");
    assert_eq!(kill["cgroup"], cg.path.as_str(), "{kill}");
    assert_eq!(kill["constraint"], "memcg", "a non-UTF-8 cgroup's kill is still a memcg kill: {kill}");
    assert_eq!(kill["limit_cgroup"], cg.path.as_str(), "{kill}");
    assert_eq!(kill["limit_bytes"], 64 * MIB, "{kill}");
    let again: Value = serde_json::from_str(&serde_json::to_string(&kill).unwrap()).unwrap();
    assert_eq!(again["victim"]["comm"], comm.as_str(), "the name survives a JSON round trip");

    // Human tail: escaped, never interpreted, no forged line.
    std::thread::sleep(Duration::from_millis(500));
    drop(human_tail);
    let human = fs::read(&human_tail_out).unwrap();
    assert_printable("oomwatch tail", &human);
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains(printable(&comm).as_ref()), "the comm, escaped, in:\n{human}");
    assert!(human.contains(printable(&cg.path).as_ref()), "the cgroup, escaped, in:\n{human}");
    assert!(!human.lines().any(|l| l.starts_with("FAKE")), "a forged line:\n{human}");

    // status: the cgroup is tracked (its files read at its real name) and escaped.
    let status = run(&["status", "--json", "--top", "0"], &daemon.socket);
    let report: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("status --json: {e}"));
    let row = report["rows"].as_array().unwrap().iter().find(|r| r["cgroup"] == cg.path.as_str()).cloned();
    let row = row.unwrap_or_else(|| panic!("{} not tracked: {report}", cg.path));
    assert_eq!(row["limit_bytes"], 64 * MIB, "{row}");
    let status = run(&["status", "--top", "0"], &daemon.socket);
    assert!(status.status.success(), "{status:?}");
    assert_printable("oomwatch status", &status.stdout);
    assert!(String::from_utf8_lossy(&status.stdout).contains(printable(&cg.path).as_ref()), "{}", String::from_utf8_lossy(&status.stdout));

    let alerts = run(&["alerts"], &daemon.socket);
    assert!(alerts.status.success(), "{alerts:?}");
    assert_printable("oomwatch alerts", &alerts.stdout);
    assert!(String::from_utf8_lossy(&alerts.stdout).contains(printable(&cg.path).as_ref()), "the kill alert: {}", String::from_utf8_lossy(&alerts.stdout));

    // /metrics: the label value exactly, escaped as the exposition format says.
    let metrics = daemon.metrics();
    let series = format!(
        "oomwatch_oom_kills_total{{cgroup=\"{}\",constraint=\"memcg\",namespace=\"\",pod=\"\",container=\"\",main_process=\"\"}}",
        label_escaped(&cg.path)
    );
    assert_eq!(metric_value(&metrics, &series), Some(1.0), "{series} in:\n{metrics}");
    // `cargo xtask test` installs Debian's prometheus, which brings promtool.
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("promtool (Debian package prometheus, installed by cargo xtask test)");
    {
        let mut child = Command::new(promtool).args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics with a hostile cgroup label:\n{said}");
        println!("promtool check metrics: clean with the hostile label");
    }

    // The exec hook's environment: one line each, escaped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leaf = printable(cg.path.rsplit_once('/').unwrap().1).into_owned();
    let hook_out = loop {
        let outs: Vec<Vec<u8>> = fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(b"exec-"))
            .filter_map(|e| fs::read(e.path()).ok())
            .collect();
        if let Some(o) = outs.iter().find(|o| String::from_utf8_lossy(o).contains(&leaf)) {
            for o in &outs {
                assert_printable("the exec hook's OOMWATCH_* variables", o);
            }
            break o.clone();
        }
        assert!(Instant::now() < deadline, "the exec hook never ran for {}: {outs:?}", cg.path);
        std::thread::sleep(Duration::from_millis(100));
    };
    let hook_out = String::from_utf8(hook_out).unwrap();
    let mut lines = hook_out.lines();
    assert_eq!(lines.next(), Some(printable(&cg.path).as_ref()), "OOMWATCH_CGROUP: {hook_out:?}");
    assert_eq!(hook_out.lines().count(), 2, "no variable spans lines: {hook_out:?}");

    // The daemon's own log (a terminal under `cargo xtask run`, journald
    // under systemd): its ALERT line names the cgroup, escaped.
    let log = fs::read(&daemon.log).unwrap();
    assert_printable("the daemon's log", &log);
    let log = String::from_utf8(log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("ALERT oom_kill") && l.contains(printable(&cg.path).as_ref())),
        "the kill's ALERT line with the cgroup escaped:\n{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with("FAKE")), "a forged log line:\n{log}");
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_panics_total"), Some(0.0));
}

/// Cgroups nested under a test cgroup through directory descriptors, so
/// deep that their path is longer than PATH_MAX (no path-based call can
/// reach the deepest). Removed deepest first on drop, its processes (only
/// ones this test started) killed first.
struct DeepCgroups {
    /// Each level's parent directory and its name; `deepest` is the last's own.
    levels: Vec<(std::os::fd::OwnedFd, std::ffi::CString)>,
    deepest: std::os::fd::OwnedFd,
}

impl DeepCgroups {
    fn new(parent: &TestCgroup, levels: usize, limit_bytes: u64) -> Self {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        let open_dir = |at: libc::c_int, name: &std::ffi::CStr| {
            // SAFETY: openat(2) with a NUL-terminated name; the result is checked.
            let fd = unsafe { libc::openat(at, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            assert!(fd >= 0, "openat {name:?}: {}", std::io::Error::last_os_error());
            // SAFETY: a descriptor just opened and owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let top = std::ffi::CString::new(parent.dir.as_os_str().as_bytes()).unwrap();
        let mut at = open_dir(libc::AT_FDCWD, &top);
        let mut made = Self { levels: Vec::new(), deepest: at.try_clone().unwrap() };
        for i in 0..levels {
            if !parent.v1 {
                write_at(at.as_raw_fd(), "cgroup.subtree_control", "+memory");
            }
            let name = std::ffi::CString::new(format!("d{i:02}{}", "x".repeat(240))).unwrap();
            // SAFETY: mkdirat(2) with a NUL-terminated name.
            let r = unsafe { libc::mkdirat(at.as_raw_fd(), name.as_ptr(), 0o755) };
            assert_eq!(r, 0, "mkdirat level {i}: {}", std::io::Error::last_os_error());
            let next = open_dir(at.as_raw_fd(), &name);
            made.levels.push((std::mem::replace(&mut at, next), name));
        }
        made.deepest = at;
        let limit_file = if parent.v1 { "memory.limit_in_bytes" } else { "memory.max" };
        write_at(made.deepest.as_raw_fd(), limit_file, &limit_bytes.to_string());
        made
    }

    /// `cmd` moves itself into the deepest cgroup before exec.
    fn spawn(&self, cmd: &mut Command) -> std::process::Child {
        use std::os::fd::AsRawFd as _;
        let dir = self.deepest.as_raw_fd();
        // SAFETY: only async-signal-safe calls (openat, write, close)
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::openat(dir, c"cgroup.procs".as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
            });
        }
        cmd.spawn().expect("spawning into the deepest cgroup")
    }
}

/// Writes `value` to the file `name` of the directory `dir`.
fn write_at(dir: libc::c_int, name: &str, value: &str) {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: openat/write/close on a descriptor this test owns, from a
    // buffer of `value.len()` bytes.
    unsafe {
        let fd = libc::openat(dir, cname.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        assert!(fd >= 0, "openat {name}: {}", std::io::Error::last_os_error());
        let r = libc::write(fd, value.as_ptr().cast(), value.len());
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(r, value.len() as isize, "writing {value:?} to {name}: {e}");
    }
}

impl Drop for DeepCgroups {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        while let Some((parent, name)) = self.levels.pop() {
            for _ in 0..50 {
                // SAFETY: openat(2) relative to a directory this guard owns.
                let dir = unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
                if dir >= 0 {
                    let procs = {
                        // SAFETY: as above; the descriptor is closed by the File.
                        let fd = unsafe { libc::openat(dir, c"cgroup.procs".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                        if fd < 0 { String::new() } else { std::io::read_to_string(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }).unwrap_or_default() }
                    };
                    // SAFETY: closes the descriptor opened above.
                    unsafe { libc::close(dir) };
                    // Only processes this test started are in its cgroups.
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: plain kill(2).
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                // SAFETY: unlinkat(2) relative to a directory this guard owns.
                if unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A tenant with a delegated subtree nests cgroups deeper than PATH_MAX
/// and runs out at its own limit there. /proc shows the victim's cgroup
/// cut at 4095 bytes, whose files nobody can open: the kill must still be
/// a memcg kill, said to be cut, and must not claim the host ran out of
/// memory, which pages the host's owner. With BTF the kernel's chain says
/// which limit was hit; without, the kernel's report does.
#[test]
fn a_cgroup_deeper_than_path_max_is_a_memcg_kill_not_a_host_oom() {
    if !require_root("a_cgroup_deeper_than_path_max_is_a_memcg_kill_not_a_host_oom") {
        return;
    }
    // Without BTF a victim may be found by the kill counters of tracked
    // cgroups: no other kill of this binary at the same time.
    let _one_at_a_time = KILLS.lock().unwrap_or_else(|e| e.into_inner());
    for (daemon_args, said) in [(&[][..], "with BTF"), (&["--btf", "/nonexistent/vmlinux"][..], "without BTF")] {
        deep_kill_is_a_memcg_kill(daemon_args, said);
    }
}

/// A tenant that may make cgroups (a delegated subtree, a container with
/// its own cgroup namespace) makes more than `--max-cgroups` of them
/// before a workload starts, and more after: the workload's cgroup,
/// shallower than the crowd, is tracked all the same (usage, limit), in
/// place of one of the crowd, and stays tracked.
#[test]
fn a_crowd_of_deep_cgroups_cannot_keep_a_later_workload_from_being_watched() {
    if !require_root("a_crowd_of_deep_cgroups_cannot_keep_a_later_workload_from_being_watched") {
        return;
    }
    let top = TestCgroup::new("crowd", None);
    let tenant = top.child("tenant", None);
    let mut crowd: Vec<TestCgroup> = (0..40).map(|i| tenant.child(&format!("c{i}"), None)).collect();
    let include = format!("{}*", top.path);
    let daemon = Daemon::start(&["--max-cgroups", "16", "--include", &include]);
    let count = |metrics: &str, state: &str| metric_value(metrics, &format!("oomwatch_cgroups{{state=\"{state}\"}}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&daemon.metrics(), "excluded_cap") != Some(26.0) {
        assert!(Instant::now() < deadline, "42 cgroups, 16 tracked:\n{}", daemon.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pod = top.child("pod", Some(64 * MIB));
    daemon.wait_tracked(&pod.path, Duration::from_secs(10));
    assert_eq!(count(&daemon.metrics(), "excluded_cap"), Some(27.0), "the one pushed out is counted at once");
    // The crowd grows again: as deep as the deepest tracked, it waits (the
    // tenant's cgroup is watched: its new children are seen at once).
    let more: Vec<TestCgroup> = (40..60).map(|i| tenant.child(&format!("c{i}"), None)).collect();
    std::thread::sleep(Duration::from_secs(3));
    let metrics = daemon.metrics();
    for c in &more {
        assert!(!metrics.contains(&format!("cgroup=\"{}\"", c.path)), "{} pushed its way in:\n{metrics}", c.path);
    }
    crowd.extend(more);
    assert_eq!(count(&metrics, "tracked"), Some(16.0), "{metrics}");
    for (cgroup, what) in [(&pod.path, "the workload"), (&top.path, "the crowd's parent"), (&tenant.path, "the tenant's own cgroup")] {
        let usage = format!("oomwatch_cgroup_memory_usage_bytes{{cgroup=\"{cgroup}\"}}");
        assert!(metric_value(&metrics, &usage).is_some(), "{what} {cgroup} is not tracked:\n{metrics}");
    }
    let limit = format!("oomwatch_cgroup_memory_limit_bytes{{cgroup=\"{}\"}}", pod.path);
    assert_eq!(metric_value(&metrics, &limit), Some((64 * MIB) as f64), "{metrics}");
    let log = daemon.log_text();
    assert_eq!(log.matches("more memory cgroups than --max-cgroups (16)").count(), 1, "said once:\n{log}");
    assert!(log.contains(&format!("{} is tracked in place of {}/", pod.path, tenant.path)), "{log}");
    assert!(!log.contains("panic"), "{log}");
}

/// A tenant that makes and removes cgroups as fast as it can: the removed
/// cgroups the daemon keeps for the grace period (10 minutes) never number
/// more than `--max-cgroups`, so its memory does not grow with the churn.
#[test]
fn cgroups_made_and_removed_without_end_do_not_grow_the_daemon() {
    if !require_root("cgroups_made_and_removed_without_end_do_not_grow_the_daemon") {
        return;
    }
    let top = TestCgroup::new("churner", None);
    let include = format!("{}*", top.path);
    let daemon = Daemon::start(&["--max-cgroups", "64", "--include", &include]);
    let removed = |metrics: &str| metric_value(metrics, "oomwatch_cgroups{state=\"removed\"}").unwrap_or(f64::NAN);
    let mut most = 0f64;
    for round in 0..30 {
        let batch: Vec<TestCgroup> = (0..100).map(|i| top.child(&format!("r{round}-{i}"), None)).collect();
        std::thread::sleep(Duration::from_millis(150));
        drop(batch);
        let metrics = daemon.metrics();
        let now = removed(&metrics);
        assert!(now <= 64.0, "round {round}: {now} removed cgroups kept:\n{metrics}");
        most = most.max(now);
    }
    assert!(most >= 32.0, "the churn reached the daemon: at most {most} removed cgroups kept at once");
    let status = run(&["status"], &daemon.socket);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_panics_total"), Some(0.0));
}

/// A tenant that has each of its processes killed in a new cgroup: the
/// kill series of cgroups no longer tracked are bounded (by
/// `--max-cgroups`, the newest kept), every kill is still counted, and
/// none is reported as unobserved when series leave.
#[test]
fn a_kill_in_a_new_cgroup_each_time_is_counted_without_growing_the_series() {
    if !require_root("a_kill_in_a_new_cgroup_each_time_is_counted_without_growing_the_series") {
        return;
    }
    let _one_at_a_time = KILLS.lock().unwrap_or_else(|e| e.into_inner());
    let top = TestCgroup::new("killer", None);
    // Only the parent is tracked: the cgroups of the kills are not.
    let daemon = Daemon::start(&["--max-cgroups", "64", "--include", &top.path]);
    let kills = 100;
    let mut last = String::new();
    for i in 0..kills {
        let cg = top.child(&format!("k{i}"), Some(16 * MIB));
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hold", "64", "5"])));
        let status = hog.wait_timeout(Duration::from_secs(20)).expect("memhog ends");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "kill {i}: {status}");
        last = cg.path.clone();
    }
    let series = |metrics: &str| metrics.lines().filter(|l| l.starts_with("oomwatch_oom_kills_total{") && l.contains(&top.path)).count();
    let newest = format!("cgroup=\"{last}\"");
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = daemon.metrics();
        if metrics.lines().any(|l| l.starts_with("oomwatch_oom_kills_total{") && l.contains(&newest)) || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(metrics.contains(&newest), "the newest kill's series is kept:\n{metrics}");
    assert!((48..=64).contains(&series(&metrics)), "{} kill series of untracked cgroups:\n{metrics}", series(&metrics));
    let status = run(&["status"], &daemon.socket);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("{kills} OOM kills seen")), "{text}");
    // Two reconciler passes (every 5 s) after the last kill: none unobserved.
    std::thread::sleep(Duration::from_secs(12));
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, "oomwatch_oom_kills_unobserved_total"), Some(0.0), "{}", daemon.log_text());
}

/// Kill tests of this binary that must not overlap.
static KILLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn deep_kill_is_a_memcg_kill(daemon_args: &[&str], said: &str) {
    let daemon = Daemon::start(daemon_args);
    let mut tail = Tail::start(&daemon, &[]);
    let parent = TestCgroup::new("deep", None);
    let deep = DeepCgroups::new(&parent, 20, 32 * MIB);
    let mut hog = ChildGuard(deep.spawn(memhog().args(["hog", "128"])));
    let status = hog.wait_timeout(Duration::from_secs(30)).expect("the hog is killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{said}: {status}");
    let pid = hog.pid();

    let (kill, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("{said}: no oom_kill for pid {pid}; saw {:?}", tail.seen));
    // Where the kernel shows it: /proc (cut at 4095 bytes), or, for a
    // victim already exiting (v1 shows it in "/"), the kernel's report (cut
    // at about 1 KiB). Either way kept, and said to be cut.
    let cgroup = kill["cgroup"].as_str().unwrap().to_owned();
    assert!(cgroup.starts_with(&parent.path) && cgroup.len() >= 992, "{said}: the victim's cgroup as the kernel shows it: {kill}");
    let cut = match kill["cgroup_from"].as_str() {
        Some("proc_cgroup") => "victim cgroup path (longer than /proc/PID/cgroup shows: cut at 4095 bytes)",
        Some("kernel_report") => "victim cgroup path (longer than the kernel log prints: cut at about 1 KiB)",
        other => panic!("{said}: the victim's cgroup from {other:?}: {kill}"),
    };
    assert!(kill["unavailable"].to_string().contains(cut), "{said}: {kill}");
    println!("{said}: the victim's cgroup, {} bytes, from {}", cgroup.len(), kill["cgroup_from"]);
    assert_eq!(kill["constraint"], "memcg", "{said}: {kill}");
    assert_eq!(kill["limit_bytes"], 32 * MIB, "{said}: {kill}");
    assert_eq!(kill["limit_cgroup"], Value::Null, "{said}: a cgroup the kernel cannot name whole is not named: {kill}");
    let why = kill["why"].as_str().unwrap();
    assert!(why.contains("because a memory cgroup hit its limit") && !why.contains("host ran out"), "{said}: {why}");

    // The kernel's report cuts the same path at about 1 KiB: the amended
    // why still names no cut path, and still no host OOM.
    let (explained, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "kill_explained" && v["pid"] == pid)
        .unwrap_or_else(|| panic!("{said}: no kill_explained for pid {pid}; saw {:?}", tail.seen));
    assert_eq!(explained["kernel_report"]["constraint"], "CONSTRAINT_MEMCG", "{said}: {explained}");
    let why = explained["why"].as_str().unwrap();
    assert!(why.contains("because a memory cgroup hit its limit") && !why.contains("host ran out"), "{said}: {why}");

    let metrics = daemon.metrics();
    let kills: Vec<&str> = metrics.lines().filter(|l| l.starts_with("oomwatch_oom_kills_total{")).collect();
    assert_eq!(kills.len(), 1, "{said}: {kills:?}");
    assert!(kills[0].contains("constraint=\"memcg\"") && kills[0].ends_with(" 1"), "{said}: {kills:?}");
    assert_eq!(metric_value(&metrics, "oomwatch_panics_total"), Some(0.0));
    drop(hog);
    drop(deep);
}

// ---------------------------------------------------------------- ranges

/// One row of `oomwatch check --print-ranges`: the key, and TOML values at
/// its minimum, its maximum and one past the maximum.
#[derive(Debug)]
struct Setting {
    key: String,
    min: String,
    max: String,
    over: String,
}

fn ranges() -> Vec<Setting> {
    let out = Command::new(oomwatch_bin()).args(["check", "--print-ranges"]).output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let settings: Vec<Setting> = table.lines().skip(2).map(setting).collect();
    assert!(settings.len() > 30, "{table}");
    settings
}

fn setting(row: &str) -> Setting {
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let (key, range) = (cells[1].trim_matches('`').to_owned(), cells[2]);
    if let Some(inner) = range.strip_prefix('[').or_else(|| range.strip_prefix('(')) {
        // A float range; an open minimum is not allowed itself.
        let (lo, hi) = inner.trim_end_matches(']').split_once(", ").unwrap();
        let (lo, hi): (f64, f64) = (lo.parse().unwrap(), hi.parse().unwrap());
        let min = if range.starts_with('(') { lo + 1e-6 } else { lo };
        return Setting { key, min: format!("{min:?}"), max: format!("{hi:?}"), over: format!("{:?}", hi + 0.01) };
    }
    let (lo, hi) = range.split_once("..=").unwrap();
    if let (Ok(lo), Ok(hi)) = (lo.parse::<i64>(), hi.parse::<i64>()) {
        return Setting { key, min: lo.to_string(), max: hi.to_string(), over: (hi + 1).to_string() };
    }
    Setting { key, min: format!("\"{lo}\""), max: format!("\"{hi}\""), over: format!("\"{hi} 1ms\"") }
}

/// A setting that the rules between keys would refuse at a bound alone,
/// and what makes the file valid.
struct Companion {
    key: &'static str,
    bound: &'static str,
    /// The value instead of the bound, when the bound itself can never be valid.
    instead: Option<&'static str>,
    others: &'static [(&'static str, &'static str)],
}

const COMPANIONS: &[Companion] = &[
    Companion { key: "cgroups.sample_interval", bound: "max", instead: None, others: &[("cgroups.full_sample_every", "\"1h\""), ("forecast.window", "\"10m\"")] },
    Companion { key: "cgroups.full_sample_every", bound: "min", instead: None, others: &[("cgroups.sample_interval", "\"100ms\"")] },
    Companion { key: "pressure.trigger_stall", bound: "max", instead: None, others: &[("pressure.trigger_window", "\"10s\"")] },
    Companion { key: "forecast.window", bound: "min", instead: None, others: &[("cgroups.sample_interval", "\"100ms\"")] },
    // critical_eta must be shorter than warning_eta, and both share the
    // range 1s..=1day: warning_eta's minimum and critical_eta's maximum
    // can only be approached, to the millisecond.
    Companion { key: "alerts.oom_forecast.warning_eta", bound: "min", instead: Some("\"1s 1ms\""), others: &[("alerts.oom_forecast.critical_eta", "\"1s\"")] },
    Companion {
        key: "alerts.oom_forecast.critical_eta",
        bound: "max",
        instead: Some("\"23h 59m 59s 999ms\""),
        others: &[("alerts.oom_forecast.warning_eta", "\"1day\"")],
    },
];

/// A configuration file setting `key` (a table key such as
/// `sinks.webhook[].queue`) to `value`, with `others` beside it.
fn config_text(settings: &[(&str, &str)]) -> String {
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sinks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for &(key, value) in settings {
        let (table, name) = key.rsplit_once('.').unwrap();
        if let Some(kind) = table.strip_prefix("sinks.") {
            sinks.entry(kind.trim_end_matches("[]")).or_default().push(format!("{name} = {value}"));
        } else {
            tables.entry(table.to_owned()).or_default().push(format!("{name} = {value}"));
        }
    }
    let mut text = String::new();
    for (table, lines) in tables {
        text.push_str(&format!("[{table}]\n{}\n\n", lines.join("\n")));
    }
    for (kind, lines) in sinks {
        let (header, target) = match kind {
            "alertmanager" => ("[[sinks.alertmanager]]", "url = \"http://127.0.0.1:9/\"".to_owned()),
            "webhook" => ("[[sinks.webhook]]", "url = \"http://127.0.0.1:9/hook\"".to_owned()),
            "exec" => ("[[sinks.exec]]", "command = [\"/bin/true\"]".to_owned()),
            "otlp" => ("[[sinks.otlp]]", "endpoint = \"http://127.0.0.1:9/v1/logs\"".to_owned()),
            "file" => ("[[sinks.file]]", format!("path = \"{}\"", SinkFiles::dir().join("events.json").display())),
            // One table, on where journald runs ("auto").
            "journald" => ("[sinks.journald]", String::new()),
            other => panic!("config_text: no template for sinks.{other}: add one"),
        };
        text.push_str(&format!("{header}\n{target}\n{}\n\n", lines.join("\n")));
    }
    text
}

/// Where the file sink of the range configs writes; removed when the test ends.
struct SinkFiles;

impl SinkFiles {
    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oomwatch-test-hostile-sinks-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for SinkFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(Self::dir());
    }
}

/// The file with `s` at `bound` ("min", "max" or "over", which keeps the
/// companions of "max").
fn config_at(s: &Setting, bound: &str) -> String {
    let plain = match bound {
        "min" => s.min.as_str(),
        "max" => s.max.as_str(),
        _ => s.over.as_str(),
    };
    let companion = COMPANIONS.iter().find(|c| c.key == s.key && c.bound == if bound == "over" { "max" } else { bound });
    let value = companion.and_then(|c| c.instead).filter(|_| bound != "over").unwrap_or(plain);
    let mut settings = vec![(s.key.as_str(), value)];
    settings.extend(companion.map(|c| c.others).unwrap_or_default().iter().copied());
    config_text(&settings)
}

/// The key as errors name it: sinks by position.
fn error_key(key: &str) -> String {
    key.replace("[]", "[0]")
}

fn count_in_log(daemon: &Daemon, needle: &str) -> usize {
    daemon.log_text().matches(needle).count()
}

/// Sends SIGHUP and waits until the log says `needle` once more.
fn reload(daemon: &Daemon, needle: &str) {
    let before = count_in_log(daemon, needle);
    signal(daemon.pid(), libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_in_log(daemon, needle) == before {
        assert!(Instant::now() < deadline, "SIGHUP: no {needle:?} within 10 s:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon still serves /healthz ok and no task panicked.
fn assert_healthy(daemon: &Daemon, what: &str) {
    // Tasks that use the new values run once or tick within this.
    std::thread::sleep(Duration::from_millis(300));
    let health = http_get(daemon.port, "/healthz").unwrap_or_else(|e| panic!("{what}: /healthz: {e}\n{}", daemon.log_text()));
    assert!(health.starts_with("ok"), "{what}: /healthz says {health:?}\n{}", daemon.log_text());
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_panics_total"), Some(0.0), "{what}: a panic\n{}", daemon.log_text());
}

/// Starts a daemon with `first`, reloads `then`, then the refused `over`
/// (naming `key`): it runs through all three with no panic.
fn start_reload_refuse(dir: &TempDir, first: &str, then: &str, over: &str, key: &str, what: &str) {
    let path = write_config(dir, first);
    let daemon = Daemon::start(&["--config", path.to_str().unwrap()]);
    assert_healthy(&daemon, &format!("{what}: started with\n{first}"));
    fs::write(&path, then).unwrap();
    reload(&daemon, "SIGHUP: reloaded");
    assert_healthy(&daemon, &format!("{what}: reloaded with\n{then}"));
    fs::write(&path, over).unwrap();
    reload(&daemon, "keeping the running configuration");
    let log = daemon.log_text();
    let refusal = log.lines().rfind(|l| l.contains("keeping the running configuration")).unwrap();
    assert!(refusal.contains(key), "{what}: the refused reload names {key}: {refusal}");
    assert_healthy(&daemon, &format!("{what}: after the refused reload of\n{over}"));
}

#[test]
fn every_range_bound_starts_and_reloads_and_one_past_it_is_refused() {
    if !require_root("every_range_bound_starts_and_reloads_and_one_past_it_is_refused") {
        return;
    }
    let _sink_files = SinkFiles;
    let dir = temp_dir("ranges");
    let settings = ranges();
    let t0 = Instant::now();
    for s in &settings {
        let key = error_key(&s.key);
        let (min, max, over) = (config_at(s, "min"), config_at(s, "max"), config_at(s, "over"));
        for (bound, text) in [("min", &min), ("max", &max)] {
            let path = write_config(&dir, text);
            let out = Command::new(oomwatch_bin()).args(["check", "--config"]).arg(&path).output().unwrap();
            assert!(out.status.success(), "{} at its {bound} is refused:\n{text}\n{}", s.key, String::from_utf8_lossy(&out.stderr));
        }
        let path = write_config(&dir, &over);
        let err = one_line_refusal(Command::new(oomwatch_bin()).args(["check", "--config"]).arg(&path));
        assert!(err.contains(&key), "one past the maximum of {}: {err}", s.key);
        start_reload_refuse(&dir, &min, &max, &over, &key, &format!("{} min->max", s.key));
        start_reload_refuse(&dir, &max, &min, &over, &key, &format!("{} max->min", s.key));
    }
    println!("{} settings: min and max each started, reloaded and survived a refused reload ({:.0} s)", settings.len(), t0.elapsed().as_secs_f64());
}

#[test]
fn all_settings_at_their_minimum_or_maximum_at_once_run() {
    if !require_root("all_settings_at_their_minimum_or_maximum_at_once_run") {
        return;
    }
    let _sink_files = SinkFiles;
    let dir = temp_dir("ranges-all");
    let settings = ranges();
    let all = |bound: &str| {
        let values: Vec<(String, String)> = settings
            .iter()
            .map(|s| {
                let plain = if bound == "min" { &s.min } else { &s.max };
                let adjusted = COMPANIONS.iter().find(|c| c.key == s.key && c.bound == bound).and_then(|c| c.instead);
                (s.key.clone(), adjusted.map(str::to_owned).unwrap_or_else(|| plain.clone()))
            })
            .collect();
        config_text(&values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>())
    };
    let (min, max) = (all("min"), all("max"));
    let over = config_text(&[("sinks.webhook[].queue", "100001")]);
    start_reload_refuse(&dir, &min, &max, &over, "sinks.webhook[0].queue", "all at min, then all at max");
    start_reload_refuse(&dir, &max, &min, &over, "sinks.webhook[0].queue", "all at max, then all at min");
}

/// The values of issue 14, each of which used to pass `check` and then
/// panic the daemon or one of its tasks.
const ISSUE_VALUES: &[(&str, &str, &str)] = &[
    ("sinks.webhook[].queue", "18446744073709551615", "sinks.webhook[0].queue"),
    ("sinks.alertmanager[].resend_interval", "\"0s\"", "sinks.alertmanager[0].resend_interval"),
    ("sinks.alertmanager[].resend_interval", "\"500000000000y\"", "sinks.alertmanager[0].resend_interval"),
    ("sinks.exec[].max_concurrent", "18446744073709551615", "sinks.exec[0].max_concurrent"),
    ("alerts.evaluate_every", "\"500000000000y\"", "alerts.evaluate_every"),
];

#[test]
fn the_configs_that_used_to_panic_are_refused_at_check_start_and_reload() {
    if !require_root("the_configs_that_used_to_panic_are_refused_at_check_start_and_reload") {
        return;
    }
    let _sink_files = SinkFiles;
    let dir = temp_dir("issue-values");
    let good = config_text(&[("sinks.webhook[].queue", "16")]);
    let path = write_config(&dir, &good);
    let daemon = Daemon::start(&["--config", path.to_str().unwrap()]);
    for &(key, value, named) in ISSUE_VALUES {
        let text = config_text(&[(key, value)]);
        fs::write(&path, &text).unwrap();
        for args in [vec!["check", "--config"], vec!["daemon", "--listen", "127.0.0.1:1", "--config"]] {
            let err = one_line_refusal(Command::new(oomwatch_bin()).args(&args).arg(&path));
            assert!(err.contains(named), "{args:?} with {key} = {value}: {err}");
        }
        reload(&daemon, "keeping the running configuration");
        assert_healthy(&daemon, &format!("SIGHUP with {key} = {value}"));
    }
}

// ---------------------------------------------------------------- closed pipes

/// Runs `oomwatch ARGS` with its stdout a pipe whose reader is already
/// gone: its first write fails. Returns (status, stderr).
fn into_closed_pipe(args: &[&str], socket: &Path) -> (std::process::ExitStatus, String) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned here.
    let (read, write) = unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let child = Command::new(oomwatch_bin()).args(args).arg("--socket").arg(socket).stdout(Stdio::from(write)).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = ChildGuard(child);
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap_or_else(|| panic!("oomwatch {args:?} still running 20 s after its reader went"));
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, err)
}

use std::os::fd::FromRawFd as _;

#[test]
fn client_commands_end_quietly_when_their_reader_goes() {
    if !require_root("client_commands_end_quietly_when_their_reader_goes") {
        return;
    }
    let daemon = Daemon::start(&[]);
    // One kill, so that `tail --since` has something to replay.
    let cg = TestCgroup::new("pipe", Some(32 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "128"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("killed");
    let mut tail = Tail::start(&daemon, &["--since", "10m"]);
    tail.wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill").expect("the kill is in the journal");

    for args in [vec!["status", "--top", "0"], vec!["alerts"], vec!["tail", "--since", "10m"], vec!["tail", "--json", "--since", "10m"]] {
        let (status, err) = into_closed_pipe(&args, &daemon.socket);
        assert!(err.trim().is_empty(), "oomwatch {args:?} into a closed pipe says: {err}");
        assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "oomwatch {args:?}: {status}");
    }
    // As people type it.
    let (bin, socket) = (oomwatch_bin().display().to_string(), daemon.socket.display().to_string());
    for cmd in [format!("{bin} status --top 0 --socket {socket} | head -1"), format!("timeout 20 {bin} tail --since 10m --socket {socket} | head -1")]
    {
        let out = Command::new("/bin/sh").args(["-c", &cmd]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe") && err.trim().is_empty(), "{cmd}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "{cmd}");
    }
}

// ---------------------------------------------------------------- panics

#[test]
fn a_panicking_task_ends_the_daemon_non_zero_naming_the_task() {
    if !require_root("a_panicking_task_ends_the_daemon_non_zero_naming_the_task") {
        return;
    }
    let dir = temp_dir("panic");
    let log = dir.0.join("daemon.log");
    let child = Command::new(oomwatch_bin())
        .args(["daemon", "--listen", &format!("127.0.0.1:{}", closed_port()), "--inject-panic", "alert-rules", "--socket"])
        .arg(dir.0.join("events.sock"))
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let status = child.wait_timeout(Duration::from_secs(30)).expect("the daemon ends after the task panics");
    let log = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "a non-zero exit, not a signal or an abort: {status}\n{log}");
    assert!(log.contains("panic in thread") && log.contains("injected by --inject-panic alert-rules"), "the panic is logged:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert_eq!(last, "oomwatch: the alert-rules task panicked: injected by --inject-panic alert-rules", "the last line says why:\n{log}");
}

// ---------------------------------------------------------------- no daemon

/// `s` says its cause once: "(os error N)" at most once.
fn said_once(s: &str) -> bool {
    s.matches("(os error").count() <= 1
}

#[test]
fn a_missing_or_dead_socket_is_one_line_naming_it() {
    let dir = temp_dir("nosocket");
    let missing = dir.0.join("missing.sock");
    // A socket file nobody listens on: connect is refused.
    let dead = dir.0.join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    for socket in [&missing, &dead] {
        for cmd in ["status", "tail", "alerts"] {
            let err = one_line_refusal(Command::new(oomwatch_bin()).arg(cmd).arg("--socket").arg(socket));
            assert!(err.contains(socket.to_str().unwrap()) && said_once(&err), "oomwatch {cmd} --socket {}: {err}", socket.display());
        }
    }
}

#[test]
fn a_socket_path_that_cannot_be_created_is_one_line_naming_it() {
    if !require_root("a_socket_path_that_cannot_be_created_is_one_line_naming_it") {
        return;
    }
    // /proc takes no new directories: the daemon cannot create the socket's.
    let err = one_line_refusal(Command::new(oomwatch_bin()).args(["daemon", "--listen", &format!("127.0.0.1:{}", closed_port()), "--socket", "/proc/oomwatch-none/events.sock"]));
    assert!(err.contains("/proc/oomwatch-none") && said_once(&err), "{err}");
}

#[test]
fn raw_controls_finds_what_a_terminal_acts_on() {
    for bad in [b"a\x1b[2Jb".as_slice(), b"tab\there", b"del\x7f", "c1\u{9b}".as_bytes(), b"bad\xffutf8", b"cr\r"] {
        assert!(!raw_controls(bad).is_empty(), "{bad:?}");
    }
    assert!(raw_controls("plain \\x1b[2J\\nFAKE \u{e9}\nnext line\n".as_bytes()).is_empty());
}
