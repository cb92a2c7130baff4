//! Confirms that OOM victims die: `sched/sched_process_exit`, filtered in the
//! kernel to the pids in `PENDING_VICTIMS`. Every exit on the host runs
//! this, and almost none is a victim: when no kill happened in the last
//! minutes, the hash lookup is skipped entirely.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use oomwatch_common::{
    counters,
    exit::VictimExitRecord,
    header::{RecordHeader, RecordKind},
    names::program,
};

use crate::{
    errors::Errors,
    kptr::Task,
    maps::{EVENTS, PENDING_VICTIMS, VICTIM_EXIT_WINDOW_NS, count, last_kill_ns},
};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let last = last_kill_ns();
    // SAFETY: the helper takes no arguments.
    if last == 0 || unsafe { bpf_ktime_get_ns() }.wrapping_sub(last) > VICTIM_EXIT_WINDOW_NS {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = pid_tgid as u32;
    let Some(marked) = PENDING_VICTIMS.get_ptr(&pid) else {
        return 0;
    };
    // SAFETY: a value of an LRU hash map the verifier checked for NULL,
    // copied out at once (a concurrent delete may reuse the element; the
    // worst case is a wrong latency, never a bad access).
    let marked = unsafe { *marked };
    let _ = PENDING_VICTIMS.remove(&pid);
    let errors = Errors::of(program::SCHED_PROCESS_EXIT);
    // In the victim's own context, its cgroups are still attached.
    let record = VictimExitRecord {
        // SAFETY: the helper takes no arguments.
        header: RecordHeader::new(RecordKind::VictimExit, unsafe { bpf_ktime_get_ns() }),
        pid,
        tgid: (pid_tgid >> 32) as u32,
        marked_ktime_ns: marked,
        memcg_id: errors.check(Task::current().memcg_id()).unwrap_or(0),
        // SAFETY: the helper takes no arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: errors.helper(bpf_get_current_comm()).unwrap_or_default(),
    };
    if EVENTS.output::<VictimExitRecord>(&record, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(counters::RINGBUF_FULL_EXIT);
    }
    0
}
symbol!(sched_process_exit = program::SCHED_PROCESS_EXIT.name);
