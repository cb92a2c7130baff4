//! Reads from `struct task_struct` with offsets computed from BTF at start.
//! Every read goes through bpf_probe_read_kernel, so a wrong offset yields an
//! error, never a crash.

use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::maps::{KERNEL_OFFSETS, global};

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

#[inline(always)]
pub fn offsets_valid() -> bool {
    global(&KERNEL_OFFSETS.valid) != 0
}

/// `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`: the inode number
/// of the task's memory cgroup, on v1 and v2 alike.
#[inline(always)]
pub fn memcg_id(task: u64) -> Option<u64> {
    css_memcg_id(memcg_css(task)?)
}

/// `task->cgroups->subsys[memory_cgrp_id]`: the task's memory css. Two
/// reads of memory the kernel's charge path keeps hot; callers that cache
/// the id per css skip the cold rest of the walk ([`css_memcg_id`]).
#[inline(always)]
pub fn memcg_css(task: u64) -> Option<u64> {
    if !offsets_valid() {
        return None;
    }
    let css_set: u64 = read(task, global(&KERNEL_OFFSETS.task_cgroups))?;
    let subsys = global(&KERNEL_OFFSETS.css_set_subsys) + 8 * global(&KERNEL_OFFSETS.memory_cgrp_id);
    read(css_set, subsys)
}

/// `css->cgroup->kn->id`.
#[inline(always)]
pub fn css_memcg_id(css: u64) -> Option<u64> {
    let cgroup: u64 = read(css, global(&KERNEL_OFFSETS.css_cgroup))?;
    cgroup_kn_id(cgroup)
}

/// `task->cgroups->dfl_cgrp->kn->id`: the task's cgroup on the v2 hierarchy.
#[inline(always)]
pub fn dfl_cgroup_id(task: u64) -> Option<u64> {
    if !offsets_valid() {
        return None;
    }
    let css_set: u64 = read(task, global(&KERNEL_OFFSETS.task_cgroups))?;
    let cgroup: u64 = read(css_set, global(&KERNEL_OFFSETS.css_set_dfl_cgrp))?;
    cgroup_kn_id(cgroup)
}

/// `css->cgroup->kn->id` for a `struct cgroup_subsys_state *`.
#[inline(always)]
pub fn css_cgroup_id(css: u64) -> Option<u64> {
    if !offsets_valid() {
        return None;
    }
    let cgroup: u64 = read(css, global(&KERNEL_OFFSETS.css_cgroup))?;
    cgroup_kn_id(cgroup)
}

#[inline(always)]
fn cgroup_kn_id(cgroup: u64) -> Option<u64> {
    let kn: u64 = read(cgroup, global(&KERNEL_OFFSETS.cgroup_kn))?;
    read(kn, global(&KERNEL_OFFSETS.kernfs_node_id))
}

#[inline(always)]
pub fn pid(task: u64) -> Option<u32> {
    read::<i32>(task, global(&KERNEL_OFFSETS.task_pid)).map(|p| p as u32)
}

#[inline(always)]
pub fn tgid(task: u64) -> Option<u32> {
    read::<i32>(task, global(&KERNEL_OFFSETS.task_tgid)).map(|p| p as u32)
}

#[inline(always)]
pub fn comm(task: u64, out: &mut [u8; 16]) -> bool {
    if !offsets_valid() || task == 0 {
        return false;
    }
    let src = (task + global(&KERNEL_OFFSETS.task_comm) as u64) as *const [u8; 16];
    match unsafe { bpf_probe_read_kernel(src) } {
        Ok(c) => {
            *out = c;
            true
        }
        Err(_) => false,
    }
}
