//! What the daemon hands to people and systems: Prometheus metrics and the
//! HTTP server (/metrics, /healthz), the event socket (`oomwatch tail`,
//! `status`, `alerts`), the alert engine with its sinks, and the outputs
//! that carry events to the fleet's log pipeline (journald, OTLP/HTTP logs,
//! a rotated NDJSON file; each takes [`delivery::Record`]s and answers one
//! [`delivery::Outcome`] per record). Outputs read the model and the event
//! stream; the only state they keep is their own (alert lifecycles, client
//! connections, sink queues).
//!
//! May depend on: `model`, `config`, `kernel` (probe reports, counter maps),
//! `readers`, `wire`.

pub mod alerts;
pub mod delivery;
pub mod file;
pub mod http;
pub mod http_client;
pub mod journal;
pub mod journald;
pub mod metrics;
pub mod otlp;
pub mod shipping;
pub mod socket;
pub mod tail_lane;
pub mod web_config;
