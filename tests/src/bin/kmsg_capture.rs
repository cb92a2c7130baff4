//! Captures the kernel's own OOM reports, as /dev/kmsg hands them out, while
//! real OOM kills happen in contained `oomwatch-test-*` cgroups. The output
//! files are the raw records (one read(2) each, concatenated), which is what
//! the fixtures under oomwatch/tests/fixtures/kmsg/ are.
//!
//!   kmsg_capture OUT_DIR [SCENARIO...]     (as root; default: all)
//!
//!   kmsg_capture follow OUT_FILE STOP_FILE (what the 6.1 VM's capture
//!                                          script runs: records from now
//!                                          on, until STOP_FILE exists)
//!
//! Scenarios: plain, not_trigger, shmem, storm, hostile, clock. `clock`
//! writes probes to /dev/kmsg and prints how printk timestamps relate to
//! CLOCK_MONOTONIC and CLOCK_BOOTTIME on this machine (JSON on stdout).
//!
//! The reader here is deliberately independent of oomwatch's own: a
//! non-blocking read loop from the end of the log.

use std::{
    ffi::OsStr,
    fs,
    io::Write as _,
    os::unix::{ffi::OsStrExt as _, fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<u8>, u32)>>,
}

impl Capture {
    fn start() -> Self {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: lseek on an fd we own.
        assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_END) }, 0, "seek /dev/kmsg to the end");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let _keep = file;
                let mut out = Vec::new();
                let mut buf = vec![0u8; 16384];
                let mut overwritten = 0;
                loop {
                    // SAFETY: buf is valid for its length.
                    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if n > 0 {
                        out.extend_from_slice(&buf[..n as usize]);
                        continue;
                    }
                    match std::io::Error::last_os_error().raw_os_error() {
                        Some(libc::EAGAIN) => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Some(libc::EPIPE) => overwritten += 1,
                        Some(libc::EINTR) => {}
                        e => panic!("read /dev/kmsg: {e:?}"),
                    }
                }
                (out, overwritten)
            })
        };
        Self { stop, thread: Some(thread) }
    }

    /// Waits `settle` for late lines (the oom_reaper's), then returns the records.
    fn finish(mut self, settle: Duration) -> Vec<u8> {
        std::thread::sleep(settle);
        self.stop.store(true, Ordering::Relaxed);
        let (out, overwritten) = self.thread.take().unwrap().join().unwrap();
        if overwritten > 0 {
            eprintln!("warning: the ring buffer overwrote records {overwritten} times during the capture");
        }
        out
    }
}

fn wait_killed(hog: &mut ChildGuard, what: &str) {
    let status = hog.wait_timeout(Duration::from_secs(60)).unwrap_or_else(|| panic!("{what}: not killed within 60 s"));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{what}: {status}");
}

fn usage(cg: &TestCgroup) -> u64 {
    cg.read("memory.usage_in_bytes").trim().parse().or_else(|_| cg.read("memory.current").trim().parse()).unwrap_or(0)
}

/// A tmpfs mounted for the test, lazily unmounted on drop (before its
/// directory, the second field, is removed).
struct Tmpfs(PathBuf, #[allow(dead_code)] TempDir);

impl Tmpfs {
    fn new() -> Self {
        let dir = temp_dir("tmpfs");
        let path = dir.0.join("mnt");
        fs::create_dir(&path).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=512m", "oomwatch-test-tmpfs"]).arg(&path).status().unwrap();
        assert!(ok.success(), "mount tmpfs on {}", path.display());
        Self(path, dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2 of the mount this guard made.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// memhog started through a symlink, so that its comm is `comm`.
fn memhog_as(dir: &Path, comm: &[u8]) -> Command {
    let link = dir.join(OsStr::from_bytes(comm));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(memhog_bin(), &link).unwrap();
    let mut cmd = Command::new(link);
    // comm comes from the path exec'd; argv[0] stays UTF-8 for memhog's args().
    std::os::unix::process::CommandExt::arg0(&mut cmd, "memhog");
    cmd
}

fn plain() {
    let cg = TestCgroup::new("kmsg-plain", Some(64 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
    wait_killed(&mut hog, "hog");
    eprintln!("plain: victim {} in {}", hog.pid(), cg.path);
}

fn not_trigger() {
    let cg = TestCgroup::new("kmsg-two", Some(64 * MIB));
    let mut big = ChildGuard(cg.spawn(memhog().args(["hog", "40"])));
    let deadline = Instant::now() + Duration::from_secs(20);
    while usage(&cg) < 40 * MIB {
        assert!(Instant::now() < deadline, "the big hog never reached 40 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }
    let small = ChildGuard(cg.spawn(memhog().args(["leak", "1", "20", "30"])));
    wait_killed(&mut big, "big hog");
    eprintln!("not_trigger: victim {} (big), trigger {} (small) in {}", big.pid(), small.pid(), cg.path);
}

fn shmem() {
    let cg = TestCgroup::new("kmsg-shm", Some(64 * MIB));
    let tmpfs = Tmpfs::new();
    let file = tmpfs.0.join("segment");
    let mut hog = ChildGuard(cg.spawn(memhog().arg("shm").arg(&file).arg("256")));
    wait_killed(&mut hog, "shm hog");
    eprintln!("shmem: victim {} in {}", hog.pid(), cg.path);
    drop(hog);
    drop(tmpfs);
}

fn storm() {
    let cg = TestCgroup::new("kmsg-storm", Some(32 * MIB));
    let t0 = Instant::now();
    let mut pids = Vec::new();
    for i in 0..14 {
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "128"])));
        wait_killed(&mut hog, &format!("storm hog {i}"));
        pids.push(hog.pid());
    }
    eprintln!("storm: {} kills in {:.2} s: {pids:?} in {}", pids.len(), t0.elapsed().as_secs_f64(), cg.path);
    // Past the kernel's 5 s window the header is printed again, and the
    // kernel may say how many it held back.
    std::thread::sleep(Duration::from_millis(5500));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "128"])));
    wait_killed(&mut hog, "hog after the storm");
    eprintln!("storm: one more kill after the window: {}", hog.pid());
}

fn hostile() {
    let dir = temp_dir("comm");
    // Cgroup names with the separators of the summary line. The kernel
    // refuses a newline in a cgroup name (EINVAL); a tab and non-ASCII pass.
    let cg = TestCgroup::new("h,task=a,pid=1 (x):y", Some(64 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog_as(&dir.0, b"x) total-vm:1kB").args(["hog", "256"])));
    wait_killed(&mut hog, "hostile hog 1");
    eprintln!("hostile: victim {} in {:?}", hog.pid(), cg.path);
    let cg2 = TestCgroup::new("t\tl,oom_memcg=\u{e9}", Some(64 * MIB));
    let mut hog2 = ChildGuard(cg2.spawn(memhog_as(&dir.0, b"a,pid=2\n(\xff)=").args(["hog", "256"])));
    wait_killed(&mut hog2, "hostile hog 2");
    eprintln!("hostile: victim {} in {:?}", hog2.pid(), cg2.path);
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// printk timestamps against CLOCK_MONOTONIC and CLOCK_BOOTTIME: a probe is
/// written to /dev/kmsg between two clock reads; its record's timestamp
/// (µs) minus the clocks' midpoint is the offset.
fn clock(out_dir: &Path) {
    let cap = Capture::start();
    let mut probes = Vec::new();
    for i in 0..6 {
        let tag = format!("oomwatch-clock-probe-{}-{i}", std::process::id());
        // A fresh open each time: /dev/kmsg rate limits writes per open file.
        let mut f = fs::OpenOptions::new().write(true).open("/dev/kmsg").unwrap();
        let m0 = clock_ns(libc::CLOCK_MONOTONIC);
        let b0 = clock_ns(libc::CLOCK_BOOTTIME);
        // With its newline: the kernel finalizes (and readers see) a record
        // without one only when the next printk comes.
        f.write_all(format!("{tag}\n").as_bytes()).unwrap();
        let m1 = clock_ns(libc::CLOCK_MONOTONIC);
        let b1 = clock_ns(libc::CLOCK_BOOTTIME);
        probes.push((tag, m0, m1, b0, b1));
        std::thread::sleep(Duration::from_millis(500));
    }
    let raw = cap.finish(Duration::from_millis(200));
    let text = String::from_utf8_lossy(&raw);
    let mut rows = Vec::new();
    for (tag, m0, m1, b0, b1) in &probes {
        // /dev/kmsg drops user writes past its rate limit (printk_devkmsg=ratelimit).
        let Some(rec) = text.lines().find(|l| l.ends_with(&format!(";{tag}"))) else { continue };
        let ts_us: u64 = rec.split(',').nth(2).unwrap().parse().unwrap();
        let ts_ns = ts_us as i64 * 1000;
        let mono_mid = ((m0 + m1) / 2) as i64;
        let boot_mid = ((b0 + b1) / 2) as i64;
        rows.push(serde_json::json!({
            "printk_ts_us": ts_us,
            "minus_monotonic_us": (ts_ns - mono_mid) / 1000,
            "minus_boottime_us": (ts_ns - boot_mid) / 1000,
            "write_window_us": (m1 - m0) / 1000,
        }));
    }
    assert!(rows.len() >= 3, "only {} of {} probes were read back", rows.len(), probes.len());
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let report = serde_json::json!({"uptime": uptime.trim(), "probes": rows});
    println!("{report}");
    fs::write(out_dir.join("clock.json"), format!("{report:#}\n")).unwrap();
}

/// Appends every new record to `out` until `stop` exists; `out.ready`
/// says the reader is in place (at the end of the log).
fn follow(out: &Path, stop: &Path) {
    let cap = Capture::start();
    let mut ready = out.as_os_str().to_owned();
    ready.push(".ready");
    fs::write(ready, b"").unwrap();
    while !stop.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(out, cap.finish(Duration::from_millis(300))).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("follow") {
        let (Some(out), Some(stop)) = (args.get(2), args.get(3)) else { panic!("usage: kmsg_capture follow OUT_FILE STOP_FILE") };
        follow(Path::new(out), Path::new(stop));
        return;
    }
    let out_dir = PathBuf::from(args.get(1).expect("usage: kmsg_capture OUT_DIR [SCENARIO...]"));
    fs::create_dir_all(&out_dir).unwrap();
    assert!(require_root("kmsg_capture"), "needs root");
    let all = ["plain", "not_trigger", "shmem", "storm", "hostile", "clock"];
    let chosen: Vec<&str> = if args.len() > 2 { args[2..].iter().map(String::as_str).collect() } else { all.to_vec() };
    for name in chosen {
        if name == "clock" {
            clock(&out_dir);
            continue;
        }
        let cap = Capture::start();
        match name {
            "plain" => plain(),
            "not_trigger" => not_trigger(),
            "shmem" => shmem(),
            "storm" => storm(),
            "hostile" => hostile(),
            other => panic!("unknown scenario {other}; known: {all:?}"),
        }
        let raw = cap.finish(Duration::from_millis(1500));
        let path = out_dir.join(format!("{name}.kmsg"));
        fs::write(&path, &raw).unwrap();
        eprintln!("{name}: {} bytes, {} records -> {}", raw.len(), raw.iter().filter(|&&b| b == b'\n').count(), path.display());
    }
}
