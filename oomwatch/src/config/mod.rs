//! Configuration: a TOML file with every threshold and sink, and embedded
//! defaults when there is none. Errors are one line naming the file, the key
//! and the reason; a file that fails to load or validate is never half
//! applied (SIGHUP keeps the running configuration).
//!
//! May depend on: `readers` (the PSI trigger format), `wire`.

mod duration;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use duration::{parse_duration, serde_duration};

/// Where /metrics and /healthz are served unless told otherwise: loopback
/// only, so nothing is exposed by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8967";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {key}: {reason}{at}")]
    Invalid { file: String, key: String, reason: String, at: String },
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub cgroups: CgroupConfig,
    pub pressure: PressureConfig,
    pub reclaim: ReclaimConfig,
    pub forecast: ForecastConfig,
    pub alerts: AlertsConfig,
    pub sinks: SinksConfig,
}

impl Config {
    /// The sections of `new` that differ from this one and are read only at
    /// start (alerts and sinks are applied on reload).
    pub fn sections_needing_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (differs, name) in [
            (new.daemon != self.daemon, "[daemon]"),
            (new.cgroups != self.cgroups, "[cgroups]"),
            (new.pressure != self.pressure, "[pressure]"),
            (new.reclaim != self.reclaim, "[reclaim]"),
            (new.forecast != self.forecast, "[forecast]"),
        ] {
            if differs {
                out.push(name);
            }
        }
        out
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Address for /metrics and /healthz (loopback unless you open it).
    pub listen: SocketAddr,
    /// The event socket (mode 0660).
    pub socket: PathBuf,
    /// Events kept for `tail --since`.
    pub backlog: usize,
    /// Events a tail client may fall behind by before it loses the oldest
    /// (it is then told how many: a `lagged` record).
    pub stream_buffer: usize,
    /// The daemon's own /proc/self/oom_score_adj: -1000 makes the kernel
    /// never pick the OOM watcher as a victim.
    pub oom_score_adj: i32,
    /// After loading its programs, keep only the capabilities still needed
    /// (CAP_DAC_READ_SEARCH, CAP_SYS_RESOURCE).
    pub drop_capabilities: bool,
    /// TLS and basic auth for /metrics: a web config file in the format
    /// Prometheus exporters use (tls_server_config, basic_auth_users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_config: Option<PathBuf>,
    /// Push mode, for hosts Prometheus cannot scrape: every `push_interval`,
    /// PUT /metrics to this Pushgateway (http://host:9091) as the group
    /// job="oomwatch", instance=<hostname>. Unset: no pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_gateway: Option<String>,
    #[serde(with = "serde_duration")]
    pub push_interval: Duration,
}

pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(15);

/// Push intervals allowed: at least 1 s (the Pushgateway keeps only the
/// last push anyway), at most 5 min (beyond that the shipped
/// OomwatchHostSilent rule would take a healthy host for a dead one).
pub fn check_push_interval(d: Duration) -> Result<(), String> {
    if d < Duration::from_secs(1) {
        return Err(format!("{} is shorter than 1s", humantime::format_duration(d)));
    }
    if d > Duration::from_secs(300) {
        return Err(format!("{} is longer than 5m (hosts that push less often look dead to the alert rules)", humantime::format_duration(d)));
    }
    Ok(())
}

/// A Pushgateway base URL: http://, a host, and no path of its own beyond
/// an optional prefix (the daemon appends /metrics/job/...).
pub fn check_push_gateway(url: &str) -> Result<(), String> {
    check_url(url)?;
    if url.contains(['?', '#']) {
        return Err(format!("'{url}' must not have a query or fragment: give the Pushgateway's base URL, e.g. http://pushgateway:9091"));
    }
    if url.trim_end_matches('/').ends_with("/metrics") || url.contains("/metrics/job/") {
        return Err(format!("'{url}': give the Pushgateway's base URL (e.g. http://pushgateway:9091); oomwatch appends /metrics/job/oomwatch/instance/<host>"));
    }
    Ok(())
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            socket: PathBuf::from(crate::wire::DEFAULT_SOCKET),
            backlog: 1024,
            stream_buffer: 4096,
            oom_score_adj: -1000,
            drop_capabilities: true,
            web_config: None,
            push_gateway: None,
            push_interval: DEFAULT_PUSH_INTERVAL,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Memory cgroups tracked at most; the shallowest first.
    pub max_cgroups: usize,
    /// Globs on the cgroup path: only these are tracked (empty: all).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// How long series of a removed cgroup remain.
    #[serde(with = "serde_duration")]
    pub removal_grace: Duration,
    #[serde(with = "serde_duration")]
    pub sample_interval: Duration,
    /// Every cgroup's memory.stat is read at least this often.
    #[serde(with = "serde_duration")]
    pub full_sample_every: Duration,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            max_cgroups: 4096,
            include: Vec::new(),
            exclude: Vec::new(),
            removal_grace: Duration::from_secs(600),
            sample_interval: Duration::from_secs(1),
            full_sample_every: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PressureConfig {
    /// PSI trigger: tasks waiting on memory this long...
    #[serde(with = "serde_duration")]
    pub trigger_stall: Duration,
    /// ...within this window.
    #[serde(with = "serde_duration")]
    pub trigger_window: Duration,
    /// Triggers held at most (host included).
    pub max_triggers: usize,
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self { trigger_stall: Duration::from_millis(150), trigger_window: Duration::from_secs(1), max_triggers: 64 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReclaimConfig {
    /// Reclaim stalls at least this long become `reclaim_stall` events.
    #[serde(with = "serde_duration")]
    pub stall_threshold: Duration,
    /// At most one such event per cgroup per interval (counted in the kernel).
    #[serde(with = "serde_duration")]
    pub min_interval: Duration,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        Self { stall_threshold: Duration::from_millis(100), min_interval: Duration::from_secs(1) }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// The trend is fitted over this much history.
    #[serde(with = "serde_duration")]
    pub window: Duration,
    /// Samples needed before a trend is trusted.
    pub min_points: usize,
    /// Growth over the window below this share of the limit is noise.
    pub min_growth_fraction: f64,
    /// ETAs beyond this are "no risk" (the metric is absent).
    #[serde(with = "serde_duration")]
    pub horizon: Duration,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(20), min_points: 5, min_growth_fraction: 0.02, horizon: Duration::from_secs(3600) }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Transitions kept for `oomwatch alerts`.
    pub history: usize,
    #[serde(with = "serde_duration")]
    pub evaluate_every: Duration,
    pub oom_forecast: ForecastAlert,
    pub memory_pressure: PressureAlert,
    pub reclaim_storm: ReclaimAlert,
    pub oom_kill: KillAlert,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            history: 500,
            evaluate_every: Duration::from_secs(1),
            oom_forecast: ForecastAlert::default(),
            memory_pressure: PressureAlert::default(),
            reclaim_storm: ReclaimAlert::default(),
            oom_kill: KillAlert::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastAlert {
    pub enabled: bool,
    #[serde(with = "serde_duration")]
    pub warning_eta: Duration,
    #[serde(with = "serde_duration")]
    pub critical_eta: Duration,
    /// The condition must hold this long before the alert fires.
    #[serde(rename = "for", with = "serde_duration")]
    pub for_: Duration,
    /// ...and be gone this long before it resolves (hysteresis).
    #[serde(with = "serde_duration")]
    pub resolve_for: Duration,
}

impl Default for ForecastAlert {
    fn default() -> Self {
        Self {
            enabled: true,
            warning_eta: Duration::from_secs(60),
            critical_eta: Duration::from_secs(15),
            for_: Duration::from_secs(2),
            resolve_for: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PressureAlert {
    pub enabled: bool,
    /// PSI "some" avg10, in percent, at or above which memory pressure alerts.
    pub some_avg10_percent: f64,
    #[serde(rename = "for", with = "serde_duration")]
    pub for_: Duration,
    #[serde(with = "serde_duration")]
    pub resolve_for: Duration,
    /// Also alert on the host's own PSI.
    pub host: bool,
}

impl Default for PressureAlert {
    fn default() -> Self {
        Self {
            enabled: true,
            some_avg10_percent: 10.0,
            // avg10 is itself a 10 s average: a short hold is enough.
            for_: Duration::from_secs(1),
            resolve_for: Duration::from_secs(15),
            host: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReclaimAlert {
    pub enabled: bool,
    /// Share of wall time a cgroup's tasks spend in reclaim stalls.
    pub stall_ratio: f64,
    #[serde(rename = "for", with = "serde_duration")]
    pub for_: Duration,
    #[serde(with = "serde_duration")]
    pub resolve_for: Duration,
}

impl Default for ReclaimAlert {
    fn default() -> Self {
        Self { enabled: true, stall_ratio: 0.25, for_: Duration::from_secs(5), resolve_for: Duration::from_secs(30) }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KillAlert {
    pub enabled: bool,
    /// Resolves after this long without another kill in the cgroup.
    #[serde(with = "serde_duration")]
    pub resolve_after: Duration,
}

impl Default for KillAlert {
    fn default() -> Self {
        Self { enabled: true, resolve_after: Duration::from_secs(300) }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Alert transitions in the daemon log.
    pub log: bool,
    pub alertmanager: Vec<AlertmanagerSink>,
    pub webhook: Vec<WebhookSink>,
    pub exec: Vec<ExecSink>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self { log: true, alertmanager: Vec::new(), webhook: Vec::new(), exec: Vec::new() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSink {
    /// Base URL, e.g. http://127.0.0.1:9093
    pub url: String,
    /// Firing alerts are sent again this often, as Prometheus does.
    #[serde(default = "default_resend", with = "serde_duration")]
    pub resend_interval: Duration,
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Labels added to every alert (e.g. cluster = "eu-1").
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    pub url: String,
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default = "default_queue")]
    pub queue: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecSink {
    /// Program and arguments; the alert arrives as JSON on stdin and in
    /// OOMWATCH_* environment variables.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default = "default_exec_concurrency")]
    pub max_concurrent: usize,
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_resend() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_queue() -> usize {
    256
}
fn default_exec_concurrency() -> usize {
    4
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { file: file.clone(), reason: e.to_string() })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        // Keys and values from the file may hold control characters ("a\nb"):
        // escaped, so that the error stays one line.
        let invalid = |key: String, reason: String, at: String| ConfigError::Invalid {
            file: one_line(file),
            key: one_line(&key),
            reason: one_line(&reason),
            at,
        };
        let de = toml::de::Deserializer::parse(text).map_err(|e| {
            invalid("(syntax)".into(), first_line(e.message()), line_of(text, e.span()))
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            invalid(if key == "." { "(top level)".into() } else { key }, first_line(inner.message()), line_of(text, inner.span()))
        })?;
        config.validate().map_err(|(key, reason)| invalid(key.into(), reason, String::new()))?;
        Ok(config)
    }

    /// Values that parse but make no sense, named by key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let a = &self.alerts;
        let f = &a.oom_forecast;
        if f.critical_eta >= f.warning_eta {
            return Err(("alerts.oom_forecast.critical_eta", format!(
                "must be shorter than warning_eta ({:?} >= {:?}): critical means less time left",
                f.critical_eta, f.warning_eta
            )));
        }
        if f.critical_eta.is_zero() {
            return Err(("alerts.oom_forecast.critical_eta", "must be greater than 0".into()));
        }
        let p = &a.memory_pressure;
        if !(p.some_avg10_percent > 0.0 && p.some_avg10_percent <= 100.0) {
            return Err(("alerts.memory_pressure.some_avg10_percent", format!("{} is not a percentage in (0, 100]", p.some_avg10_percent)));
        }
        let r = &a.reclaim_storm;
        if !(r.stall_ratio > 0.0 && r.stall_ratio <= 1.0) {
            return Err(("alerts.reclaim_storm.stall_ratio", format!("{} is not a ratio in (0, 1]", r.stall_ratio)));
        }
        if a.evaluate_every.is_zero() {
            return Err(("alerts.evaluate_every", "must be greater than 0".into()));
        }
        if a.history == 0 {
            return Err(("alerts.history", "must be at least 1".into()));
        }
        let c = &self.cgroups;
        if c.max_cgroups == 0 {
            return Err(("cgroups.max_cgroups", "must be at least 1".into()));
        }
        if c.sample_interval < Duration::from_millis(100) {
            return Err(("cgroups.sample_interval", "must be at least 100ms".into()));
        }
        if c.full_sample_every < c.sample_interval {
            return Err(("cgroups.full_sample_every", "must not be shorter than sample_interval".into()));
        }
        for (key, globs) in [("cgroups.include", &c.include), ("cgroups.exclude", &c.exclude)] {
            for g in globs {
                glob::Pattern::new(g).map_err(|e| (key, format!("'{g}' is not a valid glob: {e}")))?;
            }
        }
        crate::readers::TriggerSpec::new(crate::readers::PsiKind::Some, self.pressure.trigger_stall, self.pressure.trigger_window)
            .map_err(|e| ("pressure.trigger_window", e.to_string()))?;
        if self.pressure.max_triggers == 0 {
            return Err(("pressure.max_triggers", "must be at least 1 (the host's trigger)".into()));
        }
        if self.forecast.min_points < 2 {
            return Err(("forecast.min_points", "a trend needs at least 2 points".into()));
        }
        if !(0.0..1.0).contains(&self.forecast.min_growth_fraction) {
            return Err(("forecast.min_growth_fraction", "must be in [0, 1)".into()));
        }
        if self.forecast.window < 2 * c.sample_interval {
            return Err(("forecast.window", "must span at least two samples".into()));
        }
        if !(1..=1_000_000).contains(&self.daemon.stream_buffer) {
            return Err(("daemon.stream_buffer", "must be between 1 and 1,000,000 events".into()));
        }
        if !(-1000..=1000).contains(&self.daemon.oom_score_adj) {
            return Err(("daemon.oom_score_adj", format!("{} is outside -1000..=1000", self.daemon.oom_score_adj)));
        }
        if let Some(url) = &self.daemon.push_gateway {
            check_push_gateway(url).map_err(|e| ("daemon.push_gateway", e))?;
        }
        check_push_interval(self.daemon.push_interval).map_err(|e| ("daemon.push_interval", e))?;
        if self.daemon.backlog > 1_000_000 {
            return Err(("daemon.backlog", "more than 1,000,000 events would not stay small".into()));
        }
        for s in &self.sinks.alertmanager {
            check_url(&s.url).map_err(|e| ("sinks.alertmanager.url", e))?;
            if s.queue == 0 {
                return Err(("sinks.alertmanager.queue", "must be at least 1".into()));
            }
        }
        for s in &self.sinks.webhook {
            check_url(&s.url).map_err(|e| ("sinks.webhook.url", e))?;
            if s.queue == 0 {
                return Err(("sinks.webhook.queue", "must be at least 1".into()));
            }
        }
        for s in &self.sinks.exec {
            if s.command.is_empty() || s.command[0].is_empty() {
                return Err(("sinks.exec.command", "needs a program, e.g. [\"/usr/local/bin/page\", \"--team\", \"infra\"]".into()));
            }
            if s.max_concurrent == 0 {
                return Err(("sinks.exec.max_concurrent", "must be at least 1".into()));
            }
            if s.queue == 0 {
                return Err(("sinks.exec.queue", "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// Sinks speak plain HTTP (put a local relay in front of TLS endpoints).
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("'{url}': https is not supported yet; use http (e.g. a local relay)")
        } else {
            format!("'{url}' is not an http:// URL")
        }
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    // The sinks' HTTP client parses it on every send: refuse here what it would refuse there.
    match url.parse::<hyper::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(format!("'{url}' has no host")),
        Err(e) => Err(format!("'{url}' is not a valid URL: {e}")),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

/// Control characters written as escapes (`\n`, `\u{1b}`).
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => format!(" (line {})", text[..r.start.min(text.len())].matches('\n').count() + 1),
        None => String::new(),
    }
}

/// The configuration with every default written out: `oomwatch config
/// --defaults` prints it as a starting point.
pub fn defaults_toml() -> String {
    toml::to_string_pretty(&Config::default()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
