//! cgroup id -> path through open_by_handle_at, on this host's real
//! hierarchy. Needs CAP_DAC_READ_SEARCH (root): fails without it unless
//! OOMWATCH_SKIP_PRIVILEGED=1.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

use oomwatch::{
    readers::{Hierarchy, parse_proc_cgroup},
    sources::resolve::CgroupResolver,
};
use oomwatch_tests::require_root;

#[test]
fn resolves_a_real_cgroup_by_inode() {
    if !require_root("resolves_a_real_cgroup_by_inode") {
        return;
    }
    // Every Linux host with cgroups has its own cgroup directory; find it
    // from /proc/self/cgroup on whichever hierarchy carries memory.
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    let (root, h) = if Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
        ("/sys/fs/cgroup/memory", Hierarchy::Memory)
    } else {
        ("/sys/fs/cgroup", Hierarchy::Unified)
    };
    let own = parse_proc_cgroup(&text, h).unwrap();
    let dir = Path::new(root).join(own.trim_start_matches('/'));
    let ino = fs::metadata(&dir).unwrap().ino();
    let r = CgroupResolver::new(Some(Path::new(root)), Some(Path::new(root)), 16);
    assert_eq!(r.resolve(h, ino), Some(own));
    assert_eq!(r.resolve(h, u64::MAX - 1), None, "an id that names no cgroup");
}
