//! What the kernel programs and the daemon share: the records that cross the
//! ring buffer, the maps the daemon reads, the offsets and settings the
//! loader hands to the programs, and the names both sides find them by.
//!
//! One module per probe family, as the programs are split:
//! - [`header`]: the header every record starts with, and the format version;
//! - [`oom`]: OOM kills (`oom/mark_victim` and its raw tracepoint);
//! - [`exit`]: victims' exits (`sched_process_exit`);
//! - [`reclaim`]: reclaim stalls and the per-thread stall ledger;
//! - [`tracepoint`]: tracepoint field layouts from tracefs format files;
//! - [`offsets`]: kernel struct offsets from BTF;
//! - [`usage`]: the usage walk's slots (a BPF cgroup iterator);
//! - [`counters`]: the per-CPU counters (losses, full maps, program errors);
//! - [`names`]: map, global and program names in the eBPF object.
//!
//! Records are `#[repr(C)]` with explicit padding and no `bool` or Rust
//! enums, so the same bytes mean the same thing on both sides; sizes are
//! locked with compile-time assertions. Kinds and flags travel as integers
//! and are converted with `TryFrom`. Types only the kernel programs use live
//! in the eBPF crate.
#![no_std]

pub mod counters;
pub mod exit;
pub mod header;
pub mod names;
pub mod offsets;
pub mod oom;
pub mod reclaim;
pub mod tracepoint;
pub mod usage;

/// Length of a kernel task name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are plain `#[repr(C)]` data with explicit padding,
    // which is what bytemuck's `Pod` derive has already checked.
    unsafe impl aya::Pod for crate::tracepoint::TpField {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::oom::MarkVictimLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::oom::Settings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::offsets::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::offsets::OomControlOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::offsets::MemcgOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::reclaim::ReclaimLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::reclaim::StallSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::reclaim::ThreadStalls {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::usage::UsageSlot {}
}
