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
    pub fn join_incident(&self, kill: KillSeen, now: Instant) -> IncidentRef {
        self.incidents().join(kill, now)
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

    /// One sampler tick of every cgroup's throttling at memory.high: the
    /// episodes that started or ended.
    pub fn update_throttling(&self, now: Instant) -> Vec<ThrottleSeen> {
        let mut s = self.write();
        let super::State { cgroups, pressure, .. } = &mut *s;
        let mut seen = Vec::new();
        for (path, c) in cgroups.iter_mut().filter(|(_, c)| c.removed_at.is_none()) {
            if let Some(change) = c.throttle.tick(c.high_hits, now) {
                let pressure = pressure.get(path).filter(|p| p.removed_at.is_none()).map(|p| p.pressure);
                seen.push(ThrottleSeen { path: path.clone(), change, high_bytes: c.high_bytes, pressure });
            }
        }
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
            events_local: Some(MemoryEvents { high: Some(high), ..Default::default() }),
            high_bytes: Some(1 << 20),
            ..Default::default()
        }
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
