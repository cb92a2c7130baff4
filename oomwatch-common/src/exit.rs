//! Victims' exits, at `sched/sched_process_exit`.

use bytemuck::{Pod, Zeroable};

use crate::{COMM_LEN, header::RecordHeader};

/// A pending OOM victim left the kernel (sched_process_exit of its leader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct VictimExitRecord {
    pub header: RecordHeader,
    pub pid: u32,
    pub tgid: u32,
    /// `ktime_ns` of the matching mark_victim.
    pub marked_ktime_ns: u64,
    pub memcg_id: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<VictimExitRecord>() == 64);
