//! The cgroup model: the single owner of per-cgroup state. Outputs (metrics,
//! status, alerts) read from it; nothing else keeps its own copy.

use std::{
    collections::BTreeMap,
    sync::RwLock,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillStats {
    pub count: u64,
    pub last_victim: Option<String>,
}

#[derive(Default)]
pub struct Model {
    kills: RwLock<BTreeMap<String, KillStats>>,
}

impl Model {
    pub fn record_kill(&self, cgroup: &str, victim_comm: Option<&str>) {
        let mut kills = self.kills.write().unwrap_or_else(|e| e.into_inner());
        let stats = kills.entry(cgroup.to_owned()).or_default();
        stats.count += 1;
        stats.last_victim = victim_comm.map(str::to_owned);
    }

    /// Kill counts per cgroup, for the metrics.
    pub fn for_each_kill_count(&self, mut f: impl FnMut(&str, u64)) {
        let kills = self.kills.read().unwrap_or_else(|e| e.into_inner());
        for (cgroup, stats) in kills.iter() {
            f(cgroup, stats.count);
        }
    }

    pub fn total_kills(&self) -> u64 {
        self.kills.read().unwrap_or_else(|e| e.into_inner()).values().map(|s| s.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kills_per_cgroup() {
        let m = Model::default();
        m.record_kill("/a", Some("hog"));
        m.record_kill("/a", Some("hog2"));
        m.record_kill("/b", None);
        let mut seen = Vec::new();
        m.for_each_kill_count(|c, n| seen.push((c.to_owned(), n)));
        assert_eq!(seen, vec![("/a".to_owned(), 2), ("/b".to_owned(), 1)]);
        assert_eq!(m.total_kills(), 3);
    }
}
