//! Exact per-task memory-stall time: `psi_memstall_enter`/`_leave`, the
//! kernel's own brackets around every section PSI counts as a memory stall
//! (reclaim, compaction, thrashing refaults, ...). Only where the kernel lets
//! us attach: fentry (preferred) or kprobe. The loader probes both; on
//! kernels with neither, reclaim stalls are still measured at the vmscan
//! tracepoints (`reclaim.rs`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, kprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, ProbeContext},
};

use crate::reclaim::{account, current_memcg};

/// Thread id -> start of its outermost memstall section (0: none open).
#[map]
pub static MEMSTALL_STARTS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(10240, 0);

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
    let tid = bpf_get_current_pid_tgid() as u32;
    let now = unsafe { bpf_ktime_get_ns() };
    match MEMSTALL_STARTS.get_ptr_mut(&tid) {
        // Non-zero: a nested section; the outer one is what the task waits.
        Some(start) => unsafe {
            if *start == 0 {
                *start = now;
            }
        },
        None => {
            let _ = MEMSTALL_STARTS.insert(&tid, &now, 0);
        }
    }
}

/// `flags` is the `unsigned long *` both functions take: enter stored the
/// task's previous in_memstall there, so non-zero marks a nested leave.
#[inline(always)]
fn leave(flags: *const u64) {
    if unsafe { bpf_probe_read_kernel(flags) }.unwrap_or(0) != 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = MEMSTALL_STARTS.get_ptr_mut(&(pid_tgid as u32)) else { return };
    let start = unsafe { *slot };
    if start == 0 {
        return;
    }
    unsafe { *slot = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    account(current_memcg(), (pid_tgid >> 32) as u32, now.wrapping_sub(start), now, true);
}
