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

/// What /proc/PID/cgroup can honestly say about a process's memory cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcCgroup {
    /// The process's cgroup, read while it was still in it.
    Path(String),
    /// On a v1 hierarchy the kernel shows an exiting task in the root
    /// cgroup ("/"), whichever cgroup it was in: the file cannot tell.
    Exiting,
    /// The process was reaped (or the file did not parse).
    Gone,
}

/// `PF_EXITING` in /proc/PID/stat `flags` (include/linux/sched.h): set
/// when the task starts exiting, before it leaves its cgroups.
const PF_EXITING: u64 = 0x4;

/// The memory cgroup of a process from /proc/PID/cgroup, told apart from
/// the "/" a v1 hierarchy shows for every exiting task (`memory_v1`: the
/// memory controller is mounted as cgroup v1). A "/" there counts only
/// when /proc/PID/stat, read after it, says the task was not exiting yet.
/// On the unified hierarchy an exiting task keeps showing its cgroup.
pub fn proc_memory_cgroup(proc_root: &Path, pid: u32, memory_v1: bool) -> ProcCgroup {
    let dir = proc_root.join(pid.to_string());
    let Some(path) = fs::read_to_string(dir.join("cgroup")).ok().and_then(|t| parse_proc_cgroup(&t, Hierarchy::Memory)) else {
        return ProcCgroup::Gone;
    };
    if path != "/" || !memory_v1 {
        return ProcCgroup::Path(path);
    }
    match fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(stat_exiting) {
        Some(false) => ProcCgroup::Path(path),
        Some(true) => ProcCgroup::Exiting,
        None => ProcCgroup::Gone,
    }
}

/// Whether /proc/PID/stat's `flags` (field 9) has `PF_EXITING`. The
/// command name (field 2) may hold spaces and parentheses: fields are
/// counted from its last ')'.
fn stat_exiting(stat: &str) -> Option<bool> {
    let (_, rest) = stat.rsplit_once(')')?;
    // state ppid pgrp session tty_nr tpgid flags
    let flags: u64 = rest.split_ascii_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_EXITING != 0)
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

    #[test]
    fn an_exiting_task_is_told_from_one_in_the_root_cgroup() {
        // Flags as a task in do_exit shows them (0x40484c: PF_EXITING set).
        let exiting = "4242 (mem hog) (x) D 1 4242 4242 0 -1 4212812 30 0 0 0 1 2 0 0 20 0 1 0 100 1000 10";
        assert_eq!(stat_exiting(exiting), Some(true));
        let running = "4242 (memhog) R 1 4242 4242 0 -1 4194560 30 0 0 0 1 2 0 0 20 0 1 0 100 1000 10";
        assert_eq!(stat_exiting(running), Some(false));
        assert_eq!(stat_exiting("4242 (cut"), None);
        assert_eq!(stat_exiting("4242 (x) R 1 2"), None);
    }

    #[test]
    fn a_v1_root_answer_counts_only_for_a_task_not_exiting() {
        let dir = std::env::temp_dir().join(format!("oomwatch-procfs-{}", std::process::id()));
        let write = |pid: u32, cgroup: &str, flags: u64| {
            let d = dir.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("cgroup"), cgroup).unwrap();
            fs::write(d.join("stat"), format!("{pid} (memhog) R 1 {pid} {pid} 0 -1 {flags} 0 0")).unwrap();
        };
        write(1, "4:memory:/\n0::/user.slice\n", 0x404c);
        write(2, "4:memory:/\n0::/user.slice\n", 0x400100);
        write(3, "4:memory:/pod/c\n0::/user.slice\n", 0x404c);
        write(4, "0::/\n", 0x404c);
        assert_eq!(proc_memory_cgroup(&dir, 1, true), ProcCgroup::Exiting, "v1 shows every exiting task in /");
        assert_eq!(proc_memory_cgroup(&dir, 2, true), ProcCgroup::Path("/".into()), "really in the root cgroup");
        assert_eq!(proc_memory_cgroup(&dir, 3, true), ProcCgroup::Path("/pod/c".into()), "read before it exited");
        assert_eq!(proc_memory_cgroup(&dir, 4, false), ProcCgroup::Path("/".into()), "v2 keeps an exiting task's cgroup");
        assert_eq!(proc_memory_cgroup(&dir, 5, true), ProcCgroup::Gone);
        fs::remove_dir_all(&dir).unwrap();
    }
}
