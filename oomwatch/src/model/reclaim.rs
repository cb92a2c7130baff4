//! Reclaim stalls per memory cgroup and per process, from the kernel's
//! per-thread totals (`RECLAIM_THREADS`, see [`ThreadStalls`]).
//!
//! The kernel keeps one entry per thread that stalled, so its hot path
//! touches one map entry per call. Aggregation happens here, in a
//! [`Ledger`]: each read of the kernel map (the reclaim feed, once a second)
//! adds what each thread's totals grew since the previous read to the cgroup
//! the thread is in. The exported counters are these sums, so they never go
//! backwards, whatever the kernel's LRU evicts or a reused thread id
//! restarts. Scrapes only read the sums.
//!
//! Memory: the ledger remembers the totals it last saw per thread (bounded
//! by the kernel map's size) and one sum per cgroup path (bounded by the
//! model's cap, and expired like every other per-cgroup series).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use oomwatch_common::reclaim::{STALL_BUCKETS, ThreadStalls};

/// A thread's remembered totals are dropped after this many reads without
/// it (the kernel evicted it); a thread that comes back later is a new
/// lineage anyway (its `born_ns` differs).
const FORGET_AFTER_READS: u64 = 16;

/// One cgroup's stalls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStalls {
    pub count: u64,
    pub total_ns: u64,
    pub memstall_ns: u64,
    pub buckets: [u64; STALL_BUCKETS],
}

impl CgroupStalls {
    pub fn merge(&mut self, o: &CgroupStalls) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        self.memstall_ns += o.memstall_ns;
        for (sum, &b) in self.buckets.iter_mut().zip(&o.buckets) {
            *sum += b;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.memstall_ns == 0
    }
}

/// What the ledger last counted of one thread's lineage.
#[derive(Clone, Debug)]
struct Seen {
    born_ns: u64,
    /// The read that last saw the thread.
    read: u64,
    count: u64,
    total_ns: u64,
    memstall_ns: u64,
    buckets: [u32; STALL_BUCKETS],
}

impl Seen {
    fn of(t: &ThreadStalls, read: u64) -> Self {
        Self { born_ns: t.born_ns, read, count: t.count, total_ns: t.total_ns, memstall_ns: t.memstall_ns, buckets: t.buckets }
    }
}

/// What a thread's totals grew since `seen`: everything for a new lineage,
/// `None` when a total went down within one lineage (a read that raced the
/// kernel starting a new lineage: counted at the next read instead).
fn growth(seen: Option<&Seen>, t: &ThreadStalls) -> Option<CgroupStalls> {
    let mut d = CgroupStalls::default();
    match seen.filter(|s| s.born_ns == t.born_ns) {
        None => {
            d.count = t.count;
            d.total_ns = t.total_ns;
            d.memstall_ns = t.memstall_ns;
            for (o, &b) in d.buckets.iter_mut().zip(&t.buckets) {
                *o = u64::from(b);
            }
        }
        Some(s) => {
            d.count = t.count.checked_sub(s.count)?;
            d.total_ns = t.total_ns.checked_sub(s.total_ns)?;
            d.memstall_ns = t.memstall_ns.checked_sub(s.memstall_ns)?;
            for ((o, &b), &was) in d.buckets.iter_mut().zip(&t.buckets).zip(&s.buckets) {
                *o = u64::from(b.checked_sub(was)?);
            }
        }
    }
    Some(d)
}

/// Per-cgroup stall counters built from the kernel's per-thread totals.
#[derive(Debug, Default)]
pub struct Ledger {
    seen: HashMap<u32, Seen>,
    totals: BTreeMap<String, CgroupTotals>,
    reads: u64,
}

#[derive(Debug)]
struct CgroupTotals {
    stalls: CgroupStalls,
    /// When these sums last grew: the least recently grown go first at the
    /// cap, and series of gone cgroups expire after the grace period.
    grew_at: Instant,
}

impl Ledger {
    /// Starts one read of the kernel map: [`Ledger::observe`] each entry,
    /// then [`Ledger::end_read`].
    pub fn begin_read(&mut self) {
        self.reads += 1;
    }

    /// Adds what thread `tid`'s totals grew since the previous read to the
    /// cgroup it is in; `path` names a cgroup id (None: not resolvable, that
    /// growth is not counted).
    pub fn observe(&mut self, tid: u32, t: &ThreadStalls, now: Instant, path: impl FnOnce(u64) -> Option<String>) {
        let read = self.reads;
        let seen = self.seen.get(&tid);
        if seen.is_some_and(|s| s.read == read && s.born_ns == t.born_ns) {
            // A key-by-key walk that restarted: already counted.
            return;
        }
        let Some(grew) = growth(seen, t) else {
            if let Some(s) = self.seen.get_mut(&tid) {
                s.read = read;
            }
            return;
        };
        self.seen.insert(tid, Seen::of(t, read));
        if grew.is_empty() {
            return;
        }
        let Some(p) = path(t.memcg_id) else { return };
        let entry = self.totals.entry(p).or_insert_with(|| CgroupTotals { stalls: CgroupStalls::default(), grew_at: now });
        entry.stalls.merge(&grew);
        entry.grew_at = now;
    }

    /// `complete`: the read saw the whole map (threads it did not see were
    /// evicted). At most `cap` cgroup series are kept: the ones that stalled
    /// least recently are forgotten (their series disappear).
    pub fn end_read(&mut self, complete: bool, cap: usize) {
        let read = self.reads;
        if complete {
            self.seen.retain(|_, s| read - s.read < FORGET_AFTER_READS);
        }
        if self.totals.len() > cap {
            let mut by_age: Vec<Instant> = self.totals.values().map(|t| t.grew_at).collect();
            by_age.sort_unstable();
            let cut = by_age[self.totals.len() - cap];
            self.totals.retain(|_, t| t.grew_at >= cut);
            // Ties at the cut may leave a few over: drop the rest by name.
            while self.totals.len() > cap {
                self.totals.pop_first();
            }
        }
    }

    /// Forgets the series of cgroups that are gone (`live` says no) and did
    /// not stall for `grace`: the same rule as the model's other series.
    pub fn expire(&mut self, now: Instant, grace: Duration, live: impl Fn(&str) -> bool) {
        self.totals.retain(|path, t| now.saturating_duration_since(t.grew_at) < grace || live(path));
    }

    /// One read: `threads` is the whole map.
    #[cfg(test)]
    fn update<'a>(&mut self, threads: impl IntoIterator<Item = (u32, &'a ThreadStalls)>, mut path: impl FnMut(u64) -> Option<String>) {
        self.begin_read();
        let now = Instant::now();
        for (tid, t) in threads {
            self.observe(tid, t, now, &mut path);
        }
        self.end_read(true, TEST_CAP);
    }

    /// Total stall time of one cgroup so far.
    /// Each cgroup's total stall time, by path.
    pub fn each_total_ns(&self, mut f: impl FnMut(&str, u64)) {
        for (path, t) in &self.totals {
            f(path, t.stalls.total_ns);
        }
    }

    /// The cgroups that stalled and pass `keep`.
    pub fn totals(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, CgroupStalls> {
        self.totals.iter().filter(|(p, t)| !t.stalls.is_empty() && keep(p)).map(|(p, t)| (p.clone(), t.stalls.clone())).collect()
    }
}

#[cfg(test)]
const TEST_CAP: usize = 8192;

/// One process's stalls, summed over its threads; `memcg_id` and `comm`
/// come from the thread that stalled latest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStalls {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub memstall_ns: u64,
    pub last_ns: u64,
    pub memcg_id: u64,
    pub comm: [u8; 16],
}

impl ProcStalls {
    pub fn add(&mut self, t: &ThreadStalls) {
        self.count += t.count;
        self.total_ns += t.total_ns;
        self.memstall_ns += t.memstall_ns;
        self.max_ns = self.max_ns.max(t.max_ns);
        if t.last_ns >= self.last_ns {
            self.last_ns = t.last_ns;
            self.memcg_id = t.memcg_id;
            self.comm = t.comm;
        }
    }

    fn rank(&self) -> (u64, u64, u64) {
        (self.total_ns, self.memstall_ns, self.count)
    }
}

/// The `n` processes that stalled longest (reclaim time, then memstall
/// time), longest first; one entry per pid even when the walk repeats keys.
/// Memory: `n` entries, whatever the input size.
pub fn top_n(procs: impl IntoIterator<Item = (u32, ProcStalls)>, n: usize) -> Vec<(u32, ProcStalls)> {
    let mut top: Vec<(u32, ProcStalls)> = Vec::with_capacity(n.min(64));
    if n == 0 {
        return top;
    }
    for (pid, p) in procs {
        if p.count == 0 && p.memstall_ns == 0 {
            continue;
        }
        if let Some(seen) = top.iter_mut().find(|(q, _)| *q == pid) {
            if p.rank() > seen.1.rank() {
                seen.1 = p;
            }
            continue;
        }
        if top.len() < n {
            top.push((pid, p));
            continue;
        }
        let (min_i, min) = top.iter().enumerate().min_by_key(|(_, (_, q))| q.rank()).map(|(i, (_, q))| (i, q.rank())).unwrap_or((0, (0, 0, 0)));
        if p.rank() > min {
            top[min_i] = (pid, p);
        }
    }
    top.sort_by(|a, b| b.1.rank().cmp(&a.1.rank()).then(a.0.cmp(&b.0)));
    top
}

#[cfg(test)]
mod tests {
    use oomwatch_common::reclaim::{stall_bucket, stall_bucket_upper_us};

    use super::*;

    const US: u64 = 1000;

    #[test]
    fn log2_buckets_in_microseconds() {
        assert_eq!(stall_bucket(0), 0);
        assert_eq!(stall_bucket(999), 0, "under 1 µs");
        assert_eq!(stall_bucket(US), 0);
        assert_eq!(stall_bucket(2 * US - 1), 0);
        assert_eq!(stall_bucket(2 * US), 1);
        assert_eq!(stall_bucket(3 * US), 1);
        assert_eq!(stall_bucket(4 * US), 2);
        assert_eq!(stall_bucket(1000 * US), 9, "1 ms is in [512, 1024) µs");
        assert_eq!(stall_bucket(100_000 * US), 16, "100 ms is in [65.5, 131) ms");
        assert_eq!(stall_bucket((1 << 22) * US), 22);
        assert_eq!(stall_bucket((1 << 23) * US - 1), 22);
        assert_eq!(stall_bucket((1 << 23) * US), 23, "8.4 s and up share the last bucket");
        assert_eq!(stall_bucket(3600 * 1_000_000 * US), 23);
        assert_eq!(stall_bucket(u64::MAX), STALL_BUCKETS - 1);
        // Every bucket's edges map back to it.
        for i in 1..STALL_BUCKETS - 1 {
            let lo = (1u64 << i) * US;
            let hi = stall_bucket_upper_us(i) * US;
            assert_eq!(stall_bucket(lo), i, "lower edge of {i}");
            assert_eq!(stall_bucket(hi - 1), i, "just under the upper edge of {i}");
            assert_eq!(stall_bucket(hi), i + 1, "upper edge of {i} starts {}", i + 1);
        }
        assert_eq!(stall_bucket_upper_us(STALL_BUCKETS - 1), u64::MAX);
    }

    /// A thread entry as the kernel leaves it after these stalls.
    fn thread(born_ns: u64, memcg: u64, stalls_ns: &[u64]) -> ThreadStalls {
        let mut t = ThreadStalls { born_ns, memcg_id: memcg, tgid: 1, ..Default::default() };
        stall(&mut t, stalls_ns);
        t
    }

    fn stall(t: &mut ThreadStalls, stalls_ns: &[u64]) {
        for &ns in stalls_ns {
            t.count += 1;
            t.total_ns += ns;
            t.max_ns = t.max_ns.max(ns);
            t.buckets[stall_bucket(ns)] += 1;
        }
    }

    fn paths(id: u64) -> Option<String> {
        match id {
            0 => Some("unknown".into()),
            1..=99 => Some(format!("/cg{id}")),
            _ => None,
        }
    }

    #[test]
    fn sums_threads_per_cgroup_path() {
        let mut a = thread(1, 7, &[5 * US, 2_000 * US]);
        a.memstall_ns = 7;
        let b = thread(2, 7, &[5 * US, 300_000 * US, 20_000_000 * US]);
        let idle = thread(3, 8, &[]);
        let mut l = Ledger::default();
        l.update([(10, &a), (11, &b), (12, &idle)], paths);
        let totals = l.totals(|_| true);
        assert_eq!(totals.keys().collect::<Vec<_>>(), ["/cg7"], "only cgroups that stalled");
        let s = &totals["/cg7"];
        assert_eq!(s.count, 5);
        assert_eq!(s.total_ns, (5 + 2_000 + 5 + 300_000 + 20_000_000) * US);
        assert_eq!(s.memstall_ns, 7);
        assert_eq!(s.buckets[2], 2, "two 5 µs stalls");
        assert_eq!(s.buckets.iter().sum::<u64>(), 5);

        assert!(l.totals(|p| p != "/cg7").is_empty(), "filters apply");
    }

    #[test]
    fn counts_only_growth_between_reads() {
        let mut l = Ledger::default();
        let mut t = thread(1, 7, &[10 * US, 20 * US]);
        l.update([(10, &t)], paths);
        l.update([(10, &t)], paths);
        assert_eq!(l.totals(|_| true)["/cg7"].count, 2, "an unchanged thread adds nothing");
        stall(&mut t, &[3_000 * US]);
        l.update([(10, &t)], paths);
        let s = &l.totals(|_| true)["/cg7"];
        assert_eq!((s.count, s.total_ns, s.buckets.iter().sum::<u64>()), (3, 3_030 * US, 3));
    }

    #[test]
    fn counters_never_go_backwards() {
        let mut l = Ledger::default();
        let t = thread(1, 7, &[10 * US, 20 * US, 30 * US]);
        l.update([(10, &t)], paths);
        // The kernel evicted the entry (LRU) and the thread stalled again: a
        // new lineage with smaller totals.
        let again = thread(2, 7, &[40 * US]);
        l.update([(10, &again)], paths);
        let s = &l.totals(|_| true)["/cg7"];
        assert_eq!((s.count, s.total_ns), (4, 100 * US), "old totals kept, new lineage added");
        // Thread id reused by another process in another cgroup.
        let reused = thread(3, 8, &[50 * US]);
        l.update([(10, &reused)], paths);
        let totals = l.totals(|_| true);
        assert_eq!(totals["/cg7"].count, 4);
        assert_eq!(totals["/cg8"].count, 1);
        // The thread left the map (evicted, or exited long ago): its sums stay.
        l.update([], paths);
        assert_eq!(l.totals(|_| true)["/cg7"].count, 4);
    }

    #[test]
    fn a_read_racing_a_restart_counts_nothing_until_consistent() {
        let mut l = Ledger::default();
        let mut t = thread(1, 7, &[10 * US, 20 * US]);
        l.update([(10, &t)], paths);
        // Totals zeroed, the new born_ns not yet written: same lineage, less.
        let torn = ThreadStalls { count: 0, total_ns: 0, buckets: [0; STALL_BUCKETS], ..t };
        l.update([(10, &torn)], paths);
        assert_eq!(l.totals(|_| true)["/cg7"].count, 2);
        // Then the restart completes.
        t = thread(2, 7, &[5 * US]);
        l.update([(10, &t)], paths);
        assert_eq!(l.totals(|_| true)["/cg7"].count, 3);
    }

    #[test]
    fn repeated_keys_in_one_read_count_once() {
        let mut l = Ledger::default();
        let t = thread(1, 7, &[10 * US]);
        l.update([(10, &t), (10, &t)], paths);
        assert_eq!(l.totals(|_| true)["/cg7"].count, 1);
    }

    #[test]
    fn same_path_from_two_ids_is_one_series_and_unresolvable_ids_are_skipped() {
        let mut l = Ledger::default();
        let a = thread(1, 7, &[10 * US]);
        let gone = thread(1, 500, &[10 * US]);
        l.update([(10, &a), (11, &gone)], |id| if id == 7 || id == 9 { Some("/same".into()) } else { paths(id) });
        let b = thread(2, 9, &[10 * US]);
        l.update([(10, &a), (12, &b)], |id| if id == 7 || id == 9 { Some("/same".into()) } else { paths(id) });
        let totals = l.totals(|_| true);
        assert_eq!(totals.len(), 1, "{totals:?}");
        assert_eq!(totals["/same"].count, 2);
    }

    #[test]
    fn u32_buckets_sum_without_overflow() {
        let mut l = Ledger::default();
        let mut a = ThreadStalls { born_ns: 1, memcg_id: 7, count: 1, ..Default::default() };
        a.buckets[3] = u32::MAX;
        let b = ThreadStalls { born_ns: 2, ..a };
        l.update([(10, &a), (11, &b)], paths);
        assert_eq!(l.totals(|_| true)["/cg7"].buckets[3], 2 * u64::from(u32::MAX));
    }

    #[test]
    fn ledger_is_bounded() {
        let mut l = Ledger::default();
        let threads: Vec<ThreadStalls> = (0..TEST_CAP as u64 + 10).map(|i| thread(1, 1_000 + i, &[10 * US])).collect();
        l.update(threads.iter().enumerate().map(|(i, t)| (i as u32, t)), |id| Some(format!("/c{id}")));
        assert_eq!(l.totals(|_| true).len(), TEST_CAP);
        // Threads that left the map are forgotten after a while.
        for _ in 0..FORGET_AFTER_READS {
            l.update([], paths);
        }
        assert!(l.seen.is_empty());
    }

    fn proc_thread(tgid: u32, count: u64, total_ms: u64, max_ms: u64, last_ns: u64, memcg: u64, comm: &[u8]) -> ThreadStalls {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        ThreadStalls {
            tgid,
            count,
            total_ns: total_ms * 1_000_000,
            max_ns: max_ms * 1_000_000,
            last_ns,
            memcg_id: memcg,
            comm: c,
            ..Default::default()
        }
    }

    fn proc_of(threads: &[ThreadStalls]) -> ProcStalls {
        let mut p = ProcStalls::default();
        for t in threads {
            p.add(t);
        }
        p
    }

    #[test]
    fn sums_threads_of_a_process_and_keeps_the_latest_identity() {
        let s = proc_of(&[
            proc_thread(1, 2, 10, 8, 100, 11, b"old"),
            ThreadStalls::default(),
            proc_thread(1, 1, 30, 30, 200, 22, b"new"),
        ]);
        assert_eq!((s.count, s.total_ns, s.max_ns), (3, 40_000_000, 30_000_000), "sum, sum, max");
        assert_eq!(s.memcg_id, 22, "cgroup of the latest stall");
        assert_eq!(&s.comm[..4], b"new\0");
    }

    #[test]
    fn top_n_keeps_the_longest_and_is_bounded() {
        let p = |total_ms: u64| proc_of(&[proc_thread(1, 1, total_ms, total_ms, 1, 1, b"x")]);
        let input = (1..=1000u32).map(|pid| (pid, p(u64::from(pid) * 7 % 1000)));
        let top = top_n(input, 3);
        let pids: Vec<u32> = top.iter().map(|(pid, _)| *pid).collect();
        // total = pid*7 % 1000: 999 at pid 857, 998 at pid 714, 997 at pid 571.
        assert_eq!(pids, [857, 714, 571]);
        assert!(top_n([(1, p(5))], 0).is_empty());
        // Processes with nothing recorded are not stallers.
        assert!(top_n([(1, ProcStalls::default())], 3).is_empty());
    }

    #[test]
    fn top_n_dedupes_a_repeated_walk() {
        let p = |total_ms: u64| proc_of(&[proc_thread(1, 1, total_ms, total_ms, 1, 1, b"x")]);
        let top = top_n([(1, p(10)), (2, p(5)), (1, p(12)), (3, p(1))], 2);
        assert_eq!(top.iter().map(|(pid, s)| (*pid, s.total_ns)).collect::<Vec<_>>(), [(1, 12_000_000), (2, 5_000_000)]);
    }
}
