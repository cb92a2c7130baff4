//! What the daemon serves: HTTP (/metrics, /healthz) and the event socket;
//! and the HTTP client its outgoing requests share (sinks, Pushgateway).

pub mod client;
pub mod http;
pub mod socket;
pub mod web_config;
