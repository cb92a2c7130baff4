//! Reclaim stalls per memory cgroup and per process, read from the kernel's
//! per-CPU maps when someone asks (a scrape, `oomwatch status`), summed over
//! CPUs. The kernel maps are bounded LRU maps and nothing here grows beyond
//! them: a scrape walks the cgroup map once into a map of at most its size,
//! the top stallers keep N entries while walking the process map.
//!
//! This room keeps no state of its own: the kernel owns the counters.

pub mod metrics;

use std::{collections::BTreeMap, sync::Mutex};

use oomwatch_common::{CgroupStallStats, ProcStallStats, STALL_BUCKETS, stall_bucket_upper_us};
use serde::{Deserialize, Serialize};

use crate::{
    bpf::{decode::comm_str, loader::StallMaps},
    cgroup::resolve::{CgroupResolver, Hierarchy},
};

/// At most this many map entries are visited per walk, even if the kernel
/// restarts the iteration (a key evicted under us sends `get_next_key` back
/// to the first key).
const MAX_WALK: usize = 16_384;

/// One cgroup's stalls, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStalls {
    pub count: u64,
    pub total_ns: u64,
    pub memstall_ns: u64,
    pub buckets: [u64; STALL_BUCKETS],
}

impl CgroupStalls {
    pub fn add(&mut self, s: &CgroupStallStats) {
        self.count += s.count;
        self.total_ns += s.total_ns;
        self.memstall_ns += s.memstall_ns;
        for (sum, &b) in self.buckets.iter_mut().zip(&s.buckets) {
            *sum += u64::from(b);
        }
    }

    pub fn merge(&mut self, o: &CgroupStalls) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        self.memstall_ns += o.memstall_ns;
        for (sum, &b) in self.buckets.iter_mut().zip(&o.buckets) {
            *sum += b;
        }
    }

    pub fn sum<'a>(slots: impl IntoIterator<Item = &'a CgroupStallStats>) -> Self {
        let mut total = Self::default();
        for s in slots {
            total.add(s);
        }
        total
    }

    /// The Prometheus histogram: `(le in seconds, count in that le bucket
    /// only)` for [`PROM_BUCKETS`] and +Inf (`f64::MAX`), as prometheus-client
    /// wants them (it accumulates), plus the total count.
    pub fn prom_buckets(&self) -> ([(f64, u64); PROM_BUCKETS.len() + 1], u64) {
        let mut out = [(f64::MAX, 0u64); PROM_BUCKETS.len() + 1];
        let mut next = 0;
        for (k, &last) in PROM_BUCKETS.iter().enumerate() {
            out[k] = (stall_bucket_upper_us(last) as f64 / 1e6, self.buckets[next..=last].iter().sum());
            next = last + 1;
        }
        out[PROM_BUCKETS.len()] = (f64::MAX, self.buckets[next..].iter().sum());
        (out, self.buckets.iter().sum())
    }
}

/// The log2 buckets whose upper edges become Prometheus `le` bounds: 128 µs,
/// 1.024 ms, 8.192 ms, 32.768 ms, 131.072 ms, 524.288 ms, 2.097152 s (+Inf).
/// Exact edges of the kernel's buckets, so no bucket is split or guessed.
pub const PROM_BUCKETS: [usize; 7] = [6, 9, 12, 14, 16, 18, 20];

/// One process's stalls, summed over CPUs; `memcg_id` and `comm` come from
/// the CPU that saw its latest stall.
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
    pub fn sum<'a>(slots: impl IntoIterator<Item = &'a ProcStallStats>) -> Self {
        let mut p = Self::default();
        for s in slots {
            p.count += s.count;
            p.total_ns += s.total_ns;
            p.memstall_ns += s.memstall_ns;
            p.max_ns = p.max_ns.max(s.max_ns);
            if s.last_ns > p.last_ns {
                p.last_ns = s.last_ns;
                p.memcg_id = s.memcg_id;
                p.comm = s.comm;
            }
        }
        p
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

/// One row of the top stallers (`oomwatch status`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopStaller {
    /// Process id (tgid).
    pub pid: u32,
    /// Name of the thread that stalled (latest seen).
    pub comm: String,
    /// Memory cgroup at its latest stall.
    pub cgroup: String,
    /// Reclaim stalls (direct and memcg).
    pub count: u64,
    pub total_ms: f64,
    pub max_ms: f64,
    /// Time in PSI memory-stall sections, where fentry or kprobes work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memstall_ms: Option<f64>,
}

/// Reads the kernel's stall maps on demand.
pub struct StallReader {
    maps: Mutex<StallMaps>,
    resolver: std::sync::Arc<CgroupResolver>,
    /// What the map keys are: memory cgroup ids (BTF walk) or, without BTF,
    /// v2 cgroup ids.
    hierarchy: Hierarchy,
    /// The psi_memstall probes are attached: memstall times mean something.
    memstall: bool,
}

impl std::fmt::Debug for StallReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StallReader")
    }
}

impl StallReader {
    pub fn new(maps: StallMaps, resolver: std::sync::Arc<CgroupResolver>, hierarchy: Hierarchy, memstall: bool) -> Self {
        Self { maps: Mutex::new(maps), resolver, hierarchy, memstall }
    }

    pub fn memstall(&self) -> bool {
        self.memstall
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StallMaps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: u64) -> Option<String> {
        if id == 0 {
            return Some("unknown".to_owned());
        }
        self.resolver.resolve(self.hierarchy, id)
    }

    /// Stalls per cgroup path, for cgroups that stalled and pass `keep`.
    /// Ids that no longer resolve are left out; ids that resolve to the same
    /// path (a cgroup removed and created again) are merged, so no series
    /// is duplicated.
    pub fn per_cgroup(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, CgroupStalls> {
        let maps = self.lock();
        let mut by_id: BTreeMap<u64, CgroupStalls> = BTreeMap::new();
        for item in maps.cgroups.iter().take(MAX_WALK) {
            let Ok((id, slots)) = item else { continue };
            let sum = CgroupStalls::sum(slots.iter());
            if sum.count > 0 || sum.memstall_ns > 0 {
                by_id.insert(id, sum);
            }
        }
        drop(maps);
        let mut out: BTreeMap<String, CgroupStalls> = BTreeMap::new();
        for (id, s) in by_id {
            let Some(path) = self.path(id) else { continue };
            if keep(&path) {
                out.entry(path).or_default().merge(&s);
            }
        }
        out
    }

    /// The `n` processes that stalled longest since the kernel has known them.
    pub fn top(&self, n: usize) -> Vec<TopStaller> {
        let maps = self.lock();
        let walk = maps
            .procs
            .iter()
            .take(MAX_WALK)
            .filter_map(Result::ok)
            .map(|(pid, slots)| (pid, ProcStalls::sum(slots.iter())));
        let top = top_n(walk, n);
        drop(maps);
        top.into_iter()
            .map(|(pid, p)| TopStaller {
                pid,
                comm: comm_str(&p.comm),
                cgroup: self.path(p.memcg_id).unwrap_or_else(|| "unknown".to_owned()),
                count: p.count,
                total_ms: ms(p.total_ns),
                max_ms: ms(p.max_ns),
                memstall_ms: self.memstall.then(|| ms(p.memstall_ns)),
            })
            .collect()
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

#[cfg(test)]
mod tests {
    use oomwatch_common::stall_bucket;

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

    fn cpu(stalls_ns: &[u64]) -> CgroupStallStats {
        let mut c = CgroupStallStats::default();
        for &ns in stalls_ns {
            c.count += 1;
            c.total_ns += ns;
            c.buckets[stall_bucket(ns)] += 1;
        }
        c
    }

    #[test]
    fn sums_per_cpu_cgroup_slots() {
        let mut a = cpu(&[5 * US, 2_000 * US]);
        a.memstall_ns = 7;
        let b = cpu(&[5 * US, 300_000 * US, 20_000_000 * US]);
        let empty = CgroupStallStats::default();
        let s = CgroupStalls::sum([&a, &empty, &b]);
        assert_eq!(s.count, 5);
        assert_eq!(s.total_ns, (5 + 2_000 + 5 + 300_000 + 20_000_000) * US);
        assert_eq!(s.memstall_ns, 7);
        assert_eq!(s.buckets[2], 2, "two 5 µs stalls");
        assert_eq!(s.buckets.iter().sum::<u64>(), 5);

        let (prom, count) = s.prom_buckets();
        assert_eq!(count, 5);
        let les: Vec<f64> = prom.iter().map(|(le, _)| *le).collect();
        assert_eq!(les, [0.000128, 0.001024, 0.008192, 0.032768, 0.131072, 0.524288, 2.097152, f64::MAX]);
        let counts: Vec<u64> = prom.iter().map(|(_, c)| *c).collect();
        // 5 µs x2 -> le 128 µs; 2 ms -> le 8.192 ms; 300 ms -> le 524 ms; 20 s -> +Inf.
        assert_eq!(counts, [2, 0, 1, 0, 0, 1, 0, 1]);
        assert_eq!(counts.iter().sum::<u64>(), count, "every stall lands in exactly one le bucket");
    }

    #[test]
    fn u32_slots_sum_without_overflow() {
        let mut a = CgroupStallStats::default();
        a.buckets[3] = u32::MAX;
        let s = CgroupStalls::sum([&a, &a]);
        assert_eq!(s.buckets[3], 2 * u64::from(u32::MAX));
    }

    fn proc(count: u64, total_ms: u64, max_ms: u64, last_ns: u64, memcg: u64, comm: &[u8]) -> ProcStallStats {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        ProcStallStats {
            count,
            total_ns: total_ms * 1_000_000,
            max_ns: max_ms * 1_000_000,
            memstall_ns: 0,
            last_ns,
            memcg_id: memcg,
            comm: c,
        }
    }

    #[test]
    fn sums_per_cpu_process_slots_and_keeps_the_latest_identity() {
        let s = ProcStalls::sum([
            &proc(2, 10, 8, 100, 11, b"old"),
            &ProcStallStats::default(),
            &proc(1, 30, 30, 200, 22, b"new"),
        ]);
        assert_eq!((s.count, s.total_ns, s.max_ns), (3, 40_000_000, 30_000_000), "sum, sum, max");
        assert_eq!(s.memcg_id, 22, "cgroup of the latest stall");
        assert_eq!(comm_str(&s.comm), "new");
    }

    #[test]
    fn top_n_keeps_the_longest_and_is_bounded() {
        let p = |total_ms: u64| ProcStalls::sum([&proc(1, total_ms, total_ms, 1, 1, b"x")]);
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
        let p = |total_ms: u64| ProcStalls::sum([&proc(1, total_ms, total_ms, 1, 1, b"x")]);
        let top = top_n([(1, p(10)), (2, p(5)), (1, p(12)), (3, p(1))], 2);
        assert_eq!(top.iter().map(|(pid, s)| (*pid, s.total_ns)).collect::<Vec<_>>(), [(1, 12_000_000), (2, 5_000_000)]);
    }
}
