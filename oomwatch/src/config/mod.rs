//! Configuration: a TOML file with every threshold and sink, and embedded
//! defaults when there is none. Errors are one line naming the file, the key
//! and the reason; a file that fails to load or validate is never half
//! applied (SIGHUP keeps the running configuration).
//!
//! May depend on: `readers` (the PSI trigger format), `wire`.

mod duration;
pub mod ranges;
pub mod shipping;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use duration::{parse_duration, serde_duration};
pub use shipping::{FileSink, JournaldSink, OtlpSink};

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
    pub journal: JournalConfig,
    pub workloads: WorkloadsConfig,
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
            (new.journal != self.journal, "[journal]"),
            (new.workloads != self.workloads, "[workloads]"),
            (new.sinks.journald != self.sinks.journald, "[sinks.journald]"),
            (new.sinks.otlp != self.sinks.otlp, "[[sinks.otlp]]"),
            (new.sinks.file != self.sinks.file, "[[sinks.file]]"),
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
    /// Where the daemon keeps what must survive a restart: the journal of
    /// kills, alerts and other events, and the state it restores.
    pub state_dir: PathBuf,
}

/// Where the daemon keeps its state unless told otherwise (the systemd
/// unit's StateDirectory; the DaemonSet mounts a hostPath there).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/oomwatch";

/// The durable journal of events under `state_dir`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Off: events live only in memory, as before the journal.
    pub enabled: bool,
    /// The journal file (and its write-ahead log) is kept under this size;
    /// the oldest high-rate events (pressure, reclaim stalls) go first.
    pub max_size_mib: u64,
    /// High-rate events older than this are deleted.
    #[serde(with = "serde_duration")]
    pub max_age: Duration,
    /// Kills, alerts and unobserved kills are kept this long (and evicted by
    /// size only when nothing else is left).
    #[serde(with = "serde_duration")]
    pub incident_max_age: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self { enabled: true, max_size_mib: 256, max_age: Duration::from_secs(30 * 86_400), incident_max_age: Duration::from_secs(365 * 86_400) }
    }
}

/// Names of the workloads behind container cgroups, from the container
/// runtimes' records on disk (`readers::runtime`): where those records are,
/// and how many names are kept once their cgroups are gone.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadsConfig {
    /// Off: kills name cgroup paths, units and container ids only.
    pub enabled: bool,
    /// Names kept per cgroup path, including cgroups already removed (a
    /// kill is often a container's last moment). The oldest removed ones
    /// go first.
    pub max_remembered: usize,
    /// dockerd's `--data-root`.
    pub docker_data_root: PathBuf,
    /// containerd's `state` directory (`<exec-root>/containerd/daemon` for
    /// the containerd dockerd starts itself).
    pub containerd_state: PathBuf,
    /// containers/storage `graphroot` (CRI-O, podman).
    pub storage_graph_root: PathBuf,
    /// containers/storage `runroot` (CRI-O, podman).
    pub storage_run_root: PathBuf,
    /// The kubelet's pod log directory.
    pub pod_logs: PathBuf,
    /// The kubelet's per-container log links.
    pub container_logs: PathBuf,
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        let r = crate::readers::runtime::RuntimeRoots::default();
        Self {
            enabled: true,
            max_remembered: 8192,
            docker_data_root: r.docker_data_root,
            containerd_state: r.containerd_state,
            storage_graph_root: r.storage_graph_root,
            storage_run_root: r.storage_run_root,
            pod_logs: r.pod_logs,
            container_logs: r.container_logs,
        }
    }
}

impl WorkloadsConfig {
    pub fn roots(&self) -> crate::readers::runtime::RuntimeRoots {
        crate::readers::runtime::RuntimeRoots {
            docker_data_root: self.docker_data_root.clone(),
            containerd_state: self.containerd_state.clone(),
            storage_graph_root: self.storage_graph_root.clone(),
            storage_run_root: self.storage_run_root.clone(),
            pod_logs: self.pod_logs.clone(),
            container_logs: self.container_logs.clone(),
        }
    }
}

pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(15);

/// Push intervals allowed: at least 1 s (the Pushgateway keeps only the
/// last push anyway), at most 5 min (beyond that the shipped
/// OomwatchHostSilent rule would take a healthy host for a dead one).
pub fn check_push_interval(d: Duration) -> Result<(), InvalidValue> {
    if d < Duration::from_secs(1) {
        return Err(InvalidValue(format!("{} is shorter than 1s", humantime::format_duration(d))));
    }
    if d > Duration::from_secs(300) {
        return Err(InvalidValue(format!("{} is longer than 5m (hosts that push less often look dead to the alert rules)", humantime::format_duration(d))));
    }
    Ok(())
}

/// A Pushgateway base URL: http://, a host, and no path of its own beyond
/// an optional prefix (the daemon appends /metrics/job/...).
pub fn check_push_gateway(url: &str) -> Result<(), InvalidValue> {
    check_url(url)?;
    let shown = redact_url(url);
    if url.contains(['?', '#']) {
        return Err(InvalidValue(format!("'{shown}' must not have a query or fragment: give the Pushgateway's base URL, e.g. http://pushgateway:9091")));
    }
    if url.trim_end_matches('/').ends_with("/metrics") || url.contains("/metrics/job/") {
        return Err(InvalidValue(format!(
            "'{shown}': give the Pushgateway's base URL (e.g. http://pushgateway:9091); oomwatch appends /metrics/job/oomwatch/instance/<host>"
        )));
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
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
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
    /// Every event into the systemd journal (shipping: see [`shipping`]).
    pub journald: JournaldSink,
    /// Every event as OTLP/HTTP logs.
    pub otlp: Vec<OtlpSink>,
    /// Every event appended to a rotated NDJSON file.
    pub file: Vec<FileSink>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            log: true,
            alertmanager: Vec::new(),
            webhook: Vec::new(),
            exec: Vec::new(),
            journald: JournaldSink::default(),
            otlp: Vec::new(),
            file: Vec::new(),
        }
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

impl AlertmanagerSink {
    /// A sink with every default, for documentation.
    pub fn example() -> Self {
        Self { url: "http://127.0.0.1:9093".into(), resend_interval: default_resend(), timeout: default_timeout(), queue: default_queue(), labels: BTreeMap::new() }
    }
}

impl WebhookSink {
    pub fn example() -> Self {
        Self { url: "http://127.0.0.1:8080/hook".into(), timeout: default_timeout(), queue: default_queue() }
    }
}

impl ExecSink {
    pub fn example() -> Self {
        Self {
            command: vec!["/usr/local/bin/page".into()],
            env: BTreeMap::new(),
            timeout: default_timeout(),
            max_concurrent: default_exec_concurrency(),
            queue: default_queue(),
        }
    }
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
        config.validate().map_err(|e| invalid(e.key, e.reason, String::new()))?;
        Ok(config)
    }

    /// Values that parse but make no sense, named by key: every number and
    /// duration against its range ([`ranges`]), then what must hold between
    /// settings, URLs, globs and programs.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |key: &str, reason: String| InvalidSetting { key: key.to_owned(), reason };
        ranges::check_ranges(self).map_err(|(key, reason)| bad(&key, reason))?;
        let f = &self.alerts.oom_forecast;
        if f.critical_eta >= f.warning_eta {
            return Err(bad(
                "alerts.oom_forecast.critical_eta",
                format!("must be shorter than warning_eta ({:?} >= {:?}): critical means less time left", f.critical_eta, f.warning_eta),
            ));
        }
        let c = &self.cgroups;
        if c.full_sample_every < c.sample_interval {
            return Err(bad("cgroups.full_sample_every", "must not be shorter than sample_interval".into()));
        }
        if self.forecast.window < 2 * c.sample_interval {
            return Err(bad("forecast.window", "must span at least two samples".into()));
        }
        for (key, globs) in [("cgroups.include", &c.include), ("cgroups.exclude", &c.exclude)] {
            for g in globs {
                glob::Pattern::new(g).map_err(|e| bad(key, format!("'{g}' is not a valid glob: {e}")))?;
            }
        }
        crate::readers::TriggerSpec::new(crate::readers::PsiKind::Some, self.pressure.trigger_stall, self.pressure.trigger_window)
            .map_err(|e| bad("pressure.trigger_window", e.to_string()))?;
        if let Some(url) = &self.daemon.push_gateway {
            check_push_gateway(url).map_err(|e| bad("daemon.push_gateway", e.to_string()))?;
        }
        // A missing root is fine (that runtime does not run here); a
        // relative one would depend on the daemon's working directory.
        for (name, root) in self.workloads.roots().named() {
            if !root.is_absolute() {
                return Err(bad(&format!("workloads.{name}"), format!("'{}' is not an absolute path", root.display())));
            }
        }
        self.validate_sinks()
    }

    fn validate_sinks(&self) -> Result<(), InvalidSetting> {
        let bad = |key: String, reason: String| InvalidSetting { key, reason };
        for (i, s) in self.sinks.alertmanager.iter().enumerate() {
            check_url(&s.url).map_err(|e| bad(format!("sinks.alertmanager[{i}].url"), e.to_string()))?;
        }
        for (i, s) in self.sinks.webhook.iter().enumerate() {
            check_url(&s.url).map_err(|e| bad(format!("sinks.webhook[{i}].url"), e.to_string()))?;
        }
        for (i, s) in self.sinks.exec.iter().enumerate() {
            check_program(s.command.first().map(String::as_str)).map_err(|e| bad(format!("sinks.exec[{i}].command"), e.to_string()))?;
        }
        self.validate_shipping()
    }

    /// The shipping sinks: reachable-looking endpoints, usable headers,
    /// absolute paths, one name per sink, and the journal they read from.
    fn validate_shipping(&self) -> Result<(), InvalidSetting> {
        let bad = |key: String, reason: String| InvalidSetting { key, reason };
        let s = &self.sinks;
        for (i, o) in s.otlp.iter().enumerate() {
            check_url(&o.endpoint).map_err(|e| bad(format!("sinks.otlp[{i}].endpoint"), e.to_string()))?;
            for name in o.headers.keys() {
                match hyper::header::HeaderName::from_bytes(name.as_bytes()) {
                    Err(e) => return Err(bad(format!("sinks.otlp[{i}].headers"), format!("{name:?} is not a header name: {e}"))),
                    Ok(n) if n == hyper::header::CONTENT_TYPE || n == hyper::header::CONTENT_LENGTH => {
                        return Err(bad(format!("sinks.otlp[{i}].headers"), format!("{name} is set by oomwatch from the encoding")));
                    }
                    Ok(_) => {}
                }
            }
            for (name, value) in &o.headers {
                hyper::header::HeaderValue::from_str(value)
                    .map_err(|_| bad(format!("sinks.otlp[{i}].headers.{name}"), "is not a valid header value (control characters?)".into()))?;
            }
        }
        for (i, f) in s.file.iter().enumerate() {
            if !f.path.is_absolute() || f.path.file_name().is_none() {
                return Err(bad(format!("sinks.file[{i}].path"), format!("'{}' is not an absolute file path", f.path.display())));
            }
        }
        if !s.journald.socket.is_absolute() {
            return Err(bad("sinks.journald.socket".into(), format!("'{}' is not an absolute path", s.journald.socket.display())));
        }
        let (otlp, file) = shipping::sink_names(&s.otlp, &s.file);
        let mut seen = std::collections::BTreeSet::from(["journald".to_owned()]);
        for (key, name) in otlp.iter().enumerate().map(|(i, n)| (format!("sinks.otlp[{i}].name"), n)).chain(file.iter().enumerate().map(|(i, n)| (format!("sinks.file[{i}].name"), n))) {
            if !shipping::valid_sink_name(name) {
                return Err(bad(key, format!("'{name}': 1 to 64 of a-z, 0-9, '-' and '_'")));
            }
            if !seen.insert(name.clone()) {
                return Err(bad(key, format!("'{name}' names another sink too (each sink keeps its own cursor by name)")));
            }
        }
        let wants_journal = !s.otlp.is_empty() || !s.file.is_empty() || s.journald.enabled == shipping::Switch::Fixed(true);
        if wants_journal && !self.journal.enabled {
            return Err(bad("journal.enabled".into(), "shipping sinks (journald, otlp, file) deliver from the journal: it must be on".into()));
        }
        Ok(())
    }
}

/// A setting that parses but is not allowed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidSetting {
    pub key: String,
    pub reason: String,
}

/// Why a single value (a URL, a program path) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// The exec hook's program: an absolute path to an executable file, as the
/// daemon runs it without a shell or a PATH search it could be tricked by.
pub fn check_program(program: Option<&str>) -> Result<(), InvalidValue> {
    let bad = |s: String| Err(InvalidValue(s));
    let Some(program) = program.filter(|p| !p.is_empty()) else {
        return bad("needs a program, e.g. [\"/usr/local/bin/page\", \"--team\", \"infra\"]".into());
    };
    let path = Path::new(program);
    if !path.is_absolute() {
        return bad(format!("'{program}' is not an absolute path (the daemon runs the program without a shell or PATH)"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0 => Ok(()),
        Ok(_) => bad(format!("{program}: not an executable file")),
        Err(e) => bad(format!("{program}: {e}")),
    }
}

/// Sinks speak plain HTTP (put a local relay in front of TLS endpoints).
/// Credentials in the URL (`http://user:password@host`) are sent as basic
/// auth and never shown: errors and logs print the URL redacted.
pub fn check_url(url: &str) -> Result<(), InvalidValue> {
    let shown = redact_url(url);
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(InvalidValue(if url.starts_with("https://") {
            format!("'{shown}': https is not supported yet; use http (e.g. a local relay)")
        } else {
            format!("'{shown}' is not an http:// URL")
        }));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(InvalidValue(format!("'{shown}' has no host")));
    }
    // The sinks' HTTP client parses it on every send: refuse here what it would refuse there.
    match url.parse::<hyper::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(InvalidValue(format!("'{shown}' has no host"))),
        Err(e) => Err(InvalidValue(format!("'{shown}' is not a valid URL: {e}"))),
    }
}

/// The URL with the password of any `user:password@` replaced by `***`,
/// for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
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
