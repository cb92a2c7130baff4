//! Small files of /proc: a process's cgroups, the kernel's OOM kill count.

use std::{fs, path::Path};

use super::{Hierarchy, parse_flat_keyed};

/// The kernel's count of OOM kills since boot (/proc/vmstat `oom_kill`).
pub fn vmstat_oom_kills(proc_root: &std::path::Path) -> Option<u64> {
    let text = fs::read(proc_root.join("vmstat")).ok()?;
    parse_flat_keyed(&text, ["oom_kill"])[0]
}

/// This boot's id (/proc/sys/kernel/random/boot_id), to tell whether the
/// kernel's counters went on from where a saved reading left them.
pub fn boot_id(proc_root: &Path) -> Option<String> {
    let text = fs::read_to_string(proc_root.join("sys/kernel/random/boot_id")).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The cgroup of a process on a hierarchy, from /proc/PID/cgroup: the
/// fallback when BTF is missing (approximate: the process may be gone or
/// have moved by the time we look).
pub fn proc_cgroup(proc_root: &Path, pid: u32, h: Hierarchy) -> Option<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    parse_proc_cgroup(&text, h)
}

pub fn parse_proc_cgroup(text: &str, h: Hierarchy) -> Option<String> {
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            unified = Some(path.to_owned());
        } else if h == Hierarchy::Memory && controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
    }
    // Pure v2: the memory controller lives on the unified hierarchy.
    unified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_cgroup_on_hybrid_and_v2() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/user.slice\n";
        assert_eq!(parse_proc_cgroup(hybrid, Hierarchy::Memory).as_deref(), Some("/process_api/abc"));
        assert_eq!(parse_proc_cgroup(hybrid, Hierarchy::Unified).as_deref(), Some("/user.slice"));
        let v2 = "0::/system.slice/x.service\n";
        assert_eq!(parse_proc_cgroup(v2, Hierarchy::Memory).as_deref(), Some("/system.slice/x.service"));
        assert_eq!(parse_proc_cgroup("garbage", Hierarchy::Memory), None);
    }
}
