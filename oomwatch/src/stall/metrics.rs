//! Reclaim stall series, read from the kernel maps at scrape time. Only
//! cgroups that stalled have series; a failed map read skips them.

use std::{collections::BTreeMap, fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
};

use super::{CgroupStalls, StallReader};
use crate::{metrics::LabelValue, model::Model};

#[derive(Debug)]
pub struct StallCollector {
    pub reader: Arc<StallReader>,
    /// Honour the model's --include/--exclude filters.
    pub model: Arc<Model>,
}

/// A histogram whose buckets were counted elsewhere (in the kernel).
#[derive(Debug)]
struct ConstHistogram<'a>(&'a CgroupStalls);

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let (buckets, count) = self.0.prom_buckets();
        encoder.encode_histogram::<NoLabelSet>(self.0.total_ns as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for StallCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let cgroups = self.reader.per_cgroup(|path| self.model.passes_filters(path));
        encode(encoder, &cgroups, self.reader.memstall())
    }
}

/// The stall families for `cgroups` (path -> stalls summed over CPUs).
pub fn encode(mut encoder: DescriptorEncoder, cgroups: &BTreeMap<String, CgroupStalls>, memstall: bool) -> fmt::Result {
    let stalled = || cgroups.iter().filter(|(_, s)| s.count > 0);

    let mut e = encoder.encode_descriptor(
        "cgroup_reclaim_stall_seconds",
        "Time tasks of the memory cgroup spent in direct or memcg reclaim, per stall (vmscan tracepoints)",
        None,
        MetricType::Histogram,
    )?;
    for (path, s) in stalled() {
        ConstHistogram(s).encode(e.encode_family(&[("cgroup", LabelValue(path))])?)?;
    }

    let mut e = encoder.encode_descriptor(
        "cgroup_reclaim_stalls",
        "Reclaim stalls (direct or memcg reclaim) of tasks in the memory cgroup",
        None,
        MetricType::Counter,
    )?;
    for (path, s) in stalled() {
        ConstCounter::new(s.count).encode(e.encode_family(&[("cgroup", LabelValue(path))])?)?;
    }

    if memstall {
        let mut e = encoder.encode_descriptor(
            "cgroup_memstall_seconds",
            "Time tasks of the memory cgroup spent in PSI memory-stall sections (psi_memstall_enter/leave)",
            None,
            MetricType::Counter,
        )?;
        for (path, s) in cgroups.iter().filter(|(_, s)| s.memstall_ns > 0) {
            ConstCounter::new(s.memstall_ns as f64 / 1e9).encode(e.encode_family(&[("cgroup", LabelValue(path))])?)?;
        }
    }
    Ok(())
}

/// Fixed stall series, for tests of the exporters.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FixedStalls(pub BTreeMap<String, CgroupStalls>, pub bool);

#[cfg(test)]
impl Collector for FixedStalls {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        encode(encoder, &self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use oomwatch_common::stall_bucket;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::metrics::openmetrics_to_text;

    #[derive(Debug)]
    struct Fake(BTreeMap<String, CgroupStalls>, bool);

    impl Collector for Fake {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            encode(encoder, &self.0, self.1)
        }
    }

    fn stalls(durations_ns: &[u64], memstall_ns: u64) -> CgroupStalls {
        let mut s = CgroupStalls { memstall_ns, ..Default::default() };
        for &d in durations_ns {
            s.count += 1;
            s.total_ns += d;
            s.buckets[stall_bucket(d)] += 1;
        }
        s
    }

    fn render(cgroups: BTreeMap<String, CgroupStalls>, memstall: bool) -> String {
        let mut registry = Registry::with_prefix("oomwatch");
        registry.register_collector(Box::new(Fake(cgroups, memstall)));
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &registry).unwrap();
        openmetrics_to_text(&om)
    }

    #[test]
    fn histogram_and_counter_per_stalled_cgroup() {
        let mut cgroups = BTreeMap::new();
        cgroups.insert("/a\"q".to_owned(), stalls(&[50_000, 3_000_000, 250_000_000], 0));
        cgroups.insert("/idle".to_owned(), stalls(&[], 0));
        let text = render(cgroups, false);
        let a = r#"cgroup="/a\"q""#;
        for line in [
            format!("oomwatch_cgroup_reclaim_stall_seconds_bucket{{le=\"0.000128\",{a}}} 1"),
            format!("oomwatch_cgroup_reclaim_stall_seconds_bucket{{le=\"0.008192\",{a}}} 2"),
            format!("oomwatch_cgroup_reclaim_stall_seconds_bucket{{le=\"0.131072\",{a}}} 2"),
            format!("oomwatch_cgroup_reclaim_stall_seconds_bucket{{le=\"0.524288\",{a}}} 3"),
            format!("oomwatch_cgroup_reclaim_stall_seconds_bucket{{le=\"+Inf\",{a}}} 3"),
            format!("oomwatch_cgroup_reclaim_stall_seconds_count{{{a}}} 3"),
            format!("oomwatch_cgroup_reclaim_stall_seconds_sum{{{a}}} 0.25305"),
            format!("oomwatch_cgroup_reclaim_stalls_total{{{a}}} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
        }
        assert!(text.contains("# TYPE oomwatch_cgroup_reclaim_stall_seconds histogram"));
        assert!(text.contains("# TYPE oomwatch_cgroup_reclaim_stalls_total counter"));
        assert!(!text.contains("/idle"), "only cgroups that stalled have series:\n{text}");
        assert!(!text.contains("memstall"), "no memstall family without its probes:\n{text}");
        let buckets = text.lines().filter(|l| l.starts_with("oomwatch_cgroup_reclaim_stall_seconds_bucket")).count();
        assert_eq!(buckets, 8, "7 le bounds and +Inf per cgroup");
    }

    #[test]
    fn memstall_family_only_with_its_probes() {
        let mut cgroups = BTreeMap::new();
        cgroups.insert("/a".to_owned(), stalls(&[1_000], 2_500_000_000));
        let text = render(cgroups, true);
        assert!(text.lines().any(|l| l == r#"oomwatch_cgroup_memstall_seconds_total{cgroup="/a"} 2.5"#), "{text}");
    }
}
