//! The answers to `{"op":"status"}` and `{"op":"alerts"}`.

use serde::{Deserialize, Serialize};

use super::alert::{ActiveAlert, Transition};

/// The answer to `{"op":"status"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub time: String,
    pub cgroups: CgroupCounts,
    pub kills_total: u64,
    /// Riskiest first.
    pub rows: Vec<StatusRow>,
    /// Processes that stalled longest in reclaim (empty when the reclaim
    /// probes are not attached).
    #[serde(default)]
    pub top_stallers: Vec<TopStaller>,
}

/// The answer to `{"op":"alerts"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertsReport {
    pub time: String,
    /// Pending and firing now.
    pub active: Vec<ActiveAlert>,
    /// Transitions, oldest first (bounded).
    pub history: Vec<Transition>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CgroupCounts {
    pub tracked: usize,
    pub removed_in_grace: usize,
    pub excluded_filter: usize,
    pub excluded_cap: usize,
    /// Cgroups whose files could not be opened (e.g. the open-file limit).
    #[serde(default)]
    pub excluded_unreadable: usize,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct StatusRow {
    pub cgroup: String,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom_percent: Option<f64>,
    /// Seconds until the working set reaches the limit at its current trend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_eta_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure_some_avg10: Option<f64>,
    pub kills: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The name people know the workload by (`shop/web-7d9f/frontend`,
    /// `docker:web-frontend`, `nginx.service`); see `Workload::display_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// The container's image, from the runtime's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The last 60 s of samples, for cgroups with a limit (what `status`
    /// draws against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<super::Ramp>,
}

/// One row of the top stallers (`oomwatch status`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopStaller {
    /// Process id (tgid).
    pub pid: u32,
    /// Name of the thread that stalled (latest seen).
    pub comm: String,
    /// Memory cgroup at its latest stall.
    pub cgroup: String,
    /// Reclaim stalls (direct and memcg).
    pub count: u64,
    pub total_ms: f64,
    pub max_ms: f64,
    /// Time in PSI memory-stall sections, where fentry or kprobes work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memstall_ms: Option<f64>,
}

