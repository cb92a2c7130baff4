//! Counters of the daemon's own work (not per cgroup): sources and outputs
//! count into them, /metrics exports them.

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

/// Cgroup usage reads by `source`: `walk` (the BPF cgroup iterator, every
/// cgroup in one read) or `file` (one cgroupfs read each).
pub type UsageReads = Family<[(&'static str, &'static str); 1], Counter>;

/// Counters the daemon itself owns (not per cgroup).
#[derive(Default)]
pub struct DaemonCounters {
    pub events_published: Counter,
    pub decode_errors: Counter,
    pub stream_events_dropped: Counter,
    pub psi_triggers_active: Gauge,
    pub oom_kills_unobserved: Counter,
    pub psi_triggers_refused: Gauge,
    /// Panics anywhere in the daemon (each also one error line in the log).
    pub panics: Counter,
    /// 1 while the kernel log (/dev/kmsg) is read for OOM reports.
    pub kmsg_attached: Gauge,
    /// Kills amended with what the kernel printed for them (with or
    /// without its full report).
    pub kernel_reports_joined: Counter,
    /// Kill lines in the kernel log that matched no kill oomwatch reported
    /// (pid, comm, cgroup and time): never attached to another kill.
    pub kernel_reports_unmatched: Counter,
    /// Container lookups in the runtimes' records, and those that failed
    /// or were never made (queue full).
    pub workload_lookups: Counter,
    pub workload_lookup_errors: Counter,
    pub workload_lookups_dropped: Counter,
    pub usage_reads: UsageReads,
}

