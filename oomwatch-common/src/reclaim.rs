//! Reclaim stalls, at the vmscan tracepoints (and psi memstall sections
//! where the kernel lets a program hook them): the stall records and the
//! per-thread ledger the daemon reads.

use bytemuck::{Pod, Zeroable};

use crate::{COMM_LEN, header::RecordHeader, tracepoint::TpField};

/// Where a reclaim stall happened, in [`ReclaimStallRecord::reclaim_kind`]
/// and [`ThreadStalls::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReclaimKind {
    Direct = 0,
    Memcg = 1,
}

impl TryFrom<u32> for ReclaimKind {
    type Error = u32;
    fn try_from(value: u32) -> Result<Self, u32> {
        match value {
            0 => Ok(Self::Direct),
            1 => Ok(Self::Memcg),
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

