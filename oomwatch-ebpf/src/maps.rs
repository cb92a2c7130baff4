//! Maps and globals shared by the probe families.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use oomwatch_common::{KernelOffsets, MarkVictimLayout, OomKillRecord, ReclaimLayout, Settings, StallSettings, counter};

/// Everything a person needs to see. Sized for bursts of OOM kills and
/// rate-limited stall records; the loader may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU counters, indexed by `oomwatch_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Victims marked by the OOM killer and not yet exited: pid -> mark time.
#[map]
pub static PENDING_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// When the last victim was marked (bpf_ktime_get_ns). In .bss: the exit
/// program's common case (no kill in minutes) is a clock read and one plain
/// load instead of a hash lookup on every process exit. A plain store is
/// enough: concurrent writers all write "just now".
#[unsafe(no_mangle)]
pub static mut LAST_KILL_NS: u64 = 0;

/// Exits this long after the last kill are not looked up: victims exit
/// within milliseconds (seconds when their memory is large); one stuck
/// longer loses only its exit confirmation, never its kill.
pub const VICTIM_EXIT_WINDOW_NS: u64 = 10_000_000_000;

#[inline(always)]
pub fn last_kill_ns() -> u64 {
    unsafe { core::ptr::read_volatile(&raw const LAST_KILL_NS) }
}

#[inline(always)]
pub fn note_kill(now: u64) {
    unsafe { core::ptr::write_volatile(&raw mut LAST_KILL_NS, now) };
}

/// Where the parts of one OOM record meet (see `oom.rs`).
#[repr(C)]
pub struct OomScratch {
    pub record: OomKillRecord,
    pub victim_pid: u32,
    pub parts: u32,
    pub started_ns: u64,
}

#[map]
pub static OOM_SCRATCH: PerCpuArray<OomScratch> = PerCpuArray::with_max_entries(1, 0);

// Set by the loader before the programs load; read with volatile loads so the
// compiler cannot fold the zero defaults.
#[unsafe(no_mangle)]
pub static MARK_VICTIM_LAYOUT: MarkVictimLayout = unsafe { core::mem::zeroed() };
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };
#[unsafe(no_mangle)]
pub static RECLAIM_LAYOUT: ReclaimLayout = unsafe { core::mem::zeroed() };
/// Constants for the verifier (frozen .rodata): the threshold test on the
/// reclaim end path costs no map lookup.
#[unsafe(no_mangle)]
pub static STALL_SETTINGS: StallSettings = unsafe { core::mem::zeroed() };

#[inline(always)]
pub fn global<T: Copy>(field: &T) -> T {
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
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
