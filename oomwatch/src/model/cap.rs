//! Which cgroups are tracked when a host has more than `--max-cgroups`:
//! the shallowest (pods before their containers, services before what
//! runs inside them). Arrival order cannot decide: whoever may make
//! cgroups (a tenant with a delegated subtree, a container with its own
//! cgroup namespace) could make thousands first, and every workload
//! started after them would go unwatched. A cgroup is only ever pushed out
//! by a shallower one, so a subtree can crowd out nothing above its own
//! level.

use std::collections::BTreeMap;

/// A cgroup's depth below the root: `/a` is 1, `/a/b` is 2. The kernel
/// refuses `/` in a cgroup's name, so each slash is a level.
pub fn depth(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

/// What a newly found cgroup may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// Under the cap.
    Free,
    /// At the cap, but some live cgroups are deeper: one at this depth
    /// (the deepest) makes room.
    Displace { depth: usize },
    /// At the cap, and none deeper.
    Full,
}

/// How many live (not removed) cgroups there are at each depth: the cap's
/// check costs nothing per admission, where counting the live ones made a
/// cold start at 10,000 cgroups quadratic.
#[derive(Debug, Default)]
pub struct LiveDepths {
    by_depth: BTreeMap<usize, usize>,
    live: usize,
}

impl LiveDepths {
    pub fn add(&mut self, path: &str) {
        *self.by_depth.entry(depth(path)).or_default() += 1;
        self.live += 1;
    }

    pub fn remove(&mut self, path: &str) {
        let d = depth(path);
        if let Some(n) = self.by_depth.get_mut(&d) {
            *n -= 1;
            if *n == 0 {
                self.by_depth.remove(&d);
            }
            self.live -= 1;
        }
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn room_for(&self, path: &str, max: usize) -> Room {
        if self.live < max {
            return Room::Free;
        }
        match self.by_depth.last_key_value() {
            Some((&deepest, _)) if deepest > depth(path) => Room::Displace { depth: deepest },
            _ => Room::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_levels() {
        assert_eq!(depth("/"), 1);
        assert_eq!(depth("/a"), 1);
        assert_eq!(depth("/a/b"), 2);
        assert_eq!(depth("/kubepods/burstable/pod1/c"), 4);
    }

    #[test]
    fn only_a_shallower_cgroup_makes_room_at_the_cap() {
        let mut live = LiveDepths::default();
        live.add("/t/x/a");
        live.add("/t/x/b");
        live.add("/p");
        assert_eq!(live.room_for("/q", 4), Room::Free);
        assert_eq!(live.room_for("/q", 3), Room::Displace { depth: 3 });
        assert_eq!(live.room_for("/t/y", 3), Room::Displace { depth: 3 });
        // As deep as the deepest: first come keeps its place.
        assert_eq!(live.room_for("/t/x/c", 3), Room::Full);
        assert_eq!(live.room_for("/t/x/c/d", 3), Room::Full);
        live.remove("/t/x/a");
        live.remove("/t/x/b");
        assert_eq!(live.live(), 1);
        assert_eq!(live.room_for("/t/x/c", 1), Room::Full, "the deepest is now /p");
        assert_eq!(live.room_for("/t/x/c", 2), Room::Free);
    }
}
