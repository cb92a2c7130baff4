//! Reclaim stalls, at the vmscan tracepoints.
//!
//! `mm_vmscan_{direct,memcg}_reclaim_begin` stamp the task's start in
//! `RECLAIM_STARTS` (keyed by thread id: begin and end run in the same task,
//! possibly on different CPUs). `_end` takes the duration and adds it to
//! per-CPU aggregates keyed by the task's memory cgroup and by its process,
//! which the daemon reads at scrape time. Only stalls of at least
//! `Settings::stall_threshold_ns`, at most one per cgroup per
//! `stall_min_interval_ns`, become ring-buffer records.
//!
//! Costs, per call: begin is one LRU lookup and an in-place write; end adds
//! the memory cgroup (cached per task, see [`ReclaimStart`]) and one lookup
//! in each per-CPU aggregate. No deletes, no atomics, no ring buffer for
//! ordinary stalls.
//!
//! Compaction is not timed: `compaction/mm_compaction_begin`/`_end` wrap
//! `compact_zone()`, which kcompactd, proactive compaction and
//! /proc/sys/vm/compact_memory run as well as allocating tasks, once per zone;
//! direct compaction itself (`try_to_compact_pages`) has a start tracepoint
//! and no end. Where psi_memstall_enter/leave can be hooked (`memstall.rs`),
//! the time a task spends in direct compaction is part of its memstall time.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, LruPerCpuHashMap},
    programs::TracePointContext,
};
use oomwatch_common::{
    CgroupStallStats, ProcStallStats, ReclaimKind, ReclaimStallRecord, RecordHeader, RecordKind,
    TpField, counter, stall_bucket,
};

use crate::{
    maps::{EVENTS, RECLAIM_LAYOUT, count, global, settings},
    task,
};

/// Where a task's reclaim began; `start_ns == 0` means "not in reclaim".
/// Entries are reused in place rather than deleted (no bucket lock on the
/// hot path); entries of exited tasks are left for the LRU to evict.
///
/// The entry also caches the task's memory cgroup id, keyed by its memory
/// css pointer: reading `task->cgroups->subsys[memory]` touches memory the
/// charge path keeps hot, while `css->cgroup->kn->id` is three cold loads.
/// A task that moves gets a different css and a fresh walk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReclaimStart {
    pub start_ns: u64,
    pub kind: u32,
    pub order: i32,
    pub css: u64,
    pub memcg_id: u64,
}

/// Thread id -> start of its current reclaim. 10240 x 32 bytes.
#[map]
pub static RECLAIM_STARTS: LruHashMap<u32, ReclaimStart> = LruHashMap::with_max_entries(10240, 0);

/// Memory cgroup id -> stalls, one slot per CPU (no atomics, no shared
/// cache lines when many tasks of one cgroup reclaim at once). LRU: cgroups
/// that stopped stalling (or were removed) are evicted, nothing to clean up.
/// 2048 x 120 bytes per CPU.
#[map]
pub static RECLAIM_CGROUPS: LruPerCpuHashMap<u64, CgroupStallStats> = LruPerCpuHashMap::with_max_entries(2048, 0);

/// Process (tgid) -> stalls, for the top stallers. 2048 x 64 bytes per CPU.
#[map]
pub static RECLAIM_PROCS: LruPerCpuHashMap<u32, ProcStallStats> = LruPerCpuHashMap::with_max_entries(2048, 0);

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

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn dir_rcl_begin(ctx: TracePointContext) -> u32 {
    begin(&ctx, ReclaimKind::Direct, global(&RECLAIM_LAYOUT.direct_order));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn dir_rcl_end(ctx: TracePointContext) -> u32 {
    end(&ctx, ReclaimKind::Direct, global(&RECLAIM_LAYOUT.direct_nr_reclaimed));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_rcl_begin(ctx: TracePointContext) -> u32 {
    begin(&ctx, ReclaimKind::Memcg, global(&RECLAIM_LAYOUT.memcg_order));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_rcl_end(ctx: TracePointContext) -> u32 {
    end(&ctx, ReclaimKind::Memcg, global(&RECLAIM_LAYOUT.memcg_nr_reclaimed));
    0
}

#[inline(always)]
fn begin(ctx: &TracePointContext, kind: ReclaimKind, order: TpField) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let o = read_order(ctx, order);
    let start_ns = unsafe { bpf_ktime_get_ns() };
    if let Some(slot) = RECLAIM_STARTS.get_ptr_mut(&tid) {
        // Keep the cached memcg: write only the fields of this reclaim.
        let slot = unsafe { &mut *slot };
        slot.start_ns = start_ns;
        slot.kind = kind as u32;
        slot.order = o;
    } else {
        let start = ReclaimStart { start_ns, kind: kind as u32, order: o, css: 0, memcg_id: 0 };
        if RECLAIM_STARTS.insert(&tid, &start, 0).is_err() {
            count(counter::RECLAIM_STARTS_FULL);
        }
    }
}

#[inline(always)]
fn end(ctx: &TracePointContext, kind: ReclaimKind, nr_reclaimed: TpField) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = RECLAIM_STARTS.get_ptr_mut(&(pid_tgid as u32)) else { return };
    let slot = unsafe { &mut *slot };
    // No begin seen (attached mid-reclaim) or a begin of the other kind.
    if slot.start_ns == 0 || slot.kind != kind as u32 {
        return;
    }
    let start = *slot;
    slot.start_ns = 0;
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.wrapping_sub(start.start_ns);
    let memcg = cached_memcg(slot);
    account(memcg, (pid_tgid >> 32) as u32, duration, now, false);

    let s = settings();
    if s.stall_threshold_ns != 0 && duration >= s.stall_threshold_ns {
        report(ctx, pid_tgid, memcg, &start, duration, now, nr_reclaimed, s.stall_min_interval_ns);
    }
}

/// [`current_memcg`], through the per-task cache of `slot`.
#[inline(always)]
fn cached_memcg(slot: &mut ReclaimStart) -> u64 {
    let task = unsafe { bpf_get_current_task() };
    let Some(css) = task::memcg_css(task) else { return current_memcg() };
    if css == slot.css && slot.memcg_id != 0 {
        return slot.memcg_id;
    }
    let id = task::css_memcg_id(css).unwrap_or(0);
    slot.css = css;
    slot.memcg_id = id;
    id
}

/// The current task's memory cgroup (BTF walk); the v2 cgroup id when the
/// loader had no BTF offsets; 0 when the walk failed.
#[inline(always)]
pub fn current_memcg() -> u64 {
    let task = unsafe { bpf_get_current_task() };
    match task::memcg_id(task) {
        Some(id) => id,
        None if task::offsets_valid() => 0,
        None => unsafe { bpf_get_current_cgroup_id() },
    }
}

/// Adds one stall (`memstall == false`) or one psi memstall section to the
/// per-CPU aggregates of `memcg` and `tgid`.
#[inline(always)]
pub fn account(memcg: u64, tgid: u32, ns: u64, now: u64, memstall: bool) {
    let bucket = stall_bucket(ns);
    let add_cgroup = |c: &mut CgroupStallStats| {
        if memstall {
            c.memstall_ns += ns;
        } else {
            c.count += 1;
            c.total_ns += ns;
            if let Some(b) = c.buckets.get_mut(bucket) {
                *b += 1;
            }
        }
    };
    match RECLAIM_CGROUPS.get_ptr_mut(&memcg) {
        Some(c) => add_cgroup(unsafe { &mut *c }),
        None => {
            let mut c = CgroupStallStats::default();
            add_cgroup(&mut c);
            if RECLAIM_CGROUPS.insert(&memcg, &c, BPF_NOEXIST as u64).is_err() {
                // Another CPU created it meanwhile, or the map had no room.
                match RECLAIM_CGROUPS.get_ptr_mut(&memcg) {
                    Some(c) => add_cgroup(unsafe { &mut *c }),
                    None => count(counter::STALL_CGROUPS_FULL),
                }
            }
        }
    }

    let add_proc = |p: &mut ProcStallStats| {
        if p.last_ns == 0 {
            // First use of this CPU's slot.
            p.comm = bpf_get_current_comm().unwrap_or_default();
        }
        if memstall {
            p.memstall_ns += ns;
        } else {
            p.count += 1;
            p.total_ns += ns;
            if ns > p.max_ns {
                p.max_ns = ns;
            }
        }
        p.last_ns = now;
        p.memcg_id = memcg;
    };
    match RECLAIM_PROCS.get_ptr_mut(&tgid) {
        Some(p) => add_proc(unsafe { &mut *p }),
        None => {
            let mut p = ProcStallStats::default();
            add_proc(&mut p);
            if RECLAIM_PROCS.insert(&tgid, &p, BPF_NOEXIST as u64).is_err() {
                match RECLAIM_PROCS.get_ptr_mut(&tgid) {
                    Some(p) => add_proc(unsafe { &mut *p }),
                    None => count(counter::STALL_PROCS_FULL),
                }
            }
        }
    }
}

/// A stall over the threshold: a record, unless this cgroup had one less
/// than `min_interval_ns` ago (then it only counts as suppressed).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn report(
    ctx: &TracePointContext,
    pid_tgid: u64,
    memcg: u64,
    start: &ReclaimStart,
    duration_ns: u64,
    now: u64,
    nr_reclaimed: TpField,
    min_interval_ns: u64,
) {
    let suppressed = match STALL_RATE.get_ptr_mut(&memcg) {
        Some(r) => {
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
            let _ = STALL_RATE.insert(&memcg, &StallRate { last_ns: now, suppressed: 0, _pad: 0 }, 0);
            0
        }
    };
    let record = ReclaimStallRecord {
        header: RecordHeader::new(RecordKind::ReclaimStall, now),
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or_default(),
        // Without BTF offsets the key is a v2 id: say "unknown" here and let
        // the daemon resolve cgroup_id instead.
        memcg_id: if task::offsets_valid() { memcg } else { 0 },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        duration_ns,
        nr_reclaimed: read_nr_reclaimed(ctx, nr_reclaimed),
        reclaim_kind: start.kind,
        order: start.order,
        suppressed,
        _pad: 0,
    };
    // Stalls are not urgent: let the ring buffer wake the reader as it sees fit.
    if EVENTS.output::<ReclaimStallRecord>(&record, 0).is_err() {
        count(counter::RINGBUF_FULL_STALL);
    }
}

#[inline(always)]
fn read_order(ctx: &TracePointContext, field: TpField) -> i32 {
    match (field.offset, field.size) {
        // Where every kernel so far puts it (first field after the common
        // ones): a plain context load the verifier checks, no helper call.
        (8, 4) => unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(8).cast::<i32>()) },
        (_, 4) => unsafe { ctx.read_at::<i32>(field.offset as usize) }.unwrap_or(-1),
        _ => -1,
    }
}

/// `u64::MAX` when the kernel's record has no such field (see the record).
#[inline(always)]
fn read_nr_reclaimed(ctx: &TracePointContext, field: TpField) -> u64 {
    let off = field.offset as usize;
    unsafe {
        match field.size {
            8 => ctx.read_at::<u64>(off).unwrap_or(u64::MAX),
            4 => ctx.read_at::<u32>(off).map(u64::from).unwrap_or(u64::MAX),
            _ => u64::MAX,
        }
    }
}
