//! Push mode, for hosts Prometheus cannot scrape: every interval the text
//! exposition (the same bytes /metrics serves) is PUT to a Pushgateway as
//! the group `job="oomwatch", instance="<hostname>"`. PUT replaces the whole
//! group, so series of cgroups that went away disappear with the next push.
//!
//! A push that fails is counted (`oomwatch_push_failures_total`) and logged,
//! and the next one is tried at the next interval; pushing runs in its own
//! task and never delays anything else.
//!
//! On a clean stop (SIGTERM, SIGINT) the group is deleted: a host that stops
//! reporting becomes absent instead of staying frozen at its last values
//! forever, which the Pushgateway would otherwise do. A crash leaves the
//! group behind; the Pushgateway's `push_time_seconds` then stops moving,
//! and the shipped rules alert on both cases (OomwatchHostSilent).

use std::{sync::Arc, time::Duration};

use hyper::{Method, body::Bytes};
use prometheus_client::metrics::counter::Counter;

use super::{Metrics, TEXT_CONTENT_TYPE};
use crate::outputs::http_client::HttpClient;

pub const JOB: &str = "oomwatch";

#[derive(Clone, Debug)]
pub struct Pusher {
    /// `<base>/metrics/job/oomwatch/instance/<host>`
    pub url: String,
    /// The same, password hidden, for logs.
    pub shown_url: String,
    pub interval: Duration,
    pub failures: Counter,
}

impl Pusher {
    pub fn new(base: &str, instance: &str, interval: Duration, failures: Counter) -> Self {
        let url = group_url(base, JOB, instance);
        Self { shown_url: crate::config::redact_url(&url), url, interval, failures }
    }

    /// Each request may take at most this long: never more than the interval.
    fn timeout(&self) -> Duration {
        self.interval.min(Duration::from_secs(10))
    }

    /// Pushes now and then every interval, until `stop` fires (a push in
    /// flight is finished first, so a later delete is not overtaken).
    pub async fn run(self, metrics: Arc<Metrics>, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let client = HttpClient::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => return,
            }
            let m = metrics.clone();
            let Ok(body) = tokio::task::spawn_blocking(move || m.render(false)).await else { continue };
            match client.send(Method::PUT, &self.url, Some(TEXT_CONTENT_TYPE), Bytes::from(body), self.timeout()).await {
                Ok(()) => {
                    if failing {
                        log::info!("push: {} accepts pushes again", self.shown_url);
                    }
                    failing = false;
                }
                Err(e) => {
                    self.failures.inc();
                    // Every failure is counted; the log says it once per
                    // outage, at warn, and then at debug.
                    if failing {
                        log::debug!("push failed: {e}");
                    } else {
                        log::warn!("push failed: {e}; retrying every {}", humantime::format_duration(self.interval));
                    }
                    failing = true;
                }
            }
        }
    }

    /// Deletes this host's group (on a clean stop), within `timeout`.
    pub async fn delete(&self, timeout: Duration) {
        match HttpClient::new().send(Method::DELETE, &self.url, None, Bytes::new(), timeout).await {
            Ok(()) => log::info!("push: deleted {} (this host is now absent, not stale)", self.shown_url),
            Err(e) => log::warn!("push: could not delete the group on stop: {e}; its last values stay on the Pushgateway"),
        }
    }
}

/// The Pushgateway URL of one grouping key. Label values that are not plain
/// URL path characters (or are empty) use the `@base64` form the Pushgateway
/// defines, so any hostname is safe.
pub fn group_url(base: &str, job: &str, instance: &str) -> String {
    format!("{}/metrics/{}/{}", base.trim_end_matches('/'), path_label("job", job), path_label("instance", instance))
}

fn path_label(name: &str, value: &str) -> String {
    let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':'));
    if plain { format!("{name}/{value}") } else { format!("{name}@base64/{}", base64url(value.as_bytes())) }
}

/// RFC 4648 base64 with the URL-safe alphabet and padding ("=" for empty).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if data.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_key_urls() {
        assert_eq!(group_url("http://pgw:9091", "oomwatch", "node-1.example"), "http://pgw:9091/metrics/job/oomwatch/instance/node-1.example");
        assert_eq!(group_url("http://pgw:9091/prefix/", "oomwatch", "a"), "http://pgw:9091/prefix/metrics/job/oomwatch/instance/a");
        // A slash or a space in a label value: base64 (URL alphabet).
        assert_eq!(group_url("http://p", "oomwatch", "a/b"), "http://p/metrics/job/oomwatch/instance@base64/YS9i");
        assert_eq!(group_url("http://p", "oomwatch", ""), "http://p/metrics/job/oomwatch/instance@base64/=");
    }

    #[test]
    fn base64url_matches_rfc4648() {
        for (input, want) in [("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64url(input.as_bytes()), want);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
    }
}
