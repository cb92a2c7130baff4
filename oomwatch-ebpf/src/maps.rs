//! Maps and globals shared by the probe families. Each is declared under the
//! name the loader looks up (`oomwatch_common::names`, checked by `symbol!`).

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use oomwatch_common::{
    counters,
    names::{global as global_name, map as map_name},
    offsets::{KernelOffsets, MemcgOffsets, OomControlOffsets},
    oom::{MarkVictimLayout, Settings},
    reclaim::{ReclaimLayout, StallSettings},
};

/// Everything a person needs to see. Sized for bursts of OOM kills and
/// rate-limited stall records; the loader may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
symbol!(EVENTS = map_name::EVENTS);

/// Per-CPU counters, indexed by `oomwatch_common::counters`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);
symbol!(COUNTERS = map_name::COUNTERS);

#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
symbol!(SETTINGS = map_name::SETTINGS);

/// Victims marked by the OOM killer and not yet exited: pid -> mark time.
#[map]
pub static PENDING_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);
symbol!(PENDING_VICTIMS = map_name::PENDING_VICTIMS);

/// When the last victim was marked (bpf_ktime_get_ns). In .bss: the exit
/// program's common case (no kill in minutes) is a clock read and one plain
/// load instead of a hash lookup on every process exit. A plain store is
/// enough: concurrent writers all write "just now".
// SAFETY: the one symbol of this name in the object.
#[unsafe(no_mangle)]
pub static mut LAST_KILL_NS: u64 = 0;

/// Exits this long after the last kill are not looked up: victims exit
/// within milliseconds (seconds when their memory is large); one stuck
/// longer loses only its exit confirmation, never its kill.
pub const VICTIM_EXIT_WINDOW_NS: u64 = 10_000_000_000;

#[inline(always)]
pub fn last_kill_ns() -> u64 {
    // SAFETY: an aligned 8-byte load of a global the verifier knows (.bss
    // map value); a racing writer stores a whole u64 too, and either value
    // is a valid answer.
    unsafe { core::ptr::read_volatile(&raw const LAST_KILL_NS) }
}

#[inline(always)]
pub fn note_kill(now: u64) {
    // SAFETY: an aligned 8-byte store to the same global; concurrent
    // writers all store "just now" (see LAST_KILL_NS).
    unsafe { core::ptr::write_volatile(&raw mut LAST_KILL_NS, now) };
}

// Set by the loader before the programs load; read with volatile loads so the
// compiler cannot fold the zero defaults.
// SAFETY: no_mangle: the one symbol of this name in the object; zeroed: a
// Pod struct of integers, for which all-zero is a valid value (absent).
#[unsafe(no_mangle)]
pub static MARK_VICTIM_LAYOUT: MarkVictimLayout = unsafe { core::mem::zeroed() };
symbol!(MARK_VICTIM_LAYOUT = global_name::MARK_VICTIM_LAYOUT);

// SAFETY: no_mangle: the one symbol of this name in the object; zeroed: a
// Pod struct of integers, for which all-zero is a valid value (absent).
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };
symbol!(KERNEL_OFFSETS = global_name::KERNEL_OFFSETS);

// SAFETY: no_mangle: the one symbol of this name in the object; zeroed: a
// Pod struct of integers, for which all-zero is a valid value (absent).
#[unsafe(no_mangle)]
pub static OOM_CONTROL_OFFSETS: OomControlOffsets = unsafe { core::mem::zeroed() };
symbol!(OOM_CONTROL_OFFSETS = global_name::OOM_CONTROL_OFFSETS);

// SAFETY: no_mangle: the one symbol of this name in the object; zeroed: a
// Pod struct of integers, for which all-zero is a valid value (absent).
#[unsafe(no_mangle)]
pub static MEMCG_OFFSETS: MemcgOffsets = unsafe { core::mem::zeroed() };
symbol!(MEMCG_OFFSETS = global_name::MEMCG_OFFSETS);

// SAFETY: no_mangle: the one symbol of this name in the object; zeroed: a
// Pod struct of integers, for which all-zero is a valid value (absent).
#[unsafe(no_mangle)]
pub static RECLAIM_LAYOUT: ReclaimLayout = unsafe { core::mem::zeroed() };
symbol!(RECLAIM_LAYOUT = global_name::RECLAIM_LAYOUT);

/// Constants for the verifier (frozen .rodata): the threshold test on the
/// reclaim end path costs no map lookup.
// SAFETY: no_mangle: the one symbol of this name in the object; zeroed: a
// Pod struct of integers, for which all-zero is a valid value (absent).
#[unsafe(no_mangle)]
pub static STALL_SETTINGS: StallSettings = unsafe { core::mem::zeroed() };
symbol!(STALL_SETTINGS = global_name::STALL_SETTINGS);

/// A global the loader set, read so the compiler cannot fold the default.
#[inline(always)]
pub fn global<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a reference to (part of) a global, so the load is
    // of valid, aligned memory; volatile only keeps it from being folded.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a value of this CPU's slot of a per-CPU array, which the
        // verifier checked to be in bounds; only programs on this CPU write
        // it (a nested program could race one increment, no more).
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn settings() -> Settings {
    match SETTINGS.get(0) {
        Some(s) => *s,
        None => Settings { oom_parts_expected: 0, _pad: 0 },
    }
}
