//! The per-thread stall ledger: one entry of `RECLAIM_THREADS` per thread
//! id, where the reclaim programs (`reclaim.rs`) time reclaim stalls and the
//! memstall programs (`memstall.rs`) time psi memory-stall sections, next to
//! each other. The daemon reads the map and aggregates per memory cgroup
//! and per process ([`ThreadStalls`] says how it reads a lineage).
//!
//! An entry is only written by its own thread, and begin/end (enter/leave)
//! of one thread never run at the same time: no atomics. Entries are
//! updated in place and never deleted here: those of exited threads stay
//! readable until the LRU needs their room.
//!
//! Costs, per call: one LRU-hash lookup, a clock read and in-place writes.
//! The memory cgroup is cached in the entry and checked against the task's
//! cgroups at most once a second per thread.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
};
use oomwatch_common::{
    counters,
    names::map as map_name,
    reclaim::{ReclaimKind, STALL_BUCKETS, ThreadStalls, stall_bucket},
};

use crate::{
    errors::Errors,
    kptr::{Task, offsets_known},
    maps::count,
};

/// Thread id -> its reclaim state and stall totals. 10240 x 208 bytes.
#[map]
pub static RECLAIM_THREADS: LruHashMap<u32, ThreadStalls> = LruHashMap::with_max_entries(10240, 0);
symbol!(RECLAIM_THREADS = map_name::RECLAIM_THREADS);

/// How long a thread's cached memory cgroup is trusted: a thread that moves
/// has its stalls of at most this long after the move counted in its former
/// cgroup. The daemon reads the totals about as often.
const MEMCG_RECHECK_NS: u64 = 1_000_000_000;

/// One reclaim stall, as added to its thread's totals.
pub struct Stall {
    pub pid_tgid: u64,
    pub duration_ns: u64,
    /// Where it was counted (see [`ThreadStalls::memcg_id`]).
    pub memcg_id: u64,
    pub kind: u32,
    pub order: i32,
    pub end_ns: u64,
}

/// The current thread's entry, if it has one.
#[inline(always)]
fn entry(pid_tgid: u64) -> Option<&'static mut ThreadStalls> {
    let t = RECLAIM_THREADS.get_ptr_mut(&(pid_tgid as u32))?;
    // SAFETY: a value of an LRU hash map the verifier checked for NULL. Only
    // this thread writes its own entry, and never from two programs at once
    // (begin/end, enter/leave alternate); an LRU eviction under us reuses
    // the element for another key, which costs a wrong total, never a bad
    // access (hash map values stay valid memory for the program's run).
    Some(unsafe { &mut *t })
}

/// A reclaim begins: stamps the thread's entry, creating it on the
/// thread's first stall.
#[inline(always)]
pub fn reclaim_begin(pid_tgid: u64, kind: ReclaimKind, order: i32, now: u64, errors: Errors) {
    // The first 16 bytes of the value share a cache line with the hash
    // element's key: begin touches nothing else. Whose entry it is (tgid)
    // is checked at the end.
    let stamp = |t: &mut ThreadStalls| {
        t.start_ns = now;
        t.kind = kind as u32;
        t.order = order;
    };
    match entry(pid_tgid) {
        Some(t) => stamp(t),
        None => insert(pid_tgid, now, errors, stamp),
    }
}

/// A reclaim of `kind` ends: the stall is added to the thread's totals.
/// `None` when no begin of that kind was seen (attached mid-reclaim).
#[inline(always)]
pub fn reclaim_end(pid_tgid: u64, kind: ReclaimKind, errors: Errors) -> Option<Stall> {
    let t = entry(pid_tgid)?;
    let start_ns = t.start_ns;
    if start_ns == 0 || t.kind != kind as u32 {
        return None;
    }
    t.start_ns = 0;
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let duration_ns = now.wrapping_sub(start_ns);
    own(t, pid_tgid, now, errors);
    let memcg_id = attributed_memcg(t, now, errors);
    t.count += 1;
    t.total_ns += duration_ns;
    if duration_ns > t.max_ns {
        t.max_ns = duration_ns;
    }
    t.last_ns = now;
    if let Some(b) = t.buckets.get_mut(stall_bucket(duration_ns)) {
        *b += 1;
    }
    Some(Stall { pid_tgid, duration_ns, memcg_id, kind: t.kind, order: t.order, end_ns: now })
}

/// A psi memstall section begins. Nested sections count as the outer one:
/// that is what the task waits.
#[inline(always)]
pub fn memstall_enter(pid_tgid: u64, errors: Errors) {
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let open = |t: &mut ThreadStalls| {
        if t.memstall_start_ns == 0 {
            t.memstall_start_ns = now;
        }
    };
    match entry(pid_tgid) {
        Some(t) => open(t),
        None => insert(pid_tgid, now, errors, open),
    }
}

/// The outermost psi memstall section ends: its time is added to the
/// thread's memstall total.
#[inline(always)]
pub fn memstall_leave(pid_tgid: u64, errors: Errors) {
    let Some(t) = entry(pid_tgid) else { return };
    let start = t.memstall_start_ns;
    if start == 0 {
        return;
    }
    t.memstall_start_ns = 0;
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    own(t, pid_tgid, now, errors);
    attributed_memcg(t, now, errors);
    t.memstall_ns += now.wrapping_sub(start);
    t.last_ns = now;
}

/// A new entry (a new lineage, with the thread's name), set up by `f`.
#[inline(never)]
fn insert(pid_tgid: u64, now: u64, errors: Errors, f: impl FnOnce(&mut ThreadStalls)) {
    let mut t = ThreadStalls {
        born_ns: now,
        tgid: (pid_tgid >> 32) as u32,
        comm: errors.helper(bpf_get_current_comm()).unwrap_or_default(),
        ..ThreadStalls::default()
    };
    f(&mut t);
    if RECLAIM_THREADS.insert(&(pid_tgid as u32), &t, 0).is_err() {
        count(counters::RECLAIM_STARTS_FULL);
    }
}

/// An entry left by an exited thread of another process under the same
/// thread id starts a new lineage before the current thread counts in it.
#[inline(always)]
fn own(t: &mut ThreadStalls, pid_tgid: u64, now: u64, errors: Errors) {
    let tgid = (pid_tgid >> 32) as u32;
    if t.tgid != tgid {
        restart(t, tgid, now, errors);
    }
}

/// A new lineage in place: totals zeroed first, `born_ns` written last
/// (see [`ThreadStalls`] for why the order matters to the reader).
#[cold]
#[inline(never)]
fn restart(t: &mut ThreadStalls, tgid: u32, now: u64, errors: Errors) {
    let comm = errors.helper(bpf_get_current_comm()).unwrap_or_default();
    // Volatile stores stay in program order (no fences in BPF); x86 and
    // arm64 JITs keep it for the reader where it matters (store -> store
    // on x86; the reader tolerates the rest, see the daemon's ledger).
    // The current stall or memstall section (start_ns, memstall_start_ns)
    // is the new thread's: kept.
    // The buckets one by one: a whole-array store would build the zeroes
    // on the stack and call memset, a frame that 6.1's verifier counts
    // against the 512 bytes all frames of a call chain share.
    let buckets = (&raw mut t.buckets).cast::<u32>();
    // SAFETY: every pointer is to a field of `t`, a live, aligned map value
    // this thread owns (see `entry`); `buckets.add(i)` stays within the
    // array for i < STALL_BUCKETS.
    unsafe {
        core::ptr::write_volatile(&raw mut t.memcg_checked_ns, 0);
        core::ptr::write_volatile(&raw mut t.count, 0);
        core::ptr::write_volatile(&raw mut t.total_ns, 0);
        core::ptr::write_volatile(&raw mut t.max_ns, 0);
        core::ptr::write_volatile(&raw mut t.last_ns, 0);
        core::ptr::write_volatile(&raw mut t.memstall_ns, 0);
        for i in 0..STALL_BUCKETS {
            core::ptr::write_volatile(buckets.add(i), 0);
        }
        core::ptr::write_volatile(&raw mut t.comm, comm);
        core::ptr::write_volatile(&raw mut t.tgid, tgid);
        core::ptr::write_volatile(&raw mut t.born_ns, now);
    }
}

/// The memory cgroup to count this thread's stall in: the cached one,
/// checked against the task at most every [`MEMCG_RECHECK_NS`].
#[inline(always)]
fn attributed_memcg(t: &mut ThreadStalls, now: u64, errors: Errors) -> u64 {
    if t.memcg_checked_ns != 0 && now.wrapping_sub(t.memcg_checked_ns) < MEMCG_RECHECK_NS {
        return t.memcg_id;
    }
    let id = current_memcg(errors);
    t.memcg_id = id;
    t.memcg_checked_ns = now;
    id
}

/// The current task's memory cgroup (BTF walk); the v2 cgroup id when the
/// loader had no BTF offsets; 0 when the walk failed (counted).
#[inline(never)]
fn current_memcg(errors: Errors) -> u64 {
    if !offsets_known() {
        // SAFETY: the helper takes no arguments.
        return unsafe { bpf_get_current_cgroup_id() };
    }
    errors.check(Task::current().memcg_id()).unwrap_or(0)
}
