//! Nothing lost, and proof of it: kills oomwatch reported are compared with
//! the kernel's own counters (/proc/vmstat `oom_kill` for the host; each
//! tracked cgroup's local `oom_kill`). A gap that persists for two passes
//! (the counter moves a moment before the event arrives) is a kill that
//! was not observed: counted, logged with the cgroup, and published.

use std::{path::PathBuf, sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;

use crate::{
    kernel::clock::monotonic_ns,
    model::{Model, bus::EventBus},
    readers::{CgroupLayout, read_own_oom_kills, vmstat_oom_kills},
    wire::{Event, EventBody, UnobservedKills, rfc3339},
};

pub const INTERVAL: Duration = Duration::from_secs(5);

/// The reconciler's own state is only where to read; what it counted is
/// kept in the model (`HostKills`, per-cgroup baselines), which the journal
/// carries across restarts.
pub struct Reconciler {
    proc_root: PathBuf,
    layout: Option<CgroupLayout>,
    model: Arc<Model>,
    bus: Arc<EventBus>,
    unobserved: Counter,
}


impl Reconciler {
    pub fn new(layout: Option<CgroupLayout>, model: Arc<Model>, bus: Arc<EventBus>, unobserved: Counter) -> Self {
        let proc_root = PathBuf::from("/proc");
        let mut host = model.host_kills();
        // Counting starts now, unless the last run's accounting was restored.
        if host.kernel_baseline.is_none() {
            host.kernel_baseline = vmstat_oom_kills(&proc_root);
        }
        host.seen_baseline = model.total_kills();
        model.set_host_kills(host);
        Self { proc_root, layout, model, bus, unobserved }
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.pass();
        }
    }

    pub fn pass(&mut self) {
        // Kills no report placed in time go on the metric as published.
        self.model.count_unplaced_overdue(std::time::Instant::now());
        let mut host = self.model.host_kills();
        let (Some(base), Some(now)) = (host.kernel_baseline, vmstat_oom_kills(&self.proc_root)) else { return };
        let kernel = now.saturating_sub(base);
        // The kernel counts a group kill's first victim twice.
        let seen = (self.model.total_kills() + self.model.kernel_recounts()).saturating_sub(host.seen_baseline);
        let gap = kernel.saturating_sub(seen);
        // Only what two passes agree on: in-flight events close small gaps.
        let confirmed = gap.min(host.last_gap);
        host.last_gap = gap;
        if confirmed <= host.reported {
            self.model.set_host_kills(host);
            return;
        }
        let new = confirmed - host.reported;
        host.reported = confirmed;
        self.model.set_host_kills(host);
        self.unobserved.inc_by(new);
        let culprits = self.find_cgroups();
        let names: Vec<&str> = culprits.iter().map(|(p, _)| p.as_str()).collect();
        log::warn!(
            "{new} OOM kill(s) happened that oomwatch did not observe (kernel counts {kernel} since start, oomwatch saw {seen}){}",
            if names.is_empty() { String::new() } else { format!(" in {}", names.join(", ")) }
        );
        let events: Vec<(String, u64)> = if culprits.is_empty() { vec![("/".to_owned(), new)] } else { culprits };
        for (cgroup, count) in events {
            let body = EventBody::UnobservedKills(UnobservedKills { count, kernel_total: kernel, observed_total: seen });
            self.bus.publish(Event::new(body, rfc3339(std::time::SystemTime::now()), cgroup, Some(monotonic_ns())));
        }
    }

    /// Tracked cgroups whose own kill counter ran ahead of what was reported.
    fn find_cgroups(&mut self) -> Vec<(String, u64)> {
        let Some(layout) = &self.layout else { return Vec::new() };
        let mut out = Vec::new();
        for b in self.model.kill_baselines() {
            let Some(now) = read_own_oom_kills(&b.dir, layout.memory_version) else { continue };
            let new = b.unaccounted(now);
            if new > 0 {
                self.model.note_unobserved_reported(&b.path, b.unobserved_reported + new);
                out.push((b.path, new));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{model::HostKills, wire::Constraint};

    /// A kill seen in a cgroup removed since: once its series leaves the
    /// model (after the grace period), the kernel's count still matches
    /// what oomwatch saw, and nothing is reported as unobserved.
    #[test]
    fn a_gone_cgroups_kills_are_not_taken_for_unobserved_ones_when_its_series_leaves() {
        let proc_root = std::env::temp_dir().join(format!("oomwatch-reconcile-{}", std::process::id()));
        std::fs::create_dir_all(&proc_root).unwrap();
        std::fs::write(proc_root.join("vmstat"), "nr_free_pages 1\noom_kill 7\n").unwrap();
        let model = Arc::new(Model::default());
        model.set_host_kills(HostKills { kernel_baseline: Some(6), ..Default::default() });
        let unobserved = Counter::default();
        let mut r = Reconciler::new(None, model.clone(), Arc::new(EventBus::new(8, 8)), unobserved.clone());
        r.proc_root = proc_root.clone();
        let t0 = Instant::now();
        model.admit("/pod", 1, std::path::Path::new("/x"));
        model.record_kill("/pod", Constraint::Memcg, Some("hog"), t0);
        model.mark_removed("/pod", t0);
        r.pass();
        r.pass();
        assert_eq!(unobserved.get(), 0);
        model.expire(t0 + Duration::from_secs(601), |_| false);
        assert_eq!(model.kills_of("/pod"), 0, "the series left");
        r.pass();
        r.pass();
        assert_eq!(unobserved.get(), 0, "the kill was seen");
        // A kill the daemon did not see is still found.
        std::fs::write(proc_root.join("vmstat"), "oom_kill 8\n").unwrap();
        r.pass();
        r.pass();
        assert_eq!(unobserved.get(), 1);
        std::fs::remove_dir_all(&proc_root).unwrap();
    }
}
