//! Records from the kernel become events: resolve cgroup ids to paths, turn
//! kernel time into wall time, update the model, publish on the bus.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use oomwatch_common::{OomKillRecord, ReclaimKind, ReclaimStallRecord, VictimExitRecord, victim_field};

use crate::{
    bpf::decode::{Record, comm_str},
    bus::EventBus,
    cgroup::{
        CgroupLayout, parse_limit, read_usage,
        resolve::{CgroupResolver, Hierarchy, proc_cgroup},
        watch::read_limit_hits,
    },
    clock::{KernelClock, rfc3339},
    event::{Attribution, Event, EventBody, OomControl, OomKill, ReclaimKindName, ReclaimStall, Trigger, Victim, VictimExit},
    metrics::DaemonCounters,
    model::{
        Model,
        limit::{ChainLink, Verdict, ancestry, find_limit},
    },
};

/// How much of the victim cgroup's history goes into each kill event.
const RAMP_SECONDS: u32 = 60;

pub struct Pipeline {
    pub resolver: Arc<CgroupResolver>,
    pub clock: Arc<KernelClock>,
    pub bus: Arc<EventBus>,
    pub model: Arc<Model>,
    pub counters: Arc<DaemonCounters>,
    pub proc_root: PathBuf,
    pub layout: Option<CgroupLayout>,
    /// `enum oom_constraint` from BTF: value -> name.
    pub oom_constraints: Vec<(u32, String)>,
    /// Test-only: kill records to drop (`--inject-drop-kills`).
    pub drop_kill_records: std::sync::atomic::AtomicU64,
    /// Victim pid -> its cgroup, until the exit is confirmed (bounded).
    victims: Mutex<RecentVictims>,
}

#[derive(Default)]
struct RecentVictims {
    by_pid: HashMap<u32, String>,
    order: VecDeque<u32>,
}

const RECENT_VICTIMS: usize = 4096;

impl RecentVictims {
    fn insert(&mut self, pid: u32, cgroup: String) {
        if self.by_pid.insert(pid, cgroup).is_none() {
            self.order.push_back(pid);
            if self.order.len() > RECENT_VICTIMS
                && let Some(old) = self.order.pop_front()
            {
                self.by_pid.remove(&old);
            }
        }
    }
}

const KIB: u64 = 1024;

impl Pipeline {
    pub fn new(
        resolver: Arc<CgroupResolver>,
        clock: Arc<KernelClock>,
        bus: Arc<EventBus>,
        model: Arc<Model>,
        counters: Arc<DaemonCounters>,
        layout: Option<CgroupLayout>,
    ) -> Self {
        Self {
            resolver,
            clock,
            bus,
            model,
            counters,
            proc_root: PathBuf::from("/proc"),
            layout,
            oom_constraints: Vec::new(),
            drop_kill_records: std::sync::atomic::AtomicU64::new(0),
            victims: Mutex::default(),
        }
    }

    pub fn handle(&self, record: Record) {
        // Fault injection for the reconciliation test: lose kill records as
        // a full ring buffer would.
        if matches!(record, Record::OomKill(_)) && self.drop_kill_records.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            self.drop_kill_records.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            log::warn!("fault injection: dropped a kill record");
            return;
        }
        let event = match record {
            Record::OomKill(r) => self.oom_kill(&r),
            Record::VictimExit(r) => self.victim_exit(&r),
            Record::ReclaimStall(r) => self.reclaim_stall(&r),
        };
        self.counters.events_published.inc();
        self.bus.publish(event);
    }

    fn oom_kill(&self, r: &OomKillRecord) -> Event {
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

        let (cgroup, cgroup_id, attribution) = self.victim_cgroup(r, trigger_cgroup.as_deref());
        let cgroup = cgroup.unwrap_or_else(|| "unknown".to_owned());
        let now = Instant::now();
        let history = self.model.ramp(&cgroup, RAMP_SECONDS, now);
        let oom_control = has(victim_field::OOM_CONTROL).then(|| self.oom_control(r));
        // The kernel's own answer, where readable; else inferred from counters.
        let verdict = match &oom_control {
            Some(oc) => self.kernel_verdict(oc),
            None => self.limit_verdict(&cgroup, now),
        };
        let mut unavailable = Vec::new();
        for (bit, group) in [
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
        self.victims.lock().unwrap_or_else(|e| e.into_inner()).insert(r.victim_pid, cgroup.clone());
        Event {
            body: EventBody::OomKill(Box::new(OomKill {
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
            })),
            time: rfc3339(self.clock.wall_time(r.header.ktime_ns)),
            cgroup,
            ktime_ns: Some(r.header.ktime_ns),
            seq: 0,
        }
    }

    /// The victim's memory cgroup: exactly from the kernel when the victim's
    /// task was read, else from /proc while the victim is still exiting.
    fn victim_cgroup(&self, r: &OomKillRecord, trigger_cgroup: Option<&str>) -> (Option<String>, Option<u64>, Attribution) {
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
    fn kernel_verdict(&self, oc: &OomControl) -> Verdict {
        let Some(path) = &oc.memcg else {
            let constraint = oc.constraint.as_deref().map_or(crate::model::Constraint::Global, crate::model::Constraint::from_kernel_name);
            let constraint = if constraint == crate::model::Constraint::Memcg { crate::model::Constraint::Global } else { constraint };
            return Verdict { constraint, limit_cgroup: None, usage_bytes: None, limit_bytes: None };
        };
        let (usage, limit) = match self.layout.as_ref().and_then(|l| Some((l.memory_version, l.memory_dir(path)?))) {
            Some((version, dir)) => {
                let limit_file = match version {
                    crate::cgroup::CgroupVersion::V2 => "memory.max",
                    crate::cgroup::CgroupVersion::V1 => "memory.limit_in_bytes",
                };
                (
                    read_usage(&dir, version).ok().flatten(),
                    std::fs::read(dir.join(limit_file)).ok().and_then(|b| parse_limit(&b)).and_then(|l| l.bytes()),
                )
            }
            None => (None, None),
        };
        Verdict { constraint: crate::model::Constraint::Memcg, limit_cgroup: Some(path.to_string()), usage_bytes: usage, limit_bytes: limit }
    }

    /// Reads the limit-hit counters along the victim's ancestry now (a few
    /// small files), compares them with what the model saw, and names the
    /// cgroup whose limit was hit. The fresh readings go back to the model:
    /// a kill is a reason to sample at once.
    fn limit_verdict(&self, cgroup: &str, now: Instant) -> Verdict {
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
            let Ok(Some(usage)) = read_usage(&dir, version) else { continue };
            let limit_file = match version {
                crate::cgroup::CgroupVersion::V2 => "memory.max",
                crate::cgroup::CgroupVersion::V1 => "memory.limit_in_bytes",
            };
            let limit = std::fs::read(dir.join(limit_file)).ok().and_then(|b| parse_limit(&b)).and_then(|l| l.bytes());
            let hits_now = read_limit_hits(layout, &path);
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

    fn reclaim_stall(&self, r: &ReclaimStallRecord) -> Event {
        let cgroup = if r.memcg_id != 0 {
            self.resolver.resolve(Hierarchy::Memory, r.memcg_id)
        } else {
            self.resolver.resolve(Hierarchy::Unified, r.cgroup_id)
        };
        let reclaim_kind = match ReclaimKind::try_from(r.reclaim_kind) {
            Ok(ReclaimKind::Memcg) => ReclaimKindName::Memcg,
            Ok(ReclaimKind::Compaction) => ReclaimKindName::Compaction,
            _ => ReclaimKindName::Direct,
        };
        Event {
            body: EventBody::ReclaimStall(ReclaimStall {
                pid: r.tgid,
                tid: r.pid,
                comm: comm_str(&r.comm),
                duration_ms: (r.duration_ns as f64 / 1e3).round() / 1e3,
                reclaim_kind,
                nr_reclaimed: (r.nr_reclaimed != u64::MAX).then_some(r.nr_reclaimed),
                order: (r.order >= 0).then_some(r.order),
                suppressed: r.suppressed,
            }),
            time: rfc3339(self.clock.wall_time(r.header.ktime_ns)),
            cgroup: cgroup.unwrap_or_else(|| "unknown".to_owned()),
            ktime_ns: Some(r.header.ktime_ns),
            seq: 0,
        }
    }

    fn victim_exit(&self, r: &VictimExitRecord) -> Event {
        let latency_ms = r.header.ktime_ns.saturating_sub(r.marked_ktime_ns) as f64 / 1e6;
        let remembered = self.victims.lock().unwrap_or_else(|e| e.into_inner()).by_pid.remove(&r.pid);
        let cgroup = remembered
            .or_else(|| self.resolver.resolve(Hierarchy::Memory, r.memcg_id))
            .unwrap_or_else(|| "unknown".to_owned());
        let pid = r.pid;
        self.bus.amend(
            |e| matches!(&e.body, EventBody::OomKill(k) if k.victim.pid == pid && k.exit_latency_ms.is_none()),
            |e| {
                if let EventBody::OomKill(k) = &mut e.body {
                    k.exit_latency_ms = Some(latency_ms);
                }
            },
        );
        Event {
            body: EventBody::VictimExit(VictimExit { pid, comm: comm_str(&r.comm), exit_latency_ms: latency_ms }),
            time: rfc3339(self.clock.wall_time(r.header.ktime_ns)),
            cgroup,
            ktime_ns: Some(r.header.ktime_ns),
            seq: 0,
        }
    }
}
