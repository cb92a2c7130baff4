//! Where events leave the daemon for the fleet's log pipeline: journald,
//! OTLP/HTTP logs, a rotated NDJSON file; and the human line `oomwatch
//! tail` and journald share. Each output takes [`delivery::Record`]s and
//! answers one [`delivery::Outcome`] per record.

pub mod delivery;
pub mod file;
pub mod human;
pub mod journald;
pub mod otlp;
