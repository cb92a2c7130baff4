//! The shipping sinks: where events go to the fleet's log pipeline
//! (`[sinks.journald]`, `[[sinks.otlp]]`, `[[sinks.file]]`). Each reads
//! the durable journal from a cursor of its own, kept in the journal's
//! state area under its name, so a restart or an outage neither loses nor
//! repeats what was delivered (a batch in flight at a crash is sent again,
//! with the same record uid).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::serde_duration;

/// `true`, `false`, or `"auto"` (decided at start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Switch {
    Fixed(bool),
    #[default]
    Auto,
}

impl Serialize for Switch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(b) => s.serialize_bool(*b),
            Self::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(Self::Fixed(b)),
            Raw::Text(t) if t == "auto" => Ok(Self::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("expected true, false or \"auto\", not {t:?}"))),
        }
    }
}

/// Where a sink without a cursor (configured for the first time) starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// With the events published after the sink first started.
    #[default]
    End,
    /// With the oldest event the journal still holds.
    Beginning,
}

/// How a sink takes events from the journal; the same keys in every sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Events per send (one OTLP request, one fsync of the file).
    pub batch: usize,
    /// Events a sink may fall behind by (receiver down); past it the
    /// oldest are skipped and counted (`oomwatch_sink_events_total{result="dropped"}`).
    pub max_backlog: u64,
    /// A failed send is tried again after 0.5 s, doubling up to this.
    pub max_retry_interval: Duration,
    pub start_at: StartAt,
}

impl Default for Delivery {
    fn default() -> Self {
        Self { batch: 256, max_backlog: 100_000, max_retry_interval: Duration::from_secs(30), start_at: StartAt::End }
    }
}

/// The keys of [`Delivery`] as they appear inline in each sink's table.
macro_rules! delivery_fields {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            #[serde(default = "default_batch")]
            pub batch: usize,
            #[serde(default = "default_max_backlog")]
            pub max_backlog: u64,
            #[serde(default = "default_max_retry", with = "serde_duration")]
            pub max_retry_interval: Duration,
            #[serde(default)]
            pub start_at: StartAt,
        }

        impl $name {
            pub fn delivery(&self) -> Delivery {
                Delivery { batch: self.batch, max_backlog: self.max_backlog, max_retry_interval: self.max_retry_interval, start_at: self.start_at }
            }
        }
    };
}

fn default_batch() -> usize {
    Delivery::default().batch
}
fn default_max_backlog() -> u64 {
    Delivery::default().max_backlog
}
fn default_max_retry() -> Duration {
    Delivery::default().max_retry_interval
}

delivery_fields! {
/// `[sinks.journald]`: one journal entry per event through journald's
/// native protocol.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournaldSink {
    /// "auto": on when `socket` exists when the daemon starts.
    #[serde(default)]
    pub enabled: Switch,
    #[serde(default = "default_journald_socket")]
    pub socket: PathBuf,
    /// How long one entry may wait for journald to make room.
    #[serde(default = "default_journald_timeout", with = "serde_duration")]
    pub timeout: Duration,
}
}

impl Default for JournaldSink {
    fn default() -> Self {
        Self {
            enabled: Switch::Auto,
            socket: default_journald_socket(),
            timeout: default_journald_timeout(),
            batch: default_batch(),
            max_backlog: default_max_backlog(),
            max_retry_interval: default_max_retry(),
            start_at: StartAt::End,
        }
    }
}

fn default_journald_socket() -> PathBuf {
    PathBuf::from("/run/systemd/journal/socket")
}
fn default_journald_timeout() -> Duration {
    Duration::from_secs(1)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpEncoding {
    #[default]
    Protobuf,
    Json,
}

delivery_fields! {
/// `[[sinks.otlp]]`: OTLP/HTTP logs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpSink {
    /// Names the sink in metrics and its cursor (default `otlp`, `otlp-2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http://collector:4318` (`/v1/logs` is added) or a full URL.
    pub endpoint: String,
    #[serde(default)]
    pub encoding: OtlpEncoding,
    /// Sent with every request (an API key, a tenant id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_otlp_timeout", with = "serde_duration")]
    pub timeout: Duration,
}
}

fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}

impl OtlpSink {
    pub fn example() -> Self {
        Self {
            name: None,
            endpoint: "http://127.0.0.1:4318".into(),
            encoding: OtlpEncoding::Protobuf,
            headers: BTreeMap::new(),
            timeout: default_otlp_timeout(),
            batch: default_batch(),
            max_backlog: default_max_backlog(),
            max_retry_interval: default_max_retry(),
            start_at: StartAt::End,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFsync {
    #[default]
    Batch,
    Never,
}

delivery_fields! {
/// `[[sinks.file]]`: NDJSON (what `oomwatch tail --json` prints), rotated by size.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// Names the sink in metrics and its cursor (default `file`, `file-2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An absolute path; its directory is created (0750) when missing.
    pub path: PathBuf,
    /// The current file is rotated before it grows past this.
    #[serde(default = "default_file_max_size")]
    pub max_size_mib: u64,
    /// Rotated files kept (`path.1` newest).
    #[serde(default = "default_file_backups")]
    pub backups: u32,
    #[serde(default)]
    pub fsync: FileFsync,
}
}

fn default_file_max_size() -> u64 {
    10
}
fn default_file_backups() -> u32 {
    5
}

impl FileSink {
    pub fn example() -> Self {
        Self {
            name: None,
            path: PathBuf::from("/var/log/oomwatch/events.json"),
            max_size_mib: default_file_max_size(),
            backups: default_file_backups(),
            fsync: FileFsync::Batch,
            batch: default_batch(),
            max_backlog: default_max_backlog(),
            max_retry_interval: default_max_retry(),
            start_at: StartAt::End,
        }
    }
}

/// The name of each configured shipping sink, in the order
/// journald, otlp..., file...: the given `name`, else the kind, numbered
/// from the second (`otlp`, `otlp-2`).
pub fn sink_names(otlp: &[OtlpSink], file: &[FileSink]) -> (Vec<String>, Vec<String>) {
    let named = |kind: &str, i: usize, given: &Option<String>| {
        given.clone().unwrap_or_else(|| if i == 0 { kind.to_owned() } else { format!("{kind}-{}", i + 1) })
    };
    (
        otlp.iter().enumerate().map(|(i, s)| named("otlp", i, &s.name)).collect(),
        file.iter().enumerate().map(|(i, s)| named("file", i, &s.name)).collect(),
    )
}

/// A sink name: 1 to 64 of a-z, 0-9, `-`, `_` (it is a metric label and a
/// key in the journal's state).
pub fn valid_sink_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}
