//! Kernel struct offsets, computed by the loader from the running kernel's
//! BTF (`/sys/kernel/btf/vmlinux`) and handed to the programs as read-only
//! globals. rustc emits no CO-RE relocations: this is how the programs read
//! kernel structs without hard-coding a layout.

use bytemuck::{Pod, Zeroable};

/// A field this kernel does not have.
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Offsets for walking `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`
/// and friends. `valid == 0` means BTF was not available: programs skip the
/// walk.
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
    /// `struct cgroup.subsys[]`: a cgroup's own css per controller (the
    /// usage walk's `cgroup->subsys[memory_cgrp_id]`).
    pub cgroup_subsys: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 48);

/// Offsets into `struct oom_control` (and `struct mem_cgroup`), for the
/// optional kprobe on `oom_kill_process`. `valid == 0`: not usable. A field
/// the kernel lacks has offset [`OFFSET_ABSENT`].
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
}
const _: () = assert!(size_of::<OomControlOffsets>() == 32);

/// Offsets for walking a memory cgroup and its ancestors and reading their
/// page counters (`OomKillRecord::memcgs`). `valid == 0`: the css links are
/// unknown, no walk. The page counter fields may be [`OFFSET_ABSENT`]; the
/// chain needs `memory_usage` and `memory_max` (without them the daemon
/// reads usage and limits from cgroup files instead).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct MemcgOffsets {
    pub valid: u32,
    /// `css` inside `struct mem_cgroup`: memcg = css - this.
    pub memcg_css: u32,
    /// `struct cgroup_subsys_state.parent`.
    pub css_parent: u32,
    /// From the memcg: `memory.usage` (pages, atomic_long_t).
    pub memory_usage: u32,
    /// From the memcg: `memory.max` (pages).
    pub memory_max: u32,
    /// From the memcg: `memory.failcnt`.
    pub memory_failcnt: u32,
    /// From the memcg: `memory.track_failcnt` (bool); absent on kernels
    /// where every counter keeps failcnt.
    pub memory_track_failcnt: u32,
    /// From the memcg: `memory_events_local[MEMCG_OOM]`.
    pub oom_events_local: u32,
}
const _: () = assert!(size_of::<MemcgOffsets>() == 32);
