//! The kernel's OOM report, as structured data.
//!
//! Every OOM kill makes the kernel print, in this order (mm/oom_kill.c,
//! mm/memcontrol.c; checked against Debian's 6.1 and 6.12 sources and real
//! reports from 6.1 and 6.18):
//!
//! ```text
//! COMM invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0   <- dump_header,
//! CPU: 1 [UID: 0 ]PID: 123 Comm: COMM Not tainted ...                                 rate limited:
//! Call Trace: ...                                                                    10 every 5 s
//! memory: usage 65536kB, limit 65536kB, failcnt 19          (memcg OOMs)
//! swap: usage ...  | memory+swap: usage ... + kmem: usage ...  (v2 | v1)
//! Memory cgroup stats for /path:
//! anon 123 ... (v2 memory.stat) | cache 0 ... (v1 memory.stat, 6.12+ on v1)
//!    6.1 prints the whole block as one record with newlines; 6.12+ one record a line
//! Mem-Info: ...                                             (global OOMs instead)
//! Tasks state (memory values in pages):
//! [  pid  ]   uid  tgid total_vm      rss [rss_anon rss_file rss_shmem] pgtables_bytes swapents oom_score_adj name
//! [    123]     0   123    66282    16749 [16320      429         0]   180224        0             0 memhog
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/x,task=memhog,pid=123,uid=0
//! Memory cgroup out of memory: Killed process 123 (memhog) total-vm:265128kB, anon-rss:65280kB, file-rss:1716kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0
//! Tasks in /x are going to be killed due to memory.oom.group set   (then one Killed line per member)
//! oom_reaper: reaped process 123 (memhog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB   (later, maybe)
//! oom_kill_process: 4 callbacks suppressed                 (before the next header let through)
//! ```
//!
//! The kernel serializes OOM kills (oom_lock), so two reports never
//! interleave; other kernel messages can. Only facility-0 records are read:
//! userspace can write to /dev/kmsg but never with the kernel's facility.
//!
//! [`OomAssembler`] is fed records in order and emits one [`OomKill`] per
//! "Killed process" line, with the report when the summary printed just
//! before names that very victim (pid, comm, uid) and no record was lost in
//! between; otherwise the kill comes without a report and says why
//! ([`MissingReport`]). A report is never attached to another kill.
//!
//! Comms and cgroup names are chosen by users and may hold anything the
//! kernel lets through (parentheses, commas, `=`, newlines in comms, bytes
//! that are not UTF-8): every line is parsed from its fixed parts, from the
//! end where the variable part comes first. Strings in the output are UTF-8
//! with invalid bytes replaced; matching is done on the raw bytes.
//!
//! Timestamps are printk's (local_clock(), sched_clock based), not
//! CLOCK_MONOTONIC, which bpf_ktime_get_ns() reads. Measured: on the 6.18
//! development machine printk ran 1.1 to 1.4 ms ahead of CLOCK_MONOTONIC
//! (drifting about 0.07 ppm), and the kill line came 1.1 ms after the eBPF
//! mark_victim timestamp of the same kill; in the 6.1 VM printk ran 35 ms
//! behind. Kills in a storm come 20 to 40 ms apart: join a kill line to the
//! eBPF event by victim pid (and comm), not by time, or learn the offset
//! from kills already joined.

use std::sync::{Arc, LazyLock};

use serde::Serialize;

use super::kmsg::{KmsgRecord, parse_u64};

/// Task table rows kept per report; the rest are counted.
pub const MAX_TASKS: usize = 1024;
/// memory.stat keys kept per report (v1 prints about 45, v2 about 60).
pub const MAX_STAT_KEYS: usize = 256;
/// The longest line looked at: a record's message, or one rebuilt from a
/// record and its continuations.
pub const MAX_LINE_BYTES: usize = 8192;
/// Comm, cgroup path and other names are cut to this many bytes (PATH_MAX).
pub const MAX_NAME_BYTES: usize = 4096;
/// GFP flag names kept (the kernel has about 30).
pub const MAX_GFP_FLAGS: usize = 64;
/// Kills of one memory.oom.group counted as members (duplicates are found
/// among these).
const MAX_GROUP_PIDS: usize = 4096;
/// Members of a group kill are killed in the same oom_lock section as the
/// group line: a Killed line later than this after it is another kill.
const GROUP_WINDOW_USEC: u64 = 1_000_000;
/// Ways to split a summary line looked at before calling it ambiguous.
const MAX_SUMMARY_CANDIDATES: usize = 64;
/// A header's comm comes first on its line; a longer "comm" means the
/// words are inside some other message (a cgroup path, say).
const MAX_COMM_BYTES: usize = 64;
/// The prefixes of the kill line (the `message` of oom_kill_process).
const KILL_PREFIXES: &[(&[u8], KillScope)] = &[
    (b"Memory cgroup out of memory", KillScope::Memcg),
    (b"Out of memory", KillScope::Global),
    (b"Out of memory (oom_kill_allocating_task)", KillScope::AllocatingTask),
];

// ------------------------------------------------------------------ output

/// What one kernel record can produce.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OomOutput {
    /// A "Killed process" line, with the report when it was printed for it.
    Kill(Box<OomKill>),
    /// The OOM reaper freed a victim's memory: amends that kill.
    Reaped(OomReaped),
    /// The OOM reaper gave up on a victim (its mm stayed locked).
    ReapFailed { seq: u64, ts_usec: u64, pid: u32, comm: String },
    /// The kernel held back this many report headers in its last 5 s
    /// window ("oom_kill_process: N callbacks suppressed").
    HeadersSuppressed { seq: u64, ts_usec: u64, count: u64 },
}

/// Which OOM the kill line says it was (its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillScope {
    /// "Memory cgroup out of memory": a memory cgroup's limit.
    Memcg,
    /// "Out of memory": the host (or a cpuset or mempolicy).
    Global,
    /// "Out of memory (oom_kill_allocating_task)": vm.oom_kill_allocating_task.
    AllocatingTask,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomKill {
    /// kmsg sequence number and printk timestamp of the Killed line.
    pub seq: u64,
    pub ts_usec: u64,
    pub scope: KillScope,
    pub victim: KilledProcess,
    pub role: VictimRole,
    /// The header, memcg state, stats, task table and summary printed for
    /// this kill (shared by all victims of one group kill).
    pub report: Option<Arc<OomReport>>,
    /// Why `report` is None.
    pub missing: Option<MissingReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum VictimRole {
    /// The task the OOM killer chose.
    Chosen,
    /// Killed with the chosen one because its memory cgroup (`group`) has
    /// memory.oom.group set.
    GroupMember { group: String },
}

/// Why a kill comes without its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingReport {
    /// No header since the previous kill: the kernel's rate limit (10
    /// reports every 5 s) held it back.
    RateLimited,
    /// Records were lost (the ring buffer wrapped before they were read)
    /// since the previous kill.
    RecordsLost,
    /// No header was read since the assembler started: the reader began
    /// after this kill's header (or inside a burst the kernel was already
    /// rate limiting).
    BeforeFirstHeader,
    /// A header was printed but its summary does not name this victim (or
    /// was cut or missing): it belongs to another kill.
    NotThisVictim,
    /// A group member that is not in the report's task table.
    GroupMemberNotInTable,
}

/// The values of the "Killed process" line. Sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KilledProcess {
    pub pid: u32,
    pub comm: String,
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    /// UID, pgtables and oom_score_adj: on 6.1 and later, not on old kernels.
    pub uid: Option<u32>,
    pub pgtables_bytes: Option<u64>,
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomReaped {
    pub seq: u64,
    pub ts_usec: u64,
    pub pid: u32,
    pub comm: String,
    /// What the victim still held after reaping.
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
}

/// Everything the kernel printed before the kill line. Sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomReport {
    /// kmsg sequence number and printk timestamp of the header line.
    pub seq: u64,
    pub ts_usec: u64,
    pub trigger: Trigger,
    /// The failed allocation: its gfp mask, the flag names the kernel
    /// printed for it (as printed; a hex remainder for unnamed bits), order.
    pub gfp_mask: u64,
    pub gfp_flags: Vec<String>,
    pub order: i32,
    pub memcg: Option<MemcgCounters>,
    /// The cgroup of "Memory cgroup stats for PATH:" (the OOM memcg).
    pub stats_cgroup: Option<String>,
    /// That cgroup's memory.stat as printed: v2 keys on cgroup v2 (and on
    /// 6.1 with v1), v1 keys (cache, rss, total_*) on 6.12+ with v1. Sizes
    /// are bytes; event keys (pgfault, pgscan, ...) are counts, as in the
    /// file. Serialized as a JSON object in the kernel's order.
    #[serde(serialize_with = "pairs_as_map")]
    pub stats: Vec<(String, u64)>,
    /// The task table (the OOM domain's tasks).
    pub tasks: Vec<OomTask>,
    pub summary: OomSummary,
    pub cut: CutCounts,
}

/// The task whose allocation failed: often not the victim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub comm: String,
    pub oom_score_adj: i32,
    /// From the stack dump's "CPU: N [UID: U ]PID: P Comm: C" line.
    pub pid: Option<u32>,
    /// Its effective uid: that line carries it on 6.12+, not on 6.1.
    pub uid: Option<u32>,
}

/// A page counter line: "memory: usage NkB, limit NkB, failcnt N".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageCounter {
    pub usage_bytes: u64,
    /// `9007199254740988kB` (PAGE_COUNTER_MAX) means no limit.
    pub limit_bytes: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemcgCounters {
    pub memory: PageCounter,
    /// cgroup v2.
    pub swap: Option<PageCounter>,
    /// cgroup v1.
    pub memory_swap: Option<PageCounter>,
    pub kmem: Option<PageCounter>,
}

/// A task table row. Page counts were converted to bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomTask {
    pub pid: u32,
    pub uid: u32,
    pub tgid: u32,
    pub total_vm_bytes: u64,
    pub rss_bytes: u64,
    /// Not on 6.1; on 6.12+.
    pub rss_anon_bytes: Option<u64>,
    pub rss_file_bytes: Option<u64>,
    pub rss_shmem_bytes: Option<u64>,
    pub pgtables_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    pub oom_score_adj: i32,
    pub name: String,
}

/// The "oom-kill:" line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomSummary {
    /// CONSTRAINT_NONE, CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_MEMCG.
    pub constraint: String,
    /// None when the kernel printed "(null)".
    pub nodemask: Option<String>,
    /// Leaf name of the trigger's cpuset ("/" at the root); None without cpusets.
    pub cpuset: Option<String>,
    pub mems_allowed: Option<String>,
    /// The memory cgroup that hit its limit; None for a global OOM.
    pub oom_memcg: Option<String>,
    pub global_oom: bool,
    /// The victim's memory cgroup.
    pub task_memcg: Option<String>,
    pub task: String,
    pub pid: u32,
    pub uid: u32,
}

/// What bounded buffers left out of one report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CutCounts {
    pub tasks: u32,
    pub stats: u32,
    /// Names cut to MAX_NAME_BYTES.
    pub names: u32,
    /// The kernel itself cut the stats (6.1 prints them in one record of at
    /// most 992 bytes): the last, partial line was dropped.
    pub stats_cut_by_kernel: bool,
}

/// The assembler's bookkeeping, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AssemblerStats {
    pub records: u64,
    /// Userspace records (facility != 0), never parsed.
    pub non_kernel: u64,
    /// Lines that started like a report line but did not parse.
    pub malformed: u64,
    pub kills: u64,
    pub kills_with_report: u64,
    pub kills_rate_limited: u64,
    pub kills_records_lost: u64,
    pub kills_before_first_header: u64,
    pub kills_not_this_victim: u64,
    pub group_members: u64,
    /// Group members the report's task table could not confirm.
    pub group_members_unverified: u64,
    /// A group member killed a second time in the same group kill (the
    /// kernel scans the whole group, the chosen victim included): not
    /// reported again.
    pub duplicate_kill_lines: u64,
    /// Headers that never led to a kill line (the victim was already
    /// exiting, or its kill line was lost).
    pub reports_dropped: u64,
    pub victims_already_exiting: u64,
    pub reaped: u64,
    /// Gaps in sequence numbers, and the records in them.
    pub gaps: u64,
    pub lost_records: u64,
    pub tasks_cut: u64,
    pub stats_cut: u64,
    pub lines_cut: u64,
}

// --------------------------------------------------------------- assembler

/// Builds [`OomOutput`]s from kmsg records fed in order.
pub struct OomAssembler {
    page_size: u64,
    pending: Option<Box<Pending>>,
    group: Option<GroupContext>,
    last_seq: Option<u64>,
    lost_since_kill: bool,
    seen_header: bool,
    /// Where a `c` (continuation) record goes: the previous kernel record,
    /// when it was one printed with pr_cont.
    cont: Option<ContTarget>,
    stats: AssemblerStats,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContTarget {
    StatsHeader,
    Summary,
    GroupLine,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Header,
    Stats,
    Tasks,
    Summary,
}

struct Pending {
    seq: u64,
    ts_usec: u64,
    trigger: Trigger,
    gfp_mask: u64,
    gfp_flags: Vec<String>,
    order: i32,
    memory: Option<PageCounter>,
    swap: Option<PageCounter>,
    memory_swap: Option<PageCounter>,
    kmem: Option<PageCounter>,
    trigger_comm_raw: Vec<u8>,
    stats_header: Option<Vec<u8>>,
    stats: Vec<(String, u64)>,
    columns: Option<Vec<Column>>,
    tasks: Vec<OomTask>,
    summary: Option<Vec<u8>>,
    section: Section,
    cut: CutCounts,
}

struct GroupContext {
    report: Option<Arc<OomReport>>,
    chosen_pid: u32,
    /// Set by the "Tasks in ... memory.oom.group set" line.
    group: Option<(String, u64)>,
    /// That line while it may still get a continuation record.
    partial: Vec<u8>,
    partial_ts: u64,
    killed: Vec<u32>,
}

impl GroupContext {
    /// The group line, once `partial` holds all of it.
    fn take_group_line(&mut self) -> bool {
        let Some(path) = self
            .partial
            .strip_prefix(b"Tasks in ")
            .and_then(|r| r.strip_suffix(b" are going to be killed due to memory.oom.group set"))
        else {
            return false;
        };
        self.group = Some((super::path_string(cut_name(path).0), self.partial_ts));
        self.partial = Vec::new();
        true
    }
}

impl OomAssembler {
    /// `page_size`: the kernel's, for the task table's page counts
    /// (`sysconf(_SC_PAGESIZE)`; 4096 on x86-64).
    pub fn new(page_size: u64) -> Self {
        Self {
            page_size: page_size.max(1),
            pending: None,
            group: None,
            last_seq: None,
            lost_since_kill: false,
            seen_header: false,
            cont: None,
            stats: AssemblerStats::default(),
        }
    }

    pub fn stats(&self) -> &AssemblerStats {
        &self.stats
    }

    /// Records were lost outside the sequence numbers' view (the reader
    /// reopened the device, say): forget what was half read.
    pub fn reset(&mut self) {
        self.gap();
        self.last_seq = None;
    }

    fn gap(&mut self) {
        if self.pending.take().is_some() {
            self.stats.reports_dropped += 1;
        }
        self.group = None;
        self.cont = None;
        self.lost_since_kill = true;
        self.stats.gaps += 1;
    }

    /// Feeds the next record; at most one output per record.
    pub fn push(&mut self, rec: &KmsgRecord) -> Option<OomOutput> {
        self.stats.records += 1;
        if let Some(last) = self.last_seq
            && rec.seq != last.wrapping_add(1)
        {
            self.stats.lost_records += rec.seq.saturating_sub(last.wrapping_add(1));
            self.gap();
        }
        self.last_seq = Some(rec.seq);
        if !rec.is_kernel() {
            self.stats.non_kernel += 1;
            return None;
        }
        let cont = self.cont.take();
        if rec.continuation
            && let Some(target) = cont
        {
            self.continue_line(target, &rec.message);
            return None;
        }
        let line = if rec.message.len() > MAX_LINE_BYTES {
            self.stats.lines_cut += 1;
            &rec.message[..MAX_LINE_BYTES]
        } else {
            &rec.message[..]
        };
        self.line(rec, line)
    }

    fn continue_line(&mut self, target: ContTarget, more: &[u8]) {
        let slot = match (target, self.pending.as_deref_mut(), self.group.as_mut()) {
            (ContTarget::StatsHeader, Some(p), _) => p.stats_header.as_mut(),
            (ContTarget::Summary, Some(p), _) => p.summary.as_mut(),
            (ContTarget::GroupLine, _, Some(g)) => Some(&mut g.partial),
            _ => None,
        };
        if let Some(buf) = slot {
            let room = MAX_LINE_BYTES.saturating_sub(buf.len());
            if more.len() > room {
                self.stats.lines_cut += 1;
            }
            buf.extend_from_slice(&more[..more.len().min(room)]);
            self.cont = Some(target);
        }
        if target == ContTarget::GroupLine
            && let Some(g) = self.group.as_mut()
            && g.take_group_line()
        {
            self.cont = None;
        }
    }

    fn line(&mut self, rec: &KmsgRecord, line: &[u8]) -> Option<OomOutput> {
        for (prefix, scope) in KILL_PREFIXES {
            if let Some(rest) = line.strip_prefix(*prefix)
                && let Some(rest) = rest.strip_prefix(b": Killed process ")
            {
                return self.kill_line(rec, *scope, rest);
            }
        }
        if let Some(rest) = line.strip_prefix(b"oom_reaper: reaped process ") {
            return self.reaped(rec, rest);
        }
        if let Some(rest) = line.strip_prefix(b"oom_reaper: unable to reap pid:") {
            let (pid, comm) = match pid_and_paren_comm(rest, b"") {
                Some(v) => v,
                None => return self.malformed(),
            };
            return Some(OomOutput::ReapFailed { seq: rec.seq, ts_usec: rec.ts_usec, pid, comm: lossy(comm) });
        }
        // The comm comes first and is short: only the start of a line can
        // hold the header's words (and every line is looked at).
        const INVOKED: &[u8] = b" invoked oom-killer: gfp_mask=";
        static INVOKED_FINDER: LazyLock<memchr::memmem::FinderRev<'static>> = LazyLock::new(|| memchr::memmem::FinderRev::new(INVOKED));
        if let Some(at) = INVOKED_FINDER.rfind(&line[..line.len().min(MAX_COMM_BYTES + INVOKED.len())])
            && let Some(parsed) = parse_header_tail(&line[at + INVOKED.len()..])
        {
            self.header(rec, &line[..at], parsed);
            return None;
        }
        if let Some(rest) = line.strip_prefix(b"oom_kill_process: ")
            && let Some(n) = rest.strip_suffix(b" callbacks suppressed").and_then(parse_u64)
        {
            return Some(OomOutput::HeadersSuppressed { seq: rec.seq, ts_usec: rec.ts_usec, count: n });
        }
        if self.pending.is_none()
            && let Some(g) = self.group.as_mut()
            && line.starts_with(b"Tasks in ")
        {
            // pr_cont pieces: a `c` record may bring the rest.
            g.partial = line[..line.len().min(MAX_LINE_BYTES)].to_vec();
            g.partial_ts = rec.ts_usec;
            if g.take_group_line() {
                return None;
            }
            self.cont = Some(ContTarget::GroupLine);
            return None;
        }
        for (prefix, _) in KILL_PREFIXES {
            if let Some(rest) = line.strip_prefix(*prefix)
                && rest.starts_with(b": OOM victim ")
                && rest.ends_with(b" is already exiting. Skip killing the task")
            {
                self.stats.victims_already_exiting += 1;
                if self.pending.take().is_some() {
                    self.stats.reports_dropped += 1;
                }
                return None;
            }
        }
        let page_size = self.page_size;
        let p = self.pending.as_deref_mut()?;
        let outcome = p.report_line(line, page_size);
        match outcome {
            LineOutcome::Taken(cont) => self.cont = cont,
            LineOutcome::Malformed => self.stats.malformed += 1,
            LineOutcome::Foreign => {}
        }
        None
    }

    fn malformed(&mut self) -> Option<OomOutput> {
        self.stats.malformed += 1;
        None
    }

    fn header(&mut self, rec: &KmsgRecord, comm: &[u8], (gfp_mask, flags, order, adj): (u64, &[u8], i32, i32)) {
        if self.pending.take().is_some() {
            self.stats.reports_dropped += 1;
        }
        self.group = None;
        self.seen_header = true;
        let mut cut = CutCounts::default();
        let (comm, was_cut) = cut_name(comm);
        cut.names += u32::from(was_cut);
        let gfp_flags: Vec<String> = flags.split(|&b| b == b'|').filter(|f| !f.is_empty()).take(MAX_GFP_FLAGS).map(lossy).collect();
        self.pending = Some(Box::new(Pending {
            seq: rec.seq,
            ts_usec: rec.ts_usec,
            trigger: Trigger { comm: lossy(comm), oom_score_adj: adj, pid: None, uid: None },
            gfp_mask,
            gfp_flags,
            order,
            memory: None,
            swap: None,
            memory_swap: None,
            kmem: None,
            trigger_comm_raw: comm.to_vec(),
            stats_header: None,
            stats: Vec::new(),
            columns: None,
            tasks: Vec::new(),
            summary: None,
            section: Section::Header,
            cut,
        }));
    }

    fn reaped(&mut self, rec: &KmsgRecord, rest: &[u8]) -> Option<OomOutput> {
        // "PID (COMM), now anon-rss:NkB, file-rss:NkB, shmem-rss:NkB"
        let Some((pid, comm, tail)) = pid_comm_tail(rest, b"), now anon-rss:") else { return self.malformed() };
        let Some([anon, file, shmem]) = kb_fields(tail, [b"", b", file-rss:", b", shmem-rss:"]) else { return self.malformed() };
        self.stats.reaped += 1;
        Some(OomOutput::Reaped(OomReaped {
            seq: rec.seq,
            ts_usec: rec.ts_usec,
            pid,
            comm: lossy(cut_name(comm).0),
            anon_rss_bytes: anon,
            file_rss_bytes: file,
            shmem_rss_bytes: shmem,
        }))
    }

    fn kill_line(&mut self, rec: &KmsgRecord, scope: KillScope, rest: &[u8]) -> Option<OomOutput> {
        let Some((victim, comm_raw)) = parse_killed(rest) else {
            return self.malformed();
        };
        self.stats.kills += 1;
        let lost = std::mem::take(&mut self.lost_since_kill);

        // A member of the group kill the previous chosen victim started?
        let seen_header = self.seen_header;
        if let Some(g) = self.group.as_mut()
            && let Some((group, group_ts)) = g.group.clone()
            && self.pending.is_none()
            && rec.ts_usec.saturating_sub(group_ts) <= GROUP_WINDOW_USEC
        {
            if victim.pid == g.chosen_pid || g.killed.contains(&victim.pid) {
                self.stats.kills -= 1;
                self.stats.duplicate_kill_lines += 1;
                return None;
            }
            let membership = match &g.report {
                None => Some((None, Some(no_header(lost, seen_header)))),
                Some(r) if r.tasks.iter().any(|t| t.pid == victim.pid) => Some((Some(r.clone()), None)),
                // A table the reader cut, or none printed (vm.oom_dump_tasks=0):
                // a member, but not one the report can vouch for.
                Some(r) if r.cut.tasks > 0 || r.tasks.is_empty() => Some((None, Some(MissingReport::GroupMemberNotInTable))),
                // Not among the group's tasks: a kill of its own, whose
                // header was held back.
                Some(_) => None,
            };
            if let Some((report, missing)) = membership {
                if g.killed.len() < MAX_GROUP_PIDS {
                    g.killed.push(victim.pid);
                }
                self.stats.group_members += 1;
                return Some(self.emit(rec, scope, victim, VictimRole::GroupMember { group }, report, missing));
            }
        }

        let (report, missing) = match self.pending.take() {
            Some(p) => match p.finish(&victim, &comm_raw) {
                Some(r) => (Some(Arc::new(r)), None),
                None => {
                    self.stats.reports_dropped += 1;
                    (None, Some(MissingReport::NotThisVictim))
                }
            },
            None => (None, Some(no_header(lost, self.seen_header))),
        };
        self.group = Some(GroupContext {
            report: report.clone(),
            chosen_pid: victim.pid,
            group: None,
            partial: Vec::new(),
            partial_ts: 0,
            killed: Vec::new(),
        });
        Some(self.emit(rec, scope, victim, VictimRole::Chosen, report, missing))
    }

    fn emit(
        &mut self,
        rec: &KmsgRecord,
        scope: KillScope,
        victim: KilledProcess,
        role: VictimRole,
        report: Option<Arc<OomReport>>,
        missing: Option<MissingReport>,
    ) -> OomOutput {
        match missing {
            None => self.stats.kills_with_report += 1,
            Some(MissingReport::RateLimited) => self.stats.kills_rate_limited += 1,
            Some(MissingReport::RecordsLost) => self.stats.kills_records_lost += 1,
            Some(MissingReport::BeforeFirstHeader) => self.stats.kills_before_first_header += 1,
            Some(MissingReport::NotThisVictim) => self.stats.kills_not_this_victim += 1,
            Some(MissingReport::GroupMemberNotInTable) => self.stats.group_members_unverified += 1,
        }
        if let Some(r) = &report
            && matches!(role, VictimRole::Chosen)
        {
            self.stats.tasks_cut += u64::from(r.cut.tasks);
            self.stats.stats_cut += u64::from(r.cut.stats);
        }
        OomOutput::Kill(Box::new(OomKill { seq: rec.seq, ts_usec: rec.ts_usec, scope, victim, role, report, missing }))
    }
}

/// Why a kill line came without a header before it.
fn no_header(records_lost: bool, seen_header: bool) -> MissingReport {
    if records_lost {
        MissingReport::RecordsLost
    } else if !seen_header {
        MissingReport::BeforeFirstHeader
    } else {
        MissingReport::RateLimited
    }
}

enum LineOutcome {
    /// Part of the report; maybe a pr_cont line a `c` record may extend.
    Taken(Option<ContTarget>),
    Malformed,
    /// Some other kernel message printed in the middle of the report.
    Foreign,
}

impl Pending {
    fn report_line(&mut self, line: &[u8], page_size: u64) -> LineOutcome {
        if let Some(rest) = line.strip_prefix(b"CPU: ") {
            if self.trigger.pid.is_none()
                && let Some((pid, uid, comm_rest)) = parse_cpu_line(rest)
                // Another stack dump in between is not the trigger's.
                && comm_rest.starts_with(&self.trigger_comm_raw)
                && comm_rest.get(self.trigger_comm_raw.len()) == Some(&b' ')
            {
                self.trigger.pid = Some(pid);
                self.trigger.uid = uid;
            }
            return LineOutcome::Taken(None);
        }
        for (name, slot) in [
            (&b"memory: usage "[..], &mut self.memory),
            (b"swap: usage ", &mut self.swap),
            (b"memory+swap: usage ", &mut self.memory_swap),
            (b"kmem: usage ", &mut self.kmem),
        ] {
            if let Some(rest) = line.strip_prefix(name) {
                return match parse_counter(rest) {
                    Some(c) => {
                        *slot = Some(c);
                        LineOutcome::Taken(None)
                    }
                    None => LineOutcome::Malformed,
                };
            }
        }
        if let Some(rest) = line.strip_prefix(b"Memory cgroup stats for ") {
            self.stats_header = Some(rest.to_vec());
            self.section = Section::Stats;
            return LineOutcome::Taken(Some(ContTarget::StatsHeader));
        }
        if line == b"Tasks state (memory values in pages):" {
            self.section = Section::Tasks;
            return LineOutcome::Taken(None);
        }
        if let Some(rest) = line.strip_prefix(b"oom-kill:constraint=") {
            self.summary = Some(rest.to_vec());
            self.section = Section::Summary;
            return LineOutcome::Taken(Some(ContTarget::Summary));
        }
        if line.starts_with(b"[") {
            if matches!(self.section, Section::Summary) {
                return LineOutcome::Foreign;
            }
            if let Some(cols) = parse_columns(line) {
                self.columns = Some(cols);
                self.section = Section::Tasks;
                return LineOutcome::Taken(None);
            }
            if let Some(cols) = &self.columns {
                return match parse_task(line, cols, page_size) {
                    Some((task, was_cut)) => {
                        if self.tasks.len() < MAX_TASKS {
                            self.cut.names += u32::from(was_cut);
                            self.tasks.push(task);
                        } else {
                            self.cut.tasks = self.cut.tasks.saturating_add(1);
                        }
                        LineOutcome::Taken(None)
                    }
                    None if line.get(1).is_some_and(|b| *b == b' ' || b.is_ascii_digit()) => LineOutcome::Malformed,
                    None => LineOutcome::Foreign,
                };
            }
            return LineOutcome::Foreign;
        }
        if matches!(self.section, Section::Stats) {
            return self.stats_record(line);
        }
        LineOutcome::Foreign
    }

    fn stats_record(&mut self, record: &[u8]) -> LineOutcome {
        // 6.1 prints memory.stat in one record, lines separated by newlines,
        // cut by the kernel at 992 bytes; 6.12+ one record per line.
        let multi = record.contains(&b'\n');
        let mut lines: Vec<&[u8]> = record.split(|&b| b == b'\n').collect();
        if multi && record.len() >= KERNEL_6_1_LINE_MAX - 2 {
            // The last line may be cut anywhere, even inside its number.
            lines.pop();
            self.cut.stats_cut_by_kernel = true;
        }
        let mut took = false;
        for l in lines {
            let Some((key, value)) = parse_stat(l) else {
                if !multi {
                    return LineOutcome::Foreign;
                }
                continue;
            };
            took = true;
            if self.stats.len() < MAX_STAT_KEYS {
                self.stats.push((lossy(key), value));
            } else {
                self.cut.stats = self.cut.stats.saturating_add(1);
            }
        }
        if took { LineOutcome::Taken(None) } else { LineOutcome::Malformed }
    }

    /// The report, when its summary names `victim`; None when it names
    /// another task or cannot be read.
    fn finish(mut self: Box<Self>, victim: &KilledProcess, victim_comm: &[u8]) -> Option<OomReport> {
        let raw = self.summary.take()?;
        let stats_cgroup = self.stats_header.take().and_then(|h| h.strip_suffix(b":").map(<[u8]>::to_vec));
        let s = parse_summary(&raw, victim_comm, victim.pid, victim.uid, stats_cgroup.as_deref())?;
        let mut names = 0u32;
        // Cgroup paths as the daemon keys cgroups everywhere else (invalid
        // UTF-8 as `\xNN`), so that a report joins its kill and its cgroup
        // is the tracked one; other names as text.
        let mut name = |b: &[u8], cgroup_path: bool| {
            let (b, c) = cut_name(b);
            names += u32::from(c);
            if cgroup_path { super::path_string(b) } else { lossy(b) }
        };
        let summary = OomSummary {
            constraint: name(s.constraint, false),
            nodemask: s.nodemask.map(|b| name(b, false)),
            cpuset: s.cpuset.map(|b| name(b, true)),
            mems_allowed: s.mems_allowed.map(|b| name(b, false)),
            oom_memcg: s.oom_memcg.map(|b| name(b, true)),
            global_oom: s.global_oom,
            task_memcg: s.task_memcg.map(|b| name(b, true)),
            task: name(victim_comm, false),
            pid: s.pid,
            uid: s.uid,
        };
        let stats_cgroup = stats_cgroup.as_deref().map(|b| name(b, true));
        self.cut.names += names;
        let memcg = self.memory.map(|memory| MemcgCounters { memory, swap: self.swap, memory_swap: self.memory_swap, kmem: self.kmem });
        Some(OomReport {
            seq: self.seq,
            ts_usec: self.ts_usec,
            trigger: self.trigger,
            gfp_mask: self.gfp_mask,
            gfp_flags: self.gfp_flags,
            order: self.order,
            memcg,
            stats_cgroup,
            stats: self.stats,
            tasks: self.tasks,
            summary,
            cut: self.cut,
        })
    }
}

/// 6.1's LOG_LINE_MAX (1024 - 32): the longest text of one record.
const KERNEL_6_1_LINE_MAX: usize = 992;

// ------------------------------------------------------------ line parsers

/// "0xcc0(GFP_KERNEL), order=0, oom_score_adj=0" -> mask, flags, order, adj.
fn parse_header_tail(rest: &[u8]) -> Option<(u64, &[u8], i32, i32)> {
    let open = rest.iter().position(|&b| b == b'(')?;
    let mask = parse_hex(&rest[..open])?;
    let close = open + rest[open..].iter().position(|&b| b == b')')?;
    let flags = &rest[open + 1..close];
    let tail = rest[close + 1..].strip_prefix(b", order=")?;
    let comma = tail.iter().position(|&b| b == b',')?;
    let order = parse_i32(&tail[..comma])?;
    let adj = parse_i32(tail[comma..].strip_prefix(b", oom_score_adj=")?)?;
    Some((mask, flags, order, adj))
}

/// "%#x": "0xcc0", or "0" for zero.
fn parse_hex(s: &[u8]) -> Option<u64> {
    if s == b"0" {
        return Some(0);
    }
    let digits = s.strip_prefix(b"0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.strip_prefix(b"-") {
        Some(digits) => parse_u64(digits).filter(|&v| v <= i64::MAX as u64 + 1).map(|v| (v as i64).wrapping_neg()),
        None => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

fn parse_i32(s: &[u8]) -> Option<i32> {
    parse_i64(s).and_then(|v| i32::try_from(v).ok())
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

fn kib(v: u64) -> Option<u64> {
    v.checked_mul(1024)
}

/// "1 UID: 0 PID: 30835 Comm: memhog Not tainted ..." (6.10+) or
/// "1 PID: 30835 Comm: memhog ..." -> pid, uid, text from the comm on.
fn parse_cpu_line(rest: &[u8]) -> Option<(u32, Option<u32>, &[u8])> {
    let sp = rest.iter().position(|&b| b == b' ')?;
    parse_u32(&rest[..sp])?;
    let mut rest = &rest[sp + 1..];
    let mut uid = None;
    if let Some(r) = rest.strip_prefix(b"UID: ") {
        let sp = r.iter().position(|&b| b == b' ')?;
        uid = Some(parse_u32(&r[..sp])?);
        rest = &r[sp + 1..];
    }
    let r = rest.strip_prefix(b"PID: ")?;
    let sp = r.iter().position(|&b| b == b' ')?;
    let pid = parse_u32(&r[..sp])?;
    let comm = r[sp + 1..].strip_prefix(b"Comm: ")?;
    Some((pid, uid, comm))
}

/// "usage 65536kB, limit 65536kB, failcnt 19" (the name already stripped).
fn parse_counter(rest: &[u8]) -> Option<PageCounter> {
    let (usage, rest) = split_once(rest, b"kB, limit ")?;
    let (limit, failcnt) = split_once(rest, b"kB, failcnt ")?;
    Some(PageCounter { usage_bytes: kib(parse_u64(usage)?)?, limit_bytes: kib(parse_u64(limit)?)?, failcnt: parse_u64(failcnt)? })
}

/// "anon 12345": a memory.stat line.
fn parse_stat(line: &[u8]) -> Option<(&[u8], u64)> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let key = &line[..sp];
    if key.is_empty() || key.len() > 64 || !key.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return None;
    }
    Some((key, parse_u64(&line[sp + 1..])?))
}

/// What a task table column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Uid,
    Tgid,
    TotalVm,
    Rss,
    RssAnon,
    RssFile,
    RssShmem,
    PgtablesBytes,
    Swapents,
    OomScoreAdj,
    /// A column this parser does not know (older kernels' nr_ptes, ...).
    Other,
}

/// "[  pid  ]   uid  tgid total_vm      rss ... oom_score_adj name".
fn parse_columns(line: &[u8]) -> Option<Vec<Column>> {
    let close = line.iter().position(|&b| b == b']')?;
    if line[1..close].split(|&b| b == b' ').filter(|w| !w.is_empty()).collect::<Vec<_>>() != [b"pid"] {
        return None;
    }
    let words: Vec<&[u8]> = line[close + 1..].split(|&b| b == b' ').filter(|w| !w.is_empty()).collect();
    let (last, numeric) = words.split_last()?;
    if *last != b"name" || numeric.len() > 16 {
        return None;
    }
    let cols: Vec<Column> = numeric
        .iter()
        .map(|w| match *w {
            b"uid" => Column::Uid,
            b"tgid" => Column::Tgid,
            b"total_vm" => Column::TotalVm,
            b"rss" => Column::Rss,
            b"rss_anon" => Column::RssAnon,
            b"rss_file" => Column::RssFile,
            b"rss_shmem" => Column::RssShmem,
            b"pgtables_bytes" => Column::PgtablesBytes,
            b"swapents" => Column::Swapents,
            b"oom_score_adj" => Column::OomScoreAdj,
            _ => Column::Other,
        })
        .collect();
    // Without these a row says too little to be worth keeping.
    for needed in [Column::Uid, Column::Tgid, Column::TotalVm, Column::Rss, Column::OomScoreAdj] {
        if !cols.contains(&needed) {
            return None;
        }
    }
    Some(cols)
}

/// "[  30835]     0 30835    66282 ... 0 memhog": the name is everything
/// after the one space that follows the last number (it may hold spaces).
fn parse_task(line: &[u8], cols: &[Column], page_size: u64) -> Option<(OomTask, bool)> {
    let close = line.iter().position(|&b| b == b']')?;
    let pid = parse_u32(trim_spaces(&line[1..close]))?;
    let mut rest = &line[close + 1..];
    let mut task = OomTask {
        pid,
        uid: 0,
        tgid: 0,
        total_vm_bytes: 0,
        rss_bytes: 0,
        rss_anon_bytes: None,
        rss_file_bytes: None,
        rss_shmem_bytes: None,
        pgtables_bytes: None,
        swap_bytes: None,
        oom_score_adj: 0,
        name: String::new(),
    };
    let pages = |v: i64| u64::try_from(v).ok()?.checked_mul(page_size);
    for col in cols {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let v = parse_i64(&rest[..end])?;
        rest = &rest[end..];
        match col {
            Column::Uid => task.uid = u32::try_from(v).ok()?,
            Column::Tgid => task.tgid = u32::try_from(v).ok()?,
            Column::TotalVm => task.total_vm_bytes = pages(v)?,
            Column::Rss => task.rss_bytes = pages(v)?,
            Column::RssAnon => task.rss_anon_bytes = Some(pages(v)?),
            Column::RssFile => task.rss_file_bytes = Some(pages(v)?),
            Column::RssShmem => task.rss_shmem_bytes = Some(pages(v)?),
            // The kernel prints this one in bytes, with a signed format.
            Column::PgtablesBytes => task.pgtables_bytes = Some(u64::try_from(v).ok()?),
            Column::Swapents => task.swap_bytes = Some(pages(v)?),
            Column::OomScoreAdj => task.oom_score_adj = i32::try_from(v).ok()?,
            Column::Other => {}
        }
    }
    let name = rest.strip_prefix(b" ")?;
    let (name, cut) = cut_name(name);
    task.name = lossy(name);
    Some((task, cut))
}

/// "30835 (memhog) total-vm:265128kB, anon-rss:65280kB, file-rss:1716kB,
/// shmem-rss:0kB[, UID:0 pgtables:176kB oom_score_adj:0]". Returns the
/// values and the comm's raw bytes.
fn parse_killed(rest: &[u8]) -> Option<(KilledProcess, Vec<u8>)> {
    let (pid, comm, tail) = pid_comm_tail(rest, b") total-vm:")?;
    // The comm ends at the last ") total-vm:": whatever follows it is the
    // kernel's fixed text and numbers, which never contain it.
    let (sizes, extra) = match split_once(tail, b", UID:") {
        Some((sizes, extra)) => (sizes, Some(extra)),
        None => (tail, None),
    };
    let [total_vm, anon, file, shmem] = kb_fields(sizes, [b"", b", anon-rss:", b", file-rss:", b", shmem-rss:"])?;
    let (uid, pgtables, adj) = match extra {
        Some(extra) => {
            let (uid, rest) = split_once(extra, b" pgtables:")?;
            let (pgtables, adj) = split_once(rest, b"kB oom_score_adj:")?;
            (Some(parse_u32(uid)?), Some(kib(parse_u64(pgtables)?)?), Some(parse_i32(adj)?))
        }
        None => (None, None, None),
    };
    let (comm_cut, _) = cut_name(comm);
    Some((
        KilledProcess {
            pid,
            comm: lossy(comm_cut),
            total_vm_bytes: total_vm,
            anon_rss_bytes: anon,
            file_rss_bytes: file,
            shmem_rss_bytes: shmem,
            uid,
            pgtables_bytes: pgtables,
            oom_score_adj: adj,
        },
        comm.to_vec(),
    ))
}

/// "PID (COMM)<end>TAIL": the comm is taken up to the last `end`.
fn pid_comm_tail<'a>(rest: &'a [u8], end: &[u8]) -> Option<(u32, &'a [u8], &'a [u8])> {
    let sp = rest.iter().position(|&b| b == b' ')?;
    let pid = parse_u32(&rest[..sp])?;
    let after = rest[sp + 1..].strip_prefix(b"(")?;
    let at = rfind(after, end)?;
    Some((pid, &after[..at], &after[at + end.len()..]))
}

/// "PID (COMM)" + exactly `tail` (oom_reaper: unable to reap pid:N (C)).
fn pid_and_paren_comm<'a>(rest: &'a [u8], tail: &[u8]) -> Option<(u32, &'a [u8])> {
    let body = rest.strip_suffix(tail)?.strip_suffix(b")")?;
    let sp = body.iter().position(|&b| b == b' ')?;
    let pid = parse_u32(&body[..sp])?;
    Some((pid, body[sp + 1..].strip_prefix(b"(")?))
}

/// "NkB<sep1>NkB<sep2>NkB...": each field after its separator (the first
/// separator is what comes before the first number), each ending in "kB".
fn kb_fields<const N: usize>(mut s: &[u8], seps: [&[u8]; N]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (i, sep) in seps.iter().enumerate() {
        s = s.strip_prefix(*sep)?;
        let kb = s.windows(2).position(|w| w == b"kB")?;
        out[i] = kib(parse_u64(&s[..kb])?)?;
        s = &s[kb + 2..];
    }
    s.is_empty().then_some(out)
}

/// The summary's parts, borrowed from the line.
#[derive(Clone, Copy)]
struct SummaryParts<'a> {
    constraint: &'a [u8],
    nodemask: Option<&'a [u8]>,
    cpuset: Option<&'a [u8]>,
    mems_allowed: Option<&'a [u8]>,
    oom_memcg: Option<&'a [u8]>,
    global_oom: bool,
    task_memcg: Option<&'a [u8]>,
    pid: u32,
    uid: u32,
}

/// The "oom-kill:constraint=" line (prefix stripped), for the given victim:
/// None unless it ends in ",task=<comm>,pid=<pid>,uid=<uid>" for exactly
/// this victim and the rest has exactly one reading.
///
/// The line is "C,nodemask=NL[,cpuset=NAME,mems_allowed=NL](,oom_memcg=P|,global_oom)[,task_memcg=P]"
/// then the task. NAME and the paths are users' names and may contain any
/// of the separators, so the parse tries every split and insists on one:
/// `stats_cgroup` (from "Memory cgroup stats for P:") pins oom_memcg, and
/// task_memcg must be oom_memcg or below it.
fn parse_summary<'a>(
    line: &'a [u8],
    comm: &[u8],
    pid: u32,
    uid: Option<u32>,
    stats_cgroup: Option<&[u8]>,
) -> Option<SummaryParts<'a>> {
    let (head, uid_seen) = strip_task(line, comm, pid, uid)?;
    let Head { constraint, nodemask, rest } = split_head(head)?;
    let base = SummaryParts {
        constraint,
        nodemask,
        cpuset: None,
        mems_allowed: None,
        oom_memcg: None,
        global_oom: false,
        task_memcg: None,
        pid,
        uid: uid_seen,
    };
    let mut found = None;
    let mut readings = 0usize;
    for start in memcg_starts(rest)? {
        for reading in readings_at(rest, start, stats_cgroup, base) {
            readings += 1;
            found = Some(reading);
        }
        if readings > 1 {
            return None;
        }
    }
    found
}

/// What precedes ",task=<comm>,pid=<pid>,uid=<uid>", and the uid, when the
/// tail names exactly this victim.
fn strip_task<'a>(line: &'a [u8], comm: &[u8], pid: u32, uid: Option<u32>) -> Option<(&'a [u8], u32)> {
    let u = rfind(line, b",uid=")?;
    let uid_seen = parse_u32(&line[u + 5..])?;
    if uid.is_some_and(|uid| uid != uid_seen) {
        return None;
    }
    let p = rfind(&line[..u], b",pid=")?;
    if parse_u32(&line[p + 5..u])? != pid {
        return None;
    }
    let before = &line[..p];
    let task_at = before.len().checked_sub(comm.len() + b",task=".len())?;
    if &before[task_at..task_at + 6] != b",task=" || &before[task_at + 6..] != comm {
        return None;
    }
    Some((&before[..task_at], uid_seen))
}

/// The start of the summary, "C,nodemask=NL", and what follows it.
struct Head<'a> {
    constraint: &'a [u8],
    /// None for "(null)".
    nodemask: Option<&'a [u8]>,
    rest: &'a [u8],
}

fn split_head(head: &[u8]) -> Option<Head<'_>> {
    let comma = head.iter().position(|&b| b == b',')?;
    let constraint = &head[..comma];
    if constraint.is_empty() || !constraint.iter().all(|&b| b.is_ascii_uppercase() || b == b'_') {
        return None;
    }
    let after = head[comma..].strip_prefix(b",nodemask=")?;
    Some(match after.strip_prefix(b"(null)") {
        Some(rest) => Head { constraint, nodemask: None, rest },
        None => {
            let n = nodelist_len(after);
            Head { constraint, nodemask: Some(&after[..n]), rest: &after[n..] }
        }
    })
}

/// Where the memcg part may start: at each ",oom_memcg=" or ",global_oom",
/// or at the end (there is none). None past MAX_SUMMARY_CANDIDATES: a line
/// with that many ways to read it is called ambiguous unread.
fn memcg_starts(rest: &[u8]) -> Option<Vec<usize>> {
    let mut starts: Vec<usize> = memchr::memmem::find_iter(rest, b",oom_memcg=")
        .chain(memchr::memmem::find_iter(rest, b",global_oom"))
        .take(MAX_SUMMARY_CANDIDATES + 1)
        .collect();
    starts.push(rest.len());
    (starts.len() <= MAX_SUMMARY_CANDIDATES).then_some(starts)
}

/// Every consistent reading of `rest` with its memcg part starting at `start`.
fn readings_at<'a>(rest: &'a [u8], start: usize, stats_cgroup: Option<&[u8]>, base: SummaryParts<'a>) -> Vec<SummaryParts<'a>> {
    // Before it: nothing, or ",cpuset=NAME,mems_allowed=NL".
    let (cpuset, mems_allowed) = match &rest[..start] {
        b"" => (None, None),
        part => match cpuset_part(part) {
            Some((name, nl)) => (Some(name), Some(nl)),
            None => return Vec::new(),
        },
    };
    let base = SummaryParts { cpuset, mems_allowed, ..base };
    let memcg = &rest[start..];
    if memcg.is_empty() {
        // No memcg part: memory cgroups compiled out.
        vec![base]
    } else if let Some(after) = memcg.strip_prefix(b",global_oom") {
        global_oom_reading(after, base).into_iter().collect()
    } else if let Some(paths) = memcg.strip_prefix(b",oom_memcg=") {
        oom_memcg_readings(paths, stats_cgroup, base)
    } else {
        Vec::new()
    }
}

/// After ",global_oom": nothing, or ",task_memcg=/PATH".
fn global_oom_reading<'a>(after: &'a [u8], base: SummaryParts<'a>) -> Option<SummaryParts<'a>> {
    let task_memcg = match after {
        b"" => None,
        _ => match after.strip_prefix(b",task_memcg=") {
            Some(p) if p.starts_with(b"/") => Some(p),
            _ => return None,
        },
    };
    Some(SummaryParts { global_oom: true, task_memcg, ..base })
}

/// After ",oom_memcg=": "P,task_memcg=P", split everywhere it can be (or
/// only after `stats_cgroup`, when known).
fn oom_memcg_readings<'a>(paths: &'a [u8], stats_cgroup: Option<&[u8]>, base: SummaryParts<'a>) -> Vec<SummaryParts<'a>> {
    let splits: Vec<usize> = match stats_cgroup {
        Some(known) => {
            if paths.starts_with(known) && paths[known.len()..].starts_with(b",task_memcg=") {
                vec![known.len()]
            } else {
                return Vec::new();
            }
        }
        None => memchr::memmem::find_iter(paths, b",task_memcg=").take(MAX_SUMMARY_CANDIDATES).collect(),
    };
    let mut out = Vec::new();
    for at in splits {
        let (oom_memcg, task_memcg) = (&paths[..at], &paths[at + b",task_memcg=".len()..]);
        // The victim is in the cgroup that ran out, or below it.
        let inside = task_memcg == oom_memcg
            || oom_memcg == b"/"
            || (task_memcg.starts_with(oom_memcg) && task_memcg.get(oom_memcg.len()) == Some(&b'/'));
        if oom_memcg.starts_with(b"/") && task_memcg.starts_with(b"/") && inside {
            out.push(SummaryParts { oom_memcg: Some(oom_memcg), task_memcg: Some(task_memcg), ..base });
        }
    }
    out
}

/// ",cpuset=NAME,mems_allowed=NL" (the leading comma included).
fn cpuset_part(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.strip_prefix(b",cpuset=")?;
    let at = rfind(s, b",mems_allowed=")?;
    let (name, nl) = (&s[..at], &s[at + b",mems_allowed=".len()..]);
    // A cgroup leaf name: "/" for the root, never a slash otherwise.
    let name_ok = !name.is_empty() && (name == b"/" || !name.contains(&b'/'));
    (name_ok && nodelist_len(nl) == nl.len()).then_some((name, nl))
}

/// Length of the node list ("0", "0-3,5") at the start of `s`.
fn nodelist_len(s: &[u8]) -> usize {
    let mut i = 0;
    loop {
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return i;
        }
        // A separator belongs to the list only when a number follows it.
        match s.get(i) {
            Some(b',' | b'-') if s.get(i + 1).is_some_and(u8::is_ascii_digit) => i += 1,
            _ => return i,
        }
    }
}

fn split_once<'a>(s: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = find(s, sep)?;
    Some((&s[..at], &s[at + sep.len()..]))
}

fn find(s: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(s, needle)
}

fn rfind(s: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(s, needle)
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ').map_or(start, |e| e + 1);
    &s[start..end]
}

fn cut_name(s: &[u8]) -> (&[u8], bool) {
    if s.len() > MAX_NAME_BYTES { (&s[..MAX_NAME_BYTES], true) } else { (s, false) }
}

fn pairs_as_map<S: serde::Serializer>(pairs: &[(String, u64)], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

fn lossy(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

#[cfg(test)]
#[path = "oom_report_tests.rs"]
mod tests;
