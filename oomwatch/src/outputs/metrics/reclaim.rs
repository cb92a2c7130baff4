//! Reclaim stall series, read from the kernel maps at scrape time. Only
//! cgroups that stalled have series; a failed map read skips them.

use std::{collections::BTreeMap, fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
};

use oomwatch_common::reclaim::stall_bucket_upper_us;

use super::LabelValue;
use crate::model::{Model, reclaim::CgroupStalls};

/// The stall families, read from the model's sums at scrape time.
#[derive(Debug)]
pub struct StallCollector {
    pub model: Arc<Model>,
    /// The psi_memstall probes are attached: memstall times mean something.
    pub memstall: bool,
}

/// The log2 buckets whose upper edges become Prometheus `le` bounds: 128 µs,
/// 1.024 ms, 8.192 ms, 32.768 ms, 131.072 ms, 524.288 ms, 2.097152 s (+Inf).
/// Exact edges of the kernel's buckets, so no bucket is split or guessed.
pub const PROM_BUCKETS: [usize; 7] = [6, 9, 12, 14, 16, 18, 20];

/// The Prometheus histogram of one cgroup's stalls: `(le in seconds, count
/// in that le bucket only)` for [`PROM_BUCKETS`] and +Inf (`f64::MAX`), as
/// prometheus-client wants them (it accumulates), plus the total count.
pub fn prom_buckets(s: &CgroupStalls) -> ([(f64, u64); PROM_BUCKETS.len() + 1], u64) {
    let mut out = [(f64::MAX, 0u64); PROM_BUCKETS.len() + 1];
    let mut next = 0;
    for (k, &last) in PROM_BUCKETS.iter().enumerate() {
        out[k] = (stall_bucket_upper_us(last) as f64 / 1e6, s.buckets[next..=last].iter().sum());
        next = last + 1;
    }
    out[PROM_BUCKETS.len()] = (f64::MAX, s.buckets[next..].iter().sum());
    (out, s.buckets.iter().sum())
}

/// A histogram whose buckets were counted elsewhere (in the kernel).
#[derive(Debug)]
struct ConstHistogram<'a>(&'a CgroupStalls);

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let (buckets, count) = prom_buckets(self.0);
        encoder.encode_histogram::<NoLabelSet>(self.0.total_ns as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for StallCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let cgroups = self.model.reclaim_totals(|path| self.model.passes_filters(path));
        encode(encoder, &cgroups, self.memstall)
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

#[cfg(test)]
mod tests {
    use oomwatch_common::reclaim::stall_bucket;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::outputs::metrics::openmetrics_to_text;

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
    fn histogram_edges_are_the_kernel_bucket_edges() {
        let s = stalls(&[5_000, 5_000, 2_000_000, 300_000_000, 20_000_000_000], 0);
        let (prom, count) = prom_buckets(&s);
        assert_eq!(count, 5);
        let les: Vec<f64> = prom.iter().map(|(le, _)| *le).collect();
        assert_eq!(les, [0.000128, 0.001024, 0.008192, 0.032768, 0.131072, 0.524288, 2.097152, f64::MAX]);
        let counts: Vec<u64> = prom.iter().map(|(_, c)| *c).collect();
        // 5 µs x2 -> le 128 µs; 2 ms -> le 8.192 ms; 300 ms -> le 524 ms; 20 s -> +Inf.
        assert_eq!(counts, [2, 0, 1, 0, 0, 1, 0, 1]);
        assert_eq!(counts.iter().sum::<u64>(), count, "every stall lands in exactly one le bucket");
    }

    #[test]
    fn memstall_family_only_with_its_probes() {
        let mut cgroups = BTreeMap::new();
        cgroups.insert("/a".to_owned(), stalls(&[1_000], 2_500_000_000));
        let text = render(cgroups, true);
        assert!(text.lines().any(|l| l == r#"oomwatch_cgroup_memstall_seconds_total{cgroup="/a"} 2.5"#), "{text}");
    }
}
