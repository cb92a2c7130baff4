//! Explains a kill: the victim and the task that triggered it, the memory
//! cgroup that was hit (the kernel's own answer where readable, else the
//! limit-hit counters along the victim's ancestry), usage and limit at the
//! kill, the workload names, the history that led there, and what this
//! kernel could not tell.

use std::{path::PathBuf, sync::Arc, time::Instant};

use oomwatch_common::oom::{OomKillRecord, victim_field};

use super::resolve::CgroupResolver;
use crate::{
    kernel::{clock::KernelClock, decode::comm_str},
    model::{
        Model,
        limit::{ChainLink, Verdict, ancestry, find_limit},
    },
    readers::{CgroupLayout, CgroupVersion, Hierarchy, proc_cgroup, read_limit, read_limit_hits, read_usage},
    wire::{Attribution, Constraint, Event, EventBody, OomControl, OomKill, Trigger, Victim, rfc3339},
};

/// How much of the victim cgroup's history goes into each kill event.
const RAMP_SECONDS: u32 = 60;

const KIB: u64 = 1024;

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
}

impl KillExplainer {
    /// The event for a kill record, explained; `now` is when it was read.
    pub fn explain(&self, r: &OomKillRecord, now: Instant) -> Event {
        let started = Instant::now();
        let mut files = FileReads::default();
        let has = |bit| r.present & bit != 0;
        let victim = Victim {
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
        };
        let trigger_cgroup = if has(victim_field::TRIGGER_MEMCG) {
            self.resolver.resolve(Hierarchy::Memory, r.trigger_memcg_id)
        } else {
            self.resolver.resolve(Hierarchy::Unified, r.trigger_cgroup_id)
        };
        let trigger = Trigger {
            pid: r.trigger_tgid,
            tid: r.trigger_pid,
            comm: comm_str(&r.trigger_comm),
            cgroup: trigger_cgroup.clone(),
        };

        let (cgroup, cgroup_id, attribution) = self.victim_cgroup(r, trigger_cgroup.as_deref(), &mut files);
        let cgroup = cgroup.unwrap_or_else(|| "unknown".to_owned());
        let history = self.model.ramp(&cgroup, RAMP_SECONDS, now);
        let oom_control = has(victim_field::OOM_CONTROL).then(|| self.oom_control(r));
        // The kernel's own answer, where readable; else inferred from counters.
        let verdict = match &oom_control {
            Some(oc) => self.kernel_verdict(oc, &mut files),
            None => self.limit_verdict(&cgroup, now, &mut files),
        };
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
        self.model.record_kill(&cgroup, verdict.constraint, victim.comm.as_deref(), now);
        let body = EventBody::OomKill(Box::new(OomKill {
                victim,
                trigger,
                attribution,
                constraint: verdict.constraint,
                limit_cgroup: verdict.limit_cgroup,
                limit_cgroup_usage_bytes: verdict.usage_bytes,
                limit_bytes: verdict.limit_bytes,
                workload: self.model.labels(&cgroup).into(),
                history,
                oom_control,
                unavailable,
                cgroup_id,
                exit_latency_ms: None,
        }));
        let event = Event::new(body, rfc3339(self.clock.wall_time(r.header.ktime_ns)), cgroup, Some(r.header.ktime_ns));
        // The kill path's own cost, for `--log-level debug` and the tests
        // that check no file is read on it.
        log::debug!(
            "kill of pid {}: explained in {} us, {} cgroupfs/procfs files read",
            r.victim_pid,
            started.elapsed().as_micros(),
            files.0
        );
        event
    }

    /// The victim's memory cgroup: exactly from the kernel when the victim's
    /// task was read, else from /proc while the victim is still exiting.
    fn victim_cgroup(&self, r: &OomKillRecord, trigger_cgroup: Option<&str>, files: &mut FileReads) -> (Option<String>, Option<u64>, Attribution) {
        if r.present & victim_field::TASK != 0
            && r.victim_memcg_id != 0
            && let Some(path) = self.resolver.resolve(Hierarchy::Memory, r.victim_memcg_id)
        {
            return (Some(path), Some(r.victim_memcg_id), Attribution::Exact);
        }
        // The victim is the trigger's own process: its memcg was read exactly.
        if r.present & victim_field::TRIGGER_MEMCG != 0 && r.victim_pid == r.trigger_tgid && trigger_cgroup.is_some() {
            return (trigger_cgroup.map(str::to_owned), Some(r.trigger_memcg_id), Attribution::Exact);
        }
        files.0 += 1;
        match proc_cgroup(&self.proc_root, r.victim_pid, Hierarchy::Memory) {
            Some(path) => (Some(path), None, Attribution::Approximate),
            None => (None, None, Attribution::Unknown),
        }
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
    fn kernel_verdict(&self, oc: &OomControl, files: &mut FileReads) -> Verdict {
        let Some(path) = &oc.memcg else {
            let constraint = oc.constraint.as_deref().map_or(Constraint::Global, Constraint::from_kernel_name);
            let constraint = if constraint == Constraint::Memcg { Constraint::Global } else { constraint };
            return Verdict { constraint, limit_cgroup: None, usage_bytes: None, limit_bytes: None };
        };
        let (usage, limit) = match self.layout.as_ref().and_then(|l| Some((l.memory_version, l.memory_dir(path)?))) {
            Some((version, dir)) => {
                files.0 += 2;
                (read_usage(&dir, version).ok().flatten(), read_limit(&dir, version))
            }
            None => (None, None),
        };
        Verdict { constraint: Constraint::Memcg, limit_cgroup: Some(path.to_string()), usage_bytes: usage, limit_bytes: limit }
    }

    /// Reads the limit-hit counters along the victim's ancestry now (a few
    /// small files), compares them with what the model saw, and names the
    /// cgroup whose limit was hit. The fresh readings go back to the model:
    /// a kill is a reason to sample at once.
    fn limit_verdict(&self, cgroup: &str, now: Instant, files: &mut FileReads) -> Verdict {
        let Some(layout) = &self.layout else { return find_limit(&[]) };
        let version = layout.memory_version;
        let mut chain = Vec::new();
        for path in ancestry(cgroup) {
            // Each file open costs on the kill path; an ancestor known to
            // have no limit cannot be the one that was hit. The victim's own
            // cgroup is always read.
            if path != cgroup && self.model.known_unlimited(&path, now) {
                continue;
            }
            let Some(dir) = layout.memory_dir(&path) else { continue };
            files.0 += 1;
            let Ok(Some(usage)) = read_usage(&dir, version) else { continue };
            let limit = read_limit(&dir, version);
            let hits_now = read_limit_hits(&dir, version);
            // v1's counters are two files (memory.oom_control, memory.failcnt).
            files.0 += if version == CgroupVersion::V1 { 3 } else { 2 };
            let evidence = self.model.limit_evidence(&path, now);
            self.model.observe_usage(&path, usage, None, hits_now, now);
            self.model.observe_limit(&path, limit);
            chain.push(ChainLink {
                path,
                limit_bytes: limit,
                usage_bytes: usage,
                hits_now,
                hits_before: evidence.hits_before,
                recently_hit: evidence.recently_hit,
            });
        }
        find_limit(&chain)
    }
}
