//! OOM incidents: the kills of one OOM-killer invocation. With
//! `memory.oom.group` set (cgroup v2) the kernel kills every task of the
//! group, one `mark_victim` each, all in the allocating thread's one call
//! to `oom_kill_process`, within microseconds (more where printk goes to a
//! slow console).
//!
//! The join key: the same trigger thread and the same limit cgroup, each
//! kill within [`GROUP_GAP_NS`] of the previous one by the kernel's clock.
//! Where the kprobe on `oom_kill_process` runs, it fires once per
//! invocation and only the first kill of a group carries its
//! `oom_control`: a kill with one always starts a new incident, so two
//! invocations by the same thread moments apart are never joined, and the
//! members (whose limit cgroup is only inferred) join within
//! [`MARKED_GROUP_GAP_NS`] whatever limit was inferred for them. v1 has
//! no group kills: there every kill is its own incident.

use std::time::{Duration, Instant};

use crate::wire::{Constraint, INCIDENT_VICTIMS, Incident, IncidentRef, IncidentVictim, Trigger};

/// The longest gap between two kills of one group kill, by the kernel's
/// clock. The kernel kills the group in one loop; this covers a console
/// printing each "Killed process" line at 115200 baud under emulation.
pub const GROUP_GAP_NS: u64 = 250_000_000;

/// The same, where the kernel marks each invocation (`oom_control`): the
/// gap only keeps a member from joining a long-closed incident. The 6.1 VM
/// under emulation took 132 ms between two members.
pub const MARKED_GROUP_GAP_NS: u64 = 2_000_000_000;

/// An incident is settled (and published) when no kill joined it for this long.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Open incidents kept at most; the oldest is settled early past it.
const MAX_OPEN: usize = 64;

/// One kill, as the grouping needs it.
#[derive(Clone, Debug)]
pub struct KillSeen {
    pub ktime_ns: u64,
    pub trigger: Trigger,
    pub constraint: Constraint,
    pub limit_cgroup: Option<String>,
    pub victim: IncidentVictim,
    /// Group kills can happen here (cgroup v2: `memory.oom.group`).
    pub group_kills_possible: bool,
    /// The kill carries the kernel's `oom_control`: the first kill of an
    /// invocation. The other kills of a group do not, and their limit
    /// cgroup is inferred (it may name another cgroup than the kernel's).
    pub starts_invocation: bool,
}

#[derive(Debug)]
struct Open {
    incident: Incident,
    first_victim_cgroup: String,
    /// The first kill carried `oom_control`: the kernel marks each
    /// invocation, so the members need not match its limit cgroup.
    started_by_kernel: bool,
    first_ktime_ns: u64,
    last_ktime_ns: u64,
    last_joined: Instant,
}

impl Open {
    fn takes(&self, kill: &KillSeen) -> bool {
        let i = &self.incident;
        kill.group_kills_possible
            && !kill.starts_invocation
            && i.trigger.tid == kill.trigger.tid
            && i.trigger.pid == kill.trigger.pid
            && (self.started_by_kernel || (i.constraint == kill.constraint && i.limit_cgroup == kill.limit_cgroup))
            && kill.ktime_ns >= self.last_ktime_ns
            && kill.ktime_ns - self.last_ktime_ns <= if self.started_by_kernel { MARKED_GROUP_GAP_NS } else { GROUP_GAP_NS }
    }

    fn reference(&self) -> IncidentRef {
        IncidentRef { id: self.incident.id, victims_so_far: self.incident.count, first_victim_cgroup: self.first_victim_cgroup.clone() }
    }
}

/// The incidents still open, and how many there were in all.
#[derive(Debug, Default)]
pub struct Incidents {
    open: Vec<Open>,
    total: u64,
    recounts: u64,
}

impl Incidents {
    /// Places a kill in its incident (a new one unless it joins an open
    /// one); returns what its event says of the incident.
    pub fn join(&mut self, kill: KillSeen, now: Instant) -> IncidentRef {
        if let Some(open) = self.open.iter_mut().rev().find(|o| o.takes(&kill)) {
            let i = &mut open.incident;
            i.count = i.count.saturating_add(1);
            if i.victims.len() < INCIDENT_VICTIMS {
                i.victims.push(kill.victim);
            }
            i.span_ms = (kill.ktime_ns - open.first_ktime_ns) as f64 / 1e6;
            open.last_ktime_ns = kill.ktime_ns;
            open.last_joined = now;
            return open.reference();
        }
        self.total += 1;
        let open = Open {
            first_victim_cgroup: kill.victim.cgroup.clone(),
            started_by_kernel: kill.starts_invocation,
            first_ktime_ns: kill.ktime_ns,
            last_ktime_ns: kill.ktime_ns,
            last_joined: now,
            incident: Incident {
                id: kill.ktime_ns,
                trigger: kill.trigger,
                constraint: kill.constraint,
                limit_cgroup: kill.limit_cgroup,
                count: 1,
                victims: vec![kill.victim],
                span_ms: 0.0,
            },
        };
        let reference = open.reference();
        self.open.push(open);
        reference
    }

    /// Incidents that took no kill for [`SETTLE`] (and the oldest past
    /// the bound), closed. Only those with more than one victim are
    /// returned: a kill alone says all there is to say.
    pub fn settle(&mut self, now: Instant) -> Vec<Incident> {
        let excess = self.open.len().saturating_sub(MAX_OPEN);
        let mut index = 0;
        let mut settled = Vec::new();
        self.open.retain_mut(|o| {
            index += 1;
            let done = index <= excess || now.saturating_duration_since(o.last_joined) >= SETTLE;
            if done && o.incident.count > 1 {
                settled.push(std::mem::replace(&mut o.incident, empty_incident()));
            }
            !done
        });
        settled
    }

    /// When the next open incident settles.
    pub fn next_settle(&self) -> Option<Instant> {
        self.open.iter().map(|o| o.last_joined + SETTLE).min()
    }

    /// Incidents opened since start (each OOM-killer invocation seen).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A group kill's first victim, counted twice by the kernel.
    pub fn note_recount(&mut self) {
        self.recounts += 1;
    }

    pub fn recounts(&self) -> u64 {
        self.recounts
    }
}

fn empty_incident() -> Incident {
    Incident { id: 0, trigger: Trigger::default(), constraint: Constraint::Memcg, limit_cgroup: None, count: 0, victims: Vec::new(), span_ms: 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(ktime_ms: u64, tid: u32, pid: u32, may_join: bool) -> KillSeen {
        KillSeen {
            ktime_ns: ktime_ms * 1_000_000,
            trigger: Trigger { pid: 100, tid, comm: "hog".into(), cgroup: Some("/g".into()) },
            constraint: Constraint::Memcg,
            limit_cgroup: Some("/g".into()),
            victim: IncidentVictim { pid, comm: Some("w".into()), cgroup: format!("/g/{pid}") },
            group_kills_possible: true,
            starts_invocation: !may_join,
        }
    }

    #[test]
    fn a_group_kill_is_one_incident_counted_as_it_grows_and_published_once_settled() {
        let (mut inc, t0) = (Incidents::default(), Instant::now());
        let a = inc.join(kill(1000, 7, 1, false), t0);
        let b = inc.join(kill(1001, 7, 2, true), t0);
        let c = inc.join(kill(1003, 7, 3, true), t0);
        assert_eq!((a.id, b.id, c.id), (1_000_000_000, 1_000_000_000, 1_000_000_000));
        assert_eq!((a.victims_so_far, b.victims_so_far, c.victims_so_far), (1, 2, 3));
        assert_eq!(c.first_victim_cgroup, "/g/1", "the alert's cgroup stays the first victim's");
        assert!(inc.settle(t0 + SETTLE / 2).is_empty(), "not settled yet");
        let done = inc.settle(t0 + SETTLE);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].count, 3);
        assert_eq!(done[0].victims.iter().map(|v| v.pid).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(done[0].span_ms, 3.0);
        assert_eq!(inc.total(), 1);
        assert!(inc.next_settle().is_none());
    }

    #[test]
    fn kills_of_other_invocations_start_their_own_incident() {
        let (mut inc, t0) = (Incidents::default(), Instant::now());
        let first = inc.join(kill(1000, 7, 1, true), t0);
        assert_ne!(inc.join(kill(1001, 8, 2, true), t0).id, first.id, "another trigger thread");
        assert_ne!(inc.join(kill(1002, 7, 3, false), t0).id, first.id, "the kernel's next oom_kill_process call");
        let mut other_limit = kill(1003, 9, 4, true);
        other_limit.limit_cgroup = Some("/h".into());
        let h = inc.join(other_limit, t0);
        let mut same_thread_other_limit = kill(1004, 9, 5, true);
        same_thread_other_limit.limit_cgroup = Some("/g".into());
        assert_ne!(inc.join(same_thread_other_limit, t0).id, h.id, "another limit cgroup");
        assert_ne!(inc.join(kill(1300, 9, 6, true), t0).id, h.id, "past the gap");
        assert_eq!(inc.total(), 6);
        assert!(inc.settle(t0 + SETTLE).is_empty(), "single kills publish no incident");
    }

    #[test]
    fn members_of_a_kernel_marked_invocation_join_whatever_limit_was_inferred_for_them() {
        let (mut inc, t0) = (Incidents::default(), Instant::now());
        let first = inc.join(kill(1000, 7, 1, false), t0);
        let mut member = kill(1001, 7, 2, true);
        member.limit_cgroup = Some("/g/2".into());
        assert_eq!(inc.join(member, t0).id, first.id);
        assert_eq!(inc.join(kill(2500, 7, 3, true), t0).id, first.id, "a slow console between members");
        assert_ne!(inc.join(kill(5000, 7, 4, true), t0).id, first.id, "long after");
    }

    #[test]
    fn without_group_kills_every_kill_is_its_own_incident() {
        let (mut inc, t0) = (Incidents::default(), Instant::now());
        let first = inc.join(kill(1000, 7, 1, true), t0);
        let mut v1 = kill(1001, 7, 2, true);
        v1.group_kills_possible = false;
        assert_ne!(inc.join(v1, t0).id, first.id);
    }

    #[test]
    fn a_kill_joins_the_latest_open_incident_of_its_thread() {
        let (mut inc, t0) = (Incidents::default(), Instant::now());
        inc.join(kill(1000, 7, 1, false), t0);
        let second = inc.join(kill(1100, 7, 2, false), t0);
        let member = inc.join(kill(1101, 7, 3, true), t0);
        assert_eq!((member.id, member.victims_so_far), (second.id, 2));
    }

    #[test]
    fn open_incidents_are_bounded() {
        let (mut inc, t0) = (Incidents::default(), Instant::now());
        for i in 0..(MAX_OPEN as u64 + 10) {
            inc.join(kill(1000 + i * 1000, 7, i as u32, true), t0);
            inc.join(kill(1000 + i * 1000 + 1, 7, 10_000 + i as u32, true), t0);
        }
        let early = inc.settle(t0);
        assert_eq!(early.len(), 10, "the oldest past the bound are settled at once");
        assert_eq!(early[0].victims[0].pid, 0);
        assert_eq!(inc.open.len(), MAX_OPEN);
    }
}
