//! What the journal reports about itself, as plain numbers the metrics
//! registry reads at scrape time.

use std::{collections::BTreeMap, time::Duration};

/// Upper bounds (seconds) of the commit latency buckets: an fsync on a good
/// disk is well under a millisecond, a busy one tens of milliseconds.
pub const LATENCY_BOUNDS: &[f64] = &[0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A Prometheus-style histogram: `counts[i]` observations were at most
/// `bounds[i]` (not cumulative), `counts[bounds.len()]` were larger.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { bounds: LATENCY_BOUNDS, counts: vec![0; LATENCY_BOUNDS.len() + 1], sum_seconds: 0.0, count: 0 }
    }
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.iter().position(|b| s <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum_seconds += s;
        self.count += 1;
    }

    /// Cumulative counts per bound, as the exposition formats want them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.counts)
            .map(|(b, c)| {
                total += c;
                (b, total)
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JournalStats {
    /// The database file plus its write-ahead log.
    pub size_bytes: u64,
    pub events_by_kind: BTreeMap<String, u64>,
    /// Age of the oldest event held.
    pub oldest_event_age: Option<Duration>,
    /// Each transaction's time from BEGIN to a returned (fsync'd) COMMIT.
    pub commit_latency: Histogram,
    /// Incidents' time from `append` to durable: what the target is about.
    pub incident_durable_latency: Histogram,
    /// Events not written, by [`super::DropReason::as_str`].
    pub dropped: BTreeMap<&'static str, u64>,
    /// Events deleted by retention, by kind.
    pub retention_dropped: BTreeMap<String, u64>,
    /// Amendments and state writes that failed (disk full, I/O error).
    pub failed_updates: u64,
    pub queue_len: usize,
    /// The last seq handed out.
    pub last_seq: u64,
    /// Every seq up to this was committed or counted as dropped.
    pub durable_seq: u64,
    /// A damage found while running (it is moved aside at the next start).
    pub damaged: Option<String>,
}
