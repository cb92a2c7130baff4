//! `/proc/self/mountinfo`, `/proc/PID/cgroup` and `/proc/PID/stat`
//! (`parse_mountinfo`, `own_memory_cgroup`, `CgroupLayout::memory_dir`,
//! `parse_proc_cgroup`, `parse_proc_stat`): never panic; the layout is
//! consistent; a cgroup path never leads out of the memory hierarchy; a
//! process name (chosen by its user) never moves the stat fields read.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::{Hierarchy, ProcStat, parse_proc_cgroup, parse_proc_stat};
use oomwatch::readers::{CgroupLayout, CgroupMode, CgroupVersion, own_memory_cgroup, parse_mountinfo};

/// A busy Kubernetes node has a few thousand mounts (about 150 bytes each).
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The same text as /proc/PID/stat, and as the name in one.
    let _ = parse_proc_stat(text);
    if !text.contains('\n') {
        let stat = format!("4242 ({text}) R 1 4242 4242 0 -1 4212812 30 0 0 0 1 2 0 0 20 0 1 0 987 1000 10\n");
        assert_eq!(parse_proc_stat(&stat), Some(ProcStat { exiting: true, start_ticks: 987 }), "{stat:?}");
    }
    // The same text as /proc/PID/cgroup.
    for h in [Hierarchy::Memory, Hierarchy::Unified] {
        if let Some(p) = parse_proc_cgroup(text, h) {
            assert!(!p.contains('\n'));
        }
    }
    let layout = match parse_mountinfo(text) {
        Ok(l) => l,
        Err(e) => {
            assert_eq!(e.to_string().lines().count(), 1);
            return;
        }
    };
    match layout.mode {
        CgroupMode::V2 => {
            assert_eq!(layout.memory_version, CgroupVersion::V2);
            assert_eq!(layout.unified_root.as_ref(), Some(&layout.memory_root));
        }
        CgroupMode::Hybrid => {
            assert_eq!(layout.memory_version, CgroupVersion::V1);
            assert!(layout.unified_root.is_some());
        }
        CgroupMode::V1 => {
            assert_eq!(layout.memory_version, CgroupVersion::V1);
            assert!(layout.unified_root.is_none());
        }
    }
    if let Some(own) = own_memory_cgroup(text, &layout) {
        stays_inside(&layout, &own);
    }
    for line in text.lines().take(32) {
        stays_inside(&layout, line);
        for word in line.split(' ').take(8) {
            stays_inside(&layout, word);
        }
    }
});

fn stays_inside(layout: &CgroupLayout, cgroup_path: &str) {
    let Some(dir) = layout.memory_dir(cgroup_path) else {
        return;
    };
    let rest = dir.strip_prefix(&layout.memory_root).expect("under the memory root");
    assert!(
        rest.components().all(|c| matches!(c, Component::Normal(_))),
        "{cgroup_path:?} -> {}",
        dir.display()
    );
}
