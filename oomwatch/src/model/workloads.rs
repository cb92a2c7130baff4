//! Names of the workloads behind container cgroups, as the runtimes'
//! records gave them when each cgroup appeared (`sources::workloads`).
//! Kept past the cgroup's removal, because a kill is often a container's
//! last moment and its event is explained after the cgroup is gone; the
//! table is bounded, and the oldest lookups leave it first.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::{
    readers::{CgroupLabels, runtime::ContainerMeta},
    wire::Workload,
};

/// Container names by cgroup path, at most `max` of them.
#[derive(Debug)]
pub struct ContainerNames {
    by_path: HashMap<String, (u64, Arc<ContainerMeta>)>,
    /// Insertion order (generation, path); entries whose generation is
    /// stale were replaced since and are skipped on eviction.
    order: VecDeque<(u64, String)>,
    next: u64,
    max: usize,
}

impl ContainerNames {
    pub fn new(max: usize) -> Self {
        Self { by_path: HashMap::new(), order: VecDeque::new(), next: 0, max: max.max(1) }
    }

    pub fn insert(&mut self, path: &str, meta: ContainerMeta) {
        let generation = self.next;
        self.next += 1;
        self.by_path.insert(path.to_owned(), (generation, Arc::new(meta)));
        self.order.push_back((generation, path.to_owned()));
        while self.by_path.len() > self.max {
            let Some((g, p)) = self.order.pop_front() else { break };
            if self.by_path.get(&p).is_some_and(|(current, _)| *current == g) {
                self.by_path.remove(&p);
            }
        }
        // Replaced entries leave stale order slots: drop them before they
        // outnumber the live ones.
        if self.order.len() > 2 * self.max {
            let by_path = &self.by_path;
            self.order.retain(|(g, p)| by_path.get(p).is_some_and(|(current, _)| current == g));
        }
    }

    /// The names of the container whose cgroup is `path` or holds it (a
    /// process in a container's sub-cgroup belongs to that container).
    pub fn get(&self, path: &str) -> Option<&Arc<ContainerMeta>> {
        let mut at = path;
        loop {
            if let Some((_, meta)) = self.by_path.get(at) {
                return Some(meta);
            }
            match at.rfind('/') {
                Some(0) | None => return None,
                Some(i) => at = &at[..i],
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ContainerMeta>)> {
        self.by_path.iter().map(|(p, (_, m))| (p.as_str(), m))
    }
}

/// What the path says, completed by what the runtime's records say. The
/// path's own answers win where both have one (they cannot be stale).
pub fn workload_of(labels: CgroupLabels, meta: Option<&ContainerMeta>) -> Workload {
    let mut w: Workload = labels.into();
    let Some(meta) = meta else { return w };
    // Names only for the same container: a sub-cgroup's own id differs.
    if w.container_id.as_deref().is_some_and(|id| id != meta.id) {
        return w;
    }
    w.container_id.get_or_insert_with(|| meta.id.clone());
    if w.runtime.is_none() {
        w.runtime = meta.runtime.map(|r| r.as_str().to_owned());
    }
    if w.pod_uid.is_none() {
        w.pod_uid = meta.pod_uid.clone();
    }
    w.container_name = meta.name.clone();
    w.image = meta.image.clone();
    w.pod = meta.pod.clone();
    w.namespace = meta.namespace.clone();
    w.container = meta.container.clone();
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, name: &str) -> ContainerMeta {
        ContainerMeta { id: id.into(), name: Some(name.into()), ..Default::default() }
    }

    #[test]
    fn keeps_at_most_max_and_drops_the_oldest() {
        let mut names = ContainerNames::new(2);
        names.insert("/a", meta("1", "a"));
        names.insert("/b", meta("2", "b"));
        names.insert("/a", meta("1", "a2"));
        names.insert("/c", meta("3", "c"));
        assert_eq!(names.len(), 2);
        assert!(names.get("/b").is_none(), "the oldest lookup left first");
        assert_eq!(names.get("/a").and_then(|m| m.name.as_deref()), Some("a2"));
        for i in 0..100 {
            names.insert("/a", meta("1", &format!("a{i}")));
        }
        assert!(names.order.len() <= 4, "stale slots are compacted: {}", names.order.len());
        assert_eq!(names.get("/c").and_then(|m| m.name.as_deref()), Some("c"));
    }

    #[test]
    fn a_sub_cgroup_belongs_to_its_container() {
        let mut names = ContainerNames::new(8);
        names.insert("/docker/abc", meta("abc", "web"));
        assert_eq!(names.get("/docker/abc/init.scope").map(|m| m.id.as_str()), Some("abc"));
        assert!(names.get("/docker").is_none());
        assert!(names.get("/").is_none());
        assert!(names.get("").is_none());
    }

    #[test]
    fn names_complete_the_path_and_never_contradict_it() {
        let id = "a".repeat(64);
        let labels = crate::readers::labels_for(&format!("/x/{id}"));
        let m = ContainerMeta {
            id: id.clone(),
            runtime: Some(crate::readers::runtime::Runtime::Docker),
            name: Some("web".into()),
            image: Some("nginx:1".into()),
            ..Default::default()
        };
        let w = workload_of(labels.clone(), Some(&m));
        assert_eq!(w.runtime.as_deref(), Some("docker"));
        assert_eq!(w.container_name.as_deref(), Some("web"));
        assert_eq!(w.display_name().as_deref(), Some("docker:web"));
        assert_eq!((w.pod, w.namespace, w.container), (None, None, None), "absent, not empty");
        let other = ContainerMeta { id: "b".repeat(64), ..m };
        assert_eq!(workload_of(labels.clone(), Some(&other)), labels.into());
    }
}
