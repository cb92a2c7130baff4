//! The Prometheus registry. Per-cgroup series are read from the model at
//! scrape time (collectors), kernel counters from the per-CPU map; a read
//! that fails skips its series instead of failing the scrape.
//!
//! prometheus-client encodes OpenMetrics. Prometheus asks for that and gets
//! it; other clients (curl, promtool, older scrapers) get the classic text
//! format 0.0.4, converted as it is encoded, a batch of lines at a time (`text`).

pub mod journal;
pub mod push;
pub mod reclaim;
pub mod shipping;
pub mod text;

use std::{
    fmt::{self, Write as _},
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, PerCpuArray};
use oomwatch_common::{counters, names::program};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::ConstGauge,
    },
    registry::Registry,
};

pub use text::openmetrics_to_text;

pub use crate::model::counters::DaemonCounters;
use crate::{
    kernel::loader::ProbeReport,
    model::{CgroupState, Model},
    outputs::alerts::Alerts,
};

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value from outside (a cgroup path, a comm), escaped as the
/// exposition formats require. prometheus-client 0.24 writes values verbatim,
/// so one `"` in a cgroup name would otherwise break the whole scrape.
#[derive(Clone, Copy, Debug)]
pub struct LabelValue<'a>(pub &'a str);

impl EncodeLabelValue for LabelValue<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        let s = self.0;
        // Paths almost never need escaping, and this runs once per series
        // per scrape: memchr3 checks 16-32 bytes per instruction, where a
        // byte loop took half the render time of 10,000 cgroups.
        if memchr::memchr3(b'\\', b'"', b'\n', s.as_bytes()).is_none() {
            return encoder.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    /// Size of the previous body: the next one is about as big, and growing
    /// a 26 MB string by doubling copies it several times over.
    last_len: std::sync::atomic::AtomicUsize,
}

impl Metrics {
    pub fn new(
        model: Arc<Model>,
        kernel: Option<PerCpuArray<MapData, u64>>,
        probes: Vec<ProbeReport>,
        daemon: Arc<DaemonCounters>,
        alerts: Option<Arc<Alerts>>,
    ) -> Self {
        let kernel: Option<KernelCounterSource> = kernel.map(|map| {
            let map = Mutex::new(map);
            Box::new(move |index: u32| {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.get(&index, 0).ok().map(|values| values.iter().sum())
            }) as KernelCounterSource
        });
        Self::with_kernel_counters(model, kernel, probes, daemon, alerts)
    }

    /// `kernel` sums one kernel counter over CPUs (None: unreadable).
    pub fn with_kernel_counters(
        model: Arc<Model>,
        kernel: Option<KernelCounterSource>,
        probes: Vec<ProbeReport>,
        daemon: Arc<DaemonCounters>,
        alerts: Option<Arc<Alerts>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("oomwatch");
        registry.register(
            "events_published",
            "Events the daemon published to its stream (tail clients, alerting)",
            daemon.events_published.clone(),
        );
        registry.register(
            "decode_errors",
            "Ring-buffer records that failed length or version checks",
            daemon.decode_errors.clone(),
        );
        registry.register(
            "stream_dropped_events",
            "Events not delivered to a tail client that fell behind",
            daemon.stream_events_dropped.clone(),
        );
        registry.register(
            "oom_kills_unobserved",
            "OOM kills the kernel counted (/proc/vmstat, cgroup counters) that oomwatch did not observe",
            daemon.oom_kills_unobserved.clone(),
        );
        registry.register(
            "psi_triggers_active",
            "PSI triggers held (host and cgroups); pressure events come from these",
            daemon.psi_triggers_active.clone(),
        );
        registry.register(
            "panics",
            "Panics in the daemon: a task that panics ends the daemon (non-zero exit); one in a client's connection is logged and counted here",
            daemon.panics.clone(),
        );
        registry.register(
            "workload_lookups",
            "Lookups of new container cgroups in the container runtimes' records (retries included)",
            daemon.workload_lookups.clone(),
        );
        registry.register(
            "workload_lookup_errors",
            "Container lookups that found a runtime record unreadable or malformed (the daemon log names the first per runtime)",
            daemon.workload_lookup_errors.clone(),
        );
        registry.register(
            "workload_lookups_dropped",
            "New container cgroups not looked up because the lookup queue was full",
            daemon.workload_lookups_dropped.clone(),
        );
        registry.register(
            "cgroup_usage_reads",
            "Cgroup usage reads by source: walk (one BPF cgroup iterator pass a tick reads every cgroup; probe cgroup_usage_walk) or file (one cgroupfs read per cgroup, where the walk is skipped or does not reach)",
            daemon.usage_reads.clone(),
        );
        registry.register(
            "psi_triggers_refused",
            "PSI triggers the kernel refused (see the daemon log)",
            daemon.psi_triggers_refused.clone(),
        );
        registry.register_collector(Box::new(StaticCollector { probes, kmsg: daemon.kmsg_attached.clone() }));
        registry.register(
            "kernel_reports_joined",
            "OOM kills amended with what the kernel printed for them in its log (probe kmsg)",
            daemon.kernel_reports_joined.clone(),
        );
        registry.register(
            "kernel_reports_unmatched",
            "Kill lines in the kernel log that matched no kill oomwatch reported (victim pid, comm, cgroup, time): never attached to another kill",
            daemon.kernel_reports_unmatched.clone(),
        );
        if let Some(alerts) = alerts {
            registry.register(
                "alert_notifications",
                "Alert notifications by sink and result (sent, failed, dropped: the sink's queue was full)",
                alerts.notifications.clone(),
            );
            registry.register_collector(Box::new(AlertCollector { alerts }));
        }
        registry.register_collector(Box::new(KernelCounterCollector { sum: kernel }));
        registry.register_collector(Box::new(ModelCollector { model }));
        Self { registry, last_len: std::sync::atomic::AtomicUsize::new(16 * 1024) }
    }

    /// A metric that exists only with a feature turned on (e.g. push mode).
    pub fn register(&mut self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.register(name, help, metric);
    }

    /// Series that another room reads at scrape time (e.g. `stall`).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    fn encode_into(&self, w: &mut impl fmt::Write) {
        if let Err(e) = prometheus_client::encoding::text::encode(w, &self.registry) {
            log::warn!("encoding metrics failed: {e}");
        }
    }

    /// The body for a scrape, in OpenMetrics or text 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let hint = self.last_len.load(Relaxed);
        let mut body = text::Exposition::new(openmetrics, hint + hint / 8);
        self.encode_into(&mut body);
        let body = body.finish();
        self.last_len.store(body.len(), Relaxed);
        body
    }

    /// The body for a scrape handed to `send` in chunks of about
    /// `chunk_bytes` as it is encoded, so that a scrape read as it is
    /// rendered never holds the whole body. `send` must not wait: the
    /// collectors hold the model's lock while they write.
    pub fn render_in_chunks(&self, openmetrics: bool, chunk_bytes: usize, send: impl FnMut(String)) {
        let mut chunks = Chunks { body: text::Exposition::new(openmetrics, chunk_bytes), chunk_bytes, send };
        self.encode_into(&mut chunks);
        let last = chunks.body.finish();
        if !last.is_empty() {
            (chunks.send)(last);
        }
    }
}

struct Chunks<F> {
    body: text::Exposition,
    chunk_bytes: usize,
    send: F,
}

impl<F: FnMut(String)> fmt::Write for Chunks<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.body.write_str(s)?;
        if self.body.len() >= self.chunk_bytes {
            let written = self.body.take_written(self.chunk_bytes);
            if !written.is_empty() {
                (self.send)(written);
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct StaticCollector {
    probes: Vec<ProbeReport>,
    /// The kernel log reader, reported as the probe `kmsg`.
    kmsg: prometheus_client::metrics::gauge::Gauge,
}

impl Collector for StaticCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut e = encoder.encode_descriptor(
            "build_info",
            "oomwatch build: version and record format; always 1",
            None,
            MetricType::Gauge,
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("record_version", oomwatch_common::header::RECORD_VERSION.to_string()),
        ];
        ConstGauge::new(1i64).encode(e.encode_family(&labels)?)?;
        let mut e = encoder.encode_descriptor(
            "probe_attached",
            "1 when the kernel probe is attached, 0 when it was skipped (see `oomwatch check`)",
            None,
            MetricType::Gauge,
        )?;
        for p in &self.probes {
            ConstGauge::new(i64::from(p.attached())).encode(e.encode_family(&[("probe", p.spec.name)])?)?;
        }
        ConstGauge::new(self.kmsg.get()).encode(e.encode_family(&[("probe", "kmsg")])?)?;
        Ok(())
    }
}

struct AlertCollector {
    alerts: Arc<Alerts>,
}

impl fmt::Debug for AlertCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlertCollector")
    }
}

impl Collector for AlertCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut e = encoder.encode_descriptor(
            "alerts_firing",
            "1 for each alert the daemon has firing (absent otherwise), like Prometheus' ALERTS",
            None,
            MetricType::Gauge,
        )?;
        let mut result = Ok(());
        self.alerts.for_each_firing(|k| {
            if result.is_ok() {
                let labels = [
                    ("alert", LabelValue(k.alert.as_str())),
                    ("severity", LabelValue(k.severity.as_str())),
                    ("cgroup", LabelValue(&k.cgroup)),
                ];
                result = e.encode_family(&labels).and_then(|f| ConstGauge::new(1i64).encode(f));
            }
        });
        result
    }
}

/// Reads one kernel counter, summed over CPUs.
pub type KernelCounterSource = Box<dyn Fn(u32) -> Option<u64> + Send + Sync>;

struct KernelCounterCollector {
    sum: Option<KernelCounterSource>,
}

impl fmt::Debug for KernelCounterCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KernelCounterCollector")
    }
}

impl Collector for KernelCounterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(sum) = &self.sum else { return Ok(()) };
        let mut e = encoder.encode_descriptor(
            "events_lost",
            "Records the kernel could not hand over because the ring buffer was full",
            None,
            MetricType::Counter,
        )?;
        for (kind, index) in [
            ("oom_kill", counters::RINGBUF_FULL_OOM),
            ("victim_exit", counters::RINGBUF_FULL_EXIT),
            ("reclaim_stall", counters::RINGBUF_FULL_STALL),
        ] {
            if let Some(v) = sum(index) {
                ConstCounter::new(v).encode(e.encode_family(&[("kind", kind)])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "kernel_map_full",
            "Inserts refused by a full kernel map (pending_victims: an exit confirmation is lost)",
            None,
            MetricType::Counter,
        )?;
        for (map_name, index) in [
            ("pending_victims", counters::PENDING_VICTIMS_FULL),
            ("reclaim_starts", counters::RECLAIM_STARTS_FULL),
        ] {
            if let Some(v) = sum(index) {
                ConstCounter::new(v).encode(e.encode_family(&[("map", map_name)])?)?;
            }
        }
        if let Some(v) = sum(counters::OOM_SEEN) {
            let e = encoder.encode_descriptor(
                "kernel_oom_kills_seen",
                "OOM kills the kernel programs saw, before the ring buffer",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(e)?;
        }
        let mut e = encoder.encode_descriptor(
            "kernel_program_errors",
            "Kernel reads that failed in a program; what it could still read, it reported (a kill without some fields)",
            None,
            MetricType::Counter,
        )?;
        for p in program::ALL {
            if let Some(v) = sum(counters::program_errors(p)) {
                ConstCounter::new(v).encode(e.encode_family(&[("program", p.name)])?)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ModelCollector {
    model: Arc<Model>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Model")
    }
}

impl ModelCollector {
    fn gauge_family(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&CgroupState) -> Option<u64>,
    ) -> fmt::Result {
        let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        let mut result = Ok(());
        self.model.for_each_cgroup(|path, c| {
            if result.is_ok()
                && let Some(v) = value(c)
            {
                result = e.encode_family(&[("cgroup", LabelValue(path))]).and_then(|f| ConstGauge::new(v as i64).encode(f));
            }
        });
        result
    }
}

impl ModelCollector {
    /// PSI "some" is time with at least one task waiting on memory, "full"
    /// with all non-idle tasks stalled (as cAdvisor and node_exporter name them).
    fn encode_pressure(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if let Some(p) = self.model.node().pressure {
            let full = p.full.unwrap_or(p.some);
            for (name, help, value) in [
                ("memory_pressure_waiting_seconds", "Host time with some tasks waiting on memory (PSI some total)", p.some.total_us),
                ("memory_pressure_stalled_seconds", "Host time with all non-idle tasks stalled on memory (PSI full total)", full.total_us),
            ] {
                let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(value as f64 / 1e6).encode(e)?;
            }
            for (name, help, value) in [
                ("memory_pressure_waiting_avg10_ratio", "Host PSI some avg10 as a ratio (0-1)", p.some.avg10),
                ("memory_pressure_stalled_avg10_ratio", "Host PSI full avg10 as a ratio (0-1)", full.avg10),
            ] {
                let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value / 100.0).encode(e)?;
            }
        }
        type Pick = fn(&crate::readers::Pressure) -> f64;
        let families: [(&str, &str, MetricType, Pick); 4] = [
            ("cgroup_memory_pressure_waiting_seconds", "Time with some tasks of the cgroup waiting on memory (PSI some total)", MetricType::Counter, |p| p.some.total_us as f64 / 1e6),
            ("cgroup_memory_pressure_stalled_seconds", "Time with all non-idle tasks of the cgroup stalled on memory (PSI full total)", MetricType::Counter, |p| p.full.map_or(0.0, |f| f.total_us as f64 / 1e6)),
            ("cgroup_memory_pressure_waiting_avg10_ratio", "PSI some avg10 of the cgroup as a ratio (0-1)", MetricType::Gauge, |p| p.some.avg10 / 100.0),
            ("cgroup_memory_pressure_stalled_avg10_ratio", "PSI full avg10 of the cgroup as a ratio (0-1)", MetricType::Gauge, |p| p.full.map_or(0.0, |f| f.avg10 / 100.0)),
        ];
        for (name, help, ty, pick) in families {
            let mut e = encoder.encode_descriptor(name, help, None, ty)?;
            let mut result = Ok(());
            self.model.for_each_pressure(|path, p| {
                if result.is_ok() {
                    let v = pick(p);
                    result = e.encode_family(&[("cgroup", LabelValue(path))]).and_then(|f| match ty {
                        MetricType::Counter => ConstCounter::new(v).encode(f),
                        _ => ConstGauge::new(v).encode(f),
                    });
                }
            });
            result?;
        }
        Ok(())
    }
}

impl ModelCollector {
    /// Kills per victim cgroup and constraint.
    fn encode_kills(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut e = encoder.encode_descriptor(
            "oom_kills",
            "OOM kills by the victim's memory cgroup and constraint (memcg: a cgroup limit was hit; global: the host ran out)",
            None,
            MetricType::Counter,
        )?;
        let mut result = Ok(());
        // Kills are few series: they carry the workload's Kubernetes names
        // and whether the victim was its container's main process. Unknown
        // is the empty value (to Prometheus, no label), so every series has
        // the same label names.
        self.model.for_each_kill_series(|(cgroup, constraint, main_process), names, count| {
            if result.is_err() {
                return;
            }
            let name = |v: &Option<String>| v.as_deref().unwrap_or("").to_owned();
            let (namespace, pod, container) = (name(&names.namespace), name(&names.pod), name(&names.container));
            let main = match main_process {
                Some(true) => "true",
                Some(false) => "false",
                None => "",
            };
            let labels = [
                ("cgroup", LabelValue(cgroup)),
                ("constraint", LabelValue(constraint.as_str())),
                ("namespace", LabelValue(&namespace)),
                ("pod", LabelValue(&pod)),
                ("container", LabelValue(&container)),
                ("main_process", LabelValue(main)),
            ];
            result = e.encode_family(&labels).and_then(|f| ConstCounter::new(count).encode(f));
        });
        result
    }

    /// OOM-killer invocations: a group kill is one, however many it killed.
    fn encode_incidents(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let e = encoder.encode_descriptor(
            "oom_incidents",
            "OOM incidents: OOM-killer invocations seen (a group kill with memory.oom.group is one incident of many kills)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.model.incidents_total()).encode(e)
    }

    /// Usage, working set, limits and swap per cgroup.
    fn encode_usage(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        self.gauge_family(encoder, "cgroup_memory_usage_bytes", "Memory charged to the cgroup (v2 memory.current, v1 usage_in_bytes)", |c| Some(c.usage_bytes))?;
        self.gauge_family(
            encoder,
            "cgroup_memory_working_set_bytes",
            "Usage minus inactive file cache: what the kernel cannot easily reclaim (as cAdvisor and the kubelet define it)",
            |c| Some(c.working_set_bytes),
        )?;
        self.gauge_family(encoder, "cgroup_memory_limit_bytes", "Hard memory limit (v2 memory.max, v1 limit_in_bytes); absent when unlimited", |c| c.limit_bytes)?;
        self.gauge_family(encoder, "cgroup_memory_high_bytes", "v2 memory.high throttling threshold; absent when unset", |c| c.high_bytes)?;
        self.gauge_family(
            encoder,
            "cgroup_memory_high_throttled",
            "1 while the cgroup keeps hitting its memory.high (memory.events.local high rising tick after tick), else 0; absent when memory.high is unset",
            |c| c.high_bytes.map(|_| u64::from(c.throttle.is_throttled())),
        )?;
        self.gauge_family(encoder, "cgroup_memory_swap_usage_bytes", "Swap used by the cgroup, where the kernel accounts it", |c| c.swap_usage_bytes)?;
        Ok(())
    }

    /// The kernel's memory event counters per cgroup.
    fn encode_memory_events(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut e = encoder.encode_descriptor(
            "cgroup_memory_events",
            "Memory events of the cgroup and its descendants (v2 memory.events; on v1 max is failcnt and oom_kill from oom_control)",
            None,
            MetricType::Counter,
        )?;
        let mut result = Ok(());
        self.model.for_each_cgroup(|path, c| {
            let ev = &c.events;
            for (name, value) in [
                ("low", ev.low),
                ("high", ev.high),
                ("max", ev.max),
                ("oom", ev.oom),
                ("oom_kill", ev.oom_kill),
                ("oom_group_kill", ev.oom_group_kill),
            ] {
                if let (true, Some(v)) = (result.is_ok(), value) {
                    result = e
                        .encode_family(&[("cgroup", LabelValue(path)), ("event", LabelValue(name))])
                        .and_then(|f| ConstCounter::new(v).encode(f));
                }
            }
        });
        result
    }

    /// Workload names per cgroup, for joins.
    fn encode_info(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut e = encoder.encode_descriptor(
            "cgroup_info",
            "Workload names of the cgroup: systemd unit, container, pod from its path; container name, image, Kubernetes namespace, pod and container from the container runtime's records; always 1. Join on cgroup.",
            None,
            MetricType::Gauge,
        )?;
        let mut result = Ok(());
        self.model.for_each_workload(|path, w| {
            if result.is_err() || (w.unit.is_none() && w.container_id.is_none() && w.pod_uid.is_none()) {
                return;
            }
            fn label(v: &Option<String>) -> LabelValue<'_> {
                LabelValue(v.as_deref().unwrap_or(""))
            }
            let labels = [
                ("cgroup", LabelValue(path)),
                ("unit", label(&w.unit)),
                ("container_id", label(&w.container_id)),
                ("runtime", label(&w.runtime)),
                ("pod_uid", label(&w.pod_uid)),
                ("qos", label(&w.qos)),
                ("container_name", label(&w.container_name)),
                ("image", label(&w.image)),
                ("namespace", label(&w.namespace)),
                ("pod", label(&w.pod)),
                ("container", label(&w.container)),
            ];
            result = e.encode_family(&labels).and_then(|f| ConstGauge::new(1i64).encode(f));
        });
        result
    }

    /// Time to OOM per cgroup and for the host.
    fn encode_forecasts(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut e = encoder.encode_descriptor(
            "cgroup_oom_eta_seconds",
            "Seconds until the cgroup's working set reaches its limit at the current trend; absent when there is no risk",
            None,
            MetricType::Gauge,
        )?;
        let mut result = Ok(());
        self.model.for_each_cgroup(|path, c| {
            if let (true, Some(f)) = (result.is_ok(), c.forecast) {
                result = e.encode_family(&[("cgroup", LabelValue(path))]).and_then(|x| ConstGauge::new(f.eta_s).encode(x));
            }
        });
        result?;
        if let Some(f) = self.model.node().forecast {
            let e = encoder.encode_descriptor(
                "memory_oom_eta_seconds",
                "Seconds until the host's available memory runs out at the current trend; absent when there is no risk",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(f.eta_s).encode(e)?;
        }
        Ok(())
    }

    /// How many cgroups are tracked, removed, left out.
    fn encode_counts(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let counts = self.model.counts();
        let mut e = encoder.encode_descriptor(
            "cgroups",
            "Memory cgroups by state: tracked, removed (kept for the grace period), excluded by filter, by --max-cgroups, or because their files could not be opened",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [
            ("tracked", counts.tracked),
            ("removed", counts.removed_in_grace),
            ("excluded_filter", counts.excluded_filter),
            ("excluded_cap", counts.excluded_cap),
            ("excluded_unreadable", counts.excluded_unreadable),
        ] {
            ConstGauge::new(n as i64).encode(e.encode_family(&[("state", state)])?)?;
        }
        Ok(())
    }

}

impl Collector for ModelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_kills(&mut encoder)?;
        self.encode_incidents(&mut encoder)?;
        self.encode_usage(&mut encoder)?;
        self.encode_memory_events(&mut encoder)?;
        self.encode_info(&mut encoder)?;
        self.encode_pressure(&mut encoder)?;
        self.encode_forecasts(&mut encoder)?;
        self.encode_counts(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_model_kills_in_both_formats() {
        let model = Arc::new(Model::default());
        model.record_kill("/a\"b\\c\nd", crate::wire::Constraint::Memcg, Some("hog"), std::time::Instant::now());
        let m = Metrics::new(model, None, Vec::new(), Arc::default(), None);
        let om = m.render(true);
        assert!(om.ends_with("# EOF\n"));
        let text = m.render(false);
        assert!(text.contains(r#"oomwatch_oom_kills_total{cgroup="/a\"b\\c\nd",constraint="memcg",namespace="",pod="",container="",main_process=""} 1"#), "{text}");
        assert!(text.contains("# TYPE oomwatch_oom_kills_total counter"));
        assert!(text.contains("oomwatch_build_info{version="));
        assert!(!text.contains("# EOF"));
    }
}
