//! What the daemon serves: HTTP (/metrics, /healthz) and the event socket.

pub mod http;
pub mod socket;
pub mod web_config;
