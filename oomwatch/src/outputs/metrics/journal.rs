//! The journal's own series, read from its stats at scrape time. With no
//! journal (turned off, or the state directory not writable) only
//! `oomwatch_journal_enabled 0` is there, so a dashboard can say why.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::ConstGauge,
    },
};

use super::LabelValue;
use crate::outputs::journal::{Histogram, Journal};

pub struct JournalCollector {
    pub journal: Option<Arc<Journal>>,
}

impl fmt::Debug for JournalCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JournalCollector")
    }
}

/// A histogram counted by the journal's writer.
struct ConstHistogram<'a>(&'a Histogram);

impl fmt::Debug for ConstHistogram<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConstHistogram")
    }
}

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let h = self.0;
        // prometheus-client accumulates: per-bucket counts, +Inf last.
        let buckets: Vec<(f64, u64)> = h.bounds.iter().copied().chain([f64::MAX]).zip(h.counts.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for JournalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = encoder.encode_descriptor("journal_enabled", "1 when events are kept in the durable journal; 0 when it is off or could not be opened (the daemon log says why)", None, MetricType::Gauge)?;
        ConstGauge::new(i64::from(self.journal.is_some())).encode(e)?;
        let Some(journal) = &self.journal else { return Ok(()) };
        let s = journal.stats();
        let e = encoder.encode_descriptor("journal_size_bytes", "Size of the journal file and its write-ahead log", None, MetricType::Gauge)?;
        ConstGauge::new(s.size_bytes as i64).encode(e)?;
        let mut e = encoder.encode_descriptor("journal_events", "Events held in the journal, by kind", None, MetricType::Gauge)?;
        for (kind, n) in &s.events_by_kind {
            ConstGauge::new(*n as i64).encode(e.encode_family(&[("kind", LabelValue(kind))])?)?;
        }
        if let Some(age) = s.oldest_event_age {
            let e = encoder.encode_descriptor("journal_oldest_event_age_seconds", "Age of the oldest event the journal holds", None, MetricType::Gauge)?;
            ConstGauge::new(age.as_secs_f64()).encode(e)?;
        }
        let e = encoder.encode_descriptor("journal_commit_seconds", "Time of each journal transaction, from begin to a durable (fsync'd) commit", None, MetricType::Histogram)?;
        ConstHistogram(&s.commit_latency).encode(e)?;
        let e = encoder.encode_descriptor(
            "journal_incident_durable_seconds",
            "Time from a kill's or alert's publication to its being durable in the journal",
            None,
            MetricType::Histogram,
        )?;
        ConstHistogram(&s.incident_durable_latency).encode(e)?;
        let mut e = encoder.encode_descriptor(
            "journal_dropped",
            "Events not written to the journal, by reason (queue_full: the disk was too slow; disk_full; io_error)",
            None,
            MetricType::Counter,
        )?;
        for reason in ["queue_full", "disk_full", "io_error", "closed"] {
            let n = s.dropped.get(reason).copied().unwrap_or(0);
            ConstCounter::new(n).encode(e.encode_family(&[("reason", reason)])?)?;
        }
        let mut e = encoder.encode_descriptor("journal_retention_dropped", "Events deleted by retention (size or age), by kind", None, MetricType::Counter)?;
        for (kind, n) in &s.retention_dropped {
            ConstCounter::new(*n).encode(e.encode_family(&[("kind", LabelValue(kind))])?)?;
        }
        let e = encoder.encode_descriptor(
            "journal_moved_aside",
            "Damaged journal files moved aside at start (a new journal was started; the daemon log names both paths)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(u64::from(journal.moved_aside().is_some())).encode(e)?;
        let e = encoder.encode_descriptor("journal_queue_events", "Events waiting for the journal's writer", None, MetricType::Gauge)?;
        ConstGauge::new(s.queue_len as i64).encode(e)?;
        Ok(())
    }
}
