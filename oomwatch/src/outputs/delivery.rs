//! What the shipping outputs (journald, OTLP, the rotated file) share: the
//! event as they take it ([`Record`]), the answer they give for each one
//! ([`Outcome`]), and the host identity they stamp on it.
//!
//! A delivery worker reads events from the durable journal, builds one
//! [`Record`] per event (once, for every output), hands a batch to an
//! output, and gets back one [`Outcome`] per record, in order: advance past
//! `Delivered` and `Rejected` (count and log those), keep `Retry` and send it
//! again later, not before `after` when the receiver asked for a pause.

use std::time::Duration;

use serde_json::Value;

use crate::wire::Event;

/// One event, ready for any output. Built once per event and shared by
/// every output it goes to, so the JSON is serialized and the human line
/// formatted once.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The event as `oomwatch tail --json` prints it: a JSON object.
    pub json: Value,
    /// That object on one line, no trailing newline (the file output's line,
    /// journald's `OOMWATCH_JSON`).
    pub line: String,
    /// The line `oomwatch tail` prints for it (journald's `MESSAGE`).
    pub message: String,
    /// Names this event across retries and daemon restarts: a receiver that
    /// gets it twice (at-least-once delivery) drops the copy by it. See
    /// [`HostIdentity::record_uid`]; a journal with its own durable position
    /// may set a uid of its own.
    pub uid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("event is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event is not a JSON object")]
    NotAnObject,
}

impl Record {
    pub fn from_event(event: &Event, host: &HostIdentity) -> Self {
        // An Event always serializes (no maps with non-string keys, no NaN:
        // serde_json writes non-finite floats as null).
        let json = serde_json::to_value(event).unwrap_or(Value::Null);
        // From the event, not the Value: the field order `tail --json` has.
        let line = serde_json::to_string(event).unwrap_or_default();
        Self {
            uid: host.record_uid(event.seq, &event.time),
            message: crate::wire::human(event),
            json,
            line,
        }
    }

    /// From a stored event line, kept byte for byte (a kind newer than this
    /// build still gets a message: its time, kind and cgroup).
    pub fn from_line(line: &str, host: &HostIdentity) -> Result<Self, RecordError> {
        let mut record = Self::from_json(serde_json::from_str(line)?, host)?;
        let line = line.trim_end_matches(['\n', '\r']);
        // A line spread over several (pretty-printed) is written again as one.
        if !line.contains(['\n', '\r']) {
            record.line = line.to_owned();
        }
        Ok(record)
    }

    pub fn from_json(json: Value, host: &HostIdentity) -> Result<Self, RecordError> {
        let Value::Object(map) = &json else { return Err(RecordError::NotAnObject) };
        let text = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("");
        let seq = map.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let message = match serde_json::from_value::<Event>(json.clone()) {
            Ok(event) => crate::wire::human(&event),
            Err(_) => format!("{} {} {}", text("time"), text("kind").to_uppercase(), text("cgroup")),
        };
        Ok(Self {
            uid: host.record_uid(seq, text("time")),
            message,
            line: serde_json::to_string(&json)?,
            json,
        })
    }

    /// The event's `kind` ("" when it has none).
    pub fn kind(&self) -> &str {
        self.json.get("kind").and_then(Value::as_str).unwrap_or("")
    }
}

/// What became of one record handed to an output.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The receiver has it: advance past it.
    Delivered,
    /// Not delivered this time (receiver down, busy, slow): send it again,
    /// not before `after` when the receiver said how long to wait.
    Retry { after: Option<Duration>, reason: String },
    /// The receiver refused it and would refuse it again: count it, log it,
    /// and advance past it.
    Rejected { reason: String },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry { after: None, reason: reason.into() }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered)
    }
}

/// How loud an event is, the same for every output: journald's PRIORITY
/// (syslog levels) and OTLP's severity number and text both come from it.
///
/// | event | level |
/// |---|---|
/// | `oom_kill` with `constraint` `memcg` (a cgroup hit its own limit) | error |
/// | `oom_kill` with any other constraint (the host, a cpuset or a NUMA policy ran out) | critical |
/// | `alert` `firing`, severity `critical` / `warning` | critical / warning |
/// | `alert` `pending` or `resolved` | notice |
/// | `alert` `cancelled` | info |
/// | `unobserved_kills` (kills oomwatch missed) | error |
/// | `lagged` (events were dropped) | warning |
/// | `reclaim_stall`, `pressure` | notice |
/// | `victim_exit`, kinds newer than this build | info |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
}

impl Level {
    pub fn of(json: &Value) -> Self {
        let text = |k: &str| json.get(k).and_then(Value::as_str).unwrap_or("");
        match text("kind") {
            // `unknown`: not known to be the host (which is critical).
            "oom_kill" | "incident" if matches!(text("constraint"), "memcg" | "unknown") => Self::Error,
            "oom_kill" | "incident" => Self::Critical,
            "alert" => match (text("state"), text("severity")) {
                ("firing", "critical") => Self::Critical,
                ("firing", _) => Self::Warning,
                ("pending" | "resolved", _) => Self::Notice,
                _ => Self::Info,
            },
            "unobserved_kills" => Self::Error,
            "lagged" => Self::Warning,
            "reclaim_stall" | "pressure" | "throttled" => Self::Notice,
            _ => Self::Info,
        }
    }

    /// syslog(3) level, journald's PRIORITY.
    pub fn syslog_priority(self) -> u8 {
        match self {
            Self::Critical => 2,
            Self::Error => 3,
            Self::Warning => 4,
            Self::Notice => 5,
            Self::Info => 6,
        }
    }

    /// OTLP SeverityNumber, as the OpenTelemetry log data model maps
    /// syslog levels (critical ERROR2, error ERROR, warning WARN, notice
    /// INFO2, informational INFO).
    pub fn otel_severity_number(self) -> i32 {
        match self {
            Self::Critical => 18,
            Self::Error => 17,
            Self::Warning => 13,
            Self::Notice => 10,
            Self::Info => 9,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "CRITICAL",
            Self::Error => "ERROR",
            Self::Warning => "WARNING",
            Self::Notice => "NOTICE",
            Self::Info => "INFO",
        }
    }
}

/// Who sent the events: read once at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostIdentity {
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`, dashes removed (32 hex).
    pub boot_id: String,
    /// `/etc/machine-id` (32 hex), "" when the host has none.
    pub machine_id: String,
}

impl HostIdentity {
    pub fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
        Self {
            hostname: crate::outputs::http_client::hostname(),
            boot_id: read("/proc/sys/kernel/random/boot_id").replace('-', ""),
            machine_id: read("/etc/machine-id"),
        }
    }

    /// `<boot id>-<seq>-<time>`. The daemon's `seq` starts again at each
    /// daemon start, the boot id only at each boot; with the event's own
    /// time (microseconds) two different events of one boot never share a
    /// uid, while the same stored event sent twice always does.
    pub fn record_uid(&self, seq: u64, time: &str) -> String {
        format!("{}-{seq}-{time}", self.boot_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EventBody, VictimExit};

    fn host() -> HostIdentity {
        HostIdentity { hostname: "h".into(), boot_id: "b".repeat(32), machine_id: "m".repeat(32) }
    }

    #[test]
    fn a_record_from_an_event_and_from_its_line_are_the_same() {
        let e = Event {
            body: EventBody::VictimExit(VictimExit { pid: 7, comm: "a\nb".into(), exit_latency_ms: 1.5 }),
            time: "2026-11-22T05:40:01.123456Z".into(),
            cgroup: "/x".into(),
            ktime_ns: None,
            seq: 9,
        };
        let r = Record::from_event(&e, &host());
        assert_eq!(r.line, serde_json::to_string(&e).unwrap());
        assert!(!r.line.contains('\n'), "one line: {}", r.line);
        assert_eq!(r.message, crate::wire::human(&e));
        assert_eq!(r.uid, format!("{}-9-2026-11-22T05:40:01.123456Z", "b".repeat(32)));
        assert_eq!(r.kind(), "victim_exit");
        assert_eq!(Record::from_line(&r.line, &host()).unwrap(), r);
    }

    #[test]
    fn levels_follow_the_documented_table() {
        let level = |v: serde_json::Value| Level::of(&v);
        use serde_json::json;
        assert_eq!(level(json!({"kind": "oom_kill", "constraint": "memcg"})), Level::Error);
        assert_eq!(level(json!({"kind": "oom_kill", "constraint": "unknown"})), Level::Error);
        assert_eq!(level(json!({"kind": "oom_kill", "constraint": "global"})), Level::Critical);
        assert_eq!(level(json!({"kind": "oom_kill", "constraint": "cpuset"})), Level::Critical);
        assert_eq!(level(json!({"kind": "alert", "state": "firing", "severity": "critical"})), Level::Critical);
        assert_eq!(level(json!({"kind": "alert", "state": "firing", "severity": "warning"})), Level::Warning);
        assert_eq!(level(json!({"kind": "alert", "state": "pending", "severity": "critical"})), Level::Notice);
        assert_eq!(level(json!({"kind": "alert", "state": "resolved", "severity": "critical"})), Level::Notice);
        assert_eq!(level(json!({"kind": "alert", "state": "cancelled", "severity": "critical"})), Level::Info);
        assert_eq!(level(json!({"kind": "unobserved_kills"})), Level::Error);
        assert_eq!(level(json!({"kind": "lagged"})), Level::Warning);
        assert_eq!(level(json!({"kind": "reclaim_stall"})), Level::Notice);
        assert_eq!(level(json!({"kind": "pressure"})), Level::Notice);
        assert_eq!(level(json!({"kind": "victim_exit"})), Level::Info);
        assert_eq!(level(json!({"kind": "next_year"})), Level::Info);
        let all = [Level::Critical, Level::Error, Level::Warning, Level::Notice, Level::Info];
        assert_eq!(all.map(Level::syslog_priority), [2, 3, 4, 5, 6]);
        assert_eq!(all.map(Level::otel_severity_number), [18, 17, 13, 10, 9]);
    }

    #[test]
    fn unknown_kinds_still_get_a_message_and_non_objects_are_refused() {
        let r = Record::from_line(r#"{"kind":"future_thing","time":"t","cgroup":"/a","seq":3}"#, &host()).unwrap();
        assert_eq!(r.message, "t FUTURE_THING /a");
        assert_eq!(r.kind(), "future_thing");
        assert!(matches!(Record::from_line("[1]", &host()), Err(RecordError::NotAnObject)));
        assert!(matches!(Record::from_line("{", &host()), Err(RecordError::Json(_))));
    }
}
