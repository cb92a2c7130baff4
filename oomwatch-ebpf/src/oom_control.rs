//! The OOM killer's own view, where kprobes exist: `oom_kill_process(struct
//! oom_control *oc, const char *message)` runs in the allocating task just
//! before `mark_victim`. It parks what only `oc` knows (the memcg whose limit
//! was hit, totalpages, the victim's badness points, the constraint, the
//! allocation's gfp_mask and order, and the victim task itself) under the
//! current thread; `oom.rs` merges it into the record at mark_victim.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{kprobe, map},
    maps::LruHashMap,
    programs::ProbeContext,
};
use oomwatch_common::{OFFSET_ABSENT, OomControlInfo, OomControlOffsets, oom_control_flag};

use crate::{maps::global, task};

#[unsafe(no_mangle)]
pub static OOM_CONTROL_OFFSETS: OomControlOffsets = unsafe { core::mem::zeroed() };

/// Current pid_tgid -> what oom_kill_process saw. Small: OOM kills are rare
/// and an entry lives only until the matching mark_victim.
#[map]
pub static OOM_CONTROL: LruHashMap<u64, OomControlInfo> = LruHashMap::with_max_entries(256, 0);

#[inline(always)]
fn read<T: Default>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == OFFSET_ABSENT {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

#[kprobe]
pub fn oom_kill_process(ctx: ProbeContext) -> u32 {
    let _ = try_oom_kill_process(&ctx);
    0
}

fn try_oom_kill_process(ctx: &ProbeContext) -> Option<()> {
    let o = &OOM_CONTROL_OFFSETS;
    if global(&o.valid) == 0 {
        return None;
    }
    let oc: u64 = ctx.arg(0)?;
    let mut info = OomControlInfo::default();
    let memcg: u64 = read(oc, global(&o.memcg)).unwrap_or(0);
    if memcg != 0 {
        info.memcg_id = task::css_cgroup_id(memcg + global(&o.memcg_css) as u64).unwrap_or(0);
    }
    info.totalpages = read(oc, global(&o.totalpages)).unwrap_or(0);
    info.points = read(oc, global(&o.chosen_points)).unwrap_or(0);
    info.gfp_mask = read(oc, global(&o.gfp_mask)).unwrap_or(0);
    info.order = read(oc, global(&o.order)).unwrap_or(0);
    if let Some(c) = read::<u32>(oc, global(&o.constraint)) {
        info.constraint = c;
        info.flags |= oom_control_flag::CONSTRAINT;
    }
    let chosen: u64 = read(oc, global(&o.chosen)).unwrap_or(0);
    if let Some(pid) = task::pid(chosen) {
        info.victim_pid = pid;
        info.victim_tgid = task::tgid(chosen).unwrap_or(0);
        info.victim_memcg_id = task::memcg_id(chosen).unwrap_or(0);
        info.victim_cgroup_id = task::dfl_cgroup_id(chosen).unwrap_or(0);
        task::comm(chosen, &mut info.victim_comm);
        info.flags |= oom_control_flag::VICTIM;
    }
    OOM_CONTROL.insert(&bpf_get_current_pid_tgid(), &info, 0).ok()
}
