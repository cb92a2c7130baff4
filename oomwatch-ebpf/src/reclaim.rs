//! Reclaim stalls, at the vmscan tracepoints.
//!
//! Everything a thread's stalls need lives in one entry of
//! `RECLAIM_THREADS`, keyed by thread id: `mm_vmscan_{direct,memcg}_reclaim_begin`
//! stamps the start there, `_end` takes the duration and adds it to the
//! same entry's totals and histogram (begin and end of one thread never run
//! at the same time: no atomics). The daemon reads the map and aggregates
//! per memory cgroup and per process in user space ([`ThreadStalls`]).
//! Only stalls of at least `StallSettings::threshold_ns`, at most one per
//! cgroup per `min_interval_ns`, become ring-buffer records.
//!
//! Costs, per call: begin and end are one LRU-hash lookup each, a clock
//! read and in-place writes. The memory cgroup is cached in the entry and
//! checked against the task's cgroups at most once a second per thread; the
//! settings are read-only globals (constants for the verifier). No deletes,
//! no second map, no ring buffer for ordinary stalls.
//!
//! Compaction is not timed: `compaction/mm_compaction_begin`/`_end` wrap
//! `compact_zone()`, which kcompactd, proactive compaction and
//! /proc/sys/vm/compact_memory run as well as allocating tasks, once per zone;
//! direct compaction itself (`try_to_compact_pages`) has a start tracepoint
//! and no end. Where psi_memstall_enter/leave can be hooked (`memstall.rs`),
//! the time a task spends in direct compaction is part of its memstall time.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use oomwatch_common::{
    ReclaimKind, ReclaimStallRecord, RecordHeader, RecordKind, STALL_BUCKETS, ThreadStalls, TpField,
    counter, stall_bucket,
};

use crate::{
    maps::{EVENTS, RECLAIM_LAYOUT, STALL_SETTINGS, count, global},
    task,
};

/// Thread id -> its reclaim state and stall totals. 10240 x 208 bytes.
/// Entries are updated in place, never deleted by the programs: entries of
/// exited threads stay readable until the LRU needs their room.
#[map]
pub static RECLAIM_THREADS: LruHashMap<u32, ThreadStalls> = LruHashMap::with_max_entries(10240, 0);

/// How long a thread's cached memory cgroup is trusted: a thread that moves
/// has its stalls of at most this long after the move counted in its former
/// cgroup. The daemon reads the totals about as often.
const MEMCG_RECHECK_NS: u64 = 1_000_000_000;

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
    end(&ctx, ReclaimKind::Direct, &RECLAIM_LAYOUT.direct_nr_reclaimed);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_rcl_begin(ctx: TracePointContext) -> u32 {
    begin(&ctx, ReclaimKind::Memcg, global(&RECLAIM_LAYOUT.memcg_order));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_rcl_end(ctx: TracePointContext) -> u32 {
    end(&ctx, ReclaimKind::Memcg, &RECLAIM_LAYOUT.memcg_nr_reclaimed);
    0
}

#[inline(always)]
fn begin(ctx: &TracePointContext, kind: ReclaimKind, order: TpField) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let o = read_order(ctx, order);
    let now = unsafe { bpf_ktime_get_ns() };
    // The first 16 bytes of the value share a cache line with the hash
    // element's key: begin touches nothing else. Whose entry it is (tgid)
    // is checked by end.
    if let Some(t) = RECLAIM_THREADS.get_ptr_mut(&(pid_tgid as u32)) {
        let t = unsafe { &mut *t };
        t.start_ns = now;
        t.kind = kind as u32;
        t.order = o;
    } else {
        insert_thread(pid_tgid, now, |t| {
            t.start_ns = now;
            t.kind = kind as u32;
            t.order = o;
        });
    }
}

/// `nr_reclaimed` is read only for a record (the layout global is volatile:
/// a load at entry would be paid on every call).
#[inline(always)]
fn end(ctx: &TracePointContext, kind: ReclaimKind, nr_reclaimed: &'static TpField) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = RECLAIM_THREADS.get_ptr_mut(&(pid_tgid as u32)) else { return };
    let t = unsafe { &mut *t };
    // No begin seen (attached mid-reclaim) or a begin of the other kind.
    let start_ns = t.start_ns;
    if start_ns == 0 || t.kind != kind as u32 {
        return;
    }
    t.start_ns = 0;
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.wrapping_sub(start_ns);
    own(t, pid_tgid, now);
    let memcg = attributed_memcg(t, now);
    t.count += 1;
    t.total_ns += duration;
    if duration > t.max_ns {
        t.max_ns = duration;
    }
    t.last_ns = now;
    if let Some(b) = t.buckets.get_mut(stall_bucket(duration)) {
        *b += 1;
    }

    let s = global(&STALL_SETTINGS);
    if s.threshold_ns != 0 && duration >= s.threshold_ns {
        report(ctx, pid_tgid, memcg, t.kind, t.order, duration, now, global(nr_reclaimed), s.min_interval_ns);
    }
}

/// Runs `f` on the current thread's entry, creating it on the thread's
/// first stall. Callers that go on to count a stall call [`own`] first.
#[inline(always)]
pub fn with_thread(pid_tgid: u64, now: u64, f: impl FnOnce(&mut ThreadStalls)) {
    match RECLAIM_THREADS.get_ptr_mut(&(pid_tgid as u32)) {
        Some(t) => f(unsafe { &mut *t }),
        None => insert_thread(pid_tgid, now, f),
    }
}

/// A new entry (a new lineage, with the thread's name), set up by `f`.
#[inline(never)]
fn insert_thread(pid_tgid: u64, now: u64, f: impl FnOnce(&mut ThreadStalls)) {
    let mut t: ThreadStalls = unsafe { core::mem::zeroed() };
    t.born_ns = now;
    t.tgid = (pid_tgid >> 32) as u32;
    t.comm = bpf_get_current_comm().unwrap_or_default();
    f(&mut t);
    if RECLAIM_THREADS.insert(&(pid_tgid as u32), &t, 0).is_err() {
        count(counter::RECLAIM_STARTS_FULL);
    }
}

/// An entry left by an exited thread of another process under the same
/// thread id starts a new lineage before the current thread counts in it.
#[inline(always)]
pub fn own(t: &mut ThreadStalls, pid_tgid: u64, now: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    if t.tgid != tgid {
        restart(t, tgid, now);
    }
}

/// A new lineage in place: totals zeroed first, `born_ns` written last
/// (see [`ThreadStalls`] for why the order matters to the reader).
#[cold]
#[inline(never)]
fn restart(t: &mut ThreadStalls, tgid: u32, now: u64) {
    let comm = bpf_get_current_comm().unwrap_or_default();
    // Volatile stores stay in program order (no fences in BPF); x86 and
    // arm64 JITs keep it for the reader where it matters (store -> store
    // on x86; the reader tolerates the rest, see the daemon's ledger).
    // The current stall or memstall section (start_ns, memstall_start_ns)
    // is the new thread's: kept.
    unsafe {
        core::ptr::write_volatile(&raw mut t.memcg_checked_ns, 0);
        core::ptr::write_volatile(&raw mut t.count, 0);
        core::ptr::write_volatile(&raw mut t.total_ns, 0);
        core::ptr::write_volatile(&raw mut t.max_ns, 0);
        core::ptr::write_volatile(&raw mut t.last_ns, 0);
        core::ptr::write_volatile(&raw mut t.memstall_ns, 0);
        core::ptr::write_volatile(&raw mut t.buckets, [0; STALL_BUCKETS]);
        core::ptr::write_volatile(&raw mut t.comm, comm);
        core::ptr::write_volatile(&raw mut t.tgid, tgid);
        core::ptr::write_volatile(&raw mut t.born_ns, now);
    }
}

/// The memory cgroup to count this thread's stall in: the cached one,
/// checked against the task at most every [`MEMCG_RECHECK_NS`].
#[inline(always)]
pub fn attributed_memcg(t: &mut ThreadStalls, now: u64) -> u64 {
    if t.memcg_checked_ns != 0 && now.wrapping_sub(t.memcg_checked_ns) < MEMCG_RECHECK_NS {
        return t.memcg_id;
    }
    let id = current_memcg();
    t.memcg_id = id;
    t.memcg_checked_ns = now;
    id
}

/// The current task's memory cgroup (BTF walk); the v2 cgroup id when the
/// loader had no BTF offsets; 0 when the walk failed.
#[inline(never)]
fn current_memcg() -> u64 {
    let task = unsafe { bpf_get_current_task() };
    match task::memcg_id(task) {
        Some(id) => id,
        None if task::offsets_valid() => 0,
        None => unsafe { bpf_get_current_cgroup_id() },
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
    kind: u32,
    order: i32,
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
        reclaim_kind: kind,
        order,
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
