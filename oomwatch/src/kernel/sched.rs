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

/// Up to `n` CPUs this thread may run on, lowest first.
pub fn allowed_cpus(n: usize) -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is the empty set; sched_getaffinity fills
    // it for the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the set's own.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads a bit of the set, in range by construction.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).take(n).collect()
}

/// Keeps the calling thread on `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET adds one CPU
    // below CPU_SETSIZE (the caller's CPUs come from allowed_cpus).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity on the calling thread with a set of its size.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
