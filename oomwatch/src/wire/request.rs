//! What a client asks the daemon on the event socket: one JSON line after
//! connecting.

use serde::{Deserialize, Serialize};

/// Where the daemon serves its event socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/oomwatch/events.sock";

/// What a tail client asks the daemon for (one JSON line after connecting).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub op: RequestOp,
    /// Replay buffered events younger than this many seconds first (from
    /// the journal where the daemon keeps one, else from memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_secs: Option<f64>,
    /// Replay every event after this seq first (a client resuming where it
    /// stopped: seqs keep growing across daemon restarts with a journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<u64>,
    /// Only events of these kinds (names as in `kind`; empty: all).
    /// `lagged` notices always come. The daemon filters, so a client is
    /// not woken for events it would drop (`oomwatch tail --kind`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Only events of cgroups matching this glob (`oomwatch tail --cgroup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestOp {
    #[default]
    Tail,
    /// One [`StatusReport`], then the connection closes.
    Status,
    /// One [`crate::wire::AlertsReport`], then the connection closes.
    Alerts,
}

