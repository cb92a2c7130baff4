//! OOM kills, at `oom/mark_victim`.
//!
//! Two programs may see the same kill: the classic tracepoint (fields laid
//! out as the kernel's format file says, plus the triggering current task)
//! and the raw tracepoint, which gets the victim's `task_struct *` on kernels
//! whose tracepoint passes it (6.8+) and reads the victim's memory cgroup
//! from it. Both run back to back on one CPU inside the same tracepoint call,
//! so they meet in a per-CPU slot; the part that completes the set the loader
//! asked for (`Settings::oom_parts_expected`) sends the record.
//!
//! A kill is never lost to a failed read: a part that cannot read a field
//! counts the failure and still takes its place in the slot, so the record
//! goes out with what was read (a field missing from `present`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{RawTracePointContext, TracePointContext},
};
use oomwatch_common::{
    COMM_LEN, counters,
    names::{map as map_name, program},
    oom::{MEMCG_LEVELS, MemcgLevel, OomKillRecord, SAME_VICTIM_WINDOW_NS, memcg_chain, oom_part, victim_field},
    header::{RecordHeader, RecordKind},
    tracepoint::{TpField, comm_encoding},
};

use crate::{
    errors::{Absent, Errors, Read},
    kptr::{Css, Plain, Task, offsets_known, probe_read},
    maps::{EVENTS, MARK_VICTIM_LAYOUT, PENDING_VICTIMS, count, global, note_kill, settings},
    oom_control,
};

/// Parts of one kill arrive within microseconds; anything older is a
/// leftover from a kill whose other part never ran.
const PART_WINDOW_NS: u64 = 10_000_000;

/// Where the parts of one OOM record meet.
#[repr(C)]
pub struct OomScratch {
    pub record: OomKillRecord,
    pub parts: u32,
    pub _pad: u32,
    pub started_ns: u64,
}

#[map]
pub static OOM_SCRATCH: PerCpuArray<OomScratch> = PerCpuArray::with_max_entries(1, 0);
symbol!(OOM_SCRATCH = map_name::OOM_SCRATCH);

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    tracepoint_part(&ctx, Errors::of(program::MARK_VICTIM));
    0
}
symbol!(mark_victim = program::MARK_VICTIM.name);

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim_task(ctx: RawTracePointContext) -> u32 {
    task_part(&ctx, Errors::of(program::MARK_VICTIM_TASK));
    0
}
symbol!(mark_victim_task = program::MARK_VICTIM_TASK.name);

fn tracepoint_part(ctx: &TracePointContext, errors: Errors) {
    let expected = expected_parts();
    let layout = &MARK_VICTIM_LAYOUT;
    let victim_pid = errors.check(read_unsigned(ctx, global(&layout.pid))).map_or(0, |p| p as u32);
    let Some(slot) = begin_part(victim_pid, errors) else { return };
    let rec = &mut slot.record;

    let mut present = 0;
    macro_rules! field {
        ($field:ident, $dest:expr, $bit:expr) => {
            if let Some(v) = errors.check(read_unsigned(ctx, global(&layout.$field))) {
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
    if let Some(uid) = errors.check(read_unsigned(ctx, global(&layout.uid))) {
        rec.victim_uid = uid as u32;
        present |= victim_field::UID;
    }
    if let Some(adj) = errors.check(read_signed(ctx, global(&layout.oom_score_adj))) {
        rec.oom_score_adj = adj as i32;
        present |= victim_field::OOM_SCORE_ADJ;
    }
    if let Some(comm) = errors.check(read_comm(ctx)) {
        rec.victim_comm = comm;
        present |= victim_field::COMM;
    }

    // The trigger is whoever is running: the task whose allocation failed.
    let pid_tgid = bpf_get_current_pid_tgid();
    rec.trigger_pid = pid_tgid as u32;
    rec.trigger_tgid = (pid_tgid >> 32) as u32;
    rec.trigger_comm = errors.helper(bpf_get_current_comm()).unwrap_or_default();
    // SAFETY: the helper takes no arguments; it reads the current task's
    // cgroup, which is always set.
    rec.trigger_cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if let Some(id) = errors.check(Task::current().memcg_id()) {
        rec.trigger_memcg_id = id;
        present |= victim_field::TRIGGER_MEMCG;
    }
    rec.present |= present;
    oom_control::merge(pid_tgid, rec);
    finish_part(slot, oom_part::TRACEPOINT, expected);
}

fn task_part(ctx: &RawTracePointContext, errors: Errors) {
    if !offsets_known() {
        // The loader attaches this part only with BTF offsets; without them
        // it must not hold the record back either.
        return;
    }
    let expected = expected_parts();
    if expected & oom_part::VICTIM_TASK == 0 {
        // Attached, but the loader has not asked for it yet: it attaches
        // the parts one by one and says which to wait for once all are in.
        // Joining before that left this part alone in the slot, sent at
        // the next kill as a second record of this one.
        return;
    }
    let victim = Task::from_ptr(ctx.arg(0));
    let victim_pid = errors.check(victim.and_then(Task::pid)).unwrap_or(0);
    let Some(slot) = begin_part(victim_pid, errors) else { return };
    let rec = &mut slot.record;
    if let Ok(victim) = victim {
        let css = errors.check(victim.memory_css());
        // The task fields count as read when the memory cgroup was: it is
        // what attribution needs; tgid and the v2 id are extras.
        if let Some(id) = css.and_then(|css| errors.check(css.cgroup_id())) {
            rec.victim_memcg_id = id;
            rec.present |= victim_field::TASK;
        }
        if let Some(css) = css {
            read_memcg_chain(rec, css, errors);
        }
        if let Some(tgid) = errors.check(victim.tgid()) {
            rec.victim_tgid = tgid;
        }
        if let Some(id) = errors.check(victim.dfl_cgroup_id()) {
            rec.victim_cgroup_id = id;
        }
        if rec.present & victim_field::COMM == 0
            && let Some(comm) = errors.check(victim.comm())
        {
            rec.victim_comm = comm;
            rec.present |= victim_field::COMM;
        }
    }
    finish_part(slot, oom_part::VICTIM_TASK, expected);
}

/// The victim's memory cgroup and its ancestors, nearest first, up to
/// [`MEMCG_LEVELS`] and never the root: id, usage and limit of each at the
/// moment of the kill, so that the daemon names the cgroup whose limit was
/// hit without reading a file. A read that fails ends the chain where it
/// is (counted); the daemon reads the rest from files.
#[inline(always)]
fn read_memcg_chain(rec: &mut OomKillRecord, victim_css: Css, errors: Errors) {
    let mut flags = memcg_chain::FAILCNT | memcg_chain::OOM_EVENTS;
    let mut levels = 0u32;
    let mut css = victim_css;
    let mut at_root = false;
    for level in rec.memcgs.iter_mut() {
        let parent = match css.parent() {
            Ok(Some(parent)) => parent,
            // css is the root: not recorded.
            Ok(None) => {
                at_root = true;
                break;
            }
            Err(Absent::Unknown) => return,
            Err(Absent::Failed) => {
                errors.note();
                break;
            }
        };
        match read_level(css, level, &mut flags) {
            Ok(()) => levels += 1,
            // No page counter offsets on this kernel: no chain at all.
            Err(Absent::Unknown) if levels == 0 => return,
            Err(_) => {
                errors.note();
                break;
            }
        }
        css = parent;
    }
    if levels as usize == MEMCG_LEVELS && !at_root {
        at_root = matches!(errors.check(css.parent()), Some(None));
    }
    if at_root {
        flags |= memcg_chain::COMPLETE;
    }
    rec.memcg_levels = levels;
    rec.memcg_chain = flags;
    rec.present |= victim_field::MEMCG_CHAIN;
}

/// One level of the chain; clears the `flags` of counters it could not read.
#[inline(always)]
fn read_level(css: Css, level: &mut MemcgLevel, flags: &mut u32) -> Read<()> {
    let memcg = css.memcg()?;
    level.cgroup_id = css.cgroup_id()?;
    level.usage_pages = memcg.usage_pages()?;
    level.max_pages = memcg.max_pages()?;
    match memcg.failcnt() {
        Ok(Some(n)) => level.failcnt = n,
        Ok(None) | Err(Absent::Unknown) => *flags &= !memcg_chain::FAILCNT,
        Err(e) => return Err(e),
    }
    match memcg.oom_events() {
        Ok(n) => level.oom_events = n,
        Err(Absent::Unknown) => *flags &= !memcg_chain::OOM_EVENTS,
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The slot for this CPU, reset unless it holds a recent part of the same
/// kill. A part that could not read the victim's pid (0: pid 0 is never a
/// victim) joins whatever recent part is there (the parts of one kill run
/// back to back on this CPU), and a part that could fills in the pid of a
/// slot without one.
///
/// The pid is a plain integer, not an `Option<u32>`: the compiler moves an
/// Option's payload even when it was never written, and the verifier
/// refuses any read of an uninitialised register.
#[inline(always)]
fn begin_part(victim_pid: u32, errors: Errors) -> Option<&'static mut OomScratch> {
    let Some(slot) = OOM_SCRATCH.get_ptr_mut(0) else {
        // Index 0 of a one-entry array: cannot fail, but if it did, say so.
        errors.note();
        return None;
    };
    // SAFETY: this CPU's value of a per-CPU array (in bounds, checked by the
    // verifier); the parts of a kill run one after the other on this CPU, so
    // nothing else holds it while this program runs.
    let slot = unsafe { &mut *slot };
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (pid, pid_known) = (victim_pid, victim_pid != 0);
    let slot_has_pid = slot.record.present & victim_field::PID != 0;
    let age = now.wrapping_sub(slot.started_ns);
    let same_kill = slot.parts != 0
        && if slot_has_pid && pid_known {
            slot.record.victim_pid == pid && age < SAME_VICTIM_WINDOW_NS
        } else {
            age < PART_WINDOW_NS
        };
    if !same_kill {
        if slot.parts != 0 {
            // A kill whose other part never came: send what it has rather
            // than lose it, and count that it is incomplete.
            errors.note();
            send(slot);
        } else if slot_has_pid && pid_known && slot.record.victim_pid == pid && age < PART_WINDOW_NS {
            // This kill's record went out a moment ago, before the loader
            // asked for this part too (it did so between the two parts).
            // Beginning a slot here would send the kill a second time.
            return None;
        }
        slot.record = OomKillRecord::default();
        slot.parts = 0;
        slot.started_ns = now;
    }
    if pid_known && slot.record.present & victim_field::PID == 0 {
        slot.record.victim_pid = pid;
        slot.record.present |= victim_field::PID;
    }
    Some(slot)
}

/// The parts the loader asked for (`Settings::oom_parts_expected`); the
/// tracepoint alone until it has said, while it attaches them.
#[inline(always)]
fn expected_parts() -> u32 {
    match settings().oom_parts_expected {
        0 => oom_part::TRACEPOINT,
        parts => parts,
    }
}

#[inline(always)]
fn finish_part(slot: &mut OomScratch, part: u32, expected: u32) {
    slot.parts |= part;
    if slot.parts & expected == expected {
        send(slot);
    }
}

/// Sends the slot's record and empties the slot.
#[inline(always)]
fn send(slot: &mut OomScratch) {
    slot.record.header = RecordHeader::new(RecordKind::OomKill, slot.started_ns);
    count(counters::OOM_SEEN);
    // OOM records are rare and urgent: wake the reader now.
    if EVENTS.output::<OomKillRecord>(&slot.record, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(counters::RINGBUF_FULL_OOM);
    }
    if slot.record.present & victim_field::PID != 0 {
        if PENDING_VICTIMS.insert(&slot.record.victim_pid, &slot.started_ns, 0).is_err() {
            count(counters::PENDING_VICTIMS_FULL);
        } else {
            note_kill(slot.started_ns);
        }
    }
    slot.parts = 0;
}

/// The `T` at `offset` in the tracepoint's record.
#[inline(always)]
fn ctx_read<T: Plain>(ctx: &TracePointContext, offset: u16) -> Read<T> {
    probe_read((ctx.as_ptr() as *const u8).wrapping_add(offset as usize).cast())
}

/// An unsigned field of the tracepoint's record, as wide as the format says.
#[inline(always)]
fn read_unsigned(ctx: &TracePointContext, field: TpField) -> Read<u64> {
    let off = field.offset;
    match field.size {
        1 => ctx_read::<u8>(ctx, off).map(u64::from),
        2 => ctx_read::<u16>(ctx, off).map(u64::from),
        4 => ctx_read::<u32>(ctx, off).map(u64::from),
        8 => ctx_read::<u64>(ctx, off),
        _ => Err(Absent::Unknown),
    }
}

/// A signed field of the tracepoint's record, sign-extended.
#[inline(always)]
fn read_signed(ctx: &TracePointContext, field: TpField) -> Read<i64> {
    let off = field.offset;
    match field.size {
        1 => ctx_read::<i8>(ctx, off).map(i64::from),
        2 => ctx_read::<i16>(ctx, off).map(i64::from),
        4 => ctx_read::<i32>(ctx, off).map(i64::from),
        8 => ctx_read::<i64>(ctx, off),
        _ => Err(Absent::Unknown),
    }
}

/// The victim's comm, inline or behind a `__data_loc` as the format says.
#[inline(always)]
fn read_comm(ctx: &TracePointContext) -> Read<[u8; COMM_LEN]> {
    let field = global(&MARK_VICTIM_LAYOUT.comm);
    let base = ctx.as_ptr() as *const u8;
    let src = match global(&MARK_VICTIM_LAYOUT.comm_encoding) {
        // `add` only computes an address, which the helper below reads
        // safely; wrapping_add keeps even that free of UB assumptions.
        comm_encoding::INLINE => base.wrapping_add(field.offset as usize),
        comm_encoding::DATA_LOC => {
            let loc = ctx_read::<u32>(ctx, field.offset)?;
            base.wrapping_add((loc & 0xffff) as usize)
        }
        _ => return Err(Absent::Unknown),
    };
    let mut out = [0u8; COMM_LEN];
    // SAFETY: bpf_probe_read_kernel_str copies at most COMM_LEN bytes from a
    // kernel address into `out` and fails cleanly on a bad one.
    match unsafe { bpf_probe_read_kernel_str_bytes(src, &mut out) } {
        Ok(_) => Ok(out),
        Err(_) => Err(Absent::Failed),
    }
}
