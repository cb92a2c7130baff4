//! The journal on file systems that fail: a full tmpfs and a read-only
//! mount, each mounted by the test under a temporary directory and
//! unmounted by a drop guard. Mounting needs root: without it these fail,
//! unless OOMWATCH_SKIP_PRIVILEGED=1 says to skip them. The journal on
//! ordinary directories is covered by the unit tests of
//! oomwatch::outputs::journal.

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
use oomwatch_tests::{TempDir, require_root, temp_dir};

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
        exit_latency_ms: None,
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
