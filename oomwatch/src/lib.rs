//! oomwatch: traces OOM kills and memory pressure with eBPF and explains them.

pub mod cgroup;
pub mod pressure;
