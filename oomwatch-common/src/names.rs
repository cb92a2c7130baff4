//! Names of the maps, globals and programs in the eBPF object. The programs
//! crate declares each under exactly this name (a compile-time check there
//! ties the symbol to the constant), and the loader looks it up by the same
//! constant: a rename on one side without the other does not build.

/// Maps (`Ebpf::take_map`, `Ebpf::map_mut`).
pub mod map {
    /// Ring buffer of records (kills, exits, long stalls).
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU counters, indexed by [`crate::counters`].
    pub const COUNTERS: &str = "COUNTERS";
    /// [`crate::oom::Settings`], written by the daemon after attaching.
    pub const SETTINGS: &str = "SETTINGS";
    /// Victims not yet exited: pid -> mark time.
    pub const PENDING_VICTIMS: &str = "PENDING_VICTIMS";
    /// Per-CPU slot where the parts of one OOM record meet.
    pub const OOM_SCRATCH: &str = "OOM_SCRATCH";
    /// What the oom_kill_process kprobe parked for mark_victim.
    pub const OOM_CONTROL: &str = "OOM_CONTROL";
    /// The per-thread stall ledger: thread id -> [`crate::reclaim::ThreadStalls`].
    pub const RECLAIM_THREADS: &str = "RECLAIM_THREADS";
    /// Per-cgroup rate limit of stall records.
    pub const STALL_RATE: &str = "STALL_RATE";
    /// The sampler's cgroups on the usage walk: cgroup id -> slot in
    /// [`USAGES`].
    pub const USAGE_SLOTS: &str = "USAGE_SLOTS";
    /// What the usage walk read, one [`crate::usage::UsageSlot`] per slot;
    /// memory-mapped by the daemon.
    pub const USAGES: &str = "USAGES";
}

/// Read-only globals the loader sets before loading (`override_global`).
pub mod global {
    pub const MARK_VICTIM_LAYOUT: &str = "MARK_VICTIM_LAYOUT";
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    pub const OOM_CONTROL_OFFSETS: &str = "OOM_CONTROL_OFFSETS";
    pub const RECLAIM_LAYOUT: &str = "RECLAIM_LAYOUT";
    pub const STALL_SETTINGS: &str = "STALL_SETTINGS";
    pub const MEMCG_OFFSETS: &str = "MEMCG_OFFSETS";
}

/// One kernel program: its function name in the object (what the loader
/// looks up and `bpftool prog` shows) and its slot among the per-program
/// error counters ([`crate::counters::program_errors`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub index: u32,
    pub name: &'static str,
}

/// Every program in the object.
pub mod program {
    use super::Program;

    pub const MARK_VICTIM: Program = Program { index: 0, name: "mark_victim" };
    pub const MARK_VICTIM_TASK: Program = Program { index: 1, name: "mark_victim_task" };
    pub const OOM_KILL_PROCESS: Program = Program { index: 2, name: "oom_kill_process" };
    pub const SCHED_PROCESS_EXIT: Program = Program { index: 3, name: "sched_process_exit" };
    pub const DIRECT_RECLAIM_BEGIN: Program = Program { index: 4, name: "dir_rcl_begin" };
    pub const DIRECT_RECLAIM_END: Program = Program { index: 5, name: "dir_rcl_end" };
    pub const MEMCG_RECLAIM_BEGIN: Program = Program { index: 6, name: "memcg_rcl_begin" };
    pub const MEMCG_RECLAIM_END: Program = Program { index: 7, name: "memcg_rcl_end" };
    pub const MEMSTALL_ENTER_FENTRY: Program = Program { index: 8, name: "psi_enter_fe" };
    pub const MEMSTALL_LEAVE_FENTRY: Program = Program { index: 9, name: "psi_leave_fe" };
    pub const MEMSTALL_ENTER_KPROBE: Program = Program { index: 10, name: "psi_enter_kp" };
    pub const MEMSTALL_LEAVE_KPROBE: Program = Program { index: 11, name: "psi_leave_kp" };
    pub const CGROUP_USAGE: Program = Program { index: 12, name: "cgroup_usage" };

    /// In index order.
    pub const ALL: [Program; 13] = [
        MARK_VICTIM,
        MARK_VICTIM_TASK,
        OOM_KILL_PROCESS,
        SCHED_PROCESS_EXIT,
        DIRECT_RECLAIM_BEGIN,
        DIRECT_RECLAIM_END,
        MEMCG_RECLAIM_BEGIN,
        MEMCG_RECLAIM_END,
        MEMSTALL_ENTER_FENTRY,
        MEMSTALL_LEAVE_FENTRY,
        MEMSTALL_ENTER_KPROBE,
        MEMSTALL_LEAVE_KPROBE,
        CGROUP_USAGE,
    ];

    const _: () = {
        let mut i = 0;
        while i < ALL.len() {
            assert!(ALL[i].index as usize == i, "program::ALL is in index order");
            i += 1;
        }
    };
}

/// `a == b`, usable in constant expressions (the compile-time name checks).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
