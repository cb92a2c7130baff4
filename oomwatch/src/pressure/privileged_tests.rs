//! Tests against the real kernel: they register PSI triggers and create
//! `oomwatch-test-*` cgroups, so they need root. Without root they fail,
//! unless OOMWATCH_SKIP_PRIVILEGED=1 says to skip them.
//!
//! The firing test needs memory stalls in one cgroup. On hybrid hosts (memory
//! controller on cgroup v1, PSI on the v2 hierarchy) the workload has to be in
//! a v2 child, where PSI is accounted, and in a v1 memory child with a small
//! limit, where the reclaim happens. On pure v2 hosts one v2 child with
//! memory.max does both.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::psi::read_pressure;
use super::trigger::{PsiTrigger, StallKind, TriggerError, TriggerSpec};

const SKIP_ENV: &str = "OOMWATCH_SKIP_PRIVILEGED";
/// Set (to the scratch directory) only in the re-executed workload process.
const WORKER_ENV: &str = "OOMWATCH_TEST_THRASH_DIR";
const WORKER_TEST: &str = "pressure::privileged_tests::thrash_worker";

const LIMIT_BYTES: u64 = 64 << 20;
/// Anonymous memory the workload holds. There is no swap, so this is pinned
/// and leaves about 16 MiB of the limit for page cache; more risks the
/// workload being OOM-killed instead of stalling.
const WORKER_ANON_BYTES: usize = 48 << 20;
/// Larger than the whole limit, so every pass over the file reclaims.
const WORKER_FILE_BYTES: usize = 96 << 20;
/// The workload stops by itself even if nobody kills it.
const WORKER_MAX_RUN: Duration = Duration::from_secs(60);

/// Whether to run: true as root; as non-root, false (skip) when
/// OOMWATCH_SKIP_PRIVILEGED=1, else a failure that says how to skip.
fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        // Straight to stderr rather than eprintln!, which the test harness
        // captures and hides for passing tests: a skip should be seen.
        let _ = writeln!(
            io::stderr(),
            "SKIPPED {test}: needs root (euid is {euid}) and {SKIP_ENV}=1 is set"
        );
        return false;
    }
    panic!(
        "{test} needs root (euid is {euid}) to register PSI triggers and create cgroups; set {SKIP_ENV}=1 to skip it"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("building a tokio runtime: {e}"))
}

#[test]
fn one_second_window_on_system_memory_is_accepted_or_falls_back_to_2s() {
    if !privileged("one_second_window_on_system_memory_is_accepted_or_falls_back_to_2s") {
        return;
    }
    let path = Path::new("/proc/pressure/memory");
    let requested = TriggerSpec::new(
        StallKind::Some,
        Duration::from_millis(150),
        Duration::from_secs(1),
    )
    .expect("valid spec");
    let trigger = PsiTrigger::register(path, requested).unwrap_or_else(|e| panic!("{e}"));
    let effective = trigger.effective();
    eprintln!(
        "{}: requested \"{requested}\", kernel accepted \"{effective}\" (fell back: {})",
        path.display(),
        trigger.fell_back()
    );
    effective
        .validate()
        .unwrap_or_else(|e| panic!("effective spec \"{effective}\" is invalid: {e}"));
    if trigger.fell_back() {
        assert_eq!(Some(effective), requested.unprivileged_fallback());
        assert_eq!(effective.window, Duration::from_secs(2));
        assert_eq!(effective.stall, Duration::from_millis(300));
    } else {
        assert_eq!(effective, requested);
    }
    // What the kernel accepted must be accepted again as is, without a
    // second fallback.
    let again = PsiTrigger::register(path, effective).unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.fell_back());
    super::trigger::trigger_supported(path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn trigger_reports_gone_when_its_cgroup_is_removed() {
    if !privileged("trigger_reports_gone_when_its_cgroup_is_removed") {
        return;
    }
    let layout = CgroupLayout::discover();
    let cg = TestCgroup::create(
        &layout.v2_mount,
        &format!("oomwatch-test-psi-gone-{}", std::process::id()),
    );
    let path = cg.path.join("memory.pressure");
    let spec = TriggerSpec::new(
        StallKind::Some,
        Duration::from_millis(50),
        Duration::from_secs(2),
    )
    .expect("valid spec");
    let mut trigger = PsiTrigger::register(&path, spec).unwrap_or_else(|e| panic!("{e}"));
    runtime().block_on(async {
        let waiter = tokio::spawn(async move {
            let result = trigger.wait().await;
            (trigger, result)
        });
        // Let the waiter reach epoll before the cgroup goes away, so that the
        // wake-up path is what is tested.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cg.remove()
            .unwrap_or_else(|e| panic!("rmdir {}: {e}", cg.path.display()));
        let removed = Instant::now();
        let (mut trigger, result) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait() did not return within 5 s of the cgroup's removal")
            .expect("waiter task panicked");
        eprintln!(
            "wait() returned {:?} after {:?}",
            result.as_ref().map(|_| ()),
            removed.elapsed()
        );
        let err =
            result.expect_err("no stall can happen in an empty cgroup, so wait() must report Gone");
        assert!(matches!(err, TriggerError::Gone { .. }), "{err}");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        let again = tokio::time::timeout(Duration::from_millis(100), trigger.wait())
            .await
            .expect("a gone trigger must answer at once");
        assert!(matches!(again, Err(TriggerError::Gone { .. })), "{again:?}");
    });
    assert!(
        matches!(read_pressure(&path), Ok(None)),
        "a removed cgroup's pressure reads as None"
    );
}

#[test]
fn trigger_fires_when_a_cgroup_thrashes() {
    if !privileged("trigger_fires_when_a_cgroup_thrashes") {
        return;
    }
    let pid = std::process::id();
    let name = format!("oomwatch-test-psi-{pid}");
    let layout = CgroupLayout::discover();

    // Dropped in reverse order: the worker is killed and reaped first, then the
    // cgroups are removed, then the scratch directory.
    let scratch = ScratchDir::create(Path::new("/var/tmp"), &name);
    let v1 = layout.v1_memory.as_ref().map(|parent| {
        let cg = TestCgroup::create(parent, &name);
        cg.write("memory.limit_in_bytes", &LIMIT_BYTES.to_string());
        cg
    });
    let v2 = TestCgroup::create(&layout.v2_mount, &name);
    if v1.is_none() {
        let controllers =
            fs::read_to_string(v2.path.join("cgroup.controllers")).unwrap_or_default();
        assert!(
            controllers.split_whitespace().any(|c| c == "memory"),
            "no cgroup v1 memory hierarchy, and the v2 memory controller is not enabled for children of {} (cgroup.subtree_control)",
            layout.v2_mount.display()
        );
        v2.write("memory.max", &LIMIT_BYTES.to_string());
    }

    let pressure_path = v2.path.join("memory.pressure");
    let spec = TriggerSpec::new(
        StallKind::Some,
        Duration::from_millis(50),
        Duration::from_secs(2),
    )
    .expect("valid spec");
    let mut trigger = PsiTrigger::register(&pressure_path, spec).unwrap_or_else(|e| panic!("{e}"));
    assert!(!trigger.fell_back(), "a 2 s window needs no fallback");
    let before = read_pressure(&pressure_path)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the cgroup exists");

    let rt = runtime();
    // An idle cgroup must not wake the waiter: the file is always readable,
    // so a wrong interest or uncleared readiness would show here.
    let idle =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), trigger.wait()).await });
    assert!(idle.is_err(), "trigger fired on an idle cgroup: {idle:?}");

    let mut procs = vec![v2.path.join("cgroup.procs")];
    procs.extend(v1.as_ref().map(|cg| cg.path.join("cgroup.procs")));
    let mut worker = Worker::spawn(&scratch.path, &procs);
    let started = Instant::now();

    let first =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), trigger.wait()).await });
    let diagnostics = || {
        format!(
            "{}: {:?}; worker: {}",
            pressure_path.display(),
            fs::read_to_string(&pressure_path),
            worker.describe()
        )
    };
    let fired = match first {
        Ok(Ok(fired)) => fired,
        Ok(Err(e)) => panic!("waiting for the trigger: {e}; {}", diagnostics()),
        Err(_) => panic!(
            "trigger \"{spec}\" did not fire within 20 s of thrashing; {}",
            diagnostics()
        ),
    };
    let latency = fired.at.duration_since(started);
    assert_eq!(fired.spec, spec);

    // Keep waiting while the workload goes on: the kernel fires a trigger at
    // most once per window, so a handful of events in 6 s is right, and a
    // busy loop on stale readiness would give thousands.
    let mut refires = 0u32;
    rt.block_on(async {
        let until = tokio::time::Instant::now() + Duration::from_secs(6);
        while let Ok(r) = tokio::time::timeout_at(until, trigger.wait()).await {
            r.unwrap_or_else(|e| panic!("{e}; {}", diagnostics()));
            refires += 1;
            assert!(
                refires <= 10,
                "trigger fired {refires} times in 6 s: readiness is not cleared"
            );
        }
    });
    let after = read_pressure(&pressure_path)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the cgroup exists");
    eprintln!(
        "trigger \"{spec}\" on {} fired {:?} after the workload started, then {refires} more times in 6 s; some total {} -> {} us, avg10 {:.2}%; worker: {}",
        pressure_path.display(),
        latency,
        before.some.total_us,
        after.some.total_us,
        after.some.avg10,
        worker.describe()
    );
    assert!(after.some.total_us > before.some.total_us + 50_000);
    assert!(
        worker.is_running(),
        "the workload died (OOM kill?): {}",
        worker.describe()
    );
}

/// The workload, run only as a child of `trigger_fires_when_a_cgroup_thrashes`
/// (re-executing this test binary), already inside the test cgroups.
#[test]
#[ignore = "workload process for trigger_fires_when_a_cgroup_thrashes; does nothing when run directly"]
fn thrash_worker() {
    let Some(dir) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    if let Err(e) = thrash(Path::new(&dir)) {
        eprintln!("thrash worker: {e}");
        std::process::exit(2);
    }
}

/// Holds anonymous memory that cannot be reclaimed (no swap) and streams a
/// file larger than the cgroup limit through the page cache, so that every
/// page read has to be reclaimed for: direct memcg reclaim counts as a memory
/// stall.
fn thrash(dir: &Path) -> io::Result<()> {
    // Non-zero bytes so that every page is really allocated.
    let held = vec![1u8; WORKER_ANON_BYTES];
    let path = dir.join(format!("data-{}", std::process::id()));
    {
        let mut f = fs::File::create(&path)?;
        let chunk = vec![2u8; 1 << 20];
        for _ in 0..WORKER_FILE_BYTES / chunk.len() {
            f.write_all(&chunk)?;
        }
    }
    let start = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    while start.elapsed() < WORKER_MAX_RUN {
        let mut f = fs::File::open(&path)?;
        while f.read(&mut buf)? > 0 {}
    }
    std::hint::black_box(&held);
    fs::remove_file(&path)
}

/// Where the cgroup hierarchies are, from /proc/self/mountinfo and
/// /proc/self/cgroup.
struct CgroupLayout {
    v2_mount: PathBuf,
    /// This process's own v1 memory cgroup directory, when the memory
    /// controller is on v1.
    v1_memory: Option<PathBuf>,
}

impl CgroupLayout {
    fn discover() -> CgroupLayout {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_else(|e| panic!("reading /proc/self/mountinfo: {e}"));
        let mut v2_mount = None;
        let mut v1_memory_mount = None;
        for line in mountinfo.lines() {
            // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(mountpoint), Some(fstype), Some(superopts)) =
                (left.get(3), left.get(4), right.first(), right.get(2))
            else {
                continue;
            };
            if *fstype == "cgroup2" && v2_mount.is_none() {
                v2_mount = Some(PathBuf::from(mountpoint));
            }
            if *fstype == "cgroup" && superopts.split(',').any(|o| o == "memory") {
                v1_memory_mount = Some((root.to_string(), PathBuf::from(mountpoint)));
            }
        }
        let v2_mount = v2_mount.expect("no cgroup2 hierarchy is mounted; PSI per cgroup needs one");
        let v1_memory = v1_memory_mount.map(|(root, mountpoint)| {
            let own = fs::read_to_string("/proc/self/cgroup")
                .unwrap_or_else(|e| panic!("reading /proc/self/cgroup: {e}"));
            let cgroup = own
                .lines()
                .filter_map(|l| {
                    l.splitn(3, ':')
                        .collect::<Vec<_>>()
                        .get(1..3)
                        .map(|f| (f[0], f[1]))
                })
                .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"))
                .map(|(_, path)| path.to_string())
                .expect(
                    "the v1 memory hierarchy is mounted but /proc/self/cgroup has no memory line",
                );
            // The mount may show only a subtree (containers): cut its root off.
            let relative = cgroup
                .strip_prefix(root.trim_end_matches('/'))
                .unwrap_or(&cgroup);
            mountpoint.join(relative.trim_start_matches('/'))
        });
        CgroupLayout {
            v2_mount,
            v1_memory,
        }
    }
}

/// A cgroup this test created; removed on drop. Only ever `oomwatch-test-*`.
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn create(parent: &Path, name: &str) -> TestCgroup {
        assert!(
            name.starts_with("oomwatch-test-"),
            "test cgroups must be named oomwatch-test-*"
        );
        let path = parent.join(name);
        if let Err(e) = fs::create_dir(&path) {
            panic!("creating cgroup {}: {e}", path.display());
        }
        TestCgroup { path }
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.path.join(file);
        fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
    }

    /// rmdir, tolerating that it is already gone. A just-reaped process can
    /// take a moment to leave the cgroup, hence the retries on EBUSY.
    fn remove(&self) -> io::Result<()> {
        for _ in 0..50 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            }
        }
        fs::remove_dir(&self.path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!(
                "WARNING: could not remove test cgroup {}: {e}",
                self.path.display()
            );
        }
    }
}

/// A scratch directory on a disk-backed filesystem; removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(parent: &Path, name: &str) -> ScratchDir {
        assert!(
            !is_tmpfs(parent),
            "{} is tmpfs: its pages cannot be reclaimed without swap, the workload needs a real disk",
            parent.display()
        );
        let path = parent.join(name);
        if let Err(e) = fs::create_dir(&path) {
            panic!("creating {}: {e}", path.display());
        }
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("WARNING: could not remove {}: {e}", self.path.display());
        }
    }
}

fn is_tmpfs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes only into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, st a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

/// The workload process; killed (by its own pid, via the Child handle) and
/// reaped on drop.
struct Worker {
    child: Child,
}

impl Worker {
    /// Re-executes this test binary to run [`thrash_worker`] inside the given
    /// cgroups. It joins them between fork and exec, before it allocates
    /// anything: v1 charges stay where they were made, so joining later would
    /// leave its memory outside the limit.
    fn spawn(dir: &Path, cgroup_procs: &[PathBuf]) -> Worker {
        let exe =
            std::env::current_exe().unwrap_or_else(|e| panic!("finding the test binary: {e}"));
        let procs: Vec<CString> = cgroup_procs
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).expect("cgroup path has no NUL"))
            .collect();
        let mut cmd = Command::new(&exe);
        cmd.args([
            WORKER_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        // SAFETY: the closure only makes async-signal-safe calls (prctl, open,
        // write, close) on memory prepared before fork, as required between
        // fork and exec in a multithreaded process.
        unsafe {
            cmd.pre_exec(move || {
                // If the test process dies without running its guards, the
                // workload must not outlive it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                for p in &procs {
                    join_cgroup_raw(p)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting the workload {} in {cgroup_procs:?}: {e}",
                exe.display()
            )
        });
        Worker { child }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn describe(&self) -> String {
        let pid = self.child.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| "gone".to_string());
        format!("pid {pid}, rss {rss}")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Child::kill signals exactly the pid we spawned; a no-op if it exited.
        let _ = self.child.kill();
        if let Err(e) = self.child.wait() {
            eprintln!("WARNING: reaping workload pid {}: {e}", self.child.id());
        }
    }
}

/// Writes "0" (meaning: the writing process) to a cgroup.procs file, using
/// only raw syscalls so that it is safe between fork and exec.
fn join_cgroup_raw(procs: &CString) -> io::Result<()> {
    // SAFETY: procs is a valid NUL-terminated path.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is open, and the buffer is a 1-byte static.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if n != 1 {
        return Err(err);
    }
    Ok(())
}
