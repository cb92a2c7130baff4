//! The cgroups a per-tick pass has to visit. Two passes run after every
//! sampler tick, forecasts and throttling; at 10,000 cgroups a visit of
//! each cost more than a tenth of the daemon's CPU, while almost all of
//! them would find nothing to do: a level that never moved and sits below
//! its limit forecasts nothing, and a `high` counter that did not move
//! starts or ends no episode. A cgroup is put on the list when what the
//! pass reads of it changes, and stays on it while the pass has more to
//! do; the pass then costs what moves, not what exists.

/// Paths due for one pass, each once (the cgroup's own flag says it is
/// listed, so listing it again costs no lookup).
#[derive(Debug, Default)]
pub struct DueList {
    paths: Vec<String>,
}

impl DueList {
    /// Lists `path` unless `listed` says it is already; sets `listed`.
    pub fn add(&mut self, listed: &mut bool, path: &str) {
        if !*listed {
            *listed = true;
            self.paths.push(path.to_owned());
        }
    }

    /// The listed paths, for a pass that gives back those it keeps
    /// ([`DueList::keep`]); the others' flags are the pass's to clear.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.paths)
    }

    /// Paths still due after a pass (their flags stay set). Anything added
    /// during the pass stays listed too.
    pub fn keep(&mut self, mut kept: Vec<String>) {
        kept.append(&mut self.paths);
        self.paths = kept;
    }

    /// The listed paths.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    /// Drops the paths `keep` refuses (cgroups that left the model: a
    /// cgroup of the same name that comes later starts unlisted).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.paths.retain(|p| keep(p));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    #[cfg(test)]
    pub fn paths(&self) -> &[String] {
        &self.paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_listed_once_until_a_pass_lets_it_go() {
        let mut due = DueList::default();
        let (mut a, mut b) = (false, false);
        due.add(&mut a, "/a");
        due.add(&mut a, "/a");
        due.add(&mut b, "/b");
        assert_eq!(due.len(), 2, "a flagged path is not listed twice");
        let pass = due.take();
        assert_eq!(pass, ["/a", "/b"]);
        assert_eq!(due.len(), 0);
        // The pass keeps /b and lets /a go (clearing its flag).
        a = false;
        due.keep(vec!["/b".to_owned()]);
        due.add(&mut b, "/b");
        assert_eq!(due.len(), 1, "/b is still listed and flagged");
        due.add(&mut a, "/a");
        assert_eq!(due.take(), ["/b", "/a"]);
    }
}
