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
    /// The pid is another process's now: one started after the kill (a
    /// kill record that came late, on a host that reuses pids fast).
    Reused,
}

/// `PF_EXITING` in /proc/PID/stat `flags` (include/linux/sched.h): set
/// when the task starts exiting, before it leaves its cgroups.
const PF_EXITING: u64 = 0x4;

/// The memory cgroup of a process from /proc/PID/cgroup, told apart from
/// the "/" a v1 hierarchy shows for every exiting task (`memory_v1`: the
/// memory controller is mounted as cgroup v1), and from a process that got
/// the pid after the one asked about was killed at `killed_at`. Both are
/// told by /proc/PID/stat, read after the cgroup file (so it is of the
/// process whose cgroup was read, or of one started later still): a "/"
/// on v1 counts only when the task was not exiting yet; a start after the
/// kill is another process. On the unified hierarchy an exiting task keeps
/// showing its cgroup. The kill path reads this within a millisecond of
/// the kill, pids are handed out in order, and the victim's pid is reused
/// only after the kernel went round all of `pid_max` and it was reaped: it
/// is a kill record that comes late that could find another process.
pub fn proc_memory_cgroup(proc_root: &Path, pid: u32, memory_v1: bool, killed_at: BootTime) -> ProcCgroup {
    let dir = proc_root.join(pid.to_string());
    let Some(path) = fs::read_to_string(dir.join("cgroup")).ok().and_then(|t| parse_proc_cgroup(&t, Hierarchy::Memory)) else {
        return ProcCgroup::Gone;
    };
    let Some(stat) = fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(parse_proc_stat) else {
        // Reaped since the cgroup file was read: most likely the victim,
        // which exits as it is read; but a "/" on v1 says nothing.
        return if memory_v1 && path == "/" { ProcCgroup::Gone } else { ProcCgroup::Path(path) };
    };
    if stat.started_after(killed_at) {
        ProcCgroup::Reused
    } else if memory_v1 && path == "/" && stat.exiting {
        ProcCgroup::Exiting
    } else {
        ProcCgroup::Path(path)
    }
}

/// A moment on CLOCK_BOOTTIME (the clock of /proc/PID/stat's start time),
/// in ns since boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootTime(pub u64);

/// What /proc/PID/stat tells the kill path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub exiting: bool,
    /// `starttime` (field 22), in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcStat {
    /// The start time is cut down to a whole tick: a start after `at` by
    /// less than a tick is not told, a start before it never looks later.
    fn started_after(&self, at: BootTime) -> bool {
        let ns_per_tick = 1_000_000_000 / clock_ticks_per_second();
        self.start_ticks.saturating_mul(ns_per_tick) > at.0
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every architecture Linux runs on today.
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The fields of /proc/PID/stat the kill path needs. The command name
/// (field 2) may hold spaces and parentheses: fields are counted from its
/// last ')'.
pub fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // From field 3 (state): flags is field 9, starttime field 22.
    let mut fields = rest.split_ascii_whitespace();
    let flags: u64 = fields.nth(6)?.parse().ok()?;
    let start_ticks: u64 = fields.nth(12)?.parse().ok()?;
    Some(ProcStat { exiting: flags & PF_EXITING != 0, start_ticks })
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
        assert_eq!(parse_proc_stat(exiting), Some(ProcStat { exiting: true, start_ticks: 100 }));
        let running = "4242 (memhog) R 1 4242 4242 0 -1 4194560 30 0 0 0 1 2 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_proc_stat(running), Some(ProcStat { exiting: false, start_ticks: 100 }));
        assert_eq!(parse_proc_stat("4242 (cut"), None);
        assert_eq!(parse_proc_stat("4242 (x) R 1 2"), None);
        assert_eq!(parse_proc_stat("4242 (x) R 1 4242 4242 0 -1 4194560 30 0 0 0 1 2 0 0 20 0 1 0"), None, "no start time");
    }

    #[test]
    fn a_start_after_the_kill_is_told_only_when_a_whole_tick_says_so() {
        let ns_per_tick = 1_000_000_000 / clock_ticks_per_second();
        let stat = ProcStat { exiting: false, start_ticks: 500 };
        let started = BootTime(500 * ns_per_tick);
        assert!(stat.started_after(BootTime(started.0 - 1)));
        assert!(!stat.started_after(started));
        assert!(!stat.started_after(BootTime(started.0 + ns_per_tick - 1)), "started within the tick of the kill: maybe before it");
        assert!(!ProcStat { exiting: false, start_ticks: u64::MAX }.started_after(BootTime(u64::MAX)));
    }

    /// The stat of this very process: the parser reads what the kernel writes.
    #[test]
    fn this_process_started_before_now() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let parsed = parse_proc_stat(&stat).unwrap_or_else(|| panic!("{stat}"));
        assert!(!parsed.exiting);
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let now = BootTime(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        assert!(!parsed.started_after(now), "{stat}");
        assert!(parsed.started_after(BootTime(0)) || parsed.start_ticks == 0, "{stat}");
    }

    #[test]
    fn a_v1_root_answer_counts_only_for_a_task_not_exiting() {
        let dir = std::env::temp_dir().join(format!("oomwatch-procfs-{}", std::process::id()));
        let write = |pid: u32, cgroup: &str, flags: u64, start_ticks: u64| {
            let d = dir.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("cgroup"), cgroup).unwrap();
            fs::write(d.join("stat"), format!("{pid} (memhog) R 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 1 2 0 0 20 0 1 0 {start_ticks} 1000 10")).unwrap();
        };
        write(1, "4:memory:/\n0::/user.slice\n", 0x404c, 7);
        write(2, "4:memory:/\n0::/user.slice\n", 0x400100, 7);
        write(3, "4:memory:/pod/c\n0::/user.slice\n", 0x404c, 7);
        write(4, "0::/\n", 0x404c, 7);
        // Started long after the kill below: the pid is another process's.
        write(6, "4:memory:/pod/other\n0::/user.slice\n", 0x400100, 1_000_000);
        fs::create_dir_all(dir.join("7")).unwrap();
        fs::write(dir.join("7/cgroup"), "4:memory:/pod/c\n").unwrap();
        let kill = BootTime(1_000_000_000);
        assert_eq!(proc_memory_cgroup(&dir, 1, true, kill), ProcCgroup::Exiting, "v1 shows every exiting task in /");
        assert_eq!(proc_memory_cgroup(&dir, 2, true, kill), ProcCgroup::Path("/".into()), "really in the root cgroup");
        assert_eq!(proc_memory_cgroup(&dir, 3, true, kill), ProcCgroup::Path("/pod/c".into()), "read before it exited");
        assert_eq!(proc_memory_cgroup(&dir, 4, false, kill), ProcCgroup::Path("/".into()), "v2 keeps an exiting task's cgroup");
        assert_eq!(proc_memory_cgroup(&dir, 5, true, kill), ProcCgroup::Gone);
        assert_eq!(proc_memory_cgroup(&dir, 6, true, kill), ProcCgroup::Reused);
        assert_eq!(proc_memory_cgroup(&dir, 6, false, BootTime(u64::MAX)), ProcCgroup::Path("/pod/other".into()), "started before a later kill");
        assert_eq!(proc_memory_cgroup(&dir, 7, true, kill), ProcCgroup::Path("/pod/c".into()), "reaped between the two reads");
        fs::write(dir.join("7/cgroup"), "4:memory:/\n").unwrap();
        assert_eq!(proc_memory_cgroup(&dir, 7, true, kill), ProcCgroup::Gone, "reaped, and v1 showed it exiting");
        fs::remove_dir_all(&dir).unwrap();
    }
}
