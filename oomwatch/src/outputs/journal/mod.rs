//! The durable journal: every event the daemon publishes, kept in an SQLite
//! database (WAL mode) under the state directory, so kills and alerts
//! survive restarts and reboots, `oomwatch history` can read while the
//! daemon writes, and shipping outputs can resume from per-sink cursors.
//!
//! Why SQLite: a second process (the CLI) must read while the daemon writes
//! without stopping it and without holding a lock the daemon waits on. WAL
//! mode gives exactly that (readers see the last commit, never block the
//! writer); a full disk fails one transaction with SQLITE_FULL and the next
//! succeeds once space returns, without reopening; deleted pages go back to
//! the file system through incremental vacuum. See the module's report for
//! the comparison with redb.
//!
//! Shape:
//! - [`Journal`]: the daemon's handle. `append` never waits on the disk: it
//!   puts the event on a bounded queue that one writer thread drains. Kills,
//!   alerts and state writes are committed (fsync'd) at once; high-rate
//!   kinds are batched. Drops are counted by [`DropReason`].
//! - [`JournalReader`]: read-only queries from any process (seq ranges for
//!   replay, time/kind/cgroup filters, the kills summary, check facts, state).
//! - Retention: by file size and age, with a longer class for incidents
//!   ([`INCIDENT_KINDS`]) that a flood of high-rate events never evicts.

mod durable;
mod intent;
mod read;
mod schema;
mod stats;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// For the fuzz target: the file length an SQLite header claims.
pub use schema::claimed_len as sqlite_header_claimed_len;
pub use read::{JournalFacts, JournalReader, Order, Query, StoredEvent, SummaryBy, SummaryQuery, SummaryRow};
pub use stats::{Histogram, JournalStats};
pub use writer::{Appended, DropReason, Journal, MovedAside, StateOp};

/// Where the daemon keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/oomwatch";
/// The journal's file inside the state directory.
pub const FILE_NAME: &str = "journal.db";

/// Kinds kept in the long retention class: evicted by size only after
/// every high-rate event is gone, and kept for `incident_max_age`.
pub const INCIDENT_KINDS: &[&str] = &["oom_kill", "victim_exit", "alert", "unobserved_kills", "incident"];

pub fn is_incident(kind: &str) -> bool {
    INCIDENT_KINDS.contains(&kind)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    /// The database file (plus its write-ahead log) is kept under this.
    pub max_bytes: u64,
    /// High-rate kinds (pressure, reclaim_stall, lagged, ...) older than
    /// this are deleted.
    pub max_age: Duration,
    /// Incidents ([`INCIDENT_KINDS`]) and the daily kill summary are kept
    /// this long.
    pub incident_max_age: Duration,
    /// How often age limits are enforced; size is also checked whenever a
    /// sixty-fourth of `max_bytes` has been appended.
    pub check_interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(30 * 86_400),
            incident_max_age: Duration::from_secs(365 * 86_400),
            check_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The state directory; created when missing.
    pub dir: PathBuf,
    pub retention: Retention,
    /// Events waiting for the writer; past this, high-rate events are
    /// dropped (`queue_full`) and incidents take the place of waiting ones.
    pub queue_capacity: usize,
    /// High-rate events are committed once this many wait, this many per
    /// transaction (a kill waits for at most one such commit)...
    ///
    /// 64: under 20,000 events a second a commit of 256 took 5-10 ms, and a
    /// kill's p99 from append to fsync'd was 9.9-10.0 ms; with 64 it is
    /// 3.1-3.7 ms (128: 5.9) for 4x the commits (312 fsyncs a second at
    /// that rate, none more below 320 events a second, where `batch_linger`
    /// and incidents set the pace) and 8-27 % more CPU per event
    /// (`oomwatch/benches/journal.rs`, docs/performance.md).
    pub batch_max: usize,
    /// ...or the oldest has waited this long (what a crash can lose of them).
    pub batch_linger: Duration,
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            retention: Retention::default(),
            queue_capacity: 65_536,
            batch_max: 64,
            batch_linger: Duration::from_millis(200),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The caller goes on without a journal; the message says why.
    #[error("state directory {} is not writable: {source}", path.display())]
    ReadOnly { path: PathBuf, source: io::Error },
    #[error("journal {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("journal {}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    /// A second daemon on the same state directory.
    #[error("journal {}: another oomwatch daemon is writing it (it holds {})", path.display(), lock.display())]
    Busy { path: PathBuf, lock: PathBuf },
    #[error("no journal at {} (the daemon creates it when it starts)", path.display())]
    Missing { path: PathBuf },
    #[error("journal {} has schema version {found}, newer than this oomwatch reads ({supported}); use a newer oomwatch", path.display())]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    #[error("not an oomwatch event line: {0}")]
    BadEvent(String),
}

impl JournalError {
    pub fn is_read_only(&self) -> bool {
        matches!(self, Self::ReadOnly { .. })
    }

    fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        Self::Sqlite { path: path.to_owned(), source }
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

const DAY_MS: i64 = 86_400_000;

/// Days since the epoch (UTC), the unit of the kill summary.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// "2026-12-06" for a day number from [`day_of`].
pub fn day_label(day: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(day.max(0) * DAY_MS).unwrap_or(0));
    let mut s = humantime::format_rfc3339_seconds(t).to_string();
    s.truncate(10);
    s
}

/// One event as the journal stores it: the columns it is queried by, and
/// the JSON line users see (with `seq` set to the journal's).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub kind: String,
    /// Unix milliseconds of the event's `time` (of the append, when the
    /// event's time does not parse).
    pub time_ms: i64,
    pub cgroup: String,
    pub json: String,
}

impl Record {
    /// `json` must be `event` serialized with the same `seq`.
    pub fn from_event(event: &crate::wire::Event, json: String) -> Self {
        Self {
            seq: event.seq,
            kind: event.body.kind().as_str().to_owned(),
            time_ms: parse_time_ms(&event.time),
            cgroup: event.cgroup.clone(),
            json,
        }
    }

    /// From a JSON line as the event socket sends it: only `kind`, `time`,
    /// `cgroup` and `seq` are read; the line is kept as it is.
    pub fn from_json(line: &str) -> Result<Self, JournalError> {
        // The whole line as a JSON value, not only the head: a field the
        // head skips (a number out of range, say) would otherwise be
        // stored and refused later by every reader.
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| JournalError::BadEvent(e.to_string()))?;
        let field = |name: &str| value.get(name);
        let text = |name: &str| match field(name) {
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            None => Ok(None),
            Some(_) => Err(JournalError::BadEvent(format!("`{name}` is not a string"))),
        };
        let kind = text("kind")?.ok_or_else(|| JournalError::BadEvent("missing field `kind`".into()))?;
        let cgroup = text("cgroup")?.ok_or_else(|| JournalError::BadEvent("missing field `cgroup`".into()))?;
        let time = text("time")?.unwrap_or("");
        let seq = match field("seq") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| JournalError::BadEvent("`seq` is not a whole number".into()))?,
        };
        Ok(Self { seq, kind: kind.to_owned(), time_ms: parse_time_ms(time), cgroup: cgroup.to_owned(), json: line.to_owned() })
    }
}

fn parse_time_ms(time: &str) -> i64 {
    humantime::parse_rfc3339_weak(time).map(unix_ms).unwrap_or_else(|_| now_ms())
}
