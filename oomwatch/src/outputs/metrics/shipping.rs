//! The shipping sinks' series (outputs::shipping), read at scrape time.
//! Only configured sinks have series.

use std::{fmt, sync::Arc, sync::atomic::Ordering::Relaxed};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::LabelValue;
use crate::outputs::{journal::Journal, shipping::SinkStats};

pub struct ShippingCollector {
    pub sinks: Vec<Arc<SinkStats>>,
    pub journal: Arc<Journal>,
}

impl fmt::Debug for ShippingCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShippingCollector")
    }
}

impl Collector for ShippingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if self.sinks.is_empty() {
            return Ok(());
        }
        let last = self.journal.last_seq();
        let mut e = encoder.encode_descriptor(
            "sink_backlog_events",
            "Events published that the sink has not yet delivered (they wait in the journal)",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.sinks {
            let backlog = last.saturating_sub(s.cursor.load(Relaxed));
            ConstGauge::new(i64::try_from(backlog).unwrap_or(i64::MAX)).encode(e.encode_family(&[("sink", LabelValue(&s.name))])?)?;
        }
        let mut e = encoder.encode_descriptor(
            "sink_events",
            "Events by sink and result: delivered; rejected (refused for good by the receiver); dropped (skipped: the sink fell more than max_backlog behind)",
            None,
            MetricType::Counter,
        )?;
        for s in &self.sinks {
            for (result, n) in [("delivered", &s.delivered), ("rejected", &s.rejected), ("dropped", &s.dropped)] {
                ConstCounter::new(n.load(Relaxed)).encode(e.encode_family(&[("sink", LabelValue(&s.name)), ("result", LabelValue(result))])?)?;
            }
        }
        let mut e = encoder.encode_descriptor("sink_send_failures", "Sends that failed and are retried with backoff (receiver down, busy or slow)", None, MetricType::Counter)?;
        for s in &self.sinks {
            ConstCounter::new(s.send_failures.load(Relaxed)).encode(e.encode_family(&[("sink", LabelValue(&s.name))])?)?;
        }
        let mut e = encoder.encode_descriptor("sink_up", "0 while the sink's sends fail (from the first failure to the next delivery), else 1", None, MetricType::Gauge)?;
        for s in &self.sinks {
            ConstGauge::new(i64::from(s.up.load(Relaxed))).encode(e.encode_family(&[("sink", LabelValue(&s.name))])?)?;
        }
        Ok(())
    }
}
