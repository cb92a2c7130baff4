//! Exact per-task memory-stall time: `psi_memstall_enter`/`_leave`, the
//! kernel's own brackets around every section PSI counts as a memory stall
//! (reclaim, compaction, thrashing refaults, ...). Only where the kernel lets
//! us attach: fentry (preferred) or kprobe. The loader probes both; on
//! kernels with neither, reclaim stalls are still measured at the vmscan
//! tracepoints (`reclaim.rs`). Sections are timed and summed in the
//! thread's ledger entry (`ledger.rs`), next to its reclaim stalls.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use oomwatch_common::names::program;

use crate::{errors::Errors, kptr::probe_read, ledger};

#[fentry(function = "psi_memstall_enter")]
pub fn psi_enter_fe(_ctx: FEntryContext) -> u32 {
    ledger::memstall_enter(bpf_get_current_pid_tgid(), Errors::of(program::MEMSTALL_ENTER_FENTRY));
    0
}
symbol!(psi_enter_fe = program::MEMSTALL_ENTER_FENTRY.name);

#[fentry(function = "psi_memstall_leave")]
pub fn psi_leave_fe(ctx: FEntryContext) -> u32 {
    leave(Some(ctx.arg::<*const u64>(0)), Errors::of(program::MEMSTALL_LEAVE_FENTRY));
    0
}
symbol!(psi_leave_fe = program::MEMSTALL_LEAVE_FENTRY.name);

#[kprobe]
pub fn psi_enter_kp(_ctx: ProbeContext) -> u32 {
    ledger::memstall_enter(bpf_get_current_pid_tgid(), Errors::of(program::MEMSTALL_ENTER_KPROBE));
    0
}
symbol!(psi_enter_kp = program::MEMSTALL_ENTER_KPROBE.name);

#[kprobe]
pub fn psi_leave_kp(ctx: ProbeContext) -> u32 {
    leave(ctx.arg::<*const u64>(0), Errors::of(program::MEMSTALL_LEAVE_KPROBE));
    0
}
symbol!(psi_leave_kp = program::MEMSTALL_LEAVE_KPROBE.name);

/// `flags` is the `unsigned long *` both functions take: enter stored the
/// task's previous in_memstall there, so non-zero marks a nested leave.
#[inline(always)]
fn leave(flags: Option<*const u64>, errors: Errors) {
    let Some(flags) = flags else {
        errors.note();
        return;
    };
    // Unreadable (counted): taken as the outer leave, so that a section is
    // never left open to swallow the time until the next one.
    if errors.check(probe_read(flags)).unwrap_or(0) != 0 {
        return;
    }
    ledger::memstall_leave(bpf_get_current_pid_tgid(), errors);
}
