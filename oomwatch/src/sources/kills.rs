//! Explains a kill: the victim and the task that triggered it, the memory
//! cgroup that was hit (the kernel's own answer where readable, else the
//! limit-hit counters along the victim's ancestry), usage and limit at the
//! kill, the workload names, the history that led there, and what this
//! kernel could not tell.
//!
//! Usage, limits and limit-hit counters of the victim's ancestry come in
//! the kill record, read by the kernel program at the moment of the kill
//! (`kernel::decode::memcg_chain`): no file is read on the kill path. Where
//! the kernel could not read them (no BTF, a hierarchy deeper than the
//! record holds), the missing cgroups' files are read right after the kill.

use std::{path::PathBuf, sync::Arc, time::Instant};

use oomwatch_common::oom::{OomKillRecord, victim_field};

use super::{
    resolve::CgroupResolver,
    kernel_report::{ReportedKill, ReportedVictims},
    victim_cgroup::{Fallbacks, VictimCgroup, read_proc, without_the_kernel},
};
use crate::{
    kernel::{
        clock::{self, KernelClock},
        decode::{MemcgAtKill, MemcgChain, comm_str, memcg_chain, page_size},
    },
    model::{
        KillClues, Model,
        incidents::KillSeen,
        unplaced::UnplacedKill,
        limit::{ChainLink, Verdict, ancestry, find_limit},
    },
    readers::{
        BootTime, CgroupLayout, CgroupVersion, Hierarchy, ProcCgroup, read_limit, read_limit_hits, read_usage,
        runtime::{MainProcess, main_process},
    },
    wire::{
        Constraint, Event, EventBody, IncidentRef, IncidentVictim, KernelReport, KillNotice, LimitFile, OomControl, OomKill, Trigger, Victim, printed_whole, rfc3339, why,
    },
};

/// The file a memory cgroup's limit is set in, for the `why` of a kill.
pub fn limit_file(layout: Option<&CgroupLayout>) -> LimitFile {
    layout.map(|l| match l.memory_version {
        CgroupVersion::V2 => "memory.max",
        CgroupVersion::V1 => "memory.limit_in_bytes",
    })
}

/// How much of the victim cgroup's history goes into each kill event.
const RAMP_SECONDS: u32 = 60;

const KIB: u64 = 1024;

/// How long a kill whose cgroup neither /proc nor the counters could tell
/// waits for the kernel's report of it (printed before the kill record;
/// read by a thread of lower priority, which sleeps 2 ms to read a report
/// in one go). Only without BTF, and only then.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Files opened on the kill path (cgroupfs, procfs): what
/// `--log-level debug` reports per kill.
#[derive(Default)]
struct FileReads(u32);

/// Everything a kill explanation reads.
pub struct KillExplainer {
    pub resolver: Arc<CgroupResolver>,
    pub clock: Arc<KernelClock>,
    pub model: Arc<Model>,
    pub layout: Option<CgroupLayout>,
    /// `enum oom_constraint` from BTF: value -> name.
    pub oom_constraints: Vec<(u32, String)>,
    pub proc_root: PathBuf,
    /// The victims' cgroups the kernel's reports named, for kills whose
    /// cgroup nothing else could tell.
    pub reported_victims: Arc<ReportedVictims>,
    /// Test-only (`--inject-victim-gone`): /proc is not asked, as when
    /// the victim was reaped before it could be.
    pub inject_victim_gone: bool,
    /// Test-only (`--inject-report-late`): the kernel's report is not
    /// waited for, as when it comes after the kill path's wait.
    pub inject_report_late: bool,
}

impl KillExplainer {
    /// The event for a kill record, explained; `now` is when it was read.
    pub fn explain(&self, r: &OomKillRecord, now: Instant) -> Event {
        let started = Instant::now();
        let mut files = FileReads::default();
        // Before anything else: the victim is exiting already.
        let proc = self.victim_cgroup_needs_proc(r).then(|| self.read_victim_proc(r, &mut files));
        let has = |bit| r.present & bit != 0;
        let victim = victim_of(r);
        let trigger = self.trigger_of(r);
        let reported = Reported::new();
        let found = self.victim_cgroup(r, trigger.cgroup.as_deref(), proc, &reported, &mut files);
        let (cgroup_id, attribution, cgroup_from) = (found.id, found.attribution, found.from);
        let chain = memcg_chain(r, page_size());
        let path_known = found.path.is_some();
        let cgroup = found.path.unwrap_or_else(|| "unknown".to_owned());
        let history = self.model.ramp(&cgroup, RAMP_SECONDS, now);
        let oom_control = has(victim_field::OOM_CONTROL).then(|| self.oom_control(r));
        // The kernel's own answer, where readable; else inferred from counters.
        let verdict = match &oom_control {
            Some(oc) => self.kernel_verdict(r, oc, chain.as_ref(), &mut files),
            None => {
                let evidence = KernelEvidence {
                    memcg: kernel_memcg(r),
                    at: clock::instant_of(r.header.ktime_ns),
                    chain: chain.as_ref(),
                    report: &|| self.reported(r, &reported),
                };
                if path_known {
                    self.limit_verdict(&cgroup, cgroup_id, evidence, now, &mut files)
                } else {
                    // No path to read: only the kernel can say.
                    kernel_only_verdict(&evidence, |id| self.resolver.resolve(Hierarchy::Memory, id))
                }
            }
        };
        let mut unavailable = unavailable_groups(r);
        unavailable.extend(found.unavailable);
        // Names and the container's init pid were looked up when the cgroup
        // appeared: nothing is read here.
        let (workload, init_pid) = self.model.workload(&cgroup);
        let main_process = is_main_process(init_pid, &victim);
        // Held for the kernel log's word only while it is read: with no
        // reader, nothing will place the kill later.
        let placed = path_known && verdict.constraint != Constraint::Unknown;
        if placed || !self.reported_victims.reading() {
            self.model.record_workload_kill(&cgroup, verdict.constraint, victim.comm.as_deref(), &workload, main_process, now);
        } else {
            self.model.record_unplaced_kill(UnplacedKill {
                victim_pid: victim.pid,
                ktime_ns: Some(r.header.ktime_ns),
                cgroup: cgroup.clone(),
                constraint: verdict.constraint,
                victim_comm: victim.comm.clone(),
                workload: workload.clone(),
                main_process,
                at: now,
            });
        }
        let incident = self.join_incident(r.header.ktime_ns, &trigger, &verdict, &victim, &cgroup, oom_control.is_some(), now);
        let throttled_for_s = self.model.throttled_for(&cgroup, now).map(|d| d.as_secs_f64());
        let mut kill = Box::new(OomKill {
                victim,
                trigger,
                attribution,
                constraint: verdict.constraint,
                limit_cgroup: verdict.limit_cgroup,
                limit_cgroup_usage_bytes: verdict.usage_bytes,
                limit_bytes: verdict.limit_bytes,
                workload,
                main_process,
                history,
                oom_control,
                unavailable,
                cgroup_id,
                cgroup_from,
                exit_latency_ms: None,
                why: None,
                kernel_report: None,
                incident: Some(incident),
                throttled_for_s,
                top_consumers: Vec::new(),
                limit_history: None,
                composition: None,
        });
        super::holders::who_used(&self.model, &mut kill, &cgroup, RAMP_SECONDS, now);
        kill.why = why(&kill, limit_file(self.layout.as_ref()));
        let body = EventBody::OomKill(kill);
        let event = Event::new(body, rfc3339(self.clock.wall_time(r.header.ktime_ns)), cgroup, Some(r.header.ktime_ns));
        // The kill path's own cost, for `--log-level debug` and the tests
        // that check no file is read on it.
        log::debug!(
            "kill of pid {}: explained in {} us, {} cgroupfs/procfs files read; usage and limits {}",
            r.victim_pid,
            started.elapsed().as_micros(),
            files.0,
            match &chain {
                Some(c) if c.complete => "from the kernel at the kill",
                Some(_) => "from the kernel at the kill, and cgroup files above what it read",
                None => "from cgroup files",
            }
        );
        event
    }

    /// The OOM-killer invocation the kill belongs to (a group kill's
    /// victims share one): see `model::incidents`.
    #[allow(clippy::too_many_arguments)]
    fn join_incident(
        &self,
        ktime_ns: u64,
        trigger: &Trigger,
        verdict: &Verdict,
        victim: &Victim,
        cgroup: &str,
        has_oom_control: bool,
        now: Instant,
    ) -> IncidentRef {
        let kill = KillSeen {
            ktime_ns,
            trigger: trigger.clone(),
            constraint: verdict.constraint,
            limit_cgroup: verdict.limit_cgroup.clone(),
            victim: IncidentVictim { pid: victim.pid, comm: victim.comm.clone(), cgroup: cgroup.to_owned() },
            group_kills_possible: self.layout.as_ref().is_some_and(|l| l.memory_version == CgroupVersion::V2),
            starts_invocation: has_oom_control,
        };
        self.model.join_incident(kill, now)
    }

    /// Whether the kernel program read neither the victim's memcg nor,
    /// the victim being the trigger, the trigger's: /proc must be asked.
    fn victim_cgroup_needs_proc(&self, r: &OomKillRecord) -> bool {
        let read_task = kernel_memcg(r).is_some();
        let read_trigger = r.present & victim_field::TRIGGER_MEMCG != 0 && r.victim_pid == r.trigger_tgid;
        !read_task && !read_trigger
    }

    /// The victim's memory cgroup: exactly from the kernel when the victim's
    /// task was read, else from /proc (`proc`, read first thing) or the
    /// kernel's oom_kill counters, or its report (`sources::victim_cgroup`).
    fn victim_cgroup(&self, r: &OomKillRecord, trigger_cgroup: Option<&str>, proc: Option<ProcCgroup>, reported: &Reported, files: &mut FileReads) -> VictimCgroup {
        if let Some(exact) = self.victim_cgroup_from_kernel(r, trigger_cgroup) {
            return exact;
        }
        let proc = proc.unwrap_or_else(|| self.read_victim_proc(r, files));
        let fallbacks = Fallbacks {
            proc,
            baselines: || self.model.kill_baselines(),
            clues: KillClues { memcg_id: kernel_memcg(r), at: clock::instant_of(r.header.ktime_ns) },
            version: self.layout.as_ref().map(|l| l.memory_version),
            report: || self.reported(r, reported).and_then(|k| k.task_memcg.clone()),
        };
        without_the_kernel(fallbacks, &mut files.0)
    }

    /// What the kernel's report said of this victim, waited for (up to
    /// [`REPORT_WAIT`]) the first time the kill path asks.
    fn reported<'a>(&self, r: &OomKillRecord, reported: &'a Reported) -> Option<&'a ReportedKill> {
        reported
            .get_or_init(|| {
                if self.inject_report_late {
                    return None;
                }
                let comm = (r.present & victim_field::COMM != 0).then(|| comm_str(&r.victim_comm));
                self.reported_victims.wait_for(r.victim_pid, comm.as_deref(), REPORT_WAIT)
            })
            .as_ref()
    }

    /// The victim's memory cgroup as the kernel program read it, when it
    /// did: nothing but the resolver's cache (or one handle lookup) is asked.
    fn victim_cgroup_from_kernel(&self, r: &OomKillRecord, trigger_cgroup: Option<&str>) -> Option<VictimCgroup> {
        if let Some(id) = kernel_memcg(r)
            && let Some(path) = self.resolver.resolve(Hierarchy::Memory, id)
        {
            return Some(VictimCgroup::exact(path, id));
        }
        // The victim is the trigger's own process: its memcg was read exactly.
        if r.present & victim_field::TRIGGER_MEMCG != 0
            && r.victim_pid == r.trigger_tgid
            && let Some(path) = trigger_cgroup
        {
            return Some(VictimCgroup::exact(path.to_owned(), r.trigger_memcg_id));
        }
        None
    }

    fn trigger_of(&self, r: &OomKillRecord) -> Trigger {
        let cgroup = if r.present & victim_field::TRIGGER_MEMCG != 0 {
            self.resolver.resolve(Hierarchy::Memory, r.trigger_memcg_id)
        } else {
            self.resolver.resolve(Hierarchy::Unified, r.trigger_cgroup_id)
        };
        Trigger { pid: r.trigger_tgid, tid: r.trigger_pid, comm: comm_str(&r.trigger_comm), cgroup }
    }

    /// A kill's first word (`kill_seen`): what the record and the daemon's
    /// memory tell at once, to be sent before the kill is explained. None
    /// when the kernel did not read the victim's cgroup: finding it may
    /// read files or wait for the kernel's report, and then the explained
    /// kill is the first word.
    pub fn first_word(&self, r: &OomKillRecord) -> Option<Event> {
        // The victim's /proc is read first thing then, before it exits.
        if self.victim_cgroup_needs_proc(r) {
            return None;
        }
        let trigger = self.trigger_of(r);
        let found = self.victim_cgroup_from_kernel(r, trigger.cgroup.as_deref())?;
        let cgroup = found.path?;
        let victim = victim_of(r);
        let (workload, init_pid) = self.model.workload(&cgroup);
        let main_process = is_main_process(init_pid, &victim);
        let body = EventBody::KillSeen(KillNotice { victim, trigger, attribution: found.attribution, cgroup_id: found.id, workload, main_process });
        Some(Event::new(body, rfc3339(self.clock.wall_time(r.header.ktime_ns)), cgroup, Some(r.header.ktime_ns)))
    }

    fn read_victim_proc(&self, r: &OomKillRecord, files: &mut FileReads) -> ProcCgroup {
        if self.inject_victim_gone {
            return ProcCgroup::Gone;
        }
        files.0 += 2;
        let killed_at = BootTime(clock::boottime_of(r.header.ktime_ns));
        read_proc(&self.proc_root, r.victim_pid, self.layout.as_ref().map(|l| l.memory_version), killed_at)
    }

    fn oom_control(&self, r: &OomKillRecord) -> OomControl {
        OomControl {
            memcg: (r.oc_memcg_id != 0).then(|| self.resolver.resolve(Hierarchy::Memory, r.oc_memcg_id)).flatten(),
            totalpages: r.oc_totalpages,
            points: r.oc_points,
            constraint: (r.oc_constraint != u32::MAX)
                .then(|| self.oom_constraints.iter().find(|(v, _)| *v == r.oc_constraint).map(|(_, n)| n.clone()))
                .flatten(),
            gfp_mask: format!("{:#x}", r.oc_gfp_mask),
            order: r.oc_order,
        }
    }

    /// The OOM killer said which memcg it worked on: no inference needed.
    /// Its usage and limit at the kill come from the record's chain (the
    /// limit memcg is the victim's or an ancestor), else from its files.
    fn kernel_verdict(&self, r: &OomKillRecord, oc: &OomControl, chain: Option<&MemcgChain>, files: &mut FileReads) -> Verdict {
        let at_kill = chain.and_then(|c| c.levels.iter().find(|l| l.cgroup_id == r.oc_memcg_id));
        let Some(path) = &oc.memcg else {
            return unnamed_oom_memcg_verdict(oc.constraint.as_deref(), r.oc_memcg_id, at_kill);
        };
        let (usage, limit) = match (at_kill, self.layout.as_ref().and_then(|l| Some((l.memory_version, self.model.dir_of(path).or_else(|| l.memory_dir(path))?)))) {
            (Some(level), _) => (Some(level.usage_bytes), level.limit_bytes),
            (None, Some((version, dir))) => {
                files.0 += 2;
                (read_usage(&dir, version).ok().flatten(), read_limit(&dir, version))
            }
            (None, None) => (None, None),
        };
        Verdict { constraint: Constraint::Memcg, limit_cgroup: Some(path.to_string()), usage_bytes: usage, limit_bytes: limit }
    }

    /// Names the cgroup whose limit was hit along the victim's ancestry
    /// (`find_limit`): usage, limit and limit-hit counter of each cgroup,
    /// compared with what the model saw before. They come from the kill
    /// record where the kernel read them; the cgroups it did not reach are
    /// read from their files now. Either way the readings go back to the
    /// model: a kill is a reason to sample at once. When the victim's own
    /// cgroup cannot be read that way, the kernel decides: its chain
    /// ([`chain_verdict`]), else its report ([`report_verdict`]). A cgroup
    /// nobody could read is no evidence that the host ran out.
    fn limit_verdict(&self, cgroup: &str, cgroup_id: Option<u64>, kernel: KernelEvidence<'_>, now: Instant, files: &mut FileReads) -> Verdict {
        let chain = kernel.chain;
        let Some(layout) = &self.layout else { return find_limit(&[]) };
        let version = layout.memory_version;
        let paths = ancestry(cgroup);
        let mut links = Vec::with_capacity(paths.len());
        let mut unread: &[String] = &paths;
        if let Some(chain) = chain.filter(|c| chain_fits(c, cgroup_id, paths.len())) {
            for (level, path) in chain.levels.iter().zip(&paths) {
                links.push(self.link(path, level.usage_bytes, level.limit_bytes, limit_hits(level, version), kernel.at, now));
            }
            unread = if chain.complete { &[] } else { paths.get(chain.levels.len()..).unwrap_or_default() };
        } else if chain.is_some() {
            log::debug!("{cgroup}: the kernel's memcg chain does not match its path; reading cgroup files");
        }
        let read_from_files = links.len();
        for path in unread {
            // Each file open costs on the kill path; an ancestor known to
            // have no limit cannot be the one that was hit. The victim's own
            // cgroup is always read.
            if path != cgroup && self.model.known_unlimited(path, now) {
                continue;
            }
            let Some(dir) = self.model.dir_of(path).or_else(|| layout.memory_dir(path)) else { continue };
            files.0 += 1;
            let Ok(Some(usage)) = read_usage(&dir, version) else { continue };
            let limit = read_limit(&dir, version);
            let hits_now = read_limit_hits(&dir, version);
            // v1's counters are two files (memory.oom_control, memory.failcnt).
            files.0 += if version == CgroupVersion::V1 { 3 } else { 2 };
            links.push(self.link(path, usage, limit, hits_now, kernel.at, now));
        }
        // A victim in the root cgroup has no limit to read: a global OOM.
        let victim_unread = !paths.is_empty() && !links.iter().any(|l| l.path == cgroup);
        if victim_unread {
            let kernel_said = kernel_only_verdict(&kernel, |id| self.resolver.resolve(Hierarchy::Memory, id));
            // An ancestor seen at its limit is evidence; no limit in
            // sight is not, with the victim's own cgroup unread.
            let read = find_limit(&links);
            return if kernel_said.constraint == Constraint::Unknown && read.constraint == Constraint::Memcg { read } else { kernel_said };
        }
        let verdict = find_limit(&links);
        if verdict.constraint == Constraint::Global && links[read_from_files..].iter().any(ChainLink::unwitnessed) {
            // Read after the kill freed the victim's memory, a limit whose
            // counter the model never saw (a cgroup made a moment ago, a
            // daemon just started) can neither be named nor ruled out.
            return kernel_only_verdict(&kernel, |id| self.resolver.resolve(Hierarchy::Memory, id));
        }
        verdict
    }

    /// One cgroup of the ancestry with the model's evidence, and the
    /// reading handed to the model.
    fn link(&self, path: &str, usage: u64, limit: Option<u64>, hits_now: Option<u64>, kill_at: Option<Instant>, now: Instant) -> ChainLink {
        let evidence = self.model.limit_evidence(path, now, kill_at);
        // Read by now, which is later than `now` (when the record was read).
        self.model.observe_usage(path, usage, None, hits_now, Instant::now());
        self.model.observe_limit(path, limit);
        ChainLink {
            path: path.to_owned(),
            limit_bytes: limit,
            usage_bytes: usage,
            hits_now,
            hits_before: evidence.hits_before,
            recently_hit: evidence.recently_hit,
        }
    }
}

/// Whether the victim is its container's PID 1: its process (thread group)
/// id against the init pid the runtime recorded. `None` without either.
/// The victim as the kernel program read it; a field it could not read is absent.
fn victim_of(r: &OomKillRecord) -> Victim {
    let has = |bit| r.present & bit != 0;
    Victim {
        pid: r.victim_pid,
        tgid: (has(victim_field::TASK) && r.victim_tgid != 0).then_some(r.victim_tgid),
        comm: has(victim_field::COMM).then(|| comm_str(&r.victim_comm)),
        uid: has(victim_field::UID).then_some(r.victim_uid),
        oom_score_adj: has(victim_field::OOM_SCORE_ADJ).then_some(r.oom_score_adj),
        total_vm_bytes: has(victim_field::TOTAL_VM).then_some(r.total_vm_kb * KIB),
        anon_rss_bytes: has(victim_field::ANON_RSS).then_some(r.anon_rss_kb * KIB),
        file_rss_bytes: has(victim_field::FILE_RSS).then_some(r.file_rss_kb * KIB),
        shmem_rss_bytes: has(victim_field::SHMEM_RSS).then_some(r.shmem_rss_kb * KIB),
        pgtables_bytes: has(victim_field::PGTABLES).then_some(r.pgtables_kb * KIB),
    }
}

/// Groups of fields the kernel program could not read for this kill.
fn unavailable_groups(r: &OomKillRecord) -> Vec<String> {
    let has = |bit| r.present & bit != 0;
    let mut unavailable = Vec::new();
    for (bit, group) in [
        // Only when every read of it failed (counted in the kernel): the
        // kill is still reported, with pid 0.
        (victim_field::PID, "victim.pid"),
        (victim_field::COMM, "victim.comm"),
        (victim_field::ANON_RSS, "victim memory (total_vm, rss, pgtables)"),
        (victim_field::UID, "victim.uid"),
        (victim_field::OOM_SCORE_ADJ, "victim.oom_score_adj"),
        (victim_field::TASK, "victim task (exact cgroup)"),
        (victim_field::OOM_CONTROL, "oom_control"),
    ] {
        if !has(bit) {
            unavailable.push(group.to_owned());
        }
    }
    unavailable
}

pub(super) fn is_main_process(init_pid: Option<u32>, victim: &Victim) -> Option<bool> {
    let tgid = victim.tgid.or((victim.pid != 0).then_some(victim.pid))?;
    match main_process(init_pid, tgid) {
        MainProcess::Main => Some(true),
        MainProcess::NotMain => Some(false),
        MainProcess::Unknown => None,
    }
}

/// The victim's memory cgroup id as the kernel program read it from the
/// task, where it did.
fn kernel_memcg(r: &OomKillRecord) -> Option<u64> {
    (r.present & victim_field::TASK != 0 && r.victim_memcg_id != 0).then_some(r.victim_memcg_id)
}

/// The kernel's report of this victim, once read (see [`KillExplainer::reported`]).
type Reported = std::cell::OnceCell<Option<ReportedKill>>;

/// What the kernel told of a kill besides its `oom_control`: the victim's
/// memory cgroup id and chain as its program read them, and its report.
struct KernelEvidence<'a> {
    memcg: Option<u64>,
    /// When the kernel marked the victim, on the model's clock.
    at: Option<Instant>,
    chain: Option<&'a MemcgChain>,
    report: &'a dyn Fn() -> Option<&'a ReportedKill>,
}

/// The limit hit, from the kernel's report (its `oom-kill:` line), for a
/// victim whose own cgroup files could not be read and whose chain the
/// kernel program did not read (no BTF). The limit cgroup is named only
/// when the kernel log printed its path whole. A report the kernel's rate
/// limit cut to its kill line still says which kind of OOM it was, in the
/// line's prefix (`kill_line`): a memory cgroup's, or the host's.
pub(crate) fn report_verdict(report: &KernelReport, kill_line: Option<Constraint>) -> Option<Verdict> {
    let Some(name) = report.constraint.as_deref() else {
        return kill_line.map(|constraint| Verdict { constraint, limit_cgroup: None, usage_bytes: None, limit_bytes: None });
    };
    let constraint = Constraint::from_kernel_name(&name.trim_start_matches("CONSTRAINT_").to_ascii_lowercase());
    let memcg = report.memcg.filter(|_| constraint == Constraint::Memcg);
    Some(Verdict {
        constraint,
        limit_cgroup: report.oom_memcg.clone().filter(|p| constraint == Constraint::Memcg && printed_whole(p)),
        usage_bytes: memcg.map(|m| m.usage_bytes),
        limit_bytes: memcg.map(|m| m.limit_bytes),
    })
}

/// The OOM killer's own view when it names no memcg with a path: the
/// host's OOM (no memcg), or a memcg whose id resolves to no path (removed
/// meanwhile, or nested deeper than the kernel shows). The second is a
/// cgroup's limit all the same, with its usage and limit from the kernel's
/// chain where it read them; it was reported as the host running out.
fn unnamed_oom_memcg_verdict(constraint: Option<&str>, memcg_id: u64, at_kill: Option<&MemcgAtKill>) -> Verdict {
    let named = constraint.map_or(Constraint::Global, Constraint::from_kernel_name);
    if memcg_id != 0 || named == Constraint::Memcg {
        return Verdict {
            constraint: Constraint::Memcg,
            limit_cgroup: None,
            usage_bytes: at_kill.map(|l| l.usage_bytes),
            limit_bytes: at_kill.and_then(|l| l.limit_bytes),
        };
    }
    Verdict { constraint: named, limit_cgroup: None, usage_bytes: None, limit_bytes: None }
}

/// What the kernel alone says of a kill whose victim's cgroup nothing
/// else could read: its chain where it read one from the victim's task,
/// else its report (waited for), else nothing: `unknown`, never a guess
/// that the host ran out.
fn kernel_only_verdict(kernel: &KernelEvidence<'_>, named: impl Fn(u64) -> Option<String>) -> Verdict {
    if let Some(chain) = kernel.chain.filter(|c| starts_at(c, kernel.memcg)) {
        return chain_verdict(chain, named);
    }
    (kernel.report)()
        .and_then(|k| report_verdict(&k.report, Some(k.kill_line)))
        .unwrap_or(Verdict { constraint: Constraint::Unknown, limit_cgroup: None, usage_bytes: None, limit_bytes: None })
}

/// The chain starts at the memory cgroup the kernel read from the victim's
/// task: it is the victim's, whatever path /proc gave.
fn starts_at(chain: &MemcgChain, kernel_memcg: Option<u64>) -> bool {
    kernel_memcg.is_some() && chain.levels.first().map(|l| l.cgroup_id) == kernel_memcg
}

/// The limit hit, from the kernel's chain alone, for a victim whose own
/// cgroup files could not be read (a path longer than the kernel prints is
/// cut at PATH_MAX by /proc, and names no cgroup): the usage at the kill
/// against each level's limit says which one was hit. Levels are `named`
/// by id where that resolves; a hit on one that does not is a memcg kill
/// in a cgroup left unnamed.
fn chain_verdict(chain: &MemcgChain, named: impl Fn(u64) -> Option<String>) -> Verdict {
    let links: Vec<ChainLink> = chain
        .levels
        .iter()
        .map(|level| ChainLink {
            path: named(level.cgroup_id).unwrap_or_default(),
            limit_bytes: level.limit_bytes,
            usage_bytes: level.usage_bytes,
            hits_now: None,
            hits_before: None,
            recently_hit: false,
        })
        .collect();
    let mut verdict = find_limit(&links);
    verdict.limit_cgroup = verdict.limit_cgroup.filter(|p| !p.is_empty());
    verdict
}

/// The kernel's chain belongs to this path: it starts at the victim's
/// memory cgroup, and has one level per cgroup below the root (all of them
/// when it is complete). Paths seen through a cgroup namespace are shorter
/// than the kernel's chain, and are read from files instead.
fn chain_fits(chain: &MemcgChain, cgroup_id: Option<u64>, depth: usize) -> bool {
    let starts_at_victim = match chain.levels.first() {
        Some(level) => cgroup_id == Some(level.cgroup_id),
        // Nothing read (a failed read at the first level): all from files.
        None => depth == 0 || !chain.complete,
    };
    let levels = chain.levels.len();
    starts_at_victim && if chain.complete { levels == depth } else { levels <= depth }
}

/// The local limit-hit counter the model keeps for this hierarchy: v1
/// `memory.failcnt`, v2 `memory.events.local` `oom`.
fn limit_hits(level: &MemcgAtKill, version: CgroupVersion) -> Option<u64> {
    match version {
        CgroupVersion::V1 => level.failcnt,
        CgroupVersion::V2 => level.oom_events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(cgroup_id: u64) -> MemcgAtKill {
        MemcgAtKill { cgroup_id, usage_bytes: 1, limit_bytes: None, failcnt: Some(3), oom_events: Some(1) }
    }

    #[test]
    fn the_kernel_chain_is_used_only_for_the_path_it_belongs_to() {
        let chain = |complete, ids: &[u64]| MemcgChain { levels: ids.iter().map(|&i| level(i)).collect(), complete };
        assert!(chain_fits(&chain(true, &[7, 5, 3]), Some(7), 3));
        assert!(!chain_fits(&chain(true, &[7, 5, 3]), Some(8), 3), "another cgroup's chain");
        assert!(!chain_fits(&chain(true, &[7, 5, 3]), None, 3), "attribution not from the kernel");
        assert!(!chain_fits(&chain(true, &[7, 5, 3]), Some(7), 2), "a path seen through a cgroup namespace");
        assert!(chain_fits(&chain(false, &[7, 5]), Some(7), 4), "cut: the rest is read from files");
        assert!(!chain_fits(&chain(false, &[7, 5]), Some(7), 1));
        assert!(chain_fits(&chain(true, &[]), Some(1), 0), "the root cgroup: nothing to read");
        assert!(!chain_fits(&chain(true, &[]), Some(1), 2));
        assert!(chain_fits(&chain(false, &[]), Some(7), 2), "nothing read: every level from files");
    }

    /// A victim whose cgroup path is longer than /proc shows: its files
    /// cannot be read, and the kernel's chain says which limit was hit.
    #[test]
    fn the_kernel_chain_alone_names_the_limit_when_the_victims_files_cannot_be_read() {
        const MIB: u64 = 1 << 20;
        let at = |cgroup_id, usage_bytes, limit_bytes| MemcgAtKill { cgroup_id, usage_bytes, limit_bytes, failcnt: None, oom_events: None };
        let deep = MemcgChain { levels: vec![at(9, 32 * MIB, Some(32 * MIB)), at(8, 32 * MIB, None), at(7, 40 * MIB, Some(64 * MIB))], complete: false };
        assert!(starts_at(&deep, Some(9)));
        assert!(!starts_at(&deep, Some(8)), "another cgroup's chain");
        assert!(!starts_at(&deep, None), "the kernel did not read the victim's task");
        assert!(!starts_at(&MemcgChain { levels: Vec::new(), complete: false }, Some(9)));

        let unnamed = chain_verdict(&deep, |id| (id == 7).then(|| "/tenant".to_owned()));
        assert_eq!(unnamed, Verdict { constraint: Constraint::Memcg, limit_cgroup: None, usage_bytes: Some(32 * MIB), limit_bytes: Some(32 * MIB) });
        let named = chain_verdict(&deep, |id| Some(format!("/c{id}")));
        assert_eq!(named.limit_cgroup.as_deref(), Some("/c9"));

        let ancestor = MemcgChain { levels: vec![at(9, MIB, None), at(7, 64 * MIB, Some(64 * MIB))], complete: true };
        let v = chain_verdict(&ancestor, |id| (id == 7).then(|| "/tenant".to_owned()));
        assert_eq!((v.constraint, v.limit_cgroup.as_deref()), (Constraint::Memcg, Some("/tenant")), "an ancestor's limit");

        let roomy = MemcgChain { levels: vec![at(9, MIB, Some(64 * MIB))], complete: true };
        assert_eq!(chain_verdict(&roomy, |_| None).constraint, Constraint::Global, "no level at its limit: the host ran out");
    }

    /// Without the chain (no BTF), the kernel's report says which limit.
    #[test]
    fn the_kernel_report_names_the_limit_when_nothing_else_can() {
        use crate::wire::KernelMemcg;
        const MIB: u64 = 1 << 20;
        let report = |constraint: &str, oom_memcg: String| KernelReport {
            constraint: Some(constraint.to_owned()),
            oom_memcg: Some(oom_memcg),
            memcg: Some(KernelMemcg { usage_bytes: 32 * MIB, limit_bytes: 32 * MIB, failcnt: 9, ..Default::default() }),
            ..Default::default()
        };
        // The summary line decides; the kill line's prefix is only a fallback.
        let memcg = report_verdict(&report("CONSTRAINT_MEMCG", "/tenant".into()), Some(Constraint::Global)).unwrap();
        assert_eq!(memcg, Verdict { constraint: Constraint::Memcg, limit_cgroup: Some("/tenant".into()), usage_bytes: Some(32 * MIB), limit_bytes: Some(32 * MIB) });
        let cut = report_verdict(&report("CONSTRAINT_MEMCG", format!("/tenant/{}", "x".repeat(1100))), None).unwrap();
        assert_eq!((cut.constraint, cut.limit_cgroup), (Constraint::Memcg, None), "a path the kernel log cut names nothing");
        let global = report_verdict(&report("CONSTRAINT_NONE", "/".into()), Some(Constraint::Memcg)).unwrap();
        assert_eq!(global, Verdict { constraint: Constraint::Global, limit_cgroup: None, usage_bytes: None, limit_bytes: None });
        assert_eq!(report_verdict(&report("CONSTRAINT_CPUSET", "/".into()), None).unwrap().constraint, Constraint::Cpuset);
        assert_eq!(report_verdict(&report("CONSTRAINT_MEMORY_POLICY", "/".into()), None).unwrap().constraint, Constraint::MemoryPolicy);
        assert_eq!(report_verdict(&KernelReport::default(), None), None, "nothing read of the report");
        // The kernel's rate limit cut the report to its kill line: its prefix
        // ("Memory cgroup out of memory" / "Out of memory") still says which.
        let rate_limited = KernelReport { missing: Some("rate_limited".into()), ..Default::default() };
        let line_only = report_verdict(&rate_limited, Some(Constraint::Memcg)).unwrap();
        assert_eq!(line_only, Verdict { constraint: Constraint::Memcg, limit_cgroup: None, usage_bytes: None, limit_bytes: None });
        assert_eq!(report_verdict(&rate_limited, Some(Constraint::Global)).unwrap().constraint, Constraint::Global);
    }

    /// oom_control names a memcg whose id resolves to no path: still that
    /// memcg's limit (it was the host), with the chain's reading of it.
    #[test]
    fn an_oom_memcg_without_a_path_is_a_memcg_kill_not_the_host() {
        const MIB: u64 = 1 << 20;
        let level = MemcgAtKill { cgroup_id: 7, usage_bytes: 64 * MIB, limit_bytes: Some(64 * MIB), ..level(7) };
        let v = unnamed_oom_memcg_verdict(Some("memcg"), 7, Some(&level));
        assert_eq!(v, Verdict { constraint: Constraint::Memcg, limit_cgroup: None, usage_bytes: Some(64 * MIB), limit_bytes: Some(64 * MIB) });
        assert_eq!(unnamed_oom_memcg_verdict(None, 7, None).constraint, Constraint::Memcg, "a memcg id is a memcg OOM");
        assert_eq!(unnamed_oom_memcg_verdict(Some("none"), 0, None).constraint, Constraint::Global);
        assert_eq!(unnamed_oom_memcg_verdict(Some("cpuset"), 0, None).constraint, Constraint::Cpuset);
        assert_eq!(unnamed_oom_memcg_verdict(None, 0, None).constraint, Constraint::Global);
    }

    /// A victim whose cgroup nothing could read, without BTF: the kernel's
    /// report (waited for) decides, and without one the kill is `unknown`.
    /// It was `global` before, which pages as the host running out.
    #[test]
    fn without_any_evidence_a_kill_is_unknown_never_global() {
        let named = |_: u64| None;
        let none = || None;
        let nothing = KernelEvidence { memcg: None, at: None, chain: None, report: &none };
        assert_eq!(kernel_only_verdict(&nothing, named).constraint, Constraint::Unknown);
        let line = ReportedKill { task_memcg: None, report: KernelReport { missing: Some("rate_limited".into()), ..Default::default() }, kill_line: Constraint::Memcg };
        let reported = || Some(&line);
        let from_line = KernelEvidence { memcg: None, at: None, chain: None, report: &reported };
        assert_eq!(kernel_only_verdict(&from_line, named).constraint, Constraint::Memcg);
    }

    #[test]
    fn limit_hits_are_the_counter_the_model_keeps_for_the_hierarchy() {
        assert_eq!(limit_hits(&level(1), CgroupVersion::V1), Some(3));
        assert_eq!(limit_hits(&level(1), CgroupVersion::V2), Some(1));
    }
}
