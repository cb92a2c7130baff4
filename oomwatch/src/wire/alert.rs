//! Alerts as users see them: names, severities, states, transitions.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AlertName {
    OomForecast,
    MemoryPressure,
    ReclaimStorm,
    OomKill,
}

impl AlertName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OomForecast => "oom_forecast",
            Self::MemoryPressure => "memory_pressure",
            Self::ReclaimStorm => "reclaim_storm",
            Self::OomKill => "oom_kill",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
    /// Was pending, the condition went away before `for` elapsed.
    Cancelled,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    pub alert: AlertName,
    pub severity: Severity,
    /// Cgroup path, "/" for the host.
    pub cgroup: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    pub key: AlertKey,
    pub state: AlertState,
    /// The value that drove it: ETA seconds, PSI %, stall ratio, kills.
    pub value: Option<f64>,
    pub summary: String,
    /// Wall time of the transition (RFC 3339).
    pub at: String,
    /// When the alert started firing (RFC 3339), for Alertmanager's startsAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<String>,
    /// The workload of the alert's cgroup, as people name it (namespace,
    /// pod, container, container name, image, unit), when known: sinks
    /// carry it so that routing by team works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<super::Workload>,
    /// Kill alerts: the kill's `why`, for Alertmanager's `description`
    /// annotation and the webhook's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A row of `oomwatch alerts`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActiveAlert {
    pub key: AlertKey,
    pub state: AlertState,
    pub since: String,
    pub value: Option<f64>,
    pub summary: String,
}

