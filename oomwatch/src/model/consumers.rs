//! Who holds a cgroup's memory, from what the model already has: its
//! children's usage at the last sample, and its memory by kind at the last
//! full sample. What a kill's explanation needs on the kill path, where no
//! file is read.

use std::time::Instant;

use super::{CgroupState, Model, workload_of};
use crate::{readers::MemorySample, wire::Composition};

/// Memory by kind from one memory.stat reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds {
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
}

impl Kinds {
    /// None when memory.stat gave none of them.
    pub fn of(sample: &MemorySample) -> Option<Self> {
        let k = Self { anon_bytes: sample.anon_bytes, file_bytes: sample.file_bytes, shmem_bytes: sample.shmem_bytes };
        (k != Self::default()).then_some(k)
    }
}

/// A child cgroup and its usage at the model's last sample of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildUsage {
    pub path: String,
    pub usage_bytes: u64,
    /// The name people know it by (`Workload::display_name`).
    pub workload: Option<String>,
}

impl Model {
    /// The live tracked children of `parent`, largest usage first (ties by
    /// path), at most `max`. From the children index: no pass over every
    /// tracked cgroup (this is on the kill path).
    pub fn children_by_usage(&self, parent: &str, max: usize) -> Vec<ChildUsage> {
        let s = self.read();
        let mut children: Vec<(&String, &CgroupState)> = s
            .children
            .of(parent)
            .filter_map(|path| s.cgroups.get_key_value(&path))
            .filter(|(_, c)| c.removed_at.is_none())
            .map(|(path, c)| (path, &**c))
            .collect();
        children.sort_by(|a, b| b.1.usage_bytes.cmp(&a.1.usage_bytes).then_with(|| a.0.cmp(b.0)));
        children.truncate(max);
        children
            .into_iter()
            .map(|(path, c)| ChildUsage {
                path: path.clone(),
                usage_bytes: c.usage_bytes,
                workload: workload_of(c.labels.clone(), s.containers.get(path).map(|m| &**m)).display_name(),
            })
            .collect()
    }

    /// The cgroup's memory by kind at its last full sample (with its swap
    /// and how long before `now` it was read); None before one.
    pub fn composition(&self, path: &str, now: Instant) -> Option<Composition> {
        let s = self.read();
        let c = s.cgroups.get(path)?;
        let (kinds, at) = (c.kinds?, c.full_sample_at?);
        Some(Composition {
            anon_bytes: kinds.anon_bytes,
            file_bytes: kinds.file_bytes,
            shmem_bytes: kinds.shmem_bytes,
            swap_bytes: c.swap_usage_bytes,
            sampled_seconds_ago: Some(u32::try_from(now.saturating_duration_since(at).as_secs()).unwrap_or(u32::MAX)),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::ModelConfig;

    #[test]
    fn children_largest_first_bounded_with_their_names() {
        let m = Model::new(ModelConfig::default());
        let now = Instant::now();
        for (i, (path, mib)) in [("/p", 90u64), ("/p/a", 10), ("/p/b", 50), ("/p/c", 30), ("/p/b/x", 45), ("/q", 99)].iter().enumerate() {
            m.admit(path, i as u64 + 1, Path::new("/nonexistent"));
            m.observe_usage(path, mib << 20, None, None, now);
        }
        let kids = m.children_by_usage("/p", 2);
        assert_eq!(kids.iter().map(|k| (k.path.as_str(), k.usage_bytes >> 20)).collect::<Vec<_>>(), vec![("/p/b", 50), ("/p/c", 30)]);
        assert!(m.children_by_usage("/p/a", 5).is_empty());
        assert_eq!(m.composition("/p", now), None, "no full sample yet");
    }

    #[test]
    fn children_follow_cgroups_that_leave_one_by_one_and_in_a_sweep() {
        let m = Model::new(ModelConfig { removal_grace: std::time::Duration::ZERO, ..ModelConfig::default() });
        let now = Instant::now();
        for (i, path) in ["/p", "/p/a", "/p/b", "/p/c", "/p/d"].iter().enumerate() {
            m.admit(path, i as u64 + 1, Path::new("/nonexistent"));
        }
        for path in ["/p/b", "/p/c", "/p/d"] {
            m.observe_usage(path, 1 << 20, None, None, now);
        }
        let paths = |m: &Model| m.children_by_usage("/p", 10).into_iter().map(|k| k.path).collect::<Vec<_>>();
        m.reject("/p/a", now);
        assert_eq!(paths(&m), ["/p/b", "/p/c", "/p/d"], "never read: gone at once");
        m.mark_removed("/p/c", now);
        assert_eq!(paths(&m), ["/p/b", "/p/d"], "removed: not a consumer while in its grace period");
        m.expire(now, |_| false);
        m.admit("/p/c", 9, Path::new("/nonexistent"));
        m.observe_usage("/p/c", 2 << 20, None, None, now);
        assert_eq!(paths(&m), ["/p/c", "/p/b", "/p/d"], "swept and recreated: listed once");
    }
}
