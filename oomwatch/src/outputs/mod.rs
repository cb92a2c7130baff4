//! What the daemon hands to people and systems: Prometheus metrics and the
//! HTTP server (/metrics, /healthz), the event socket (`oomwatch tail`,
//! `status`, `alerts`), and the alert engine with its sinks. Outputs read the
//! model and the event stream; the only state they keep is their own
//! (alert lifecycles, client connections, sink queues).
//!
//! May depend on: `model`, `config`, `kernel` (probe reports, counter maps),
//! `readers`, `wire`.

pub mod alerts;
pub mod http;
pub mod http_client;
pub mod metrics;
pub mod socket;
pub mod web_config;
