//! Events that span more than one moment: an OOM incident (every kill of
//! one OOM-killer invocation: with `memory.oom.group` set the kernel kills
//! the whole group at once) and an episode of throttling at memory.high.

use serde::{Deserialize, Serialize};

use super::event::{Constraint, Trigger};

/// The incident a kill belongs to, as known when the kill was published:
/// the kills of one OOM-killer invocation share its `id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncidentRef {
    /// The first kill's kernel timestamp (`ktime_ns`): unique within a boot.
    pub id: u64,
    /// This kill's place in the incident: 1 for the first victim.
    pub victims_so_far: u32,
    /// The first victim's cgroup: where the incident's oom_kill alert fires.
    pub first_victim_cgroup: String,
}

/// One victim of an incident.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncidentVictim {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The victim's memory cgroup.
    pub cgroup: String,
}

/// Published once an incident with more than one victim settled (no kill
/// joined it for a second): a group kill, as one thing. A kill alone is
/// an incident of one and publishes no `incident` event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub id: u64,
    pub trigger: Trigger,
    pub constraint: Constraint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_cgroup: Option<String>,
    /// Victims in the incident (every one, also past `victims`' bound).
    pub count: u32,
    /// In the order they were killed; at most [`INCIDENT_VICTIMS`].
    pub victims: Vec<IncidentVictim>,
    /// From the first kill to the last, by the kernel's clock.
    pub span_ms: f64,
}

/// Victims an incident event lists (the count goes on).
pub const INCIDENT_VICTIMS: usize = 256;

/// Whether a throttling episode began or ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleState {
    Started,
    Ended,
}

impl ThrottleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Ended => "ended",
        }
    }
}

/// A cgroup kept hitting its memory.high (v2): the kernel reclaims and
/// makes its tasks sleep on every allocation. One event when an episode
/// starts, one when it ends; nothing per tick in between.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Throttled {
    pub state: ThrottleState,
    /// When the memory.high counter was first seen rising (RFC 3339).
    pub since: String,
    /// So far (`started`), or in all (`ended`): from the first rise to the last.
    pub duration_s: f64,
    /// How much memory.events.local `high` rose in the episode.
    pub high_events: u64,
    /// memory.high, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_bytes: Option<u64>,
    /// The cgroup's memory PSI (avg10, %) at the event, where the kernel keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub some_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_avg10: Option<f64>,
}
