//! A bounded history of recent samples per cgroup: what memory looked like
//! in the minutes before a kill. Every tracked cgroup has one and most of
//! them sit still, so samples that repeat the values before them at the
//! same spacing are kept as one run (a cgroup idle for the whole window
//! costs one run, not `capacity` points), and the storage of a moving one
//! grows in fixed chunks up to what its points need.

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

impl Point {
    fn same_values(&self, other: &Point) -> bool {
        (self.usage_kib, self.working_set_kib, self.unreclaimable_kib)
            == (other.usage_kib, other.working_set_kib, other.unreclaimable_kib)
    }
}

/// `count` points with `last`'s values, `step_s` seconds apart, the newest
/// at `last.at_s` (20 bytes for any length).
#[derive(Clone, Copy, Debug)]
struct Run {
    last: Point,
    count: u16,
    /// 0 while the run holds one point.
    step_s: u16,
}

impl Run {
    fn one(p: Point) -> Self {
        Self { last: p, count: 1, step_s: 0 }
    }

    fn at(&self, i: u16) -> Point {
        let back = u32::from(self.count - 1 - i) * u32::from(self.step_s);
        Point { at_s: self.last.at_s - back, ..self.last }
    }

    /// Takes `p` as the run's next point when it has the same values at
    /// the same spacing.
    fn extend(&mut self, p: &Point) -> bool {
        let Some(gap) = p.at_s.checked_sub(self.last.at_s).and_then(|g| u16::try_from(g).ok()) else {
            return false;
        };
        let spacing_fits = gap > 0 && (self.count == 1 || gap == self.step_s);
        if !spacing_fits || self.count == u16::MAX || !self.last.same_values(p) {
            return false;
        }
        self.step_s = gap;
        self.count += 1;
        self.last.at_s = p.at_s;
        true
    }
}

/// Runs the storage grows by: a chunk at a time, not by doubling, so a
/// cgroup that moves a little does not hold room for the whole window.
const RUNS_CHUNK: usize = 8;

#[derive(Clone, Debug)]
pub struct History {
    runs: VecDeque<Run>,
    /// Points held (the sum of the runs' counts).
    len: usize,
    capacity: usize,
    /// Trailing points known to share the last point's unreclaimable level
    /// (a lower bound): the forecast of a level that never moved is known
    /// without reading the ring.
    level_run: usize,
}

impl History {
    /// Nothing is allocated until the first point.
    pub fn new(capacity: usize) -> Self {
        Self { runs: VecDeque::new(), len: 0, capacity: capacity.max(1), level_run: 0 }
    }

    pub fn push(&mut self, p: Point) {
        if let Some(last) = self.runs.back().map(|r| r.last)
            && last.at_s == p.at_s
        {
            if last.unreclaimable_kib != p.unreclaimable_kib {
                // Whether it matches the point before is not known: start over.
                self.level_run = 1;
            }
            self.replace_last(p);
            return;
        }
        let same_level = self.runs.back().is_some_and(|r| r.last.unreclaimable_kib == p.unreclaimable_kib);
        if self.len == self.capacity {
            self.pop_oldest();
        }
        self.append(p);
        self.level_run = if same_level { (self.level_run + 1).min(self.len) } else { 1 };
    }

    /// The newest point becomes `p` (a second sample within the same second).
    fn replace_last(&mut self, p: Point) {
        let Some(run) = self.runs.back_mut() else { return };
        if run.count == 1 {
            *run = Run::one(p);
            self.merge_last();
        } else if !run.last.same_values(&p) {
            run.count -= 1;
            run.last.at_s -= u32::from(run.step_s);
            if run.count == 1 {
                run.step_s = 0;
            }
            self.len -= 1;
            self.append(p);
        }
    }

    /// A run of one that was replaced may now continue the run before it.
    fn merge_last(&mut self) {
        let n = self.runs.len();
        if n < 2 {
            return;
        }
        let last = self.runs[n - 1].last;
        if self.runs[n - 2].extend(&last) {
            self.runs.pop_back();
        }
    }

    fn append(&mut self, p: Point) {
        self.len += 1;
        if let Some(run) = self.runs.back_mut()
            && run.extend(&p)
        {
            return;
        }
        if self.runs.len() == self.runs.capacity() {
            // One run first: most cgroups never need a second.
            let chunk = if self.runs.capacity() == 0 { 1 } else { RUNS_CHUNK };
            self.runs.reserve_exact(chunk.min(self.capacity - self.runs.len()).max(1));
        }
        self.runs.push_back(Run::one(p));
    }

    fn pop_oldest(&mut self) {
        let Some(run) = self.runs.front_mut() else { return };
        self.len -= 1;
        run.count -= 1;
        match run.count {
            0 => {
                self.runs.pop_front();
            }
            1 => run.step_s = 0,
            _ => {}
        }
    }

    /// Whether every point has the same unreclaimable level.
    pub fn level_never_moved(&self) -> bool {
        self.len > 0 && self.level_run >= self.len
    }

    /// The last point, as a slice of one.
    pub fn last_as_slice(&self) -> &[Point] {
        self.runs.back().map(|r| std::slice::from_ref(&r.last)).unwrap_or(&[])
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl DoubleEndedIterator<Item = Point> + '_ {
        self.runs.iter().flat_map(|r| (0..r.count).map(|i| r.at(i)))
    }

    /// The points, oldest first, as one slice, written into `buf` (kept by
    /// the caller across cgroups: one buffer, not one per cgroup).
    pub fn points_into<'b>(&self, buf: &'b mut Vec<Point>) -> &'b [Point] {
        buf.clear();
        buf.extend(self.points());
        buf
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The points of the last `window_s` seconds before `now_s`, as the
    /// event JSON carries them.
    pub fn recent(&self, now_s: u32, window_s: u32) -> Ramp {
        let from = now_s.saturating_sub(window_s);
        let pts: Vec<Point> = self.points().filter(|p| p.at_s >= from).collect();
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

    /// The ring of points as it was kept before runs: what a History must
    /// hold, point for point.
    struct Reference {
        points: VecDeque<Point>,
        capacity: usize,
        level_run: usize,
    }

    impl Reference {
        fn new(capacity: usize) -> Self {
            Self { points: VecDeque::new(), capacity, level_run: 0 }
        }

        fn push(&mut self, p: Point) {
            if let Some(last) = self.points.back_mut()
                && last.at_s == p.at_s
            {
                if last.unreclaimable_kib != p.unreclaimable_kib {
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

        fn level_never_moved(&self) -> bool {
            !self.points.is_empty() && self.level_run >= self.points.len()
        }
    }

    fn assert_same(h: &History, r: &Reference, step: usize) {
        let got: Vec<Point> = h.points().collect();
        let want: Vec<Point> = r.points.iter().copied().collect();
        assert_eq!(got, want, "after push {step}");
        assert_eq!(h.len(), want.len());
        assert_eq!(h.last_as_slice(), want.last().map(std::slice::from_ref).unwrap_or(&[]));
        assert_eq!(h.level_never_moved(), r.level_never_moved(), "after push {step}");
        let mut buf = Vec::new();
        assert_eq!(h.points_into(&mut buf), &want[..]);
        for (now, window) in [(want.last().map_or(0, |q| q.at_s), 60), (1000, 5000)] {
            let ramp = h.recent(now, window);
            let from = now.saturating_sub(window);
            let want_ago: Vec<u32> = want.iter().filter(|q| q.at_s >= from).map(|q| now.saturating_sub(q.at_s)).collect();
            assert_eq!(ramp.seconds_ago, want_ago);
        }
    }

    /// Idle stretches, same-second replacements (back to the run's values
    /// and away from them), irregular spacing, and many wraps: every step
    /// holds exactly the points the plain ring holds.
    #[test]
    fn runs_hold_exactly_what_the_ring_held() {
        for capacity in [1, 2, 3, 7, 120] {
            let mut h = History::new(capacity);
            let mut r = Reference::new(capacity);
            let mut seed = 0x2545_f491_u64 ^ capacity as u64;
            let mut at = 0u32;
            let mut level = 10u32;
            for step in 0..5000 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let roll = (seed >> 33) % 100;
                at += match roll {
                    0..=9 => 0,   // a second sample in the same second
                    10..=14 => 2, // a late tick
                    15..=16 => 7,
                    _ => 1,
                };
                if roll % 9 == 0 {
                    level = 10 + ((seed >> 40) % 3) as u32;
                }
                let mut q = p(at, level);
                if roll == 42 {
                    q.usage_kib += 1; // same level, other usage
                }
                h.push(q);
                r.push(q);
                assert_same(&h, &r, step);
            }
        }
    }

    #[test]
    fn an_idle_cgroup_keeps_one_run() {
        let mut h = History::new(120);
        for s in 0..1000 {
            h.push(p(s, 5));
        }
        assert_eq!(h.len(), 120);
        assert_eq!(h.runs.len(), 1);
        assert!(h.runs.capacity() < RUNS_CHUNK, "{}", h.runs.capacity());
        assert_eq!(h.points().next().unwrap().at_s, 880);
        assert!(h.level_never_moved());
    }

    #[test]
    fn a_moving_cgroup_grows_in_chunks_up_to_its_points() {
        let mut h = History::new(120);
        for s in 0..1000 {
            h.push(p(s, s));
        }
        assert_eq!(h.runs.len(), 120);
        assert!(h.runs.capacity() <= 120 + RUNS_CHUNK, "{}", h.runs.capacity());
        assert_eq!(h.points().map(|q| q.at_s).collect::<Vec<_>>(), (880..1000).collect::<Vec<_>>());
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
