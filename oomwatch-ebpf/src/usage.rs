//! The usage walk (`iter/cgroup`): run by the sampler once a tick, it visits
//! every cgroup under the memory root and, for the ones the sampler tracks
//! (`USAGE_SLOTS`), copies the memory page counter into their slot of
//! `USAGES`, which the daemon has mapped. One read(2) for every cgroup
//! instead of one cgroupfs read each (`oomwatch_common::usage`).
//!
//! Nothing goes to the iterator's seq_file: its output must fit one kernel
//! buffer, and the walk must cover any number of cgroups.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap},
};
use oomwatch_common::{
    names::{map as map_name, program},
    usage::{DEFAULT_SLOTS, UsageSlot, WALK_SLOT},
};

use crate::{errors::Errors, kptr::Cgroup};

/// cgroup id -> slot; written by the daemon as it tracks and forgets
/// cgroups. Not preallocated: sized for the cgroup cap, filled as found.
#[map]
pub static USAGE_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_SLOTS, BPF_F_NO_PREALLOC);
symbol!(USAGE_SLOTS = map_name::USAGE_SLOTS);

/// The usages, by slot; the daemon maps this array into its memory.
#[map]
pub static USAGES: Array<UsageSlot> = Array::with_max_entries(DEFAULT_SLOTS, BPF_F_MMAPABLE);
symbol!(USAGES = map_name::USAGES);

/// `struct bpf_iter__cgroup`: the iterator's context. `cgroup` is NULL on
/// the last call, after the walk.
#[repr(C)]
struct IterCgroup {
    _meta: u64,
    cgroup: u64,
}

// SAFETY: no_mangle: the program's one symbol, found by the loader under
// this name; the section is where aya and the kernel look for an iterator
// of cgroups.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/cgroup")]
pub fn cgroup_usage(ctx: *mut c_void) -> i32 {
    // SAFETY: the kernel passes a `struct bpf_iter__cgroup`; the verifier
    // checks the 8-byte load at offset 8 against the context's layout.
    let cgroup = unsafe { (*(ctx as *const IterCgroup)).cgroup };
    if cgroup != 0 {
        copy_usage(cgroup, Errors::of(program::CGROUP_USAGE));
    }
    // Anything else stops the walk with EAGAIN.
    0
}
symbol!(cgroup_usage = program::CGROUP_USAGE.name);

#[inline(always)]
fn copy_usage(cgroup: u64, errors: Errors) {
    // The cgroups visited, in the walk slot's `pages`: the daemon stops
    // walking where most of them are not its own.
    if let Some(w) = USAGES.get_ptr_mut(WALK_SLOT) {
        // SAFETY: an element of an array map, bounds-checked by the
        // helper; one walk runs at a time, and the daemon reads it after.
        unsafe { (*w).pages += 1 };
    }
    let Some(cgroup) = errors.check(Cgroup::from_ptr(cgroup)) else { return };
    let Some(id) = errors.check(cgroup.id()) else { return };
    // Most hosts track every memory cgroup; the rest cost this lookup.
    let Some(slot) = USAGE_SLOTS.get_ptr(id) else { return };
    // SAFETY: a value of a hash map the verifier checked for NULL, copied
    // out at once (the daemon only deletes entries of cgroups it forgot).
    let slot = unsafe { *slot };
    let Some(Some(css)) = errors.check(cgroup.memory_css()) else { return };
    let Some(pages) = errors.check(css.memcg().and_then(|m| m.usage_pages())) else { return };
    let walk = match USAGES.get(WALK_SLOT) {
        Some(w) => w.walk,
        None => return,
    };
    if slot == WALK_SLOT {
        return;
    }
    if let Some(out) = USAGES.get_ptr_mut(slot) {
        // SAFETY: an element of an array map, bounds-checked by the
        // helper; only this program writes cgroup slots, and one walk runs
        // at a time (the daemon's sampler thread), so no write races it.
        unsafe { *out = UsageSlot { pages, walk } };
    }
}
