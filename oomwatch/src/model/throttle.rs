//! Throttling at memory.high (cgroup v2): above it the kernel reclaims
//! the cgroup and makes its tasks sleep on allocation, and counts each
//! time in `memory.events.local` `high`. A cgroup "keeps hitting" it when
//! that counter rises on [`START_TICKS`] sampler ticks, each within
//! [`END_QUIET`] of the previous rise (the kernel's penalty sleeps last up
//! to 2 s, so the hardest-throttled cgroups rise only every other tick):
//! an episode starts; it ends once the counter stood still for
//! [`END_QUIET`]. One change per episode edge, never one per tick.

use std::time::{Duration, Instant};

/// Ticks with the counter rising before an episode starts: one rise is a
/// brush with the threshold, not throttling.
pub const START_TICKS: u32 = 2;

/// An episode ends when the counter did not move for this long (more than
/// the kernel's longest penalty sleep, 2 s, and the sampler's tick).
pub const END_QUIET: Duration = Duration::from_secs(5);

/// How long after an episode ended a kill still counts as throttled before it.
pub const RECENT: Duration = Duration::from_secs(10);

/// An edge of an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleChange {
    Started { since: Instant, high_events: u64 },
    Ended { since: Instant, duration: Duration, high_events: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Episode {
    since: Instant,
    last_rise: Instant,
    count_at_start: u64,
    count_now: u64,
}

impl Episode {
    fn high_events(&self) -> u64 {
        self.count_now.saturating_sub(self.count_at_start)
    }
}

/// One cgroup's throttling, from its `high` counter at each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttle {
    last_count: Option<u64>,
    /// Where the current run of rising ticks began: (when, counter before
    /// it), and its last rise.
    rising_from: Option<(Instant, u64, Instant)>,
    rising_ticks: u32,
    episode: Option<Episode>,
    /// The last episode that ended: (since, last rise).
    ended: Option<(Instant, Instant)>,
}

impl Throttle {
    /// The counter as of the last tick.
    pub fn last_count(&self) -> Option<u64> {
        self.last_count
    }

    /// Rising or in an episode: a tick may change something even when the
    /// counter stands still (the quiet time runs out).
    pub fn is_active(&self) -> bool {
        self.rising_from.is_some() || self.episode.is_some()
    }

    /// The counter at a sampler tick (`None`: not known, v1 or unread).
    pub fn tick(&mut self, count: Option<u64>, now: Instant) -> Option<ThrottleChange> {
        let count = count?;
        let before = self.last_count.replace(count)?;
        // A counter that went down belongs to a new cgroup of the same name.
        let rose = count > before;
        if let Some(ep) = &mut self.episode {
            if rose {
                ep.last_rise = now;
                ep.count_now = count;
                return None;
            }
            if now.saturating_duration_since(ep.last_rise) < END_QUIET && count >= before {
                return None;
            }
            let ep = self.episode.take()?;
            self.ended = Some((ep.since, ep.last_rise));
            return Some(ThrottleChange::Ended {
                since: ep.since,
                duration: ep.last_rise.saturating_duration_since(ep.since),
                high_events: ep.high_events(),
            });
        }
        let quiet_since = |last: Instant| now.saturating_duration_since(last) >= END_QUIET;
        if self.rising_from.is_some_and(|(_, _, last)| quiet_since(last)) || count < before {
            (self.rising_ticks, self.rising_from) = (0, None);
        }
        if !rose {
            return None;
        }
        let (since, from, last) = self.rising_from.get_or_insert((now, before, now));
        *last = now;
        let (since, from) = (*since, *from);
        self.rising_ticks += 1;
        if self.rising_ticks < START_TICKS {
            return None;
        }
        let ep = Episode { since, last_rise: now, count_at_start: from, count_now: count };
        (self.episode, self.rising_ticks, self.rising_from) = (Some(ep), 0, None);
        Some(ThrottleChange::Started { since, high_events: ep.high_events() })
    }

    /// How long the cgroup was throttled up to `now`: the episode under
    /// way, or one that ended within [`RECENT`].
    pub fn throttled_for(&self, now: Instant) -> Option<Duration> {
        if let Some(ep) = &self.episode {
            return Some(now.saturating_duration_since(ep.since));
        }
        let (since, last_rise) = self.ended?;
        (now.saturating_duration_since(last_rise) <= RECENT).then(|| last_rise.saturating_duration_since(since))
    }

    pub fn is_throttled(&self) -> bool {
        self.episode.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    /// Feeds one counter value per tick; returns the changes with their tick index.
    fn run(t: &mut Throttle, t0: Instant, counts: &[u64]) -> Vec<(usize, ThrottleChange)> {
        counts.iter().enumerate().filter_map(|(i, &c)| t.tick(Some(c), t0 + TICK * i as u32).map(|ch| (i, ch))).collect()
    }

    #[test]
    fn an_episode_starts_after_consecutive_rises_and_ends_once_after_a_quiet_spell() {
        let (mut t, t0) = (Throttle::default(), Instant::now());
        let changes = run(&mut t, t0, &[5, 5, 9, 14, 20, 30, 31, 31, 31, 31, 31, 31]);
        assert_eq!(
            changes,
            vec![
                (3, ThrottleChange::Started { since: t0 + TICK * 2, high_events: 9 }),
                (11, ThrottleChange::Ended { since: t0 + TICK * 2, duration: TICK * 4, high_events: 26 }),
            ],
            "one start, one end: nothing per tick between"
        );
        assert_eq!(t.throttled_for(t0 + TICK * 12), Some(TICK * 4), "an episode that just ended still counts for a kill");
        assert_eq!(t.throttled_for(t0 + TICK * 30), None, "long ago");
    }

    #[test]
    fn rises_far_apart_are_not_throttling() {
        let (mut t, t0) = (Throttle::default(), Instant::now());
        assert!(run(&mut t, t0, &[0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3]).is_empty());
        assert!(!t.is_throttled() && t.throttled_for(t0 + TICK * 15).is_none());
    }

    #[test]
    fn the_hardest_throttled_rise_every_other_tick_and_are_one_episode() {
        // The kernel's penalty sleeps 2 s between charges.
        let (mut t, t0) = (Throttle::default(), Instant::now());
        let changes = run(&mut t, t0, &[0, 5, 5, 10, 10, 15, 15, 20, 20, 20, 20, 20, 20, 20]);
        assert_eq!(
            changes,
            vec![
                (3, ThrottleChange::Started { since: t0 + TICK, high_events: 10 }),
                (12, ThrottleChange::Ended { since: t0 + TICK, duration: TICK * 6, high_events: 20 }),
            ]
        );
    }

    #[test]
    fn a_kill_during_an_episode_sees_it_so_far() {
        let (mut t, t0) = (Throttle::default(), Instant::now());
        run(&mut t, t0, &[0, 10, 20, 30, 40]);
        assert!(t.is_throttled());
        assert_eq!(t.throttled_for(t0 + TICK * 41), Some(TICK * 40));
    }

    #[test]
    fn unknown_counters_change_nothing_and_a_reset_ends_the_episode() {
        let (mut t, t0) = (Throttle::default(), Instant::now());
        assert_eq!(t.tick(None, t0), None);
        run(&mut t, t0, &[0, 10, 20]);
        assert_eq!(t.tick(None, t0 + TICK * 3), None);
        assert!(t.is_throttled());
        assert!(matches!(t.tick(Some(1), t0 + TICK * 4), Some(ThrottleChange::Ended { high_events: 20, .. })));
    }
}
