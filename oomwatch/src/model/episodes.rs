//! The model's side of incidents and throttling: the state lives here,
//! the rules in `incidents.rs` and `throttle.rs`.

use std::time::{Duration, Instant};

use super::{
    Model,
    incidents::{Incidents, KillSeen},
    limit::ancestry,
    throttle::ThrottleChange,
};
use crate::{
    readers::Pressure,
    wire::{Incident, IncidentRef},
};

/// A throttling edge of one cgroup, with what its event reports.
#[derive(Clone, Debug)]
pub struct ThrottleSeen {
    pub path: String,
    pub change: ThrottleChange,
    pub high_bytes: Option<u64>,
    pub pressure: Option<Pressure>,
}

impl Model {
    fn incidents(&self) -> std::sync::MutexGuard<'_, Incidents> {
        self.incidents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Places a kill in its OOM incident (see `incidents.rs`).
    ///
    /// A group kill's first victim is killed twice by the kernel: once as
    /// the chosen victim, and again as a member of its group (6.1's
    /// `oom_kill_memcg_member` does not skip it), and both count in
    /// /proc/vmstat and memory.events `oom_kill`; `mark_victim` fires only
    /// once. Noted here, so the reconciler does not take the second count
    /// for a kill it missed.
    pub fn join_incident(&self, kill: KillSeen, now: Instant) -> IncidentRef {
        let mut incidents = self.incidents();
        let joined = incidents.join(kill, now);
        if joined.victims_so_far == 2 {
            incidents.note_recount();
            drop(incidents);
            if let Some(c) = self.write().cgroups.get_mut(&joined.first_victim_cgroup) {
                c.kernel_recounts += 1;
            }
        }
        joined
    }

    /// Kills the kernel counted twice (see [`Model::join_incident`]).
    pub fn kernel_recounts(&self) -> u64 {
        self.incidents().recounts()
    }

    /// Group kills that settled by `now`, and when the next one may.
    pub fn settle_incidents(&self, now: Instant) -> (Vec<Incident>, Option<Instant>) {
        let mut incidents = self.incidents();
        let settled = incidents.settle(now);
        (settled, incidents.next_settle())
    }

    /// OOM-killer invocations seen since start.
    pub fn incidents_total(&self) -> u64 {
        self.incidents().total()
    }

    /// One sampler tick of the throttling of every cgroup whose `high`
    /// counter moved, or that is rising or in an episode (the others would
    /// see no change): the episodes that started or ended.
    pub fn update_throttling(&self, now: Instant) -> Vec<ThrottleSeen> {
        let mut s = self.write();
        let super::State { cgroups, pressure, throttle_due, .. } = &mut *s;
        let mut seen = Vec::new();
        let mut kept = Vec::new();
        for path in throttle_due.take() {
            let Some(c) = cgroups.get_mut(&path) else { continue };
            // A removed cgroup is not ticked; readmitted, it is listed again.
            if c.removed_at.is_some() {
                c.throttle_listed = false;
                continue;
            }
            if let Some(change) = c.throttle.tick(c.high_hits, now) {
                let pressure = pressure.get(&path).filter(|p| p.removed_at.is_none()).map(|p| p.pressure);
                seen.push(ThrottleSeen { path: path.clone(), change, high_bytes: c.high_bytes, pressure });
            }
            if c.throttle.is_active() {
                kept.push(path);
            } else {
                c.throttle_listed = false;
            }
        }
        throttle_due.keep(kept);
        seen
    }

    /// How long the cgroup or its nearest throttled ancestor had been
    /// throttled at memory.high by `now` (the longest along the way).
    pub fn throttled_for(&self, cgroup: &str, now: Instant) -> Option<Duration> {
        let s = self.read();
        ancestry(cgroup).iter().filter_map(|p| s.cgroups.get(p.as_str())?.throttle.throttled_for(now)).max()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::readers::{MemoryEvents, MemorySample};

    fn sample(high: u64) -> MemorySample {
        MemorySample {
            usage_bytes: 1 << 20,
            events_local: Some(MemoryEvents { high: Some(high), oom_kill: Some(0), ..Default::default() }),
            high_bytes: Some(1 << 20),
            ..Default::default()
        }
    }

    #[test]
    fn a_group_kill_notes_the_kernels_second_count_of_its_first_victim() {
        use crate::{
            model::incidents::KillSeen,
            wire::{Constraint, IncidentVictim, Trigger},
        };
        let m = Model::default();
        let t0 = Instant::now();
        m.admit("/g/c", 3, Path::new("/nonexistent/g/c"));
        m.observe_full("/g/c", &sample(0), None, t0);
        let kill = |ktime_ns, pid, first| KillSeen {
            ktime_ns,
            trigger: Trigger { pid: 9, tid: 9, comm: "hog".into(), cgroup: Some("/g/c".into()) },
            constraint: Constraint::Memcg,
            limit_cgroup: Some("/g".into()),
            victim: IncidentVictim { pid, comm: None, cgroup: if first { "/g/c".into() } else { format!("/g/{pid}") } },
            group_kills_possible: true,
            starts_invocation: first,
        };
        m.join_incident(kill(10, 9, true), t0);
        assert_eq!(m.kernel_recounts(), 0, "a kill alone is counted once");
        m.join_incident(kill(11, 1, false), t0);
        m.join_incident(kill(12, 2, false), t0);
        assert_eq!(m.kernel_recounts(), 1, "once per group kill");
        let c = m.kill_baselines().into_iter().find(|b| b.path == "/g/c").expect("tracked");
        assert_eq!(c.seen_since, 1, "the first victim's cgroup expects the kernel's second count");
        assert_eq!(m.incidents_total(), 1);
    }

    #[test]
    fn throttling_is_kept_per_cgroup_and_seen_by_kills_below_it() {
        let m = Model::default();
        let t0 = Instant::now();
        m.admit("/a", 1, Path::new("/nonexistent/a"));
        m.admit("/a/b", 2, Path::new("/nonexistent/a/b"));
        let tick = Duration::from_secs(1);
        let mut edges = Vec::new();
        for (i, high) in [0u64, 5, 10, 15].into_iter().enumerate() {
            let now = t0 + tick * i as u32;
            m.observe_full("/a", &sample(high), None, now);
            m.observe_full("/a/b", &sample(0), None, now);
            edges.extend(m.update_throttling(now));
        }
        assert_eq!(edges.len(), 1, "one start, only for /a: {edges:?}");
        assert_eq!(edges[0].path, "/a");
        assert!(matches!(edges[0].change, ThrottleChange::Started { high_events: 10, .. }));
        assert_eq!(m.throttled_for("/a/b", t0 + tick * 11), Some(tick * 10), "a kill in a child of the throttled cgroup");
        assert_eq!(m.throttled_for("/c", t0 + tick * 11), None);
    }
}
