//! Records shared by the kernel programs and the daemon.
//!
//! Every record starts with a [`RecordHeader`]. Records are `#[repr(C)]` with
//! explicit padding and no `bool` or Rust enums, so the same bytes mean the
//! same thing on both sides; sizes are locked with compile-time assertions.
//! Kinds and flags travel as integers and are converted with `TryFrom`.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Bumped whenever a record layout changes.
pub const RECORD_VERSION: u16 = 1;
pub const COMM_LEN: usize = 16;

/// What a record is. Carried as `u32` in [`RecordHeader::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RecordKind {
    OomKill = 1,
    VictimExit = 2,
    ReclaimStall = 3,
}

impl TryFrom<u32> for RecordKind {
    type Error = u32;
    fn try_from(value: u32) -> Result<Self, u32> {
        match value {
            1 => Ok(Self::OomKill),
            2 => Ok(Self::VictimExit),
            3 => Ok(Self::ReclaimStall),
            other => Err(other),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u32,
    pub version: u16,
    pub _pad: u16,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the kernel saw the event.
    pub ktime_ns: u64,
}
const _: () = assert!(size_of::<RecordHeader>() == 16);

impl RecordHeader {
    pub const fn new(kind: RecordKind, ktime_ns: u64) -> Self {
        Self { kind: kind as u32, version: RECORD_VERSION, _pad: 0, ktime_ns }
    }
}

/// Bits of [`OomKillRecord::present`]: which victim fields the kernel gave us.
/// A missing bit means "the kernel did not say", never zero.
pub mod victim_field {
    pub const PID: u32 = 1 << 0;
    pub const COMM: u32 = 1 << 1;
    pub const TOTAL_VM: u32 = 1 << 2;
    pub const ANON_RSS: u32 = 1 << 3;
    pub const FILE_RSS: u32 = 1 << 4;
    pub const SHMEM_RSS: u32 = 1 << 5;
    pub const UID: u32 = 1 << 6;
    pub const PGTABLES: u32 = 1 << 7;
    pub const OOM_SCORE_ADJ: u32 = 1 << 8;
    /// Victim tgid, memcg id and v2 cgroup id, read from the victim's task.
    pub const TASK: u32 = 1 << 9;
    /// The trigger's memcg id, read from the current task.
    pub const TRIGGER_MEMCG: u32 = 1 << 10;
    /// The `struct oom_control` fields (limit memcg, totalpages, points,
    /// constraint, gfp_mask, order), where a kprobe on oom_kill_process runs.
    pub const OOM_CONTROL: u32 = 1 << 11;
}

/// Which programs contribute to one OOM record; they meet in a per-CPU slot.
pub mod oom_part {
    /// The `oom/mark_victim` tracepoint (format-file fields, trigger).
    pub const TRACEPOINT: u32 = 1 << 0;
    /// The raw `mark_victim` tracepoint (victim task pointer, BTF walk).
    pub const VICTIM_TASK: u32 = 1 << 1;
}

/// One OOM kill, as seen at `oom/mark_victim`.
///
/// RSS-type sizes are in KiB, as the kernel's tracepoint reports them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct OomKillRecord {
    pub header: RecordHeader,
    /// Bitmask of [`victim_field`].
    pub present: u32,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_uid: u32,
    pub oom_score_adj: i32,
    pub _pad0: u32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub victim_comm: [u8; COMM_LEN],
    /// Inode id of the victim's memory cgroup (v1 memory hierarchy or v2).
    pub victim_memcg_id: u64,
    /// Inode id of the victim's cgroup on the default (v2) hierarchy.
    pub victim_cgroup_id: u64,
    pub trigger_pid: u32,
    pub trigger_tgid: u32,
    pub trigger_comm: [u8; COMM_LEN],
    pub trigger_cgroup_id: u64,
    pub trigger_memcg_id: u64,
    /// From `struct oom_control` where the kernel allows a kprobe.
    pub oc_memcg_id: u64,
    pub oc_totalpages: u64,
    pub oc_points: i64,
    pub oc_gfp_mask: u32,
    pub oc_order: i32,
    pub oc_constraint: u32,
    pub _pad1: u32,
}
const _: () = assert!(size_of::<OomKillRecord>() == 192);

/// A pending OOM victim left the kernel (sched_process_exit of its leader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct VictimExitRecord {
    pub header: RecordHeader,
    pub pid: u32,
    pub tgid: u32,
    /// `ktime_ns` of the matching mark_victim.
    pub marked_ktime_ns: u64,
    pub memcg_id: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<VictimExitRecord>() == 64);

/// Where a reclaim stall happened, in [`ReclaimStallRecord::reclaim_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReclaimKind {
    Direct = 0,
    Memcg = 1,
    Compaction = 2,
}
pub const RECLAIM_KINDS: usize = 3;

impl TryFrom<u32> for ReclaimKind {
    type Error = u32;
    fn try_from(value: u32) -> Result<Self, u32> {
        match value {
            0 => Ok(Self::Direct),
            1 => Ok(Self::Memcg),
            2 => Ok(Self::Compaction),
            other => Err(other),
        }
    }
}

/// One reclaim stall longer than the configured threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct ReclaimStallRecord {
    pub header: RecordHeader,
    pub pid: u32,
    pub tgid: u32,
    pub comm: [u8; COMM_LEN],
    pub memcg_id: u64,
    pub cgroup_id: u64,
    pub duration_ns: u64,
    /// Pages freed; `u64::MAX` when the tracepoint has no such field.
    pub nr_reclaimed: u64,
    pub reclaim_kind: u32,
    /// Allocation order; negative when the tracepoint has no such field.
    pub order: i32,
    /// Stalls of this cgroup that the in-kernel rate limit held back since
    /// the previous record.
    pub suppressed: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ReclaimStallRecord>() == 88);

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring buffer full: an OOM record could not be reserved.
    pub const RINGBUF_FULL_OOM: u32 = 0;
    pub const RINGBUF_FULL_EXIT: u32 = 1;
    pub const RINGBUF_FULL_STALL: u32 = 2;
    /// The pending-victims map refused an insert (exit confirmation lost).
    pub const PENDING_VICTIMS_FULL: u32 = 3;
    /// A reclaim or memstall start had no entry in the per-thread map
    /// (`RECLAIM_THREADS`): that stall is not counted.
    pub const RECLAIM_STARTS_FULL: u32 = 4;
    /// OOM kills seen by the kernel programs (for reconciliation).
    pub const OOM_SEEN: u32 = 5;
    /// Unused since per-cgroup and per-process stalls are aggregated by the
    /// daemon from `RECLAIM_THREADS` (the indexes are kept stable).
    pub const STALL_CGROUPS_FULL: u32 = 6;
    pub const STALL_PROCS_FULL: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// A tracepoint field, as its tracefs `format` file describes it.
/// `size == 0` means the kernel's record has no such field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct TpField {
    pub offset: u16,
    pub size: u16,
}

impl TpField {
    pub const ABSENT: Self = Self { offset: 0, size: 0 };
    pub const fn is_present(self) -> bool {
        self.size != 0
    }
}

/// How the `comm` field of a tracepoint record is stored.
pub mod comm_encoding {
    pub const ABSENT: u32 = 0;
    /// `char comm[16]` inline at the field offset.
    pub const INLINE: u32 = 1;
    /// `__data_loc char[] comm`: a u32 with the offset (low 16 bits) and
    /// length (high 16 bits) of the string within the record.
    pub const DATA_LOC: u32 = 2;
}

/// Field layout of `oom/mark_victim` on the running kernel, from its format
/// file. Passed to the kernel program as the global `MARK_VICTIM_LAYOUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct MarkVictimLayout {
    pub pid: TpField,
    pub comm: TpField,
    pub comm_encoding: u32,
    pub total_vm: TpField,
    pub anon_rss: TpField,
    pub file_rss: TpField,
    pub shmem_rss: TpField,
    pub uid: TpField,
    pub pgtables: TpField,
    pub oom_score_adj: TpField,
}
const _: () = assert!(size_of::<MarkVictimLayout>() == 40);

/// Kernel struct offsets computed from BTF at start, for walking
/// `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id` and friends.
/// `valid == 0` means BTF was not available: programs skip the walk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    /// Index of the memory controller in `css_set.subsys[]`.
    pub memory_cgrp_id: u32,
    pub task_cgroups: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub css_set_subsys: u32,
    pub css_set_dfl_cgrp: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 48);

/// Offsets into `struct oom_control` (and `struct mem_cgroup`), from BTF,
/// for the optional kprobe on `oom_kill_process`. `valid == 0`: not usable.
/// A field the kernel lacks has offset `u32::MAX`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct OomControlOffsets {
    pub valid: u32,
    pub memcg: u32,
    pub totalpages: u32,
    pub chosen: u32,
    pub chosen_points: u32,
    pub constraint: u32,
    pub gfp_mask: u32,
    pub order: u32,
    /// Offset of `css` (struct cgroup_subsys_state) inside struct mem_cgroup.
    pub memcg_css: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<OomControlOffsets>() == 40);

pub const OFFSET_ABSENT: u32 = u32::MAX;

/// What the kprobe on `oom_kill_process` saw, parked for `mark_victim`
/// (same task, moments later) to merge into the OOM record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct OomControlInfo {
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_memcg_id: u64,
    pub victim_cgroup_id: u64,
    pub memcg_id: u64,
    pub totalpages: u64,
    pub points: i64,
    pub gfp_mask: u32,
    pub order: i32,
    pub constraint: u32,
    /// Bit 0: constraint read; bit 1: victim task read.
    pub flags: u32,
    pub victim_comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<OomControlInfo>() == 80);

pub mod oom_control_flag {
    pub const CONSTRAINT: u32 = 1 << 0;
    pub const VICTIM: u32 = 1 << 1;
}

/// Settings the daemon may change while programs run (array map `SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct Settings {
    /// [`oom_part`] bits that must meet before an OOM record is sent.
    /// 0 means only the tracepoint part.
    pub oom_parts_expected: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Settings>() == 8);

/// Reclaim stall settings, fixed for the programs' lifetime: the loader
/// writes them into the read-only global `STALL_SETTINGS`, so the verifier
/// sees constants and the hot path reads no map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct StallSettings {
    /// Reclaim stalls at least this long become records; 0: none do.
    pub threshold_ns: u64,
    /// At most one stall record per cgroup per this interval.
    pub min_interval_ns: u64,
}
const _: () = assert!(size_of::<StallSettings>() == 16);

/// Buckets of [`ThreadStalls::buckets`]: bucket 0 holds stalls under
/// 2 µs, bucket `i` (1..=22) holds `[2^i, 2^(i+1))` µs, and the last one
/// everything from 2^23 µs (8.4 s) up.
pub const STALL_BUCKETS: usize = 24;

/// Histogram bucket of a stall duration: floor(log2(µs)), clamped to
/// `[0, STALL_BUCKETS - 1]`. Branch-light and loop-free, so the kernel
/// programs and the daemon share it.
#[inline(always)]
pub const fn stall_bucket(duration_ns: u64) -> usize {
    let mut v = duration_ns / 1000;
    let mut r = 0usize;
    if v >> 32 != 0 {
        v >>= 32;
        r += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        r += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        r += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        r += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        r += 2;
    }
    if v >> 1 != 0 {
        r += 1;
    }
    if r >= STALL_BUCKETS { STALL_BUCKETS - 1 } else { r }
}

/// Upper bound (exclusive) of stall bucket `i` in µs; `u64::MAX` for the last.
pub const fn stall_bucket_upper_us(i: usize) -> u64 {
    if i + 1 >= STALL_BUCKETS { u64::MAX } else { 1 << (i + 1) }
}

/// One thread's reclaim state and stall totals: the value of the kernel's
/// `RECLAIM_THREADS` map (key: thread id). The begin and end programs of a
/// thread never run at the same time, so the kernel updates it in place
/// without atomics; the daemon reads the whole map (once a second and at
/// scrape/status time) and turns what changed since its previous read into
/// per-cgroup counters and per-process top stallers.
///
/// The totals of one entry form a *lineage* named by `born_ns`: they only
/// grow while `born_ns` stays the same. A new lineage starts when the entry
/// is created (first stall of a thread, or after an LRU eviction) and when
/// the thread id was reused by another process; the kernel zeroes the totals
/// before it writes the new `born_ns` (which comes first in memory, so a
/// reader copying forwards that sees the new one sees zeroed totals).
///
/// Field order: what begin and end touch on every call comes first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct ThreadStalls {
    /// `bpf_ktime_get_ns()` at the current reclaim's begin; 0: not in reclaim.
    pub start_ns: u64,
    /// [`ReclaimKind`] of the current reclaim.
    pub kind: u32,
    /// Allocation order of the current reclaim; negative when unknown.
    pub order: i32,
    /// Memory cgroup the totals below are attributed to (memcg inode id, or
    /// the v2 cgroup id without BTF; 0: unknown).
    pub memcg_id: u64,
    /// When `memcg_id` was last checked against the task's cgroups.
    pub memcg_checked_ns: u64,
    /// Start of this lineage of totals (see above).
    pub born_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// End of the latest stall or memstall section.
    pub last_ns: u64,
    /// Time in psi memstall sections (where fentry/kprobe work), else 0.
    pub memstall_ns: u64,
    /// Start of the current outermost memstall section; 0: none open.
    pub memstall_start_ns: u64,
    /// The thread's name when the lineage started.
    pub comm: [u8; COMM_LEN],
    /// Log2 histogram of stall durations, see [`stall_bucket`].
    pub buckets: [u32; STALL_BUCKETS],
}
const _: () = assert!(size_of::<ThreadStalls>() == 208);

/// Field layout of the vmscan reclaim tracepoints, from their format files
/// (global `RECLAIM_LAYOUT`). Absent fields read as -1 / 0 in records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct ReclaimLayout {
    /// `order` of `mm_vmscan_direct_reclaim_begin`.
    pub direct_order: TpField,
    /// `nr_reclaimed` of `mm_vmscan_direct_reclaim_end`.
    pub direct_nr_reclaimed: TpField,
    pub memcg_order: TpField,
    pub memcg_nr_reclaimed: TpField,
}
const _: () = assert!(size_of::<ReclaimLayout>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are plain `#[repr(C)]` data with explicit padding,
    // which is what bytemuck's `Pod` derive has already checked.
    unsafe impl aya::Pod for MarkVictimLayout {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for OomControlOffsets {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for TpField {}
    unsafe impl aya::Pod for ReclaimLayout {}
    unsafe impl aya::Pod for StallSettings {}
    unsafe impl aya::Pod for ThreadStalls {}
}
