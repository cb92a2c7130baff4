//! Which memory cgroup's limit was hit: the victim's own, an ancestor's, or
//! none (a global OOM). The kernel counts a limit hit locally in the cgroup
//! whose limit it was (v2 `memory.events.local` oom, v1 `memory.failcnt`);
//! comparing those counters along the victim's ancestry with what the model
//! saw before names the cgroup.

use crate::wire::Constraint;

/// One cgroup of the victim's ancestry, read at the time of the kill.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainLink {
    pub path: String,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: u64,
    /// Local limit-hit counter now (v2 events.local `oom`, v1 failcnt).
    pub hits_now: Option<u64>,
    /// The same counter as the model last saw it, and whether the model saw
    /// it move in the last few seconds.
    pub hits_before: Option<u64>,
    pub recently_hit: bool,
}

impl ChainLink {
    fn counter_moved(&self) -> bool {
        self.recently_hit || matches!((self.hits_before, self.hits_now), (Some(b), Some(n)) if n > b)
    }

    /// A limit whose hit counter the model had not seen before this read:
    /// its value now tells nothing of this kill.
    pub fn unwitnessed(&self) -> bool {
        self.limit_bytes.is_some() && self.hits_before.is_none() && !self.recently_hit
    }

    fn near_limit(&self) -> bool {
        // Within 2% (or 1 MiB) of the limit: the charge that failed was here.
        self.limit_bytes.is_some_and(|l| self.usage_bytes.saturating_add((l / 50).max(1 << 20)) >= l)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub constraint: Constraint,
    pub limit_cgroup: Option<String>,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// `chain` goes from the victim's cgroup up to (not including) the root.
pub fn find_limit(chain: &[ChainLink]) -> Verdict {
    let limited = || chain.iter().filter(|l| l.limit_bytes.is_some());
    // Counter evidence first; among several, the one nearest its limit.
    let by_counter = limited().filter(|l| l.counter_moved()).max_by_key(|l| {
        let limit = l.limit_bytes.unwrap_or(u64::MAX);
        u64::MAX - limit.saturating_sub(l.usage_bytes)
    });
    let hit = by_counter.or_else(|| limited().find(|l| l.near_limit()));
    match hit {
        Some(l) => Verdict {
            constraint: Constraint::Memcg,
            limit_cgroup: Some(l.path.clone()),
            usage_bytes: Some(l.usage_bytes),
            limit_bytes: l.limit_bytes,
        },
        None => Verdict { constraint: Constraint::Global, limit_cgroup: None, usage_bytes: None, limit_bytes: None },
    }
}

/// The ancestry of a cgroup path, nearest first, excluding the root:
/// "/a/b/c" -> ["/a/b/c", "/a/b", "/a"].
pub fn ancestry(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = path.trim_end_matches('/');
    while !p.is_empty() && p != "/" {
        out.push(p.to_owned());
        match p.rfind('/') {
            Some(i) => p = &p[..i],
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn link(path: &str, limit: Option<u64>, usage: u64, before: Option<u64>, now: Option<u64>) -> ChainLink {
        ChainLink { path: path.into(), limit_bytes: limit, usage_bytes: usage, hits_now: now, hits_before: before, recently_hit: false }
    }

    #[test]
    fn ancestry_nearest_first() {
        assert_eq!(ancestry("/a/b/c"), vec!["/a/b/c", "/a/b", "/a"]);
        assert_eq!(ancestry("/"), Vec::<String>::new());
        assert_eq!(ancestry("/a/"), vec!["/a"]);
    }

    #[test]
    fn parent_limit_named_by_its_counter() {
        let chain = [
            link("/p/child", None, 60 * MIB, Some(0), Some(0)),
            link("/p", Some(64 * MIB), 63 * MIB, Some(3), Some(5)),
        ];
        let v = find_limit(&chain);
        assert_eq!(v.constraint, Constraint::Memcg);
        assert_eq!(v.limit_cgroup.as_deref(), Some("/p"));
        assert_eq!(v.limit_bytes, Some(64 * MIB));
    }

    #[test]
    fn own_limit_beats_a_roomy_parent() {
        let chain = [
            link("/p/c", Some(64 * MIB), 64 * MIB, Some(0), Some(9)),
            link("/p", Some(1024 * MIB), 100 * MIB, Some(0), Some(0)),
        ];
        assert_eq!(find_limit(&chain).limit_cgroup.as_deref(), Some("/p/c"));
    }

    #[test]
    fn without_counters_the_cgroup_at_its_limit_is_named() {
        let chain = [link("/c", Some(64 * MIB), 64 * MIB - 4096, None, None), link("/p", Some(1 << 40), 70 * MIB, None, None)];
        assert_eq!(find_limit(&chain).limit_cgroup.as_deref(), Some("/c"));
    }

    #[test]
    fn no_limit_or_no_evidence_is_global() {
        assert_eq!(find_limit(&[link("/c", None, 10 * MIB, None, None)]).constraint, Constraint::Global);
        let roomy = [link("/c", Some(1024 * MIB), 10 * MIB, Some(1), Some(1))];
        assert_eq!(find_limit(&roomy).constraint, Constraint::Global);
        assert_eq!(find_limit(&[]).constraint, Constraint::Global);
    }
}
