//! Kills published before anything placed them (`cgroup` or `constraint`
//! `unknown`). The kernel's report, read a moment later, may still name
//! the victim's cgroup and the limit that was hit, and amends the event;
//! a count on `oomwatch_oom_kills_total` under `unknown` would stay there,
//! since a counter cannot move a kill to another series. So the count of
//! such a kill waits here, for its report or for [`HOLD`], while the
//! kernel log is read (the kill line alone, printed when the kernel's rate
//! limit holds the report back, ends the wait too). With no reader it is
//! counted at once.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::wire::{Constraint, Workload};

/// How long an unplaced kill's count waits for its report. The report is
/// printed before the kill record is written; the kill path has waited
/// 100 ms for it already, so one still coming is late by a console's
/// write or a busy reader, not by seconds.
pub const HOLD: Duration = Duration::from_secs(5);

/// Unplaced kills held at most: a storm's worth. The oldest is counted as
/// it is when one more comes.
const MAX_HELD: usize = 256;

/// A kill counted in the model's totals, its series not yet.
#[derive(Clone, Debug, PartialEq)]
pub struct UnplacedKill {
    pub victim_pid: u32,
    /// The kill's kernel time: with the pid, which kill it is.
    pub ktime_ns: Option<u64>,
    pub cgroup: String,
    pub constraint: Constraint,
    pub victim_comm: Option<String>,
    pub workload: Workload,
    pub main_process: Option<bool>,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub struct Held {
    kills: VecDeque<UnplacedKill>,
}

impl Held {
    /// Holds `kill`; returns the one it pushed out, to be counted as it is.
    pub fn hold(&mut self, kill: UnplacedKill) -> Option<UnplacedKill> {
        let pushed_out = (self.kills.len() == MAX_HELD).then(|| self.kills.pop_front()).flatten();
        self.kills.push_back(kill);
        pushed_out
    }

    /// The held kill of victim `pid` at `ktime_ns`, taken out.
    pub fn take(&mut self, pid: u32, ktime_ns: Option<u64>) -> Option<UnplacedKill> {
        let i = self.kills.iter().position(|k| k.victim_pid == pid && k.ktime_ns == ktime_ns)?;
        self.kills.remove(i)
    }

    /// The kills held for [`HOLD`] by `now`, taken out, oldest first.
    pub fn overdue(&mut self, now: Instant) -> Vec<UnplacedKill> {
        let due = self.kills.iter().take_while(|k| now.saturating_duration_since(k.at) >= HOLD).count();
        self.kills.drain(..due).collect()
    }

    pub fn len(&self) -> usize {
        self.kills.len()
    }

    /// The held kills' cgroups, one per kill. A kill whose cgroup is known
    /// and only its constraint is not is seen there already: the kill
    /// accounting counts it at once, as it counts a placed kill.
    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        self.kills.iter().map(|k| k.cgroup.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(pid: u32, at: Instant) -> UnplacedKill {
        UnplacedKill {
            victim_pid: pid,
            ktime_ns: Some(u64::from(pid) * 1000),
            cgroup: "unknown".into(),
            constraint: Constraint::Unknown,
            victim_comm: None,
            workload: Workload::default(),
            main_process: None,
            at,
        }
    }

    #[test]
    fn a_held_kill_is_taken_by_its_pid_and_time_or_when_overdue() {
        let t0 = Instant::now();
        let mut held = Held::default();
        assert_eq!(held.hold(kill(1, t0)), None);
        assert_eq!(held.hold(kill(2, t0 + Duration::from_secs(1))), None);
        assert_eq!(held.take(1, Some(999)), None, "another kill of the same pid");
        assert_eq!(held.take(1, Some(1000)).map(|k| k.victim_pid), Some(1));
        assert_eq!(held.take(1, Some(1000)), None, "taken once");
        held.hold(kill(3, t0 + Duration::from_secs(2)));
        assert!(held.overdue(t0 + HOLD).is_empty());
        let due: Vec<u32> = held.overdue(t0 + Duration::from_secs(2) + HOLD).iter().map(|k| k.victim_pid).collect();
        assert_eq!(due, [2, 3]);
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn held_kills_are_bounded_and_the_oldest_goes_out_first() {
        let t0 = Instant::now();
        let mut held = Held::default();
        for pid in 0..MAX_HELD as u32 {
            assert_eq!(held.hold(kill(pid, t0)), None);
        }
        assert_eq!(held.hold(kill(9999, t0)).map(|k| k.victim_pid), Some(0));
        assert_eq!(held.len(), MAX_HELD);
    }
}
