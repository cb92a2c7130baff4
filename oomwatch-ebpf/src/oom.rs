//! OOM kills, at `oom/mark_victim`.
//!
//! Two programs may see the same kill: the classic tracepoint (fields laid
//! out as the kernel's format file says, plus the triggering current task)
//! and the raw tracepoint, which gets the victim's `task_struct *` on kernels
//! whose tracepoint passes it (6.8+) and reads the victim's memory cgroup
//! from it. Both run back to back on one CPU inside the same tracepoint call,
//! so they meet in a per-CPU slot; the part that completes the set the loader
//! asked for (`Settings::oom_parts_expected`) sends the record.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use oomwatch_common::{
    OomKillRecord, RecordHeader, RecordKind, TpField, comm_encoding, counter, oom_control_flag, oom_part,
    victim_field,
};

use crate::{
    maps::{EVENTS, MARK_VICTIM_LAYOUT, OOM_SCRATCH, OomScratch, PENDING_VICTIMS, count, global, note_kill, settings},
    oom_control::OOM_CONTROL,
    task,
};

/// Parts of one kill arrive within microseconds; anything older is a
/// leftover from a kill whose other part never ran.
const PART_WINDOW_NS: u64 = 10_000_000;

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim_task(ctx: RawTracePointContext) -> u32 {
    let _ = try_mark_victim_task(&ctx);
    0
}

fn try_mark_victim(ctx: &TracePointContext) -> Option<()> {
    let pid_field = global(&MARK_VICTIM_LAYOUT.pid);
    let victim_pid = read_unsigned(ctx, pid_field)? as u32;
    let slot = begin_part(victim_pid)?;
    let rec = &mut slot.record;

    let mut present = victim_field::PID;
    macro_rules! field {
        ($field:ident, $dest:expr, $bit:expr) => {
            if let Some(v) = read_unsigned(ctx, global(&MARK_VICTIM_LAYOUT.$field)) {
                $dest = v;
                present |= $bit;
            }
        };
    }
    field!(total_vm, rec.total_vm_kb, victim_field::TOTAL_VM);
    field!(anon_rss, rec.anon_rss_kb, victim_field::ANON_RSS);
    field!(file_rss, rec.file_rss_kb, victim_field::FILE_RSS);
    field!(shmem_rss, rec.shmem_rss_kb, victim_field::SHMEM_RSS);
    field!(pgtables, rec.pgtables_kb, victim_field::PGTABLES);
    if let Some(uid) = read_unsigned(ctx, global(&MARK_VICTIM_LAYOUT.uid)) {
        rec.victim_uid = uid as u32;
        present |= victim_field::UID;
    }
    if let Some(adj) = read_signed(ctx, global(&MARK_VICTIM_LAYOUT.oom_score_adj)) {
        rec.oom_score_adj = adj as i32;
        present |= victim_field::OOM_SCORE_ADJ;
    }
    if read_comm(ctx, &mut rec.victim_comm) {
        present |= victim_field::COMM;
    }

    // The trigger is whoever is running: the task whose allocation failed.
    let pid_tgid = bpf_get_current_pid_tgid();
    rec.trigger_pid = pid_tgid as u32;
    rec.trigger_tgid = (pid_tgid >> 32) as u32;
    rec.trigger_comm = bpf_get_current_comm().unwrap_or_default();
    rec.trigger_cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let current = unsafe { bpf_get_current_task() };
    if let Some(id) = task::memcg_id(current) {
        rec.trigger_memcg_id = id;
        present |= victim_field::TRIGGER_MEMCG;
    }
    merge_oom_control(pid_tgid, victim_pid, rec);
    rec.present |= present;
    finish_part(slot, oom_part::TRACEPOINT);
    Some(())
}

/// What the kprobe on oom_kill_process parked for this thread, if it ran.
#[inline(always)]
fn merge_oom_control(pid_tgid: u64, victim_pid: u32, rec: &mut OomKillRecord) {
    let Some(info) = (unsafe { OOM_CONTROL.get(&pid_tgid) }).copied() else { return };
    let _ = OOM_CONTROL.remove(&pid_tgid);
    if info.flags & oom_control_flag::VICTIM != 0 && info.victim_pid != victim_pid {
        // A different kill by the same thread: not ours.
        return;
    }
    rec.oc_memcg_id = info.memcg_id;
    rec.oc_totalpages = info.totalpages;
    rec.oc_points = info.points;
    rec.oc_gfp_mask = info.gfp_mask;
    rec.oc_order = info.order;
    rec.oc_constraint = if info.flags & oom_control_flag::CONSTRAINT != 0 { info.constraint } else { u32::MAX };
    rec.present |= victim_field::OOM_CONTROL;
    // Kernels whose mark_victim passes only a pid: the victim task comes from oc->chosen.
    if info.flags & oom_control_flag::VICTIM != 0 && rec.present & victim_field::TASK == 0 {
        rec.victim_tgid = info.victim_tgid;
        rec.victim_memcg_id = info.victim_memcg_id;
        rec.victim_cgroup_id = info.victim_cgroup_id;
        rec.present |= victim_field::TASK;
        if rec.present & victim_field::COMM == 0 {
            rec.victim_comm = info.victim_comm;
            rec.present |= victim_field::COMM;
        }
    }
}

fn try_mark_victim_task(ctx: &RawTracePointContext) -> Option<()> {
    if !task::offsets_valid() {
        return None;
    }
    let victim: u64 = ctx.arg(0);
    let victim_pid = task::pid(victim)?;
    let slot = begin_part(victim_pid)?;
    let rec = &mut slot.record;
    rec.victim_tgid = task::tgid(victim).unwrap_or(0);
    rec.victim_memcg_id = task::memcg_id(victim).unwrap_or(0);
    rec.victim_cgroup_id = task::dfl_cgroup_id(victim).unwrap_or(0);
    if rec.present & victim_field::COMM == 0 && task::comm(victim, &mut rec.victim_comm) {
        rec.present |= victim_field::COMM;
    }
    rec.present |= victim_field::TASK;
    finish_part(slot, oom_part::VICTIM_TASK);
    Some(())
}

/// The slot for this CPU, reset unless it holds a recent part of the same kill.
#[inline(always)]
fn begin_part(victim_pid: u32) -> Option<&'static mut OomScratch> {
    let slot = unsafe { &mut *OOM_SCRATCH.get_ptr_mut(0)? };
    let now = unsafe { bpf_ktime_get_ns() };
    let fresh = slot.parts != 0
        && slot.victim_pid == victim_pid
        && now.wrapping_sub(slot.started_ns) < PART_WINDOW_NS;
    if !fresh {
        slot.record = OomKillRecord::default();
        slot.victim_pid = victim_pid;
        slot.parts = 0;
        slot.started_ns = now;
        slot.record.victim_pid = victim_pid;
    }
    Some(slot)
}

#[inline(always)]
fn finish_part(slot: &mut OomScratch, part: u32) {
    slot.parts |= part;
    let mut expected = settings().oom_parts_expected;
    if expected == 0 {
        expected = oom_part::TRACEPOINT;
    }
    if slot.parts & expected != expected {
        return;
    }
    slot.record.header = RecordHeader::new(RecordKind::OomKill, slot.started_ns);
    count(counter::OOM_SEEN);
    // OOM records are rare and urgent: wake the reader now.
    if EVENTS.output::<OomKillRecord>(&slot.record, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(counter::RINGBUF_FULL_OOM);
    }
    if PENDING_VICTIMS.insert(&slot.victim_pid, &slot.started_ns, 0).is_err() {
        count(counter::PENDING_VICTIMS_FULL);
    } else {
        note_kill(slot.started_ns);
    }
    slot.parts = 0;
}

#[inline(always)]
fn read_unsigned(ctx: &TracePointContext, field: TpField) -> Option<u64> {
    let off = field.offset as usize;
    unsafe {
        match field.size {
            1 => ctx.read_at::<u8>(off).ok().map(u64::from),
            2 => ctx.read_at::<u16>(off).ok().map(u64::from),
            4 => ctx.read_at::<u32>(off).ok().map(u64::from),
            8 => ctx.read_at::<u64>(off).ok(),
            _ => None,
        }
    }
}

#[inline(always)]
fn read_signed(ctx: &TracePointContext, field: TpField) -> Option<i64> {
    let off = field.offset as usize;
    unsafe {
        match field.size {
            1 => ctx.read_at::<i8>(off).ok().map(i64::from),
            2 => ctx.read_at::<i16>(off).ok().map(i64::from),
            4 => ctx.read_at::<i32>(off).ok().map(i64::from),
            8 => ctx.read_at::<i64>(off).ok(),
            _ => None,
        }
    }
}

#[inline(always)]
fn read_comm(ctx: &TracePointContext, out: &mut [u8; 16]) -> bool {
    let field = global(&MARK_VICTIM_LAYOUT.comm);
    let base = ctx.as_ptr() as *const u8;
    let src = match global(&MARK_VICTIM_LAYOUT.comm_encoding) {
        comm_encoding::INLINE => unsafe { base.add(field.offset as usize) },
        comm_encoding::DATA_LOC => {
            let Ok(loc) = (unsafe { ctx.read_at::<u32>(field.offset as usize) }) else {
                return false;
            };
            unsafe { base.add((loc & 0xffff) as usize) }
        }
        _ => return false,
    };
    unsafe { bpf_probe_read_kernel_str_bytes(src, out).is_ok() }
}
