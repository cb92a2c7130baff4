//! Which tracked cgroups are whose children. A kill names the children of
//! the cgroup whose limit was hit (`top_consumers`): a pass over every
//! tracked cgroup for that cost 170 µs on the kill path of a host with a
//! few thousand cgroups, two thirds of the daemon's time before it sent
//! the kill. With this index it is a lookup and the children themselves.

use std::collections::HashMap;

/// Parent path -> the last path component of each of its tracked children.
/// Names, not paths: a path's parent part is the key already.
#[derive(Debug, Default)]
pub struct Children {
    by_parent: HashMap<Box<str>, Vec<Box<str>>>,
}

/// `path`'s parent and its own name; None for the root ("/") and for
/// anything that is not an absolute path.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// The path of `name` under `parent`.
pub fn join(parent: &str, name: &str) -> String {
    let mut path = String::with_capacity(parent.len() + 1 + name.len());
    if parent != "/" {
        path.push_str(parent);
    }
    path.push('/');
    path.push_str(name);
    path
}

impl Children {
    /// `path` is tracked from now on (called once per admission).
    pub fn add(&mut self, path: &str) {
        let Some((parent, name)) = split(path) else {
            return;
        };
        self.by_parent
            .entry(parent.into())
            .or_default()
            .push(name.into());
    }

    /// `path` is no longer tracked. Linear in its parent's children: for
    /// one cgroup at a time; [`Children::rebuild`] after many.
    pub fn remove(&mut self, path: &str) {
        let Some((parent, name)) = split(path) else {
            return;
        };
        let Some(names) = self.by_parent.get_mut(parent) else {
            return;
        };
        if let Some(i) = names.iter().position(|n| **n == *name) {
            names.swap_remove(i);
        }
        if names.is_empty() {
            self.by_parent.remove(parent);
        }
    }

    /// The index of exactly `paths`, built afresh: after a sweep removed
    /// any number of cgroups, in one pass instead of one search each.
    pub fn rebuild<'a>(&mut self, paths: impl Iterator<Item = &'a String>) {
        self.by_parent.clear();
        for path in paths {
            self.add(path);
        }
        self.by_parent.shrink_to_fit();
    }

    /// The paths of `parent`'s tracked children, in no particular order.
    pub fn of<'a>(&'a self, parent: &'a str) -> impl Iterator<Item = String> + 'a {
        self.by_parent
            .get(parent)
            .into_iter()
            .flatten()
            .map(move |name| join(parent, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(c: &Children, parent: &str) -> Vec<String> {
        let mut v: Vec<String> = c.of(parent).collect();
        v.sort();
        v
    }

    #[test]
    fn split_and_join_are_inverse_below_the_root() {
        for path in ["/a", "/a/b", "/kubepods/pod x/c\u{1}d"] {
            let (parent, name) = split(path).unwrap();
            assert_eq!(join(parent, name), path);
        }
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), None);
        assert_eq!(split("a"), None);
        assert_eq!(split("/a/"), None);
    }

    #[test]
    fn children_are_one_level_down_and_follow_adds_and_removes() {
        let mut c = Children::default();
        for p in ["/", "/a", "/a/b", "/a/b/c", "/ab", "/a/d"] {
            c.add(p);
        }
        assert_eq!(
            sorted(&c, "/"),
            ["/a", "/ab"],
            "not /a/b, not the root itself"
        );
        assert_eq!(
            sorted(&c, "/a"),
            ["/a/b", "/a/d"],
            "not /a/b/c, not the sibling /ab"
        );
        c.remove("/a/b");
        c.remove("/a/never");
        assert_eq!(sorted(&c, "/a"), ["/a/d"]);
        c.remove("/a/d");
        assert!(c.by_parent.get("/a").is_none(), "an empty list is dropped");
        assert_eq!(
            sorted(&c, "/a/b"),
            ["/a/b/c"],
            "a removed parent's children stay until they go"
        );
    }

    #[test]
    fn rebuild_is_the_index_of_the_paths_given() {
        let mut c = Children::default();
        for p in ["/a", "/a/x", "/a/y", "/b/z"] {
            c.add(p);
        }
        let kept = ["/a".to_owned(), "/a/y".to_owned()];
        c.rebuild(kept.iter());
        assert_eq!(sorted(&c, "/a"), ["/a/y"]);
        assert!(sorted(&c, "/b").is_empty());
    }
}
