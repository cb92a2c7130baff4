//! The OOM killer's own view, where kprobes exist: `oom_kill_process(struct
//! oom_control *oc, const char *message)` runs in the allocating task just
//! before `mark_victim`. It parks what only `oc` knows (the memcg whose limit
//! was hit, totalpages, the victim's badness points, the constraint, the
//! allocation's gfp_mask and order, and the victim task itself) under the
//! current thread; `oom.rs` merges it into the record at mark_victim.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, map},
    maps::LruHashMap,
    programs::ProbeContext,
};
use oomwatch_common::{
    COMM_LEN,
    names::{map as map_name, program},
    oom::{OomKillRecord, victim_field},
};

use crate::{
    errors::{Absent, Errors},
    kptr::OomControl,
};

/// What the kprobe on `oom_kill_process` saw, parked for `mark_victim`
/// (same task, moments later) to merge into the OOM record. Kernel-side
/// only: the daemon never reads it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
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
    /// `u32::MAX`: not read.
    pub constraint: u32,
    /// Bits of [`flag`].
    pub flags: u32,
    pub victim_comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<OomControlInfo>() == 80);

/// Bits of [`OomControlInfo::flags`].
pub mod flag {
    /// The victim task (`oc->chosen`) was read.
    pub const VICTIM: u32 = 1 << 1;
}

/// Current pid_tgid -> what oom_kill_process saw. Small: OOM kills are rare
/// and an entry lives only until the matching mark_victim.
#[map]
pub static OOM_CONTROL: LruHashMap<u64, OomControlInfo> = LruHashMap::with_max_entries(256, 0);
symbol!(OOM_CONTROL = map_name::OOM_CONTROL);

#[kprobe]
pub fn oom_kill_process(ctx: ProbeContext) -> u32 {
    park(&ctx, Errors::of(program::OOM_KILL_PROCESS));
    0
}
symbol!(oom_kill_process = program::OOM_KILL_PROCESS.name);

fn park(ctx: &ProbeContext, errors: Errors) {
    let oc = match ctx.arg::<u64>(0) {
        Some(ptr) => OomControl::from_ptr(ptr),
        None => Err(Absent::Failed),
    };
    let Some(oc) = errors.check(oc) else { return };
    let mut info = OomControlInfo { constraint: u32::MAX, ..Default::default() };
    if let Some(Some(memcg)) = errors.check(oc.memcg()) {
        info.memcg_id = errors.check(memcg.css().and_then(|css| css.cgroup_id())).unwrap_or(0);
    }
    info.totalpages = errors.check(oc.totalpages()).unwrap_or(0);
    info.points = errors.check(oc.chosen_points()).unwrap_or(0);
    info.gfp_mask = errors.check(oc.gfp_mask()).unwrap_or(0);
    info.order = errors.check(oc.order()).unwrap_or(0);
    if let Some(c) = errors.check(oc.constraint()) {
        info.constraint = c;
    }
    if let Some(Some(chosen)) = errors.check(oc.chosen())
        && let Some(pid) = errors.check(chosen.pid())
    {
        info.victim_pid = pid;
        info.victim_tgid = errors.check(chosen.tgid()).unwrap_or(0);
        info.victim_memcg_id = errors.check(chosen.memcg_id()).unwrap_or(0);
        info.victim_cgroup_id = errors.check(chosen.dfl_cgroup_id()).unwrap_or(0);
        info.victim_comm = errors.check(chosen.comm()).unwrap_or_default();
        info.flags |= flag::VICTIM;
    }
    if OOM_CONTROL.insert(&bpf_get_current_pid_tgid(), &info, 0).is_err() {
        // Not a read; but what was read is lost for this kill's record.
        errors.note();
    }
}

/// Merges what `oom_kill_process` parked for this thread, if it ran, into
/// the record at mark_victim.
#[inline(always)]
pub fn merge(pid_tgid: u64, rec: &mut OomKillRecord) {
    let Some(info) = OOM_CONTROL.get_ptr(&pid_tgid) else { return };
    // SAFETY: a value of an LRU hash map the verifier checked for NULL;
    // copied out at once, and only this thread writes its own key.
    let info = unsafe { *info };
    let _ = OOM_CONTROL.remove(&pid_tgid);
    let victim_read = info.flags & flag::VICTIM != 0;
    if victim_read && rec.present & victim_field::PID != 0 && info.victim_pid != rec.victim_pid {
        // A different kill by the same thread: not ours.
        return;
    }
    rec.oc_memcg_id = info.memcg_id;
    rec.oc_totalpages = info.totalpages;
    rec.oc_points = info.points;
    rec.oc_gfp_mask = info.gfp_mask;
    rec.oc_order = info.order;
    rec.oc_constraint = info.constraint;
    rec.present |= victim_field::OOM_CONTROL;
    // Kernels whose mark_victim passes only a pid: the victim task comes from oc->chosen.
    if victim_read && rec.present & victim_field::TASK == 0 {
        rec.victim_tgid = info.victim_tgid;
        rec.victim_memcg_id = info.victim_memcg_id;
        rec.victim_cgroup_id = info.victim_cgroup_id;
        rec.present |= victim_field::TASK;
        if rec.present & victim_field::COMM == 0 {
            rec.victim_comm = info.victim_comm;
            rec.present |= victim_field::COMM;
        }
        if rec.present & victim_field::PID == 0 {
            rec.victim_pid = info.victim_pid;
            rec.present |= victim_field::PID;
        }
    }
}
