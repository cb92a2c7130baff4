//! The types users rely on: events (the JSON of `oomwatch tail --json` and
//! the event socket), the requests a client sends, and the reports it gets
//! back. These shapes are contracts: add fields, never rename or drop them
//! (the golden test pins them).
//!
//! May depend on: nothing else of this crate (serde and humantime only), so
//! a client links only this.

mod alert;
mod episode;
mod escape;
mod event;
mod explain;
mod human;
mod report;
mod sparkline;
mod request;
mod time;

pub use alert::{ActiveAlert, AlertKey, AlertName, AlertState, Severity, Transition};
pub use episode::{INCIDENT_VICTIMS, Incident, IncidentRef, IncidentVictim, ThrottleState, Throttled};
pub use escape::printable;
pub use event::*;
pub use explain::{
    Composition, Consumer, KernelMemcg, KernelReport, LimitFile, REPORT_PATH_CUT, ReportTask, TOP_CHILDREN, TOP_TASKS, amend_with_report, missing_reason, printed_whole, why,
};
pub use human::{format_bytes, human};
pub use sparkline::{kill_usage_line, plain_numbers, sparkline};
pub use report::{AlertsReport, CgroupCounts, StatusReport, StatusRow, TopStaller};
pub use request::{DEFAULT_SOCKET, Request, RequestOp};
pub use time::rfc3339;
