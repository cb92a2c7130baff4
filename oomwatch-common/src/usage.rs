//! The usage walk: a BPF cgroup iterator (`iter/cgroup`, 6.1+) that reads
//! every tracked memory cgroup's page counter in one read(2), in place of
//! one cgroupfs read per cgroup.
//!
//! The daemon gives each cgroup it tracks a slot (`USAGE_SLOTS`: cgroup id
//! -> slot) and maps `USAGES` into its memory. Before each walk it writes
//! the walk's number into slot [`WALK_SLOT`]; the program copies that
//! number next to every usage it writes, so a slot the walk did not reach
//! (its cgroup gone, or no longer a memory cgroup) shows an older number
//! and is never taken for a fresh read. The iterator writes nothing to its
//! seq_file: a cgroup iterator's output must fit one kernel buffer (8
//! pages), and 10,000 cgroups do not.

use bytemuck::{Pod, Zeroable};

/// One cgroup's usage as the walk read it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct UsageSlot {
    /// `memcg->memory.usage`, in pages: what memory.current (v2) and
    /// memory.usage_in_bytes (v1, below the root) show, over the page size.
    pub pages: u64,
    /// The walk that wrote it (in [`WALK_SLOT`]: the walk running now).
    pub walk: u64,
}
const _: () = assert!(size_of::<UsageSlot>() == 16);

/// The slot whose `walk` is the number of the walk in progress, and whose
/// `pages` counts the cgroups the walk visited; no cgroup is given it.
pub const WALK_SLOT: u32 = 0;

/// Slots in `USAGES` unless the loader sets another size (one per tracked
/// cgroup, plus [`WALK_SLOT`]).
pub const DEFAULT_SLOTS: u32 = 4097;
