//! The loops that feed the model: kernel records become events (kills,
//! exits, reclaim stalls), the sampler reads cgroup files, PSI triggers wake
//! on pressure, the reclaim feed reads the kernel's stall totals, and the
//! reconciler compares what was seen with the kernel's own counters; the
//! workload resolver names the containers of new cgroups.
//!
//! May depend on: `kernel`, `readers`, `config`, `model`, `wire`.

pub mod episodes;
pub mod holders;
pub mod kernel_report;
pub mod kills;
pub mod psi_trigger;
pub mod psi_triggers;
pub mod reclaim;
pub mod reconcile;
pub mod records;
pub mod resolve;
pub mod sampler;
pub mod victim_cgroup;
pub mod workloads;
