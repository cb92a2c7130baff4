//! Exact per-task memory-stall time: `psi_memstall_enter`/`_leave`, the
//! kernel's own brackets around every section PSI counts as a memory stall
//! (reclaim, compaction, thrashing refaults, ...). Only where the kernel lets
//! us attach: fentry (preferred) or kprobe. The loader probes both; on
//! kernels with neither, reclaim stalls are still measured at the vmscan
//! tracepoints (`reclaim.rs`). Sections are timed and summed in the
//! thread's `RECLAIM_THREADS` entry, next to its reclaim stalls.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

use crate::reclaim::{RECLAIM_THREADS, attributed_memcg, own, with_thread};

#[fentry(function = "psi_memstall_enter")]
pub fn psi_enter_fe(_ctx: FEntryContext) -> u32 {
    enter();
    0
}

#[fentry(function = "psi_memstall_leave")]
pub fn psi_leave_fe(ctx: FEntryContext) -> u32 {
    leave(ctx.arg::<*const u64>(0));
    0
}

#[kprobe]
pub fn psi_enter_kp(_ctx: ProbeContext) -> u32 {
    enter();
    0
}

#[kprobe]
pub fn psi_leave_kp(ctx: ProbeContext) -> u32 {
    if let Some(flags) = ctx.arg::<*const u64>(0) {
        leave(flags);
    }
    0
}

#[inline(always)]
fn enter() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    with_thread(pid_tgid, now, |t| {
        // Non-zero: a nested section; the outer one is what the task waits.
        if t.memstall_start_ns == 0 {
            t.memstall_start_ns = now;
        }
    });
}

/// `flags` is the `unsigned long *` both functions take: enter stored the
/// task's previous in_memstall there, so non-zero marks a nested leave.
#[inline(always)]
fn leave(flags: *const u64) {
    if unsafe { bpf_probe_read_kernel(flags) }.unwrap_or(0) != 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = RECLAIM_THREADS.get_ptr_mut(&(pid_tgid as u32)) else { return };
    let t = unsafe { &mut *t };
    let start = t.memstall_start_ns;
    if start == 0 {
        return;
    }
    t.memstall_start_ns = 0;
    let now = unsafe { bpf_ktime_get_ns() };
    own(t, pid_tgid, now);
    attributed_memcg(t, now);
    t.memstall_ns += now.wrapping_sub(start);
    t.last_ns = now;
}
