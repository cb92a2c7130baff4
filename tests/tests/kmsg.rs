//! The kernel's OOM reports, read from the real /dev/kmsg with oomwatch's
//! reader while real kills happen in contained cgroups, assembled by
//! oomwatch's parser, and compared field by field with a deliberately
//! simple parse of the same text (string splitting, names without
//! separators in them): two ways of reading one text must agree.
//!
//! Also measured here: how printk timestamps relate to CLOCK_MONOTONIC and
//! to the daemon's eBPF `ktime_ns` for the same kills (printed).

use std::{
    collections::BTreeMap,
    fs,
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use oomwatch::readers::{
    kmsg::KmsgReader,
    oom_report::{KillScope, MissingReport, OomAssembler, OomKill, OomOutput, OomReport, VictimRole},
};
use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

/// The tests of this file one at a time: the flood of one would wrap the
/// ring under another's reader, and their kills share the kernel's rate
/// limit.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything read from /dev/kmsg: raw records and what the assembler made.
struct Log {
    reader: KmsgReader,
    assembler: OomAssembler,
    raw: Vec<String>,
    outputs: Vec<OomOutput>,
}

impl Log {
    fn open() -> Self {
        let reader = KmsgReader::open_nonblocking(Path::new("/dev/kmsg")).expect("open /dev/kmsg");
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        Self { reader, assembler: OomAssembler::new(page), raw: Vec::new(), outputs: Vec::new() }
    }

    /// Reads until a kill of `pid` was assembled (or `timeout`).
    fn wait_kill(&mut self, pid: u32, timeout: Duration) -> OomKill {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(k) = self.kill_of(pid) {
                return k;
            }
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("no kill line for {pid} in /dev/kmsg within {timeout:?}"));
            self.pump(left.min(Duration::from_millis(100)));
        }
    }

    fn kill_of(&self, pid: u32) -> Option<OomKill> {
        self.outputs.iter().find_map(|o| match o {
            OomOutput::Kill(k) if k.victim.pid == pid => Some((**k).clone()),
            _ => None,
        })
    }

    /// One poll(2) on the reader's fd, then every record that is ready.
    fn pump(&mut self, wait: Duration) {
        let mut pfd = libc::pollfd { fd: self.reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
        while let Some(rec) = self.reader.next().expect("read /dev/kmsg") {
            let rec = rec.clone();
            self.raw.push(String::from_utf8_lossy(self.reader.last_raw()).trim_end().to_owned());
            self.outputs.extend(self.assembler.push(&rec));
        }
    }
}

// ------------------------------------------------------- the simple parse

/// (seq, ts_usec, message) of each record, escapes left as they are.
fn records(raw: &[String]) -> Vec<(u64, u64, String)> {
    raw.iter()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let (head, msg) = l.split_once(';').unwrap();
            let f: Vec<&str> = head.split(',').collect();
            // Only the kernel's own records (facility 0) are its report.
            (f[0].parse::<u32>().unwrap() >> 3 == 0).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap(), msg.lines().next().unwrap_or("").to_owned()))
        })
        .collect()
}

fn num(s: &str) -> u64 {
    s.trim().trim_end_matches("kB").parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// "key:NkB" pairs of a kill line after the comm, e.g. "anon-rss" -> bytes.
fn kill_fields(msg: &str) -> BTreeMap<String, u64> {
    let after = msg.split(") ").nth(1).unwrap();
    after
        .split([',', ' '])
        .filter_map(|w| w.split_once(':'))
        .map(|(k, v)| (k.to_owned(), if v.ends_with("kB") { num(v) * 1024 } else { v.parse().unwrap() }))
        .collect()
}

fn simple_check(raw: &[String], kill: &OomKill, page: u64) {
    let recs = records(raw);
    let pid = kill.victim.pid;
    let kill_at = recs
        .iter()
        .position(|(_, _, m)| m.contains(&format!("Killed process {pid} (")))
        .unwrap_or_else(|| panic!("no kill line for {pid}"));
    let (seq, ts, msg) = &recs[kill_at];
    assert_eq!((kill.seq, kill.ts_usec), (*seq, *ts));
    assert_eq!(kill.scope, if msg.starts_with("Memory cgroup out of memory: ") { KillScope::Memcg } else { KillScope::Global });
    let comm = msg.split(" (").nth(1).unwrap().split(')').next().unwrap();
    assert_eq!(kill.victim.comm, comm);
    let f = kill_fields(msg);
    let v = &kill.victim;
    assert_eq!(v.total_vm_bytes, f["total-vm"]);
    assert_eq!(v.anon_rss_bytes, f["anon-rss"]);
    assert_eq!(v.file_rss_bytes, f["file-rss"]);
    assert_eq!(v.shmem_rss_bytes, f["shmem-rss"]);
    assert_eq!(v.uid.map(u64::from), f.get("UID").copied());
    assert_eq!(v.pgtables_bytes, f.get("pgtables").copied());
    assert_eq!(v.oom_score_adj.map(i64::from), f.get("oom_score_adj").map(|&x| x as i64));

    // The report: from the last header before the kill line.
    let header_at = recs[..kill_at].iter().rposition(|(_, _, m)| m.contains(" invoked oom-killer: ")).expect("a header before the kill");
    let r: &OomReport = kill.report.as_deref().expect("the kernel printed the report for this kill");
    let lines = &recs[header_at..kill_at];
    let (hseq, hts, header) = &lines[0];
    assert_eq!((r.seq, r.ts_usec), (*hseq, *hts));
    let (trigger_comm, rest) = header.split_once(" invoked oom-killer: gfp_mask=").unwrap();
    assert_eq!(r.trigger.comm, trigger_comm);
    let (mask, rest) = rest.split_once('(').unwrap();
    assert_eq!(r.gfp_mask, u64::from_str_radix(mask.trim_start_matches("0x"), 16).unwrap());
    let (flags, rest) = rest.split_once(')').unwrap();
    assert_eq!(r.gfp_flags.join("|"), flags);
    let kv: BTreeMap<&str, &str> = rest.split(", ").filter_map(|p| p.split_once('=')).collect();
    assert_eq!(i64::from(r.order), kv["order"].parse::<i64>().unwrap());
    assert_eq!(i64::from(r.trigger.oom_score_adj), kv["oom_score_adj"].parse::<i64>().unwrap());

    let cpu = lines.iter().find(|(_, _, m)| m.starts_with("CPU: ")).expect("CPU line").2.clone();
    let words: Vec<&str> = cpu.split_whitespace().collect();
    let after = |w: &str| words[words.iter().position(|x| *x == w).unwrap() + 1];
    assert_eq!(r.trigger.pid, Some(after("PID:").parse().unwrap()));
    assert_eq!(r.trigger.uid, words.contains(&"UID:").then(|| after("UID:").parse().unwrap()));

    let counter = |name: &str| {
        lines.iter().find(|(_, _, m)| m.starts_with(&format!("{name}: usage "))).map(|(_, _, m)| {
            let n: Vec<u64> = m.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();
            (n[n.len() - 3] * 1024, n[n.len() - 2] * 1024, n[n.len() - 1])
        })
    };
    let m = r.memcg.expect("memcg lines");
    assert_eq!(Some((m.memory.usage_bytes, m.memory.limit_bytes, m.memory.failcnt)), counter("memory"));
    assert_eq!(m.swap.map(|c| (c.usage_bytes, c.limit_bytes, c.failcnt)), counter("swap"));
    assert_eq!(m.memory_swap.map(|c| (c.usage_bytes, c.limit_bytes, c.failcnt)), counter("memory+swap"));
    assert_eq!(m.kmem.map(|c| (c.usage_bytes, c.limit_bytes, c.failcnt)), counter("kmem"));

    let stats_at = lines.iter().position(|(_, _, m)| m.starts_with("Memory cgroup stats for ")).expect("stats header");
    assert_eq!(r.stats_cgroup.as_deref(), lines[stats_at].2.strip_prefix("Memory cgroup stats for ").and_then(|p| p.strip_suffix(':')));
    let mut stats = Vec::new();
    for (_, _, m) in &lines[stats_at + 1..] {
        if m.starts_with("Tasks state") {
            break;
        }
        for kv in m.split("\\x0a") {
            let (k, v) = kv.split_once(' ').unwrap();
            stats.push((k.to_owned(), v.parse::<u64>().unwrap()));
        }
    }
    assert_eq!(r.stats, stats);

    let header_row = lines.iter().find(|(_, _, m)| m.starts_with("[  pid  ]")).expect("task table").2.clone();
    let cols: Vec<&str> = header_row.split(']').nth(1).unwrap().split_whitespace().collect();
    let rows: Vec<&String> = lines.iter().map(|(_, _, m)| m).filter(|m| m.starts_with('[') && !m.starts_with("[  pid  ]")).collect();
    assert_eq!(r.tasks.len(), rows.len());
    for (t, row) in r.tasks.iter().zip(rows) {
        let (pid, rest) = row[1..].split_once(']').unwrap();
        let vals: Vec<&str> = rest.split_whitespace().collect();
        let col = |name: &str| vals[cols.iter().position(|c| *c == name).unwrap()];
        let pages = |name: &str| cols.contains(&name).then(|| col(name).parse::<u64>().unwrap() * page);
        assert_eq!(t.pid, pid.trim().parse::<u32>().unwrap());
        assert_eq!(t.uid, col("uid").parse::<u32>().unwrap());
        assert_eq!(t.tgid, col("tgid").parse::<u32>().unwrap());
        assert_eq!(Some(t.total_vm_bytes), pages("total_vm"));
        assert_eq!(Some(t.rss_bytes), pages("rss"));
        assert_eq!(t.rss_anon_bytes, pages("rss_anon"));
        assert_eq!(t.rss_file_bytes, pages("rss_file"));
        assert_eq!(t.rss_shmem_bytes, pages("rss_shmem"));
        assert_eq!(t.pgtables_bytes, Some(col("pgtables_bytes").parse().unwrap()));
        assert_eq!(t.swap_bytes, pages("swapents"));
        assert_eq!(t.oom_score_adj, col("oom_score_adj").parse::<i32>().unwrap());
        assert_eq!(t.name, col("name"));
    }

    let summary = lines.iter().find_map(|(_, _, m)| m.strip_prefix("oom-kill:")).expect("summary");
    let kv: BTreeMap<&str, &str> = summary.split(',').filter_map(|p| p.split_once('=')).collect();
    let s = &r.summary;
    assert_eq!(s.constraint, kv["constraint"]);
    assert_eq!(s.nodemask.as_deref().unwrap_or("(null)"), kv["nodemask"]);
    assert_eq!(s.cpuset.as_deref(), kv.get("cpuset").copied());
    assert_eq!(s.mems_allowed.as_deref(), kv.get("mems_allowed").copied());
    assert_eq!(s.oom_memcg.as_deref(), kv.get("oom_memcg").copied());
    assert_eq!(s.global_oom, summary.contains(",global_oom"));
    assert_eq!(s.task_memcg.as_deref(), kv.get("task_memcg").copied());
    assert_eq!(s.task, kv["task"]);
    assert_eq!(s.pid.to_string(), kv["pid"]);
    assert_eq!(s.uid.to_string(), kv["uid"]);
    assert_eq!(kill.role, VictimRole::Chosen);
}

fn wait_killed(hog: &mut ChildGuard) {
    let status = hog.wait_timeout(Duration::from_secs(60)).expect("the hog should be OOM-killed within 60 s");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status}");
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

/// Runs `scenario` (one kill; returns the victim's pid and what the test
/// wants to check) until the kernel printed the report for it: kills by
/// other processes on this machine share the kernel's allowance of 10
/// reports in 5 s, and a rate-limited kill has none.
fn with_report<T>(log: &mut Log, mut scenario: impl FnMut() -> (u32, T)) -> (OomKill, T) {
    for _ in 0..3 {
        let (pid, extra) = scenario();
        let kill = log.wait_kill(pid, Duration::from_secs(10));
        if kill.report.is_some() {
            return (kill, extra);
        }
        assert!(matches!(kill.missing, Some(MissingReport::RateLimited | MissingReport::BeforeFirstHeader)), "{kill:#?}");
        eprintln!("the kernel held back the report of {pid} (other kills used the allowance); again after its 5 s window");
        std::thread::sleep(Duration::from_secs(6));
    }
    panic!("three kills in a row without a report");
}

#[test]
fn kernel_reports_parse_the_same_as_a_simple_reading() {
    if !require_root("kernel_reports_parse_the_same_as_a_simple_reading") {
        return;
    }
    let _serial = one_at_a_time();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut log = Log::open();

    // A plain kill.
    let (plain, (path, spawned, reaped)) = with_report(&mut log, || {
        let cg = TestCgroup::new("kmsg-plain", Some(64 * MIB));
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
        let spawned = monotonic_ns();
        wait_killed(&mut hog);
        (hog.pid(), (cg.path.clone(), spawned, monotonic_ns()))
    });
    assert_eq!(plain.victim.comm, "memhog");
    let r = plain.report.as_deref().expect("report");
    assert_eq!(r.summary.task_memcg.as_deref(), Some(path.as_str()));
    assert_eq!(r.memcg.map(|m| m.memory.limit_bytes), Some(64 * MIB));

    // The victim is not the task that asked for memory.
    let (two, small_pid) = with_report(&mut log, || {
        let cg = TestCgroup::new("kmsg-two", Some(64 * MIB));
        let mut big = ChildGuard(cg.spawn(memhog().args(["hog", "40"])));
        let deadline = Instant::now() + Duration::from_secs(20);
        while cg.read("memory.usage_in_bytes").trim().parse::<u64>().or_else(|_| cg.read("memory.current").trim().parse()).unwrap_or(0) < 40 * MIB {
            assert!(Instant::now() < deadline, "the big hog never reached 40 MiB");
            std::thread::sleep(Duration::from_millis(20));
        }
        let small = ChildGuard(cg.spawn(memhog().args(["leak", "1", "20", "30"])));
        wait_killed(&mut big);
        (big.pid(), small.pid())
    });
    let r = two.report.as_deref().expect("report");
    assert_eq!(r.trigger.pid, Some(small_pid), "the small hog triggered the kill");
    assert_eq!(r.tasks.len(), 2);

    // Shared memory on a tmpfs charged to the cgroup.
    let (shm, ()) = with_report(&mut log, || {
        let cg = TestCgroup::new("kmsg-shm", Some(64 * MIB));
        let dir = temp_dir("kmsg-tmpfs");
        let mnt = dir.0.join("mnt");
        fs::create_dir(&mnt).unwrap();
        assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=512m", "oomwatch-test-tmpfs"]).arg(&mnt).status().unwrap().success());
        let _tmpfs = Tmpfs(mnt.clone());
        let mut hog = ChildGuard(cg.spawn(memhog().arg("shm").arg(mnt.join("segment")).arg("256")));
        wait_killed(&mut hog);
        (hog.pid(), ())
    });
    assert!(shm.victim.shmem_rss_bytes > 48 * MIB, "shmem-rss {}", shm.victim.shmem_rss_bytes);

    for k in [&plain, &two, &shm] {
        simple_check(&log.raw, k, page);
    }
    let stats = log.reader.stats();
    println!(
        "kmsg: {} records read, {} lost, {} overwritten; assembler {:?}",
        stats.records,
        stats.lost_records,
        stats.overwritten,
        log.assembler.stats()
    );
    assert_eq!(log.assembler.stats().malformed, 0);

    // printk's clock against CLOCK_MONOTONIC, from the kill line itself:
    // it was printed between the spawn and the reaping of the hog.
    let kill_ts_ns = plain.ts_usec as i64 * 1000;
    let (offset_lo, offset_hi) = (kill_ts_ns - reaped as i64, kill_ts_ns - spawned as i64);
    println!("kmsg: kill line timestamp minus CLOCK_MONOTONIC is within [{:.3}, {:.3}] ms", offset_lo as f64 / 1e6, offset_hi as f64 / 1e6);
    assert!(offset_hi > -1_000_000_000 && offset_lo < 1_000_000_000, "printk time and CLOCK_MONOTONIC are more than 1 s apart here");
}

/// The daemon's eBPF timestamp (bpf_ktime_get_ns, CLOCK_MONOTONIC) and the
/// kill line's printk timestamp for the same kills: printed, and checked to
/// be close enough on this machine to tell kills apart by time.
#[test]
fn printk_time_against_bpf_ktime() {
    if !require_root("printk_time_against_bpf_ktime") {
        return;
    }
    let _serial = one_at_a_time();
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::connect(&daemon);
    let mut log = Log::open();
    let cg = TestCgroup::new("kmsg-clock", Some(32 * MIB));
    let mut offsets = Vec::new();
    for _ in 0..5 {
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "128"])));
        wait_killed(&mut hog);
        let pid = hog.pid();
        let kill = log.wait_kill(pid, Duration::from_secs(10));
        let (event, _) = tail
            .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no oom_kill event for {pid}"));
        let ktime = event["ktime_ns"].as_u64().expect("ktime_ns");
        offsets.push(kill.ts_usec as i64 * 1000 - ktime as i64);
    }
    let us: Vec<f64> = offsets.iter().map(|o| *o as f64 / 1e3).collect();
    println!("kmsg: kill line printk time minus the eBPF mark_victim ktime, per kill (us): {us:?}");
    // The kill line is printed right after mark_victim: the same instant up
    // to the two clocks' offset, which must be small and steady here.
    let (min, max) = (offsets.iter().min().unwrap(), offsets.iter().max().unwrap());
    assert!(max - min < 5_000_000, "the offset moved by {} us over five kills", (max - min) / 1000);
    assert!(min.abs() < 1_000_000_000, "printk time is {} ms from bpf_ktime_get_ns", min / 1_000_000);
}

/// A reader that falls behind the ring buffer: the kernel answers EPIPE
/// once, the reader counts it and goes on from the oldest record left, and
/// the gap shows in the sequence numbers. Writes about 180 KiB of
/// userspace records (facility LOG_USER, tagged oomwatch-test-flood) to
/// wrap this machine's ring.
#[test]
fn a_reader_left_behind_counts_what_it_lost() {
    if !require_root("a_reader_left_behind_counts_what_it_lost") {
        return;
    }
    let _serial = one_at_a_time();
    // SAFETY: klogctl(SYSLOG_ACTION_SIZE_BUFFER) only returns a number.
    let ring = unsafe { libc::klogctl(10, std::ptr::null_mut(), 0) };
    assert!(ring > 0, "klogctl: {}", std::io::Error::last_os_error());
    let mut reader = KmsgReader::open_with(Path::new("/dev/kmsg"), oomwatch::readers::kmsg::Start::Oldest, true).expect("open /dev/kmsg");
    let first = reader.next().expect("read").expect("a record in the log").seq;

    let tag = format!("oomwatch-test-flood-{}", std::process::id());
    let filler = "x".repeat(900);
    let records = ring as usize * 3 / 2 / 900 + 1;
    let mut written = 0;
    while written < records {
        // /dev/kmsg lets one open file write 10 records per 5 s.
        let mut f = fs::OpenOptions::new().write(true).open("/dev/kmsg").unwrap();
        for _ in 0..10 {
            std::io::Write::write_all(&mut f, format!("<14>{tag} {written} {filler}\n").as_bytes()).unwrap();
            written += 1;
        }
    }
    let last = format!("{tag} {} ", written - 1);
    let mut saw_last = false;
    let mut after_gap = None;
    while let Some(rec) = reader.next().expect("read") {
        if after_gap.is_none() {
            after_gap = Some(rec.seq);
        }
        saw_last |= rec.message.starts_with(last.as_bytes());
        assert!(!rec.is_kernel() || !rec.message.starts_with(tag.as_bytes()), "a userspace write came with the kernel's facility");
    }
    let stats = reader.stats();
    println!("kmsg: ring {ring} bytes; {written} records written; reader stats {stats:?}");
    assert!(saw_last, "the newest flood record was read");
    assert!(stats.overwritten >= 1, "the kernel said EPIPE: {stats:?}");
    let after_gap = after_gap.unwrap();
    assert!(after_gap > first + 1, "reading went on after a gap ({first} -> {after_gap})");
    assert_eq!(stats.lost_records, after_gap - first - 1, "{stats:?}");
}

// ------------------------------------------------ the daemon explains a kill

/// What the kernel printed for the kill of `pid`, read from the test's own
/// /dev/kmsg records by splitting strings: the lines of its report (from
/// the header before the kill line) and the kill line's sequence number.
fn printed_report(raw: &[String], pid: u32) -> (u64, Vec<String>) {
    let recs = records(raw);
    let kill_at = recs.iter().position(|(_, _, m)| m.contains(&format!("Killed process {pid} ("))).expect("the kill line");
    let header_at = recs[..kill_at].iter().rposition(|(_, _, m)| m.contains(" invoked oom-killer: ")).expect("a header");
    // 6.1 prints memory.stat as one record with escaped newlines.
    let lines = recs[header_at..kill_at].iter().flat_map(|(_, _, m)| m.split("\\x0a").map(str::to_owned).collect::<Vec<_>>()).collect();
    (recs[kill_at].0, lines)
}

/// The oracle: every field of the daemon's `kernel_report` equals what the
/// kernel printed for the kill (`lines`, from [`printed_report`]), read
/// here by splitting strings, in the units the event promises.
fn assert_report_is_the_printed_one(r: &serde_json::Value, kill_seq: u64, lines: &[String], page: u64) {
    assert_eq!(r["kmsg_seq"], kill_seq, "{r}");
    assert!(r.get("missing").is_none(), "{r}");
    let header = &lines[0];
    let gfp = header.split("gfp_mask=").nth(1).unwrap();
    let (mask, rest) = gfp.split_once('(').unwrap();
    let (flags, rest) = rest.split_once(')').unwrap();
    assert_eq!(r["gfp_mask"], mask, "{r}");
    let printed_flags: Vec<&str> = flags.split('|').collect();
    assert_eq!(r["gfp_flags"], serde_json::json!(printed_flags), "{r}");
    let order: i64 = rest.split("order=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert_eq!(r["order"], order, "{r}");

    let counter = |name: &str| {
        lines.iter().find(|l| l.starts_with(&format!("{name}: usage "))).map(|l| {
            let n: Vec<u64> = l.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();
            (n[n.len() - 3] * 1024, n[n.len() - 2] * 1024, n[n.len() - 1])
        })
    };
    let (usage, limit, failcnt) = counter("memory").expect("memory line");
    let m = &r["memcg"];
    assert_eq!((m["usage_bytes"].as_u64(), m["limit_bytes"].as_u64(), m["failcnt"].as_u64()), (Some(usage), Some(limit), Some(failcnt)), "{r}");
    let swap = counter("swap");
    assert_eq!((m["swap_usage_bytes"].as_u64(), m["swap_limit_bytes"].as_u64()), (swap.map(|s| s.0), swap.map(|s| s.1)), "{r}");

    let summary: BTreeMap<&str, &str> = lines.iter().find_map(|l| l.strip_prefix("oom-kill:")).expect("summary").split(',').filter_map(|p| p.split_once('=')).collect();
    assert_eq!(r["constraint"], summary["constraint"], "{r}");
    assert_eq!(r["oom_memcg"].as_str(), summary.get("oom_memcg").copied(), "{r}");
    assert_eq!(r["task_memcg"].as_str(), summary.get("task_memcg").copied(), "{r}");

    // memory.stat as printed (6.1: one record, lines split by the caller).
    let stats_at = lines.iter().position(|l| l.starts_with("Memory cgroup stats for ")).expect("stats header");
    let stats_end = lines.iter().position(|l| l.starts_with("Tasks state")).unwrap_or(lines.len());
    let stat = |key: &str| lines[stats_at + 1..stats_end].iter().find_map(|l| l.strip_prefix(&format!("{key} "))?.parse::<u64>().ok());
    let c = &r["composition"];
    assert_eq!(c["anon_bytes"].as_u64(), stat("anon").or(stat("total_rss")).or(stat("rss")), "{r}");
    assert_eq!(c["file_bytes"].as_u64(), stat("file").or(stat("total_cache")).or(stat("cache")), "{r}");
    assert_eq!(c["shmem_bytes"].as_u64(), stat("total_shmem").or(stat("shmem")), "{r}");
    assert_eq!(c["kernel_bytes"].as_u64(), stat("kernel").or(counter("kmem").map(|k| k.0)), "{r}");
    assert_eq!(c["pagetables_bytes"].as_u64(), stat("pagetables"), "{r}");
    assert_eq!(c["sock_bytes"].as_u64(), stat("sock"), "{r}");

    // The task table: the largest rss first, in pages as printed.
    let cols: Vec<&str> = lines.iter().find(|l| l.starts_with("[  pid  ]")).expect("task table").split(']').nth(1).unwrap().split_whitespace().collect();
    let mut rows: Vec<(u64, u32, String)> = lines
        .iter()
        .filter(|l| l.starts_with('[') && !l.starts_with("[  pid  ]"))
        .map(|l| {
            let (pid, rest) = l[1..].split_once(']').unwrap();
            let vals: Vec<&str> = rest.split_whitespace().collect();
            let col = |name: &str| vals[cols.iter().position(|c| *c == name).unwrap()];
            (col("rss").parse::<u64>().unwrap() * page, pid.trim().parse().unwrap(), col("name").to_owned())
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let top: Vec<serde_json::Value> = rows.iter().take(5).map(|(rss, pid, comm)| serde_json::json!({"pid": pid, "comm": comm, "rss_bytes": rss})).collect();
    assert_eq!(r["top_tasks"], serde_json::json!(top), "{r}");
    assert_eq!(r["tasks_in_table"], rows.len(), "{r}");
}

#[test]
fn the_daemon_explains_a_kill_with_the_kernels_report() {
    if !require_root("the_daemon_explains_a_kill_with_the_kernels_report") {
        return;
    }
    let _serial = one_at_a_time();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::connect(&daemon);
    let mut log = Log::open();
    let (kill, path) = with_report(&mut log, || {
        let cg = TestCgroup::new("kmsg-explain", Some(64 * MIB));
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
        wait_killed(&mut hog);
        (hog.pid(), cg.path.clone())
    });
    let pid = kill.victim.pid;
    let (kill_seq, lines) = printed_report(&log.raw, pid);

    // Live clients are told, then the kill itself carries it (replayed).
    let (explained, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "kill_explained" && v["pid"] == pid)
        .unwrap_or_else(|| panic!("no kill_explained for {pid}; saw {:?}\n{}", tail.seen, daemon.log_text()));
    let mut amended = None;
    for _ in 0..10 {
        let mut late = Tail::start(&daemon, &["--since", "5m", "--kind", "oom_kill"]);
        let got = late.wait_for(Duration::from_secs(3), |v| v["victim"]["pid"] == pid && v.get("kernel_report").is_some());
        if got.is_some() {
            amended = got.map(|(v, _)| v);
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let amended = amended.expect("the replayed kill carries kernel_report");
    assert_eq!(explained["kill_seq"], amended["seq"]);
    assert_eq!(explained["kernel_report"], amended["kernel_report"]);
    assert_eq!(explained["why"], amended["why"]);
    let r = &amended["kernel_report"];
    println!("kernel_report of {pid}: {r}\nwhy: {}", amended["why"]);

    // Each field equals the kernel's text for this kill.
    assert_report_is_the_printed_one(r, kill_seq, &lines, page);
    assert_eq!(r["memcg"]["limit_bytes"], 64 * MIB);
    assert_eq!(r["oom_memcg"], path.as_str());
    let memory = lines.iter().find(|l| l.starts_with("memory: usage ")).expect("memory line");
    let n: Vec<u64> = memory.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();

    // The sentence names the victim, the cgroup and its limit.
    let why = amended["why"].as_str().expect("why");
    assert!(why.starts_with(&format!("memhog (pid {pid}) was killed because {path} hit its 64 MiB limit (memory.")), "{why}");
    assert!(why.contains("while memhog allocated"), "{why}");
    assert!(why.contains(&format!("; it used {} of 64 MiB", if n[0] * 1024 % MIB == 0 { format!("{} MiB", n[0] * 1024 / MIB) } else { oomwatch::wire::format_bytes(n[0] * 1024) })), "{why}");
    assert!(why.ends_with(" rss)."), "{why}");

    // `oomwatch tail` shows it to a person under the kill line.
    let out = Command::new(oomwatch_bin())
        .args(["tail", "--since", "5m", "--kind", "oom_kill", "--count", "1", "--cgroup", &path, "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut human = text.lines();
    assert!(human.next().is_some_and(|l| l.contains(&format!("OOM-KILL {path} victim={pid} (memhog)"))), "{text}");
    assert_eq!(human.next().map(str::trim_start), Some(format!("why: {why}").as_str()), "{text}");

    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, "oomwatch_probe_attached{probe=\"kmsg\"}"), Some(1.0), "{metrics}");
    assert!(metric_value(&metrics, "oomwatch_kernel_reports_joined_total").is_some_and(|n| n >= 1.0), "{metrics}");
}

/// The daemon run without CAP_SYSLOG.
const WITHOUT_SYSLOG: [&str; 4] = ["setpriv", "--bounding-set=-syslog", "--inh-caps=-syslog", "--"];

/// A daemon that cannot open the kernel log: started without CAP_SYSLOG,
/// which kernel.dmesg_restrict=1 makes the log need.
fn without_the_kernel_log(extra: &[&str]) -> Daemon {
    let restricted = fs::read_to_string("/proc/sys/kernel/dmesg_restrict").unwrap_or_default();
    assert_eq!(restricted.trim(), "1", "this test needs kernel.dmesg_restrict=1 (then opening /dev/kmsg needs CAP_SYSLOG)");
    Daemon::start_under(&WITHOUT_SYSLOG, extra)
}

/// Without CAP_SYSLOG (kernel.dmesg_restrict=1 here) the kernel log cannot
/// be opened: the daemon says so, `check` and /metrics show it, and kills
/// are still reported, with a `why` from the eBPF record and no
/// `kernel_report`.
#[test]
fn without_the_kernel_log_kills_come_without_a_report() {
    if !require_root("without_the_kernel_log_kills_come_without_a_report") {
        return;
    }
    let _serial = one_at_a_time();
    let daemon = without_the_kernel_log(&[]);
    assert!(daemon.log_text().contains("/dev/kmsg: open: "), "{}", daemon.log_text());
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_probe_attached{probe=\"kmsg\"}"), Some(0.0));
    let check = Command::new(WITHOUT_SYSLOG[0]).args(&WITHOUT_SYSLOG[1..]).arg(oomwatch_bin()).arg("check").output().unwrap();
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(check.lines().any(|l| l.contains("[skip] probe kmsg") && l.contains("CAP_SYSLOG")), "{check}");

    let mut tail = Tail::connect(&daemon);
    let cg = TestCgroup::new("kmsg-none", Some(64 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
    wait_killed(&mut hog);
    let pid = hog.pid();
    let (kill, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill for {pid}"));
    let why = kill["why"].as_str().expect("a why from the eBPF record alone");
    assert!(why.starts_with(&format!("memhog (pid {pid}) was killed because {} hit its 64 MiB limit", cg.path)), "{why}");
    assert!(!why.contains("top consumer"), "no clause without its field: {why}");
    std::thread::sleep(Duration::from_secs(1));
    let mut late = Tail::start(&daemon, &["--since", "5m"]);
    let (replayed, _) = late.wait_for(Duration::from_secs(5), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid).expect("replayed kill");
    assert!(replayed.get("kernel_report").is_none(), "{replayed}");
    assert!(late.seen.iter().all(|(v, _)| v["kind"] != "kill_explained"), "{:?}", late.seen);
}

/// Without BTF (no kernel chain), the victim gone before /proc was read
/// (forced), its cgroup untracked (`--exclude`: no oom_kill counter of a
/// tracked cgroup names it) and no kernel log (no CAP_SYSLOG): nothing
/// tells which limit was hit. The kill is `unknown` in the event, its
/// `why` and the metric. It was `global`, "the host ran out of memory",
/// which pages as the host running out (`OomwatchHostOomKilled`).
#[test]
fn a_kill_nothing_could_place_is_unknown_never_a_host_oom() {
    if !require_root("a_kill_nothing_could_place_is_unknown_never_a_host_oom") {
        return;
    }
    let _serial = one_at_a_time();
    let cg = TestCgroup::new("kmsg-unplaced", Some(48 * MIB));
    let daemon = without_the_kernel_log(&["--btf", "/nonexistent/vmlinux", "--inject-victim-gone", "--exclude", &cg.path]);
    assert_eq!(metric_value(&daemon.metrics(), "oomwatch_probe_attached{probe=\"kmsg\"}"), Some(0.0));
    let mut tail = Tail::connect(&daemon);
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
    wait_killed(&mut hog);
    let pid = hog.pid();
    let (kill, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill for {pid}\n{}", daemon.log_text()));
    assert_eq!(cg.oom_kills(), 1, "the kernel counted it at the test cgroup's limit");
    assert_eq!((kill["cgroup"].as_str(), kill["attribution"].as_str()), (Some("unknown"), Some("unknown")), "{kill}");
    assert_eq!(kill["constraint"], "unknown", "{kill}");
    assert!(kill.get("limit_cgroup").is_none(), "{kill}");
    let why = kill["why"].as_str().unwrap_or_default();
    assert!(why.starts_with(&format!("memhog (pid {pid}) was killed because memory ran out (at a cgroup's limit or on the host")), "{why}");
    // Counted at once: with no kernel log read, no report will place it
    // later, so its count is not held for one.
    let unknown = "oomwatch_oom_kills_total{cgroup=\"unknown\",constraint=\"unknown\",namespace=\"\",pod=\"\",container=\"\",main_process=\"\"}";
    let metrics = daemon.metrics();
    let series = |constraint: &str| {
        metrics.lines().filter(|l| l.starts_with("oomwatch_oom_kills_total{") && l.contains(&format!("constraint=\"{constraint}\""))).count()
    };
    assert_eq!(series("global"), 0, "{metrics}");
    assert_eq!(metric_value(&metrics, unknown), Some(1.0), "{metrics}");
}

/// The same kill with the kernel log readable, its report read after the
/// kill path stopped waiting for it (forced: `--inject-report-late`): the
/// kill goes out `unknown`, the report places it on the event, and the
/// metric, which held its count for the report, counts it in the cgroup
/// and the limit the report names.
#[test]
fn a_late_report_places_an_unplaced_kill_on_the_metric_too() {
    if !require_root("a_late_report_places_an_unplaced_kill_on_the_metric_too") {
        return;
    }
    let _serial = one_at_a_time();
    let cg = TestCgroup::new("kmsg-late", Some(48 * MIB));
    let daemon = Daemon::start(&["--btf", "/nonexistent/vmlinux", "--inject-victim-gone", "--inject-report-late", "--exclude", &cg.path]);
    let mut tail = Tail::connect(&daemon);
    let mut log = Log::open();
    let (kill, ()) = with_report(&mut log, || {
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
        wait_killed(&mut hog);
        (hog.pid(), ())
    });
    let pid = kill.victim.pid;
    let (published, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill for {pid}\n{}", daemon.log_text()));
    assert_eq!(published["cgroup"], "unknown", "published before its report: {published}");
    let (explained, _) = tail
        .wait_for(Duration::from_secs(10), |v| v["kind"] == "kill_explained" && v["pid"] == pid)
        .unwrap_or_else(|| panic!("no kill_explained for {pid}; saw {:?}\n{}", tail.seen, daemon.log_text()));
    assert_eq!(explained["cgroup"], cg.path.as_str(), "{explained}");
    let placed = format!("oomwatch_oom_kills_total{{cgroup=\"{}\",constraint=\"memcg\",", cg.path);
    let count = |metrics: &str| metrics.lines().filter(|l| l.starts_with(&placed)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = daemon.metrics();
    while count(&metrics) < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        metrics = daemon.metrics();
    }
    assert_eq!(count(&metrics), 1.0, "counted where the report put it:\n{metrics}");
    let replayed = Tail::start(&daemon, &["--since", "5m", "--kind", "oom_kill"])
        .wait_for(Duration::from_secs(5), |v| v["victim"]["pid"] == pid)
        .map(|(v, _)| v)
        .expect("the kill replayed");
    assert_eq!((replayed["cgroup"].as_str(), replayed["cgroup_from"].as_str()), (Some(cg.path.as_str()), Some("kernel_report")), "{replayed}");
}

// ------------------------------------------- a storm past the rate limit

/// /dev/kmsg read by this test alone, with nothing of oomwatch's: a
/// non-blocking read(2) loop from the end of the log on its own thread,
/// one record per read, kept as read.
struct RawKmsg {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    records: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawKmsg {
    fn open() -> Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").expect("open /dev/kmsg");
        // SAFETY: lseek on an fd this test owns.
        assert_eq!(unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) }, 0, "seek /dev/kmsg to its end");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread = {
            let (stop, records) = (stop.clone(), records.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16384];
                loop {
                    // SAFETY: buf is valid for its length; the fd lives in `file`.
                    let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n > 0 {
                        records.lock().unwrap().push(buf[..n as usize].to_vec());
                        continue;
                    }
                    match std::io::Error::last_os_error().raw_os_error() {
                        Some(libc::EAGAIN) if stop.load(std::sync::atomic::Ordering::Relaxed) => break,
                        Some(libc::EAGAIN) => std::thread::sleep(Duration::from_millis(2)),
                        Some(libc::EPIPE) => panic!("this test's /dev/kmsg reader fell behind the ring buffer"),
                        Some(libc::EINTR) => {}
                        e => panic!("read /dev/kmsg: {e:?}"),
                    }
                }
            })
        };
        Self { stop, records, thread: Some(thread) }
    }

    /// The records so far, as text ([`records`] reads them).
    fn raw(&self) -> Vec<String> {
        self.records.lock().unwrap().iter().map(|r| String::from_utf8_lossy(r).trim_end().to_owned()).collect()
    }

    fn bytes(&self) -> Vec<u8> {
        self.records.lock().unwrap().concat()
    }

    /// Reads until every pid in `pids` has its kill line (or `timeout`).
    fn wait_kill_lines(&self, pids: &[u32], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let raw = self.raw();
            let recs = records(&raw);
            let missing: Vec<&u32> = pids.iter().filter(|p| !recs.iter().any(|(_, _, m)| m.contains(&format!("Killed process {p} (")))).collect();
            if missing.is_empty() {
                return raw;
            }
            assert!(Instant::now() < deadline, "no kill line in /dev/kmsg for {missing:?} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RawKmsg {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the kernel printed for the kill of `pid`, by this test's reading:
/// the kill line's seq, and the report's lines when a header came after
/// the previous kill line (the kernel prints a report under oom_lock,
/// right before its kill line) and its summary names `pid`; None when the
/// kernel printed the kill line alone.
fn printed_for(raw: &[String], pid: u32) -> (u64, Option<Vec<String>>) {
    let recs = records(raw);
    let kill_at = recs.iter().position(|(_, _, m)| m.contains(&format!("Killed process {pid} ("))).expect("the kill line");
    let previous_kill = recs[..kill_at].iter().rposition(|(_, _, m)| m.contains(": Killed process ")).map_or(0, |i| i + 1);
    let Some(header_at) = recs[previous_kill..kill_at].iter().rposition(|(_, _, m)| m.contains(" invoked oom-killer: ")) else {
        return (recs[kill_at].0, None);
    };
    let lines: Vec<String> = recs[previous_kill + header_at..kill_at].iter().flat_map(|(_, _, m)| m.split("\\x0a").map(str::to_owned).collect::<Vec<_>>()).collect();
    let names_pid = lines.iter().filter_map(|l| l.strip_prefix("oom-kill:")).any(|s| s.split(',').any(|kv| kv == format!("pid={pid}")));
    assert!(names_pid, "the report before the kill line of {pid} names another victim:\n{}", lines.join("\n"));
    (recs[kill_at].0, Some(lines))
}

/// Kills until one has its report in this test's reading of the log:
/// from then on a kill line without a header is the rate limit's doing
/// for the daemon too (its reader opened before this test's kill).
fn warm_up(kmsg: &RawKmsg) {
    for _ in 0..3 {
        let cg = TestCgroup::new("kmsg-warmup", Some(16 * MIB));
        let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "64"])));
        wait_killed(&mut hog);
        let raw = kmsg.wait_kill_lines(&[hog.pid()], Duration::from_secs(10));
        if printed_for(&raw, hog.pid()).1.is_some() {
            return;
        }
        eprintln!("the kernel held back the warm-up kill's report; again after its 5 s window");
        std::thread::sleep(Duration::from_secs(6));
    }
    panic!("three warm-up kills without a report");
}

/// A report of the kill of `pid` in `cgroup` as any root process can
/// write one to /dev/kmsg: the same victim, cgroup and words, numbers of
/// its own (a 4 MiB limit, failcnt 7777). The kernel gives userspace
/// records the user facility; taken for the kernel's, it would amend the
/// real kill (it comes first) with these numbers.
fn forge_report(pid: u32, cgroup: &str) {
    let lines = [
        "<4>memhog invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=3, oom_score_adj=0".to_owned(),
        "<6>memory: usage 4096kB, limit 4096kB, failcnt 7777".to_owned(),
        format!("<6>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={cgroup},task_memcg={cgroup},task=memhog,pid={pid},uid=0"),
        format!("<3>Memory cgroup out of memory: Killed process {pid} (memhog) total-vm:4kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0"),
    ];
    // A new open file each time: /dev/kmsg lets one write 10 records per 5 s.
    let mut f = fs::OpenOptions::new().write(true).open("/dev/kmsg").expect("open /dev/kmsg for writing");
    for l in lines {
        std::io::Write::write_all(&mut f, format!("{l}\n").as_bytes()).expect("write /dev/kmsg");
    }
}

/// 36 kills in about a second over four cgroups with different limits,
/// past the kernel's allowance of 10 reports per 5 s (oom_kill.c's
/// `oom_rs`), each with a forged report written to /dev/kmsg beside it
/// ([`forge_report`]). Every kill reaches a tail client; every kill whose report
/// the kernel printed carries exactly that report (each field equal to
/// the text, parsed here); every other one is marked rate limited and its
/// `why` says so; no kill carries another's (pid, cgroup, limit, kmsg seq).
#[test]
fn a_storm_past_the_kernels_rate_limit_misattributes_no_report() {
    if !require_root("a_storm_past_the_kernels_rate_limit_misattributes_no_report") {
        return;
    }
    let _serial = one_at_a_time();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let kmsg = RawKmsg::open();
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::connect(&daemon);
    warm_up(&kmsg);

    const PER_CGROUP: usize = 9;
    let cgroups: Vec<TestCgroup> = [16, 20, 24, 28].iter().map(|mib| TestCgroup::new(&format!("kmsg-storm{mib}"), Some(mib * MIB))).collect();
    let started = Instant::now();
    let kills: Vec<(u32, &TestCgroup)> = std::thread::scope(|scope| {
        let streams: Vec<_> = cgroups
            .iter()
            .map(|cg| {
                scope.spawn(move || {
                    (0..PER_CGROUP)
                        .map(|_| {
                            let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "64"])));
                            forge_report(hog.pid(), &cg.path);
                            wait_killed(&mut hog);
                            (hog.pid(), cg)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        streams.into_iter().flat_map(|s| s.join().unwrap_or_else(|_| panic!("a hog stream panicked"))).collect()
    });
    let storm_secs = started.elapsed().as_secs_f64();
    let pids: Vec<u32> = kills.iter().map(|(p, _)| *p).collect();
    let raw = kmsg.wait_kill_lines(&pids, Duration::from_secs(10));
    let forged: Vec<&String> = raw.iter().filter(|r| r.contains("failcnt 7777")).collect();
    assert_eq!(forged.len(), kills.len(), "one forged report per kill");
    assert!(forged.iter().all(|r| r.split(',').next().and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p >> 3 == 1)), "a forged record with the kernel's facility: {forged:?}");
    if let Some(out) = std::env::var_os("OOMWATCH_KMSG_CAPTURE") {
        fs::write(&out, kmsg.bytes()).unwrap();
    }

    let mut with_report = 0;
    let mut rate_limited = Vec::new();
    for (pid, cg) in &kills {
        let pid = *pid;
        let (kill, _) = tail
            .wait_for(Duration::from_secs(10), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no oom_kill event for {pid}\n{}", daemon.log_text()));
        assert_eq!(kill["cgroup"], cg.path.as_str(), "{kill}");
        let (explained, _) = tail
            .wait_for(Duration::from_secs(10), |v| v["kind"] == "kill_explained" && v["pid"] == pid)
            .unwrap_or_else(|| panic!("no kill_explained for {pid}\n{}", daemon.log_text()));
        assert_eq!(explained["kill_seq"], kill["seq"], "{explained}");
        assert_eq!(explained["cgroup"], cg.path.as_str(), "{explained}");
        let r = &explained["kernel_report"];
        let why = explained["why"].as_str().expect("why");
        match printed_for(&raw, pid) {
            (kill_seq, Some(lines)) => {
                assert_report_is_the_printed_one(r, kill_seq, &lines, page);
                // This cgroup's report: its path, its limit, its one task.
                assert_eq!((r["oom_memcg"].as_str(), r["task_memcg"].as_str()), (Some(cg.path.as_str()), Some(cg.path.as_str())), "{r}");
                assert_eq!(r["memcg"]["limit_bytes"].as_u64(), cg.read("memory.limit_in_bytes").trim().parse().ok().or(cg.read("memory.max").trim().parse().ok()), "{r}");
                assert_eq!(r["top_tasks"][0]["pid"], pid, "{r}");
                assert!(!why.contains("rate limit"), "{why}");
                with_report += 1;
            }
            (kill_seq, None) => {
                assert_eq!(*r, serde_json::json!({"kmsg_seq": kill_seq, "missing": "rate_limited"}), "the kill line of {pid} came alone");
                assert!(why.ends_with("; its kernel report: suppressed by the kernel's rate limit."), "{why}");
                rate_limited.push(pid);
            }
        }
    }
    println!("storm: {} kills in {storm_secs:.1} s: {with_report} with the kernel's report, {} rate limited", kills.len(), rate_limited.len());
    assert!(!rate_limited.is_empty(), "the storm never went past the kernel's rate limit (a kill without a report)");
    assert!(with_report >= 1, "no kill of the storm had its report");

    // The kills as replayed carry what kill_explained said.
    let mut late = Tail::start(&daemon, &["--since", "5m", "--kind", "oom_kill"]);
    for pid in &pids {
        let (replayed, _) = late.wait_for(Duration::from_secs(5), |v| v["victim"]["pid"] == *pid).unwrap_or_else(|| panic!("no replayed kill of {pid}"));
        let (explained, _) = tail.wait_for(Duration::ZERO, |v| v["kind"] == "kill_explained" && v["pid"] == *pid).unwrap();
        assert_eq!((&replayed["kernel_report"], &replayed["why"]), (&explained["kernel_report"], &explained["why"]), "{pid}");
    }

    // A person reading `oomwatch tail` is told the same.
    let (_, cg) = kills.iter().find(|(p, _)| *p == rate_limited[0]).unwrap();
    let out = Command::new(oomwatch_bin())
        .args(["tail", "--since", "5m", "--kind", "kill_explained", "--cgroup", &cg.path, "--count", &PER_CGROUP.to_string(), "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(&format!(" pid={} (", rate_limited[0]))).unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with("kernel report: suppressed by the kernel's rate limit"), "{line}");
}
