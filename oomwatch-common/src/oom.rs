//! OOM kills, as the programs at `oom/mark_victim` see them.

use bytemuck::{Pod, Zeroable};

use crate::{COMM_LEN, header::RecordHeader, tracepoint::TpField};

/// Bits of [`OomKillRecord::present`]: which victim fields the kernel gave us.
/// A missing bit means "the kernel did not say", never zero.
pub mod victim_field {
    /// The victim's pid; missing only when every read of it failed (the
    /// record still reports the kill, and the failure is counted).
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
    /// The victim's memory cgroup and its ancestors with their usage and
    /// limit at the kill ([`OomKillRecord::memcgs`]), read from the victim's
    /// task (BTF walk).
    pub const MEMCG_CHAIN: u32 = 1 << 12;
}

/// How many memory cgroups of the victim's ancestry a kill record carries:
/// the victim's own and up to 7 ancestors, nearest first; never the root.
/// Deeper hierarchies are cut (without [`memcg_chain::COMPLETE`]) and the
/// daemon reads the rest from cgroup files.
pub const MEMCG_LEVELS: usize = 8;

/// Bits of [`OomKillRecord::memcg_chain`].
pub mod memcg_chain {
    /// The chain reaches the root: every ancestor below it is in the record.
    pub const COMPLETE: u32 = 1 << 0;
    /// `failcnt` is kept by every counter of the chain: always on v1; on
    /// v2 only by kernels without `page_counter.track_failcnt` (newer ones
    /// keep it for v1 alone).
    pub const FAILCNT: u32 = 1 << 1;
    /// `oom_events` was read (`memory_events_local[MEMCG_OOM]`).
    pub const OOM_EVENTS: u32 = 1 << 2;
}

/// One memory cgroup of the victim's ancestry at the moment of the kill:
/// `struct mem_cgroup`'s `memory` page counter, which is what v2
/// `memory.current`/`memory.max` and v1 `memory.usage_in_bytes`/
/// `memory.limit_in_bytes` show (in pages here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct MemcgLevel {
    /// Inode id of the memory cgroup (its kernfs id).
    pub cgroup_id: u64,
    pub usage_pages: u64,
    /// The hard limit; `PAGE_COUNTER_MAX` (`LONG_MAX / PAGE_SIZE`) when
    /// unlimited.
    pub max_pages: u64,
    /// Charges that failed at this limit (v1 `memory.failcnt`).
    pub failcnt: u64,
    /// OOMs at this limit (v2 `memory.events.local` `oom`).
    pub oom_events: u64,
}
const _: () = assert!(size_of::<MemcgLevel>() == 40);

/// Which programs contribute to one OOM record; they meet in a per-CPU slot.
pub mod oom_part {
    /// The `oom/mark_victim` tracepoint (format-file fields, trigger).
    pub const TRACEPOINT: u32 = 1 << 0;
    /// The raw `mark_victim` tracepoint (victim task pointer, BTF walk).
    pub const VICTIM_TASK: u32 = 1 << 1;
}

/// Records that name the same victim this close together are one kill.
/// The kernel marks a task an OOM victim once in its life, and a pid is not
/// reused within a second. The parts of one kill run back to back on one
/// CPU, but a VM's vCPU can be descheduled by its host between them (steal
/// time, an emulated guest) while the kernel's clock runs on: the kernel
/// program joins such parts, and the daemon drops a second record of a
/// kill that was split anyway.
pub const SAME_VICTIM_WINDOW_NS: u64 = 1_000_000_000;

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
    /// Bits of [`memcg_chain`], with [`victim_field::MEMCG_CHAIN`].
    pub memcg_chain: u32,
    /// How many of `memcgs` hold a cgroup; read it through
    /// [`OomKillRecord::memcg_levels`], which bounds it.
    pub memcg_levels: u32,
    pub _pad1: u32,
    /// The victim's memory cgroup, then its parent, and so on.
    pub memcgs: [MemcgLevel; MEMCG_LEVELS],
}
const _: () = assert!(size_of::<OomKillRecord>() == 520);

impl OomKillRecord {
    /// The memory cgroup chain the kernel read, victim's first; empty
    /// without [`victim_field::MEMCG_CHAIN`]. Bounded whatever the bytes say.
    pub fn memcg_levels(&self) -> &[MemcgLevel] {
        if self.present & victim_field::MEMCG_CHAIN == 0 {
            return &[];
        }
        let n = (self.memcg_levels as usize).min(MEMCG_LEVELS);
        &self.memcgs[..n]
    }
}

/// Field layout of `oom/mark_victim` on the running kernel, from its format
/// file. Passed to the kernel program as the global `MARK_VICTIM_LAYOUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct MarkVictimLayout {
    pub pid: TpField,
    pub comm: TpField,
    /// [`crate::tracepoint::comm_encoding`].
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

/// Settings the daemon may change while programs run (array map `SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct Settings {
    /// [`oom_part`] bits that must meet before an OOM record is sent.
    /// 0 means only the tracepoint part. A part not in it does nothing:
    /// the loader writes it once every part is attached.
    pub oom_parts_expected: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Settings>() == 8);
