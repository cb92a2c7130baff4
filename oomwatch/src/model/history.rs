//! A fixed-size ring of recent samples per cgroup: what memory looked like
//! in the minutes before a kill. Compact (12 bytes a point) because every
//! tracked cgroup has one.

use std::collections::VecDeque;

use crate::wire::Ramp;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Seconds on the daemon's monotonic clock.
    pub at_s: u32,
    pub usage_kib: u32,
    pub working_set_kib: u32,
    /// What the kernel cannot reclaim without swap (usage minus file cache
    /// plus shmem): the level the forecast extrapolates.
    pub unreclaimable_kib: u32,
}

#[derive(Clone, Debug)]
pub struct History {
    points: VecDeque<Point>,
    capacity: usize,
    /// Trailing points known to share the last point's unreclaimable level
    /// (a lower bound): the forecast of a level that never moved is known
    /// without reading the ring.
    level_run: usize,
}

impl History {
    /// Allocated at full size once: growing by doubling as samples arrive
    /// leaves freed chunks scattered through the heap, which after cgroup
    /// churn the allocator cannot give back.
    pub fn new(capacity: usize) -> Self {
        Self { points: VecDeque::with_capacity(capacity), capacity, level_run: 0 }
    }

    pub fn push(&mut self, p: Point) {
        if let Some(last) = self.points.back_mut()
            && last.at_s == p.at_s
        {
            if last.unreclaimable_kib != p.unreclaimable_kib {
                // Whether it matches the point before is not known: start over.
                self.level_run = 1;
            }
            *last = p;
            return;
        }
        let same_level = self.points.back().is_some_and(|last| last.unreclaimable_kib == p.unreclaimable_kib);
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(p);
        self.level_run = if same_level { (self.level_run + 1).min(self.points.len()) } else { 1 };
    }

    /// Whether every point has the same unreclaimable level.
    pub fn level_never_moved(&self) -> bool {
        !self.points.is_empty() && self.level_run >= self.points.len()
    }

    /// The last point, as a slice of one.
    pub fn last_as_slice(&self) -> &[Point] {
        self.points.back().map(std::slice::from_ref).unwrap_or(&[])
    }

    pub fn points(&self) -> impl DoubleEndedIterator<Item = &Point> + ExactSizeIterator {
        self.points.iter()
    }

    /// The points, oldest first, as one slice (the ring is rotated in
    /// place when it wrapped: no allocation).
    pub fn as_slice(&mut self) -> &[Point] {
        self.points.make_contiguous()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points of the last `window_s` seconds before `now_s`, as the
    /// event JSON carries them.
    pub fn recent(&self, now_s: u32, window_s: u32) -> Ramp {
        let from = now_s.saturating_sub(window_s);
        let pts: Vec<&Point> = self.points.iter().filter(|p| p.at_s >= from).collect();
        Ramp {
            seconds_ago: pts.iter().map(|p| now_s.saturating_sub(p.at_s)).collect(),
            usage_bytes: pts.iter().map(|p| u64::from(p.usage_kib) * 1024).collect(),
            working_set_bytes: pts.iter().map(|p| u64::from(p.working_set_kib) * 1024).collect(),
            pressure_some_avg10: Vec::new(),
            limit_bytes: None,
        }
    }
}

pub fn kib(bytes: u64) -> u32 {
    (bytes / 1024).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at_s: u32, mib: u32) -> Point {
        Point { at_s, usage_kib: mib * 1024, working_set_kib: mib * 1024, unreclaimable_kib: mib * 1024 }
    }

    #[test]
    fn keeps_the_last_capacity_points_and_merges_same_second() {
        let mut h = History::new(3);
        for s in 0..5 {
            h.push(p(s, s));
        }
        h.push(p(4, 40));
        let at: Vec<u32> = h.points().map(|p| p.at_s).collect();
        assert_eq!(at, vec![2, 3, 4]);
        assert_eq!(h.points().last().unwrap().usage_kib, 40 * 1024);
    }

    #[test]
    fn knows_when_the_level_never_moved() {
        let mut h = History::new(3);
        assert!(!h.level_never_moved(), "empty");
        h.push(p(0, 5));
        h.push(p(1, 5));
        assert!(h.level_never_moved());
        h.push(p(2, 6));
        assert!(!h.level_never_moved());
        h.push(p(3, 6));
        assert!(!h.level_never_moved(), "5 MiB is still in the ring");
        h.push(p(4, 6));
        assert!(h.level_never_moved(), "the ring holds 6 MiB only");
        h.push(p(4, 7));
        assert!(!h.level_never_moved(), "the same second replaced by another level");
        assert_eq!(h.last_as_slice(), &[p(4, 7)]);
    }

    #[test]
    fn recent_window_is_relative_to_now() {
        let mut h = History::new(100);
        for s in 0..100 {
            h.push(p(s, s));
        }
        let r = h.recent(99, 5);
        assert_eq!(r.seconds_ago, vec![5, 4, 3, 2, 1, 0]);
        assert_eq!(*r.usage_bytes.last().unwrap(), 99 << 20);
    }
}
