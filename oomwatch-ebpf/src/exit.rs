//! Confirms that OOM victims die: `sched/sched_process_exit`, filtered in the
//! kernel to the pids in `PENDING_VICTIMS`. Every exit on the host runs
//! this, and almost none is a victim: when no kill happened in the last
//! minutes, the hash lookup is skipped entirely.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use oomwatch_common::{RecordHeader, RecordKind, VictimExitRecord, counter};

use crate::{
    maps::{EVENTS, PENDING_VICTIMS, VICTIM_EXIT_WINDOW_NS, count, last_kill_ns},
    task,
};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let last = last_kill_ns();
    if last == 0 || unsafe { bpf_ktime_get_ns() }.wrapping_sub(last) > VICTIM_EXIT_WINDOW_NS {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = pid_tgid as u32;
    let Some(marked) = (unsafe { PENDING_VICTIMS.get(&pid) }).copied() else {
        return 0;
    };
    let _ = PENDING_VICTIMS.remove(&pid);
    // In the victim's own context, its cgroups are still attached.
    let current = unsafe { bpf_get_current_task() };
    let record = VictimExitRecord {
        header: RecordHeader::new(RecordKind::VictimExit, unsafe { bpf_ktime_get_ns() }),
        pid,
        tgid: (pid_tgid >> 32) as u32,
        marked_ktime_ns: marked,
        memcg_id: task::memcg_id(current).unwrap_or(0),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if EVENTS.output::<VictimExitRecord>(&record, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(counter::RINGBUF_FULL_EXIT);
    }
    0
}
