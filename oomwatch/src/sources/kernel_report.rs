//! The kernel's own OOM reports, read from /dev/kmsg as the kernel prints
//! them, amend the kills the eBPF programs reported: `kernel_report` (the
//! failed allocation, the limit cgroup's counters and memory by kind, the
//! largest tasks) and a `why` that uses them, then a `kill_explained` event
//! tells live clients.
//!
//! eBPF stays the source of truth: a kill is published at once and never
//! waits for its report; a report never creates a kill. The log is shared
//! and partly user-written, so a report is attached only to the kill with
//! the same victim pid and comm, in the same memory cgroup (when that was
//! read exactly), printed within [`JOIN_WINDOW_NS`] of the eBPF timestamp
//! (printk's clock is not CLOCK_MONOTONIC; they differ by milliseconds).
//! Anything else is counted as unmatched, never attached elsewhere.
//!
//! The reader starts at the end of the log: reports of kills before the
//! daemon started are not replayed.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    os::fd::AsRawFd as _,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    model::{Model, bus::EventBus, counters::DaemonCounters},
    readers::{
        kmsg::{KmsgError, KmsgReader},
        oom_report::{self, MissingReport, OomAssembler, OomOutput},
    },
    wire::{
        Attribution, CgroupSource, Composition, Constraint, Event, EventBody, KernelMemcg, KernelReport, KillExplained, LimitFile, OomKill, REPORT_PATH_CUT, ReportTask, TOP_TASKS, amend_with_report,
        printed_whole, rfc3339,
    },
};

/// The kernel log; opened before capabilities are dropped (reading it
/// needs CAP_SYSLOG where kernel.dmesg_restrict=1, as on Debian).
pub const KMSG: &str = "/dev/kmsg";

/// How far apart the kill line's printk time and the eBPF kill's
/// CLOCK_MONOTONIC time may be: measured 1 ms here and 35 ms in the 6.1
/// VM; kills of one pid are never this close.
pub const JOIN_WINDOW_NS: u64 = 10_000_000_000;
/// A kill line read before its eBPF kill was published waits this long.
const WAIT_FOR_KILL: Duration = Duration::from_secs(10);
/// Kill lines waiting for their kill at most (a storm's worth).
const MAX_WAITING: usize = 256;
/// How often waiting kill lines look for their kill again: soon after the
/// line was read (the kill is usually published a few ms later: measured,
/// a fixed 50 ms made 1 kill_explained in 30 wait for it), then backing
/// off to [`RETRY`] (a miss scans the bus's backlog under its lock).
const FIRST_RETRY: Duration = Duration::from_millis(2);
const RETRY: Duration = Duration::from_millis(50);
/// Waited after the first record of a burst, so that a report (printed
/// within a millisecond) is read in one wakeup instead of one per record.
const BATCH: Duration = Duration::from_millis(2);

/// Opens the kernel log at its end, non-blocking.
pub fn open(path: &Path) -> Result<KmsgReader, KmsgError> {
    KmsgReader::open_nonblocking(path)
}

/// The victims' memory cgroups as the kernel's reports named them
/// (`task_memcg`), for the kill path: without BTF, a kill whose cgroup
/// neither /proc nor the oom_kill counters could tell waits a moment for
/// its report here (the kernel prints it before it writes the kill
/// record, unless its rate limit suppressed it) instead of going out as
/// unknown. The log is partly user-written: a cgroup from here is
/// approximate, never exact.
#[derive(Default)]
pub struct ReportedVictims {
    /// (pid, comm, what the report said), newest last.
    recent: Mutex<VecDeque<(u32, String, ReportedKill)>>,
    noted: Condvar,
    /// The kernel log is being read: there is something to wait for.
    reading: AtomicBool,
}

/// Reported victims kept for the kill path: more than a storm's worth of
/// kills in flight.
const REPORTED_VICTIMS: usize = 64;

/// What the kernel's report of a kill says, for the kill path: the
/// victim's memory cgroup, and which limit was hit.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedKill {
    pub task_memcg: Option<String>,
    pub report: KernelReport,
    /// What the kill line's prefix says, printed even when the kernel's
    /// rate limit suppressed the rest of the report.
    pub kill_line: Constraint,
}

impl ReportedVictims {
    fn note(&self, pid: u32, comm: &str, kill: ReportedKill) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == REPORTED_VICTIMS {
            recent.pop_front();
        }
        recent.push_back((pid, comm.to_owned(), kill));
        self.noted.notify_all();
    }

    /// Whether the kernel log is being read: a kill's report or kill line
    /// may still come.
    pub fn reading(&self) -> bool {
        self.reading.load(Ordering::Relaxed)
    }

    /// What the kernel's report said of victim `pid` (`comm`, when known,
    /// must match), waiting up to `timeout` for it; taken once.
    pub fn wait_for(&self, pid: u32, comm: Option<&str>, timeout: Duration) -> Option<ReportedKill> {
        if !self.reading() {
            return None;
        }
        let deadline = Instant::now() + timeout;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let found = recent.iter().rposition(|(p, c, _)| *p == pid && comm.is_none_or(|comm| comm == c));
            if let Some(i) = found {
                return recent.remove(i).map(|(_, _, kill)| kill);
            }
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            recent = self.noted.wait_timeout(recent, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// One kill line of the kernel log, with what it will amend.
struct Waiting {
    since: Instant,
    pid: u32,
    comm: String,
    task_memcg: Option<String>,
    printk_ns: u64,
    report: KernelReport,
    kill_line: Constraint,
}

pub struct KernelReportFeed {
    assembler: OomAssembler,
    bus: Arc<EventBus>,
    counters: Arc<DaemonCounters>,
    limit_file: LimitFile,
    waiting: VecDeque<Waiting>,
    victims: Arc<ReportedVictims>,
    /// Where a kill published unplaced is counted once its report places it.
    model: Arc<Model>,
}

impl KernelReportFeed {
    pub fn new(bus: Arc<EventBus>, counters: Arc<DaemonCounters>, limit_file: LimitFile, victims: Arc<ReportedVictims>, model: Arc<Model>) -> Self {
        victims.reading.store(true, Ordering::Relaxed);
        Self { assembler: OomAssembler::new(crate::kernel::decode::page_size()), bus, counters, limit_file, waiting: VecDeque::new(), victims, model }
    }

    /// Reads the log until the daemon stops, on a thread of its own: the
    /// kernel prints a report's 50 to 100 records around the kill, and
    /// their wakeups must not queue before the kill on the runtime that
    /// publishes it. A read error stops the reading (said once, and
    /// `probe_attached{probe="kmsg"}` goes to 0); the daemon goes on
    /// without reports.
    pub fn run_blocking(mut self, mut reader: KmsgReader) {
        self.counters.kmsg_attached.set(1);
        loop {
            let timeout = match self.waiting.back() {
                None => -1,
                // The youngest line's age: retries at about 2, 4, 8, ... ms.
                Some(youngest) => youngest.since.elapsed().clamp(FIRST_RETRY, RETRY).as_millis() as i32,
            };
            let mut pfd = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if ready < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return self.stop(&reader, &err.to_string());
                }
            }
            if ready > 0 {
                // The rest of the report is being printed: read it in one go.
                std::thread::sleep(BATCH);
                if let Err(e) = self.drain(&mut reader) {
                    return self.stop(&reader, &e.to_string());
                }
            }
            self.retry(Instant::now());
        }
    }

    fn stop(self, reader: &KmsgReader, why: &str) {
        self.counters.kmsg_attached.set(0);
        self.victims.reading.store(false, Ordering::Relaxed);
        log::error!("{}: {why}; OOM kills are reported without the kernel's report from now on", reader.path().display());
        // Ending would end the daemon (a supervised task); it goes on without.
        loop {
            std::thread::park();
        }
    }

    /// Every record that is ready.
    fn drain(&mut self, reader: &mut KmsgReader) -> Result<(), KmsgError> {
        while let Some(record) = reader.next()? {
            if let Some(OomOutput::Kill(kill)) = self.assembler.push(record) {
                self.kill_line(&kill);
            }
        }
        Ok(())
    }

    fn kill_line(&mut self, kill: &oom_report::OomKill) {
        let waiting = Waiting {
            since: Instant::now(),
            pid: kill.victim.pid,
            comm: kill.victim.comm.clone(),
            task_memcg: kill.report.as_ref().and_then(|r| r.summary.task_memcg.clone()),
            printk_ns: kill.ts_usec.saturating_mul(1000),
            report: kernel_report(kill),
            kill_line: kill_line_constraint(kill.scope),
        };
        self.victims.note(
            waiting.pid,
            &waiting.comm,
            ReportedKill { task_memcg: waiting.task_memcg.clone(), report: waiting.report.clone(), kill_line: waiting.kill_line },
        );
        if !self.join(&waiting) {
            if self.waiting.len() == MAX_WAITING {
                self.waiting.pop_front();
                self.counters.kernel_reports_unmatched.inc();
            }
            self.waiting.push_back(waiting);
        }
    }

    /// Kill lines read before their kill was published try again; the ones
    /// that waited too long are counted as unmatched.
    fn retry(&mut self, now: Instant) {
        let mut still = VecDeque::with_capacity(self.waiting.len());
        while let Some(w) = self.waiting.pop_front() {
            if self.join(&w) {
                continue;
            }
            if now.duration_since(w.since) >= WAIT_FOR_KILL {
                self.counters.kernel_reports_unmatched.inc();
                log::debug!("kernel log: the kill line of pid {} matched no kill oomwatch reported", w.pid);
            } else {
                still.push_back(w);
            }
        }
        self.waiting = still;
    }

    /// Amends the kill `w` belongs to, and tells live clients. A kill
    /// published unplaced is counted in the series its report names.
    fn join(&self, w: &Waiting) -> bool {
        let limit_file = self.limit_file;
        // Looked up outside the bus's lock; used only when the report
        // names a cgroup the kill path could not.
        let reported_workload = w.task_memcg.as_deref().map(|memcg| self.model.workload(memcg));
        let Some(amended) = self.bus.amend(
            |e| belongs_to(e, w),
            |e| {
                if let EventBody::OomKill(k) = &mut e.body {
                    settle_unknown_constraint(k, w);
                    amend_with_report(k, &w.report, limit_file);
                    if let Some(memcg) = cgroup_from_report(k, w.task_memcg.as_deref()) {
                        if let Some((workload, init_pid)) = &reported_workload {
                            k.main_process = super::kills::is_main_process(*init_pid, &k.victim);
                            k.workload = workload.clone();
                        }
                        e.cgroup = memcg;
                    }
                }
            },
        ) else {
            return false;
        };
        self.counters.kernel_reports_joined.inc();
        let EventBody::OomKill(k) = &amended.event.body else { return true };
        self.model.place_unplaced_kill(k.victim.pid, amended.event.ktime_ns, &amended.event.cgroup, k.constraint, &k.workload, k.main_process);
        let body = EventBody::KillExplained(KillExplained {
            pid: w.pid,
            comm: w.comm.clone(),
            kill_seq: amended.event.seq,
            why: k.why.clone(),
            kernel_report: Box::new(w.report.clone()),
        });
        self.counters.events_published.inc();
        self.bus.publish(Event::new(body, rfc3339(SystemTime::now()), amended.event.cgroup.clone(), None));
        true
    }
}

/// Whether the kill line `w` is the kernel's account of `event`: same
/// victim pid and comm, same memory cgroup when the kill's was read
/// exactly, printed close to the eBPF timestamp, not explained yet.
fn belongs_to(event: &Event, w: &Waiting) -> bool {
    let EventBody::OomKill(k) = &event.body else { return false };
    if k.victim.pid != w.pid || k.kernel_report.is_some() {
        return false;
    }
    if k.victim.comm.as_deref().is_some_and(|c| c != w.comm) {
        return false;
    }
    if k.attribution == Attribution::Exact
        && let Some(memcg) = &w.task_memcg
        && *memcg != event.cgroup
    {
        return false;
    }
    event.ktime_ns.is_none_or(|t| t.abs_diff(w.printk_ns) <= JOIN_WINDOW_NS)
}

/// A kill published with its constraint unknown (its report came after
/// the kill path stopped waiting, or none of it was read) takes the
/// report's; the metric, which held its count for the report
/// (`model::unplaced`), counts it as the kernel said too.
fn settle_unknown_constraint(k: &mut OomKill, w: &Waiting) {
    if k.constraint != Constraint::Unknown {
        return;
    }
    let Some(verdict) = super::kills::report_verdict(&w.report, Some(w.kill_line)) else { return };
    k.constraint = verdict.constraint;
    k.limit_cgroup = verdict.limit_cgroup;
    k.limit_cgroup_usage_bytes = verdict.usage_bytes;
    k.limit_bytes = verdict.limit_bytes;
}

/// The constraint a kill line's prefix says: "Memory cgroup out of
/// memory" is a cgroup's limit; "Out of memory" (also with
/// oom_kill_allocating_task, which the kernel uses only for the host) is
/// the host's, or a cpuset's or memory policy's, which only the report's
/// summary line tells apart.
fn kill_line_constraint(scope: oom_report::KillScope) -> Constraint {
    match scope {
        oom_report::KillScope::Memcg => Constraint::Memcg,
        oom_report::KillScope::Global | oom_report::KillScope::AllocatingTask => Constraint::Global,
    }
}

/// A kill published with its cgroup unknown (no BTF, the victim gone from
/// /proc) takes the kernel's own `task_memcg`: the report printed it from
/// the victim's task at the kill (approximate still: the log is partly
/// user-written). Returns the cgroup to put on the event; the
/// `unavailable` entry that said it was unknown goes.
fn cgroup_from_report(k: &mut OomKill, task_memcg: Option<&str>) -> Option<String> {
    let memcg = task_memcg.filter(|_| k.attribution == Attribution::Unknown)?;
    k.attribution = Attribution::Approximate;
    k.cgroup_from = Some(CgroupSource::KernelReport);
    k.unavailable.retain(|u| !u.starts_with("victim cgroup "));
    if !printed_whole(memcg) {
        k.unavailable.push(REPORT_PATH_CUT.to_owned());
    }
    Some(memcg.to_owned())
}

/// The event's `kernel_report` of one assembled kill line.
pub fn kernel_report(kill: &oom_report::OomKill) -> KernelReport {
    let mut out = KernelReport { kmsg_seq: kill.seq, missing: kill.missing.map(missing_name), ..Default::default() };
    let Some(r) = kill.report.as_deref() else { return out };
    out.gfp_mask = Some(format!("{:#x}", r.gfp_mask));
    out.gfp_flags = r.gfp_flags.clone();
    out.order = Some(r.order);
    out.constraint = Some(r.summary.constraint.clone());
    out.oom_memcg = r.summary.oom_memcg.clone();
    out.task_memcg = r.summary.task_memcg.clone();
    out.memcg = r.memcg.map(|m| KernelMemcg {
        usage_bytes: m.memory.usage_bytes,
        limit_bytes: m.memory.limit_bytes,
        failcnt: m.memory.failcnt,
        swap_usage_bytes: m.swap.map(|s| s.usage_bytes),
        swap_limit_bytes: m.swap.map(|s| s.limit_bytes),
    });
    out.composition = composition(&r.stats, r.memcg.and_then(|m| m.kmem).map(|k| k.usage_bytes), r.memcg.and_then(|m| m.swap).map(|s| s.usage_bytes));
    let mut tasks: Vec<&oom_report::OomTask> = r.tasks.iter().collect();
    tasks.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    out.top_tasks = tasks.iter().take(TOP_TASKS).map(|t| ReportTask { pid: t.pid, comm: t.name.clone(), rss_bytes: t.rss_bytes }).collect();
    out.tasks_in_table = Some(u32::try_from(r.tasks.len()).unwrap_or(u32::MAX).saturating_add(r.cut.tasks));
    out
}

/// Memory by kind from the printed memory.stat: v2 keys (anon, file,
/// hierarchical already), or v1's hierarchical total_* (6.12+ prints v1
/// keys on cgroup v1; the plain ones count the cgroup's own pages only).
/// Kernel memory: v2's `kernel`, else v1's kmem counter. Swap: v1's
/// `total_swap`, else v2's swap counter (its memory.stat has no swap key).
fn composition(stats: &[(String, u64)], kmem: Option<u64>, swap: Option<u64>) -> Option<Composition> {
    let get = |keys: &[&str]| keys.iter().find_map(|key| stats.iter().find(|(k, _)| k == key).map(|(_, v)| *v));
    let c = Composition {
        anon_bytes: get(&["anon", "total_rss", "rss"]),
        file_bytes: get(&["file", "total_cache", "cache"]),
        shmem_bytes: get(&["total_shmem", "shmem"]),
        kernel_bytes: get(&["kernel"]).or(kmem),
        pagetables_bytes: get(&["pagetables"]),
        sock_bytes: get(&["sock"]),
        swap_bytes: get(&["total_swap", "swap"]).or(swap),
        sampled_seconds_ago: None,
    };
    (c != Composition::default()).then_some(c)
}

fn missing_name(m: MissingReport) -> String {
    match m {
        MissingReport::RateLimited => "rate_limited",
        MissingReport::RecordsLost => "records_lost",
        MissingReport::BeforeFirstHeader => "before_first_header",
        MissingReport::NotThisVictim => "not_this_victim",
        MissingReport::GroupMemberNotInTable => "group_member_not_in_table",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        readers::kmsg::{parse_record, split_records},
        wire::{Trigger, Victim, why},
    };

    const PLAIN_618_CGROUP: &str = "/process_api/c1c59e057489a0e4f0a24676328a662e/oomwatch-test-kmsg-plain-30833-0";

    /// The one kill line of a captured report (oomwatch/tests/fixtures/kmsg).
    fn captured(name: &str) -> oom_report::OomKill {
        let path = format!("{}/tests/fixtures/kmsg/{name}.kmsg", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read(&path).unwrap();
        let mut a = OomAssembler::new(4096);
        let kills: Vec<_> = split_records(&text)
            .filter_map(|raw| a.push(&parse_record(raw).unwrap()))
            .filter_map(|o| match o {
                OomOutput::Kill(k) => Some(*k),
                _ => None,
            })
            .collect();
        assert_eq!(kills.len(), 1, "{name}");
        kills.into_iter().next().unwrap()
    }

    fn event_of(pid: u32, comm: &str, cgroup: &str, ktime_ns: u64) -> Event {
        let mut k = OomKill::of_pid(pid);
        k.victim = Victim { pid, comm: Some(comm.into()), ..Default::default() };
        k.trigger = Trigger { pid, tid: pid, comm: comm.into(), cgroup: Some(cgroup.into()) };
        k.limit_cgroup = Some(cgroup.into());
        Event::new(EventBody::OomKill(Box::new(k)), "t".into(), cgroup.into(), Some(ktime_ns))
    }

    // Expected values copied from the fixture text.
    #[test]
    fn a_v1_report_on_6_18() {
        let r = kernel_report(&captured("6.18/plain"));
        assert_eq!((r.kmsg_seq, r.missing.as_deref()), (584, None));
        assert_eq!((r.gfp_mask.as_deref(), r.gfp_flags.join("|"), r.order), (Some("0xcc0"), "GFP_KERNEL".into(), Some(0)));
        assert_eq!(r.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!((r.oom_memcg.as_deref(), r.task_memcg.as_deref()), (Some(PLAIN_618_CGROUP), Some(PLAIN_618_CGROUP)));
        assert_eq!(r.memcg, Some(KernelMemcg { usage_bytes: 65536 * 1024, limit_bytes: 65536 * 1024, failcnt: 19, swap_usage_bytes: None, swap_limit_bytes: None }));
        let c = r.composition.unwrap();
        assert_eq!((c.anon_bytes, c.file_bytes, c.shmem_bytes, c.kernel_bytes), (Some(66908160), Some(0), Some(0), Some(196 * 1024)));
        assert_eq!(r.top_tasks, vec![ReportTask { pid: 30835, comm: "memhog".into(), rss_bytes: 16749 * 4096 }]);
        assert_eq!(r.tasks_in_table, Some(1));
    }

    #[test]
    fn a_tmpfs_kill_on_6_1_names_shmem() {
        let r = kernel_report(&captured("6.1/shmem"));
        let c = r.composition.unwrap();
        assert_eq!((c.anon_bytes, c.file_bytes, c.shmem_bytes, c.kernel_bytes), (Some(126976), Some(66621440), Some(66621440), Some(360448)));
        assert_eq!(r.memcg.unwrap().swap_usage_bytes, Some(0));
        let mut e = event_of(200, "memhog", "/oomwatch-test-shm", 0);
        let EventBody::OomKill(k) = &mut e.body else { unreachable!() };
        k.kernel_report = Some(Box::new(r));
        let why = why(k, Some("memory.max")).unwrap();
        assert!(why.contains("/oomwatch-test-shm hit its 64 MiB limit (memory.max)"), "{why}");
        assert!(why.contains("63.5MiB shmem/tmpfs"), "{why}");
    }

    #[test]
    fn joins_only_the_same_pid_comm_cgroup_and_time() {
        let kill = captured("6.18/plain");
        let printk_ns = kill.ts_usec * 1000;
        let w = Waiting {
            since: Instant::now(),
            pid: 30835,
            comm: "memhog".into(),
            task_memcg: Some(PLAIN_618_CGROUP.into()),
            printk_ns,
            report: kernel_report(&kill),
            kill_line: kill_line_constraint(kill.scope),
        };
        assert!(belongs_to(&event_of(30835, "memhog", PLAIN_618_CGROUP, printk_ns - 1_100_000), &w));
        assert!(!belongs_to(&event_of(30836, "memhog", PLAIN_618_CGROUP, printk_ns), &w), "another pid");
        assert!(!belongs_to(&event_of(30835, "memhogX", PLAIN_618_CGROUP, printk_ns), &w), "another comm");
        assert!(!belongs_to(&event_of(30835, "memhog", "/elsewhere", printk_ns), &w), "another cgroup");
        assert!(!belongs_to(&event_of(30835, "memhog", PLAIN_618_CGROUP, printk_ns + JOIN_WINDOW_NS + 1), &w), "a later kill of a reused pid");
        let mut explained = event_of(30835, "memhog", PLAIN_618_CGROUP, printk_ns);
        if let EventBody::OomKill(k) = &mut explained.body {
            k.kernel_report = Some(Box::new(w.report.clone()));
        }
        assert!(!belongs_to(&explained, &w), "already explained");
    }

    #[test]
    fn a_kill_published_with_its_cgroup_unknown_takes_the_reports() {
        let kill = captured("6.18/plain");
        let bus = Arc::new(EventBus::new(16, 16));
        let model = Arc::new(Model::default());
        let mut feed = KernelReportFeed::new(bus.clone(), Arc::new(DaemonCounters::default()), Some("memory.limit_in_bytes"), Arc::default(), model.clone());
        let mut unknown = event_of(30835, "memhog", "unknown", kill.ts_usec * 1000);
        if let EventBody::OomKill(k) = &mut unknown.body {
            k.attribution = Attribution::Unknown;
            k.unavailable = vec!["victim task (exact cgroup)".into(), "victim cgroup (/proc/PID/cgroup: the victim was gone; ...)".into()];
        }
        // As the kill path counts it: in the totals, its series held.
        model.record_unplaced_kill(crate::model::unplaced::UnplacedKill {
            victim_pid: 30835,
            ktime_ns: unknown.ktime_ns,
            cgroup: "unknown".into(),
            constraint: Constraint::Memcg,
            victim_comm: Some("memhog".into()),
            workload: Default::default(),
            main_process: None,
            at: Instant::now(),
        });
        bus.publish(unknown);
        feed.kill_line(&kill);
        let (past, _) = bus.subscribe(|_| true);
        assert_eq!(past[0].event.cgroup, PLAIN_618_CGROUP);
        let EventBody::OomKill(k) = &past[0].event.body else { panic!() };
        assert_eq!((k.attribution, k.cgroup_from), (Attribution::Approximate, Some(CgroupSource::KernelReport)));
        assert_eq!(k.unavailable, vec!["victim task (exact cgroup)".to_owned()]);
        assert_eq!(past[1].event.cgroup, PLAIN_618_CGROUP, "kill_explained names it too");
        let mut series = Vec::new();
        model.for_each_kill_count(|cgroup, constraint, n| series.push((cgroup.to_owned(), constraint, n)));
        assert_eq!(series, [(PLAIN_618_CGROUP.to_owned(), Constraint::Memcg, 1)], "the metric counts it where the report put it");
        assert_eq!(model.total_kills(), 1);

        // A cgroup /proc gave stays: the report only fills what was unknown.
        let mut approximate = OomKill::of_pid(1);
        approximate.attribution = Attribution::Approximate;
        assert_eq!(cgroup_from_report(&mut approximate, Some("/elsewhere")), None);
        assert_eq!(approximate.cgroup_from, None);
    }

    /// A kill the kill path could not place (no BTF, its cgroup unknown,
    /// no report within its wait) went out `unknown`; the report's
    /// summary, or the kill line alone when the kernel's rate limit cut
    /// the rest, settles it on the event.
    #[test]
    fn a_kill_published_with_its_constraint_unknown_takes_the_reports() {
        let published_unknown = |kill: &oom_report::OomKill| {
            let bus = Arc::new(EventBus::new(16, 16));
            let mut feed = KernelReportFeed::new(bus.clone(), Arc::new(DaemonCounters::default()), Some("memory.limit_in_bytes"), Arc::default(), Arc::default());
            let mut e = event_of(30835, "memhog", "unknown", kill.ts_usec * 1000);
            if let EventBody::OomKill(k) = &mut e.body {
                k.attribution = Attribution::Unknown;
                k.constraint = Constraint::Unknown;
                k.limit_cgroup = None;
                k.limit_bytes = None;
                k.limit_cgroup_usage_bytes = None;
            }
            bus.publish(e);
            feed.kill_line(kill);
            let (past, _) = bus.subscribe(|_| true);
            let EventBody::OomKill(k) = &past[0].event.body else { panic!() };
            (**k).clone()
        };
        let whole = captured("6.18/plain");
        let k = published_unknown(&whole);
        assert_eq!((k.constraint, k.limit_cgroup.as_deref()), (Constraint::Memcg, Some(PLAIN_618_CGROUP)));
        assert!(k.limit_bytes.is_some() && k.limit_cgroup_usage_bytes.is_some(), "{k:?}");
        assert!(k.why.as_deref().unwrap().contains(&format!("because {PLAIN_618_CGROUP} hit its")), "{:?}", k.why);

        let mut line_only = whole;
        line_only.report = None;
        line_only.missing = Some(MissingReport::RateLimited);
        let k = published_unknown(&line_only);
        assert_eq!((k.constraint, k.limit_cgroup), (Constraint::Memcg, None));
        assert!(k.why.as_deref().unwrap().contains("because a memory cgroup hit its limit"), "{:?}", k.why);
        line_only.scope = oom_report::KillScope::Global;
        assert_eq!(published_unknown(&line_only).constraint, Constraint::Global, "\"Out of memory: Killed process\"");
    }

    #[test]
    fn the_kill_path_finds_a_victims_cgroup_in_its_report() {
        let victims = Arc::new(ReportedVictims::default());
        let short = Duration::from_millis(1);
        assert_eq!(victims.wait_for(30835, Some("memhog"), Duration::from_secs(5)), None, "no kernel log read: nothing to wait for");
        let feed = KernelReportFeed::new(Arc::new(EventBus::new(16, 16)), Arc::new(DaemonCounters::default()), None, victims.clone(), Arc::default());
        let late = std::thread::spawn({
            let victims = victims.clone();
            move || victims.wait_for(30835, Some("memhog"), Duration::from_secs(5))
        });
        let mut feed = feed;
        feed.kill_line(&captured("6.18/plain"));
        let noted = late.join().unwrap().expect("noted while it waited");
        assert_eq!(noted.task_memcg.as_deref(), Some(PLAIN_618_CGROUP));
        assert_eq!(noted.report.constraint.as_deref(), Some("CONSTRAINT_MEMCG"), "and which limit was hit");
        assert_eq!(victims.wait_for(30835, Some("memhog"), short), None, "taken once");
        feed.kill_line(&captured("6.18/plain"));
        assert_eq!(victims.wait_for(30835, Some("other"), short), None, "another comm");
        assert_eq!(victims.wait_for(4, None, short), None, "another pid");
        assert_eq!(victims.wait_for(30835, None, short).and_then(|k| k.task_memcg).as_deref(), Some(PLAIN_618_CGROUP));
    }

    #[test]
    fn a_kill_line_amends_its_kill_and_tells_live_clients() {
        let kill = captured("6.18/plain");
        let bus = Arc::new(EventBus::new(16, 16));
        let counters = Arc::new(DaemonCounters::default());
        let mut feed = KernelReportFeed::new(bus.clone(), counters.clone(), Some("memory.limit_in_bytes"), Arc::default(), Arc::default());
        // Read before the kill was published: it waits, then joins.
        feed.kill_line(&kill);
        assert_eq!(feed.waiting.len(), 1);
        bus.publish(event_of(30835, "memhog", PLAIN_618_CGROUP, kill.ts_usec * 1000));
        feed.retry(Instant::now());
        assert!(feed.waiting.is_empty());
        let (past, _) = bus.subscribe(|_| true);
        let EventBody::OomKill(k) = &past[0].event.body else { panic!() };
        assert_eq!(k.kernel_report.as_ref().unwrap().memcg.unwrap().failcnt, 19);
        let why = k.why.as_deref().unwrap();
        assert!(why.starts_with(&format!("memhog (pid 30835) was killed because {PLAIN_618_CGROUP} hit its 64 MiB limit (memory.limit_in_bytes)")), "{why}");
        assert!(why.ends_with("the top consumer was itself (65.4MiB rss)."), "{why}");
        let EventBody::KillExplained(x) = &past[1].event.body else { panic!("{:?}", past[1].event) };
        assert_eq!((x.kill_seq, x.why.as_deref()), (past[0].event.seq, Some(why)));
        assert_eq!(counters.kernel_reports_joined.get(), 1);
        // A kill line nobody reported waits, then is counted, never attached.
        let mut other = kill.clone();
        other.victim.pid = 4;
        feed.kill_line(&other);
        feed.retry(Instant::now() + WAIT_FOR_KILL);
        assert_eq!((feed.waiting.len(), counters.kernel_reports_unmatched.get()), (0, 1));
    }
}
