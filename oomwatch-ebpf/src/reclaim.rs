//! Reclaim stalls, at the vmscan tracepoints.
//!
//! `mm_vmscan_{direct,memcg}_reclaim_begin` stamps the start in the
//! thread's ledger entry (`ledger.rs`), `_end` takes the duration and adds
//! it to the same entry's totals and histogram. Only stalls of at least
//! `StallSettings::threshold_ns`, at most one per cgroup per
//! `min_interval_ns`, become ring-buffer records. The settings are
//! read-only globals (constants for the verifier): no map lookup, no second
//! map and no ring buffer for ordinary stalls.
//!
//! Compaction is not timed: `compaction/mm_compaction_begin`/`_end` wrap
//! `compact_zone()`, which kcompactd, proactive compaction and
//! /proc/sys/vm/compact_memory run as well as allocating tasks, once per zone;
//! direct compaction itself (`try_to_compact_pages`) has a start tracepoint
//! and no end. Where psi_memstall_enter/leave can be hooked (`memstall.rs`),
//! the time a task spends in direct compaction is part of its memstall time.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use oomwatch_common::{
    counters,
    header::{RecordHeader, RecordKind},
    names::{map as map_name, program},
    reclaim::{ReclaimKind, ReclaimStallRecord},
    tracepoint::TpField,
};

use crate::{
    errors::{Absent, Errors, Read},
    kptr::{offsets_known, probe_read},
    ledger::{self, Stall},
    maps::{EVENTS, RECLAIM_LAYOUT, STALL_SETTINGS, count, global},
};

/// Per-cgroup rate limit of stall records (shared by all CPUs: the limit is
/// per cgroup, not per CPU). Only touched by stalls over the threshold.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StallRate {
    pub last_ns: u64,
    pub suppressed: u32,
    pub _pad: u32,
}

#[map]
pub static STALL_RATE: LruHashMap<u64, StallRate> = LruHashMap::with_max_entries(2048, 0);
symbol!(STALL_RATE = map_name::STALL_RATE);

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn dir_rcl_begin(ctx: TracePointContext) -> u32 {
    let errors = Errors::of(program::DIRECT_RECLAIM_BEGIN);
    begin(&ctx, ReclaimKind::Direct, global(&RECLAIM_LAYOUT.direct_order), errors);
    0
}
symbol!(dir_rcl_begin = program::DIRECT_RECLAIM_BEGIN.name);

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn dir_rcl_end(ctx: TracePointContext) -> u32 {
    let errors = Errors::of(program::DIRECT_RECLAIM_END);
    end(&ctx, ReclaimKind::Direct, &RECLAIM_LAYOUT.direct_nr_reclaimed, errors);
    0
}
symbol!(dir_rcl_end = program::DIRECT_RECLAIM_END.name);

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_rcl_begin(ctx: TracePointContext) -> u32 {
    let errors = Errors::of(program::MEMCG_RECLAIM_BEGIN);
    begin(&ctx, ReclaimKind::Memcg, global(&RECLAIM_LAYOUT.memcg_order), errors);
    0
}
symbol!(memcg_rcl_begin = program::MEMCG_RECLAIM_BEGIN.name);

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_rcl_end(ctx: TracePointContext) -> u32 {
    let errors = Errors::of(program::MEMCG_RECLAIM_END);
    end(&ctx, ReclaimKind::Memcg, &RECLAIM_LAYOUT.memcg_nr_reclaimed, errors);
    0
}
symbol!(memcg_rcl_end = program::MEMCG_RECLAIM_END.name);

#[inline(always)]
fn begin(ctx: &TracePointContext, kind: ReclaimKind, order: TpField, errors: Errors) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let order = errors.check(read_order(ctx, order)).unwrap_or(-1);
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    ledger::reclaim_begin(pid_tgid, kind, order, now, errors);
}

/// `nr_reclaimed` is read only for a record (the layout global is volatile:
/// a load at entry would be paid on every call).
#[inline(always)]
fn end(ctx: &TracePointContext, kind: ReclaimKind, nr_reclaimed: &'static TpField, errors: Errors) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(stall) = ledger::reclaim_end(pid_tgid, kind, errors) else { return };
    let threshold_ns = global(&STALL_SETTINGS.threshold_ns);
    if threshold_ns != 0 && stall.duration_ns >= threshold_ns {
        report(ctx, &stall, nr_reclaimed, errors);
    }
}

/// A stall over the threshold: a record, unless this cgroup had one less
/// than `min_interval_ns` ago (then it only counts as suppressed).
///
/// A function of its own, called only for long stalls: the record it
/// builds stays off the end program's stack, whose frames in one call
/// chain share 512 bytes (6.1's verifier counts them rounded up).
#[inline(never)]
fn report(ctx: &TracePointContext, stall: &Stall, nr_reclaimed: &'static TpField, errors: Errors) {
    let now = stall.end_ns;
    let pid_tgid = stall.pid_tgid;
    let min_interval_ns = global(&STALL_SETTINGS.min_interval_ns);
    let suppressed = match STALL_RATE.get_ptr_mut(&stall.memcg_id) {
        Some(r) => {
            // SAFETY: a value of an LRU hash map the verifier checked for
            // NULL; CPUs may race on it, which only miscounts suppressed
            // stalls (by design, see below).
            let r = unsafe { &mut *r };
            if now.wrapping_sub(r.last_ns) < min_interval_ns {
                // Racy across CPUs by design: a lost increment only
                // under-reports how many were held back.
                r.suppressed += 1;
                return;
            }
            let n = r.suppressed;
            r.suppressed = 0;
            r.last_ns = now;
            n
        }
        None => {
            // A full map evicts (LRU): an insert fails only on allocation
            // failure, and then this cgroup is just not rate limited.
            let _ = STALL_RATE.insert(&stall.memcg_id, &StallRate { last_ns: now, suppressed: 0, _pad: 0 }, 0);
            0
        }
    };
    let record = ReclaimStallRecord {
        header: RecordHeader::new(RecordKind::ReclaimStall, now),
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: errors.helper(bpf_get_current_comm()).unwrap_or_default(),
        // Without BTF offsets the key is a v2 id: say "unknown" here and let
        // the daemon resolve cgroup_id instead.
        memcg_id: if offsets_known() { stall.memcg_id } else { 0 },
        // SAFETY: the helper takes no arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        duration_ns: stall.duration_ns,
        nr_reclaimed: errors.check(read_nr_reclaimed(ctx, global(nr_reclaimed))).unwrap_or(u64::MAX),
        reclaim_kind: stall.kind,
        order: stall.order,
        suppressed,
        _pad: 0,
    };
    // Stalls are not urgent: let the ring buffer wake the reader as it sees fit.
    if EVENTS.output::<ReclaimStallRecord>(&record, 0).is_err() {
        count(counters::RINGBUF_FULL_STALL);
    }
}

#[inline(always)]
fn read_order(ctx: &TracePointContext, field: TpField) -> Read<i32> {
    match (field.offset, field.size) {
        // Where every kernel so far puts it (first field after the common
        // ones): a plain context load the verifier checks, no helper call.
        // SAFETY: tracepoint programs may load from their context within
        // the record's size; the verifier rejects the program otherwise, and
        // every vmscan reclaim record is longer than 12 bytes.
        (8, 4) => Ok(unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(8).cast::<i32>()) }),
        (offset, 4) => probe_read((ctx.as_ptr() as *const u8).wrapping_add(offset as usize).cast::<i32>()),
        _ => Err(Absent::Unknown),
    }
}

/// `u64::MAX` in the record when the kernel's record has no such field.
#[inline(always)]
fn read_nr_reclaimed(ctx: &TracePointContext, field: TpField) -> Read<u64> {
    let at = (ctx.as_ptr() as *const u8).wrapping_add(field.offset as usize);
    match field.size {
        8 => probe_read(at.cast::<u64>()),
        4 => probe_read(at.cast::<u32>()).map(u64::from),
        _ => Err(Absent::Unknown),
    }
}
