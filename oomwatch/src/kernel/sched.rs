//! Scheduling hints for the daemon's own threads: the one that publishes
//! kills asks to run as soon as it is woken, the ones that only amend a
//! published kill step aside. Measured in docs/performance.md.

use std::io;

/// Asks the scheduler to run the calling thread soon after it is woken:
/// EEVDF's custom slice (`sched_attr.sched_runtime`, Linux 6.12+) gives a
/// task that runs briefly an earlier deadline, so a wakeup preempts a CPU
/// hog (a compiler, a batch job) instead of queueing behind its slice. No
/// privilege is needed and the thread's share of CPU does not grow: only
/// when it runs does. Older kernels ignore or refuse it (returned, for a
/// debug line).
pub fn prefer_short_slice(slice: std::time::Duration) -> io::Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
        sched_util_min: u32,
        sched_util_max: u32,
    }
    // SAFETY: getpriority reads the calling thread's nice value; errno is
    // not consulted since every value in range is valid.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: slice.as_nanos() as u64,
        ..Default::default()
    };
    // SAFETY: sched_setattr(2) on the calling thread (pid 0) with a fully
    // initialised struct of the size it says.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Lowers the calling thread's priority (nice `n`, never raised): for
/// threads whose work amends a kill after it was published, so that they
/// do not compete with its publication for the CPU the kill left free.
pub fn lower_priority(n: i32) {
    // SAFETY: setpriority on the calling thread (who 0 is the thread on
    // Linux); raising nice needs no privilege.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
}
