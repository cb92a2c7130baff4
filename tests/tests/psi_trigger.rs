//! PSI triggers against the real kernel: they register triggers and create
//! `oomwatch-test-*` cgroups, so they need root. Without root they fail,
//! unless OOMWATCH_SKIP_PRIVILEGED=1 says to skip them.
//!
//! That a trigger fires under real memory stalls is shown end to end,
//! through the daemon, by tests/tests/pressure.rs (and the VM's pressure
//! scenario); here: registration, the 2 s window fallback, and removal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oomwatch::{
    readers::{PsiKind, TriggerSpec, read_pressure},
    sources::psi_trigger::{PsiTrigger, TriggerError, trigger_supported},
};
use oomwatch_tests::require_root as privileged;

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
        PsiKind::Some,
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
    trigger_supported(path).unwrap_or_else(|e| panic!("{e}"));
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
        PsiKind::Some,
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

struct CgroupLayout {
    v2_mount: PathBuf,
}

impl CgroupLayout {
    fn discover() -> CgroupLayout {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_else(|e| panic!("reading /proc/self/mountinfo: {e}"));
        let v2_mount = mountinfo
            .lines()
            .filter_map(|line| {
                // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
                let (left, right) = line.split_once(" - ")?;
                if right.split(' ').next()? != "cgroup2" {
                    return None;
                }
                Some(PathBuf::from(left.split(' ').nth(4)?))
            })
            .next()
            .expect("no cgroup2 hierarchy is mounted; PSI per cgroup needs one");
        CgroupLayout { v2_mount }
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

