//! Who used the memory of the cgroup whose limit was hit, for a kill:
//! its child cgroups at the model's last sample (`top_consumers`), its own
//! last minute (`limit_history`) and its memory by kind at its last full
//! sample (`composition`, until the kernel's report gives the one at the
//! kill). All from the model: nothing is read on the kill path.

use std::time::Instant;

use crate::{
    model::Model,
    wire::{Consumer, OomKill, TOP_CHILDREN},
};

/// Fills `top_consumers`, `limit_history` and `composition` of `kill`,
/// whose victim ran in `victim_cgroup`; `window_s` of history.
pub fn who_used(model: &Model, kill: &mut OomKill, victim_cgroup: &str, window_s: u32, now: Instant) {
    let Some(limit) = kill.limit_cgroup.clone() else { return };
    let trigger_cgroup = kill.trigger.cgroup.as_deref();
    kill.top_consumers = model
        .children_by_usage(&limit, TOP_CHILDREN)
        .into_iter()
        .map(|child| Consumer {
            victim: holds(&child.path, victim_cgroup),
            trigger: trigger_cgroup.is_some_and(|t| holds(&child.path, t)),
            cgroup: Some(child.path),
            workload: child.workload,
            bytes: child.usage_bytes,
            ..Default::default()
        })
        .collect();
    kill.limit_history = model.ramp(&limit, window_s, now);
    kill.composition = model.composition(&limit, now);
}

/// `cgroup` is `path` or below it.
fn holds(path: &str, cgroup: &str) -> bool {
    cgroup == path || cgroup.strip_prefix(path).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_holds_its_descendants_not_its_siblings() {
        assert!(holds("/p/a", "/p/a"));
        assert!(holds("/p/a", "/p/a/x/y"));
        assert!(!holds("/p/a", "/p/ab"));
        assert!(!holds("/p/a", "/p"));
    }
}
