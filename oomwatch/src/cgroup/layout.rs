//! TEMPORARY: replaced by the cgroup room's layout discovery when it lands.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode { V2, Hybrid, V1 }

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self { Self::V2 => "v2", Self::Hybrid => "hybrid", Self::V1 => "v1" })
    }
}

#[derive(Clone, Debug)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub memory_root: PathBuf,
    pub unified_root: Option<PathBuf>,
}

pub fn detect(proc_root: &Path) -> Option<CgroupLayout> {
    let text = std::fs::read_to_string(proc_root.join("self/mountinfo")).ok()?;
    let mut memory = None;
    let mut unified = None;
    for line in text.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let opts = r.nth(1).unwrap_or("");
        if fstype == "cgroup2" { unified = Some(PathBuf::from(mount_point)); }
        if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") { memory = Some(PathBuf::from(mount_point)); }
    }
    match (memory, unified) {
        (Some(m), u) => Some(CgroupLayout { mode: if u.is_some() { CgroupMode::Hybrid } else { CgroupMode::V1 }, memory_root: m, unified_root: u }),
        (None, Some(u)) => Some(CgroupLayout { mode: CgroupMode::V2, memory_root: u.clone(), unified_root: Some(u) }),
        _ => None,
    }
}
