//! Kernel records become events: a kill is explained ([`KillExplainer`]),
//! a victim's exit confirms its kill (and amends the published kill), a
//! long reclaim stall is named. Every event is published on the stream.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use oomwatch_common::{
    exit::VictimExitRecord,
    reclaim::{ReclaimKind, ReclaimStallRecord},
};

use super::kills::KillExplainer;
use crate::{
    kernel::decode::{Record, comm_str},
    model::{bus::EventBus, counters::DaemonCounters},
    readers::Hierarchy,
    wire::{Event, EventBody, ReclaimKindName, ReclaimStall, VictimExit, rfc3339},
};

pub struct RecordHandler {
    kills: KillExplainer,
    bus: Arc<EventBus>,
    counters: Arc<DaemonCounters>,
    /// Test-only: kill records to drop (`--inject-drop-kills`), as a full
    /// ring buffer would, to prove the reconciliation.
    drop_kill_records: AtomicU64,
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

impl RecordHandler {
    pub fn new(kills: KillExplainer, bus: Arc<EventBus>, counters: Arc<DaemonCounters>, drop_kill_records: u64) -> Self {
        Self { kills, bus, counters, drop_kill_records: AtomicU64::new(drop_kill_records), victims: Mutex::default() }
    }

    pub fn handle(&self, record: Record) {
        if matches!(record, Record::OomKill(_)) && self.drop_kill_records.load(Ordering::Relaxed) > 0 {
            self.drop_kill_records.fetch_sub(1, Ordering::Relaxed);
            log::warn!("fault injection: dropped a kill record");
            return;
        }
        let event = match record {
            Record::OomKill(r) => {
                let now = Instant::now();
                // Who died, where, first; explaining it takes longer.
                if self.bus.wants_first_words()
                    && let Some(first_word) = self.kills.first_word(&r)
                {
                    self.bus.notice(&first_word);
                }
                let event = self.kills.explain(&r, now);
                self.victims.lock().unwrap_or_else(|e| e.into_inner()).insert(r.victim_pid, event.cgroup.clone());
                self.counters.events_published.inc();
                self.bus.publish_kept(event);
                return;
            }
            Record::VictimExit(r) => self.victim_exit(&r),
            Record::ReclaimStall(r) => self.reclaim_stall(&r),
        };
        self.counters.events_published.inc();
        self.bus.publish(event);
    }

    fn reclaim_stall(&self, r: &ReclaimStallRecord) -> Event {
        let cgroup = if r.memcg_id != 0 {
            self.kills.resolver.resolve(Hierarchy::Memory, r.memcg_id)
        } else {
            self.kills.resolver.resolve(Hierarchy::Unified, r.cgroup_id)
        };
        let reclaim_kind = match ReclaimKind::try_from(r.reclaim_kind) {
            Ok(ReclaimKind::Memcg) => ReclaimKindName::Memcg,
            _ => ReclaimKindName::Direct,
        };
        let body = EventBody::ReclaimStall(ReclaimStall {
                pid: r.tgid,
                tid: r.pid,
                comm: comm_str(&r.comm),
                duration_ms: (r.duration_ns as f64 / 1e3).round() / 1e3,
                reclaim_kind,
                nr_reclaimed: (r.nr_reclaimed != u64::MAX).then_some(r.nr_reclaimed),
                order: (r.order >= 0).then_some(r.order),
                suppressed: r.suppressed,
        });
        let time = rfc3339(self.kills.clock.wall_time(r.header.ktime_ns));
        Event::new(body, time, cgroup.unwrap_or_else(|| "unknown".to_owned()), Some(r.header.ktime_ns))
    }

    fn victim_exit(&self, r: &VictimExitRecord) -> Event {
        let latency_ms = r.header.ktime_ns.saturating_sub(r.marked_ktime_ns) as f64 / 1e6;
        let remembered = self.victims.lock().unwrap_or_else(|e| e.into_inner()).by_pid.remove(&r.pid);
        let cgroup = remembered
            .or_else(|| self.kills.resolver.resolve(Hierarchy::Memory, r.memcg_id))
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
        let body = EventBody::VictimExit(VictimExit { pid, comm: comm_str(&r.comm), exit_latency_ms: latency_ms });
        Event::new(body, rfc3339(self.kills.clock.wall_time(r.header.ktime_ns)), cgroup, Some(r.header.ktime_ns))
    }
}
