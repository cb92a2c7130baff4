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
    oom::{OomKillRecord, SAME_VICTIM_WINDOW_NS, victim_field},
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
    /// The last kills' victims, to drop a second record of one kill.
    kills_seen: Mutex<RecentKills>,
}

/// Victim pid and kernel time of the last [`RECENT_KILLS`] kill records.
/// The kernel marks a task an OOM victim once, so a second record naming
/// the same pid within [`SAME_VICTIM_WINDOW_NS`] is the same kill, split
/// by the kernel program into two (its parts met no more: a vCPU stalled
/// between them, or the loader asked for both parts in between). Both
/// records carry the kill's own time, however late the second is sent.
#[derive(Default)]
struct RecentKills(VecDeque<(u32, u64)>);

const RECENT_KILLS: usize = 256;

impl RecentKills {
    /// Whether this record's kill was handled already; remembered if not.
    fn seen_before(&mut self, r: &OomKillRecord) -> bool {
        if r.present & victim_field::PID == 0 {
            return false;
        }
        let (pid, ktime_ns) = (r.victim_pid, r.header.ktime_ns);
        if self.0.iter().any(|&(p, t)| p == pid && t.abs_diff(ktime_ns) < SAME_VICTIM_WINDOW_NS) {
            return true;
        }
        if self.0.len() == RECENT_KILLS {
            self.0.pop_front();
        }
        self.0.push_back((pid, ktime_ns));
        false
    }
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
        Self {
            kills,
            bus,
            counters,
            drop_kill_records: AtomicU64::new(drop_kill_records),
            victims: Mutex::default(),
            kills_seen: Mutex::default(),
        }
    }

    pub fn handle(&self, record: Record) {
        if matches!(record, Record::OomKill(_)) && self.drop_kill_records.load(Ordering::Relaxed) > 0 {
            self.drop_kill_records.fetch_sub(1, Ordering::Relaxed);
            log::warn!("fault injection: dropped a kill record");
            return;
        }
        let event = match record {
            Record::OomKill(r) => {
                if self.kills_seen.lock().unwrap_or_else(|e| e.into_inner()).seen_before(&r) {
                    // Counted by the kernel program as an incomplete record.
                    log::debug!("a second record of the kill of pid {} (its parts were split): dropped", r.victim_pid);
                    return;
                }
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

#[cfg(test)]
mod tests {
    use oomwatch_common::header::{RecordHeader, RecordKind};

    use super::*;

    fn kill_of(pid: u32, ktime_ns: u64) -> OomKillRecord {
        OomKillRecord { header: RecordHeader::new(RecordKind::OomKill, ktime_ns), present: victim_field::PID, victim_pid: pid, ..Default::default() }
    }

    #[test]
    fn a_second_record_of_one_kill_is_dropped_and_no_other() {
        let mut seen = RecentKills::default();
        assert!(!seen.seen_before(&kill_of(10, 5_000)));
        assert!(seen.seen_before(&kill_of(10, 5_020)), "the other part of pid 10's kill, sent apart");
        assert!(!seen.seen_before(&kill_of(11, 5_030)), "another victim");
        assert!(!seen.seen_before(&kill_of(10, 5_000 + SAME_VICTIM_WINDOW_NS)), "pid 10 reused, killed again");
        let no_pid = OomKillRecord { present: 0, ..kill_of(0, 5_040) };
        assert!(!seen.seen_before(&no_pid) && !seen.seen_before(&no_pid), "a record whose pid was not read is never a repeat");
    }

    #[test]
    fn the_kills_remembered_are_bounded() {
        let mut seen = RecentKills::default();
        for pid in 1..=RECENT_KILLS as u32 + 1 {
            assert!(!seen.seen_before(&kill_of(pid, 1_000)));
        }
        assert_eq!(seen.0.len(), RECENT_KILLS);
        assert!(!seen.seen_before(&kill_of(1, 1_000)), "the oldest was forgotten");
        assert!(seen.seen_before(&kill_of(RECENT_KILLS as u32 + 1, 1_000)));
    }
}
