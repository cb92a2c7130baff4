//! Delivery workers: each shipping sink (journald, OTLP, the rotated file)
//! reads the durable journal from a cursor of its own and hands batches to
//! its output, at least once:
//!
//! - the cursor (the last seq the sink has, or skipped for good) is kept in
//!   the journal's state area (`sink.<name>.cursor`) after each batch, so a
//!   restart resumes after the last batch known delivered; a batch in
//!   flight at a crash is sent again, with the same record uid
//!   (`<machine id>-<seq>-<time>`: the journal's seq survives restarts);
//! - a send that fails is retried, the whole batch from the first record
//!   not delivered, after 0.5 s doubling up to `max_retry_interval` (or the
//!   receiver's Retry-After); records an output refuses for good are
//!   counted and skipped;
//! - each sink runs on a thread of its own: a dead endpoint holds back its
//!   own cursor and nothing else; what it falls behind by is bounded by
//!   `max_backlog` (the oldest are then skipped and counted);
//! - the worker sleeps on the journal's commit signal, so an event goes
//!   out as soon as it is durable.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{
    delivery::{HostIdentity, Outcome, Record},
    file::{FileConfig, Fsync, RotatingFile},
    http_client::HttpClient,
    journal::{Journal, JournalReader, Query, StoredEvent},
    journald::{Journald, JournaldConfig},
    otlp::{Encoding, OtlpConfig, OtlpExporter},
};
use crate::config::{
    SinksConfig,
    shipping::{Delivery, FileFsync, OtlpEncoding, StartAt, Switch, sink_names},
};

const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long an idle worker waits for the journal before it looks again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What a sink has done since the daemon started, for metrics.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub name: String,
    /// The last seq delivered or skipped.
    pub cursor: AtomicU64,
    pub delivered: AtomicU64,
    /// Refused by the receiver for good (or unreadable in the journal).
    pub rejected: AtomicU64,
    /// Skipped because the sink fell more than `max_backlog` behind.
    pub dropped: AtomicU64,
    /// Sends that failed and were retried.
    pub send_failures: AtomicU64,
    /// False from a failed send to the next delivery.
    pub up: AtomicBool,
}

/// Where a sink sends.
pub enum Output {
    Journald(Journald),
    Otlp { exporter: OtlpExporter, runtime: tokio::runtime::Handle },
    /// Opened at the first send, and again after a failure.
    File { config: FileConfig, file: Option<RotatingFile> },
}

impl Output {
    /// One outcome per record, in order.
    fn send(&mut self, records: &[Record]) -> Vec<Outcome> {
        match self {
            Self::Journald(j) => j.send_batch(records),
            Self::Otlp { exporter, runtime } => runtime.block_on(exporter.export(records)),
            Self::File { config, file } => {
                if file.is_none() {
                    match open_file(config) {
                        Ok(f) => *file = Some(f),
                        Err(reason) => return vec![Outcome::retry(reason); records.len()],
                    }
                }
                let outcomes = file.as_mut().map(|f| f.write_batch(records)).unwrap_or_default();
                if outcomes.iter().any(|o| !o.is_delivered()) {
                    // Deleted or moved away underneath us, a full disk: start over.
                    *file = None;
                }
                outcomes
            }
        }
    }
}

fn open_file(config: &FileConfig) -> Result<RotatingFile, String> {
    if let Some(dir) = config.path.parent().filter(|d| !d.exists()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir).map_err(|e| format!("{}: creating the directory: {e}", dir.display()))?;
    }
    RotatingFile::open(config.clone()).map_err(|e| e.to_string())
}

/// One sink: its output, its settings and its place in the journal.
pub struct SinkWorker {
    pub stats: Arc<SinkStats>,
    output: Output,
    delivery: Delivery,
    journal: Arc<Journal>,
    host: HostIdentity,
}

/// The sinks `config` turns on, built (not yet running). A sink that
/// cannot be built (a journald socket path too long) is logged and left out.
pub fn build(config: &SinksConfig, journal: &Arc<Journal>, runtime: &tokio::runtime::Handle) -> Vec<SinkWorker> {
    let host = HostIdentity::read();
    let worker = |name: String, output: Output, delivery: Delivery| SinkWorker {
        stats: Arc::new(SinkStats { name, up: AtomicBool::new(true), ..SinkStats::default() }),
        output,
        delivery,
        journal: journal.clone(),
        host: host.clone(),
    };
    let mut out = Vec::new();
    let j = &config.journald;
    let journald_on = match j.enabled {
        Switch::Fixed(on) => on,
        Switch::Auto => j.socket.exists(),
    };
    if journald_on {
        match Journald::new(&JournaldConfig { socket: j.socket.clone(), timeout: j.timeout }) {
            Ok(sender) => out.push(worker("journald".into(), Output::Journald(sender), j.delivery())),
            Err(e) => log::error!("sinks.journald: {e}; not started"),
        }
    }
    let (otlp_names, file_names) = sink_names(&config.otlp, &config.file);
    for (s, name) in config.otlp.iter().zip(otlp_names) {
        let mut c = OtlpConfig::new(s.endpoint.clone());
        c.encoding = match s.encoding {
            OtlpEncoding::Protobuf => Encoding::Protobuf,
            OtlpEncoding::Json => Encoding::Json,
        };
        c.headers = s.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        c.timeout = s.timeout;
        match OtlpExporter::new(&c, &host, HttpClient::new()) {
            Ok(exporter) => out.push(worker(name, Output::Otlp { exporter, runtime: runtime.clone() }, s.delivery())),
            Err(e) => log::error!("sink {name}: {e}; not started"),
        }
    }
    for (s, name) in config.file.iter().zip(file_names) {
        let fsync = match s.fsync {
            FileFsync::Batch => Fsync::Batch,
            FileFsync::Never => Fsync::Never,
        };
        let config = FileConfig { path: s.path.clone(), max_bytes: s.max_size_mib << 20, backups: s.backups, fsync };
        out.push(worker(name, Output::File { config, file: None }, s.delivery()));
    }
    out
}

/// `<machine id, else boot id>-<seq>-<time>`: the journal's seqs keep
/// growing across restarts, and with the event's time two different
/// events never share a uid even if a journal is started afresh.
pub fn journal_record_uid(host: &HostIdentity, seq: u64, time: &str) -> String {
    let id = if host.machine_id.is_empty() { &host.boot_id } else { &host.machine_id };
    format!("{id}-{seq}-{time}")
}

fn cursor_key(name: &str) -> String {
    format!("sink.{name}.cursor")
}

impl SinkWorker {
    pub fn name(&self) -> &str {
        &self.stats.name
    }

    /// Runs until the process ends.
    pub fn run(mut self) {
        let mut reader = loop {
            match self.journal.reader() {
                Ok(r) => break r,
                Err(e) => {
                    log::error!("sink {}: {e}; trying again in 10s", self.name());
                    std::thread::sleep(Duration::from_secs(10));
                }
            }
        };
        let cursor = self.initial_cursor(&reader);
        self.stats.cursor.store(cursor, Ordering::Relaxed);
        log::info!("sink {}: delivering events after seq {cursor}", self.name());
        let mut retry = FIRST_RETRY;
        // The last wait for the next event returned at once.
        let mut woke_at_once = false;
        loop {
            match self.step(&reader) {
                Ok(Step::Idle) => {
                    retry = FIRST_RETRY;
                    let waited = std::time::Instant::now();
                    let at_once = self.journal.wait_durable(self.cursor() + 1, IDLE_WAIT) && waited.elapsed() < Duration::from_millis(1);
                    // Usually the next event was committed just after the
                    // read: read again at once (sleeping here cost that
                    // event 100 ms). Twice in a row means durable but not
                    // readable (a commit that failed moves the watermark
                    // without the table): then no spin.
                    if at_once && woke_at_once {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    woke_at_once = at_once && !woke_at_once;
                }
                Ok(Step::Progress) => {
                    retry = FIRST_RETRY;
                    woke_at_once = false;
                }
                Ok(Step::Retry(after)) => {
                    std::thread::sleep(after.unwrap_or(retry).max(retry));
                    retry = (retry * 2).min(self.delivery.max_retry_interval);
                }
                Err(e) => {
                    log::warn!("sink {}: reading the journal: {e}; trying again in 5s", self.name());
                    std::thread::sleep(Duration::from_secs(5));
                    if let Ok(r) = self.journal.reader() {
                        reader = r;
                    }
                }
            }
        }
    }

    fn cursor(&self) -> u64 {
        self.stats.cursor.load(Ordering::Relaxed)
    }

    /// The stored cursor, else where `start_at` says (stored at once, so a
    /// restart before the first event does not move it).
    fn initial_cursor(&self, reader: &JournalReader) -> u64 {
        let key = cursor_key(self.name());
        match reader.state(&key) {
            Ok(Some(v)) => match v.parse() {
                Ok(seq) => return seq,
                Err(_) => log::warn!("sink {}: stored cursor {v:?} is not a seq; starting as configured", self.name()),
            },
            Ok(None) => {}
            Err(e) => log::warn!("sink {}: reading its cursor: {e}; starting as configured", self.name()),
        }
        let seq = match self.delivery.start_at {
            StartAt::End => self.journal.last_seq(),
            StartAt::Beginning => 0,
        };
        let _ = self.journal.put_state(key, seq.to_string());
        seq
    }

    fn save_cursor(&self, seq: u64) {
        self.stats.cursor.store(seq, Ordering::Relaxed);
        // A cursor write that is lost (queue full, crash) only means the
        // batch is sent again.
        let _ = self.journal.put_state(cursor_key(self.name()), seq.to_string());
    }

    /// Skips the oldest events when more than `max_backlog` wait. Counted
    /// in stored events, not seqs: seqs skip ahead at a restart.
    fn bound_backlog(&self, reader: &JournalReader) -> Result<(), super::journal::JournalError> {
        let (cursor, max) = (self.cursor(), self.delivery.max_backlog);
        if self.journal.last_seq().saturating_sub(cursor) <= max {
            return Ok(());
        }
        let waiting = reader.count_after(cursor)?;
        if waiting <= max {
            return Ok(());
        }
        let skip = waiting - max;
        if let Some(skip_to) = reader.nth_seq_after(cursor, skip)? {
            self.stats.dropped.fetch_add(skip, Ordering::Relaxed);
            log::warn!("sink {}: {waiting} events behind, more than max_backlog {max}; skipped the oldest {skip} (seqs {}..={skip_to})", self.name(), cursor + 1);
            self.save_cursor(skip_to);
        }
        Ok(())
    }

    fn read_batch(&self, reader: &JournalReader) -> Result<(Vec<StoredEvent>, u64), super::journal::JournalError> {
        // The watermark first: if nothing lies between the cursor and it,
        // those seqs were dropped or evicted, and the cursor moves past them.
        let through = reader.committed_through()?;
        let q = Query { after_seq: Some(self.cursor()), through_seq: Some(through), limit: Some(self.delivery.batch), ..Query::default() };
        Ok((reader.query(&q)?, through))
    }

    fn step(&mut self, reader: &JournalReader) -> Result<Step, super::journal::JournalError> {
        self.bound_backlog(reader)?;
        let (events, through) = self.read_batch(reader)?;
        if events.is_empty() {
            if through > self.cursor() {
                self.save_cursor(through);
            }
            return Ok(Step::Idle);
        }
        let mut records = Vec::with_capacity(events.len());
        let mut seqs = Vec::with_capacity(events.len());
        for e in &events {
            match Record::from_line(&e.json, &self.host) {
                Ok(mut r) => {
                    r.uid = journal_record_uid(&self.host, e.seq, r.json.get("time").and_then(|t| t.as_str()).unwrap_or(""));
                    records.push(r);
                    seqs.push(e.seq);
                }
                Err(err) => {
                    log::warn!("sink {}: event {} in the journal is unreadable ({err}); skipped", self.name(), e.seq);
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let outcomes = self.output.send(&records);
        Ok(self.account(&seqs, &outcomes, events.last().map_or(0, |e| e.seq)))
    }

    /// Moves the cursor past the leading delivered or rejected records.
    fn account(&self, seqs: &[u64], outcomes: &[Outcome], last_read: u64) -> Step {
        let mut advanced_to = None;
        for (seq, outcome) in seqs.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Rejected { reason } => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    log::warn!("sink {}: event {seq} refused for good: {reason}", self.name());
                }
                Outcome::Retry { after, reason } => {
                    if let Some(to) = advanced_to {
                        self.save_cursor(to);
                    }
                    self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    if self.stats.up.swap(false, Ordering::Relaxed) {
                        log::warn!("sink {}: {reason}; retrying with backoff (events wait in the journal)", self.name());
                    }
                    return Step::Retry(*after);
                }
            }
            advanced_to = Some(*seq);
        }
        if !self.stats.up.swap(true, Ordering::Relaxed) {
            log::info!("sink {}: delivering again", self.name());
        }
        // Unreadable events after the last record are skipped too.
        self.save_cursor(last_read.max(advanced_to.unwrap_or(0)));
        Step::Progress
    }
}

enum Step {
    /// Nothing to send.
    Idle,
    Progress,
    Retry(Option<Duration>),
}

#[cfg(test)]
mod tests {
    use std::{
        path::{Path, PathBuf},
        time::SystemTime,
    };

    use super::*;
    use crate::{
        outputs::journal::JournalConfig,
        wire::{Event, EventBody, OomKill},
    };

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("oomwatch-shipping-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn kill(pid: u32) -> Event {
        Event {
            body: EventBody::OomKill(Box::new(OomKill::of_pid(pid))),
            time: crate::wire::rfc3339(SystemTime::now()),
            cgroup: "/a".into(),
            ktime_ns: Some(1),
            seq: 0,
        }
    }

    fn host() -> HostIdentity {
        HostIdentity { hostname: "h".into(), boot_id: "b".repeat(32), machine_id: "m".repeat(32) }
    }

    fn file_worker(journal: &Arc<Journal>, path: &Path, delivery: Delivery) -> SinkWorker {
        let config = FileConfig { path: path.to_owned(), max_bytes: 1 << 20, backups: 1, fsync: Fsync::Batch };
        SinkWorker {
            stats: Arc::new(SinkStats { name: "file".into(), up: AtomicBool::new(true), ..SinkStats::default() }),
            output: Output::File { config, file: None },
            delivery,
            journal: journal.clone(),
            host: host(),
        }
    }

    /// Steps until the sink has nothing left to send.
    fn drain(w: &mut SinkWorker, journal: &Journal) {
        assert!(journal.flush(Duration::from_secs(10)));
        let reader = journal.reader().unwrap();
        let cursor = w.initial_cursor(&reader);
        w.stats.cursor.store(cursor, Ordering::Relaxed);
        for _ in 0..100 {
            if matches!(w.step(&reader).unwrap(), Step::Idle) {
                assert!(journal.flush(Duration::from_secs(10)));
                return;
            }
        }
        panic!("the sink never caught up");
    }

    fn seqs_in(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_sink_resumes_from_its_stored_cursor_without_repeating() {
        let d = dir("resume");
        let out = d.0.join("logs/events.json");
        let journal = Arc::new(Journal::open(JournalConfig::new(d.0.join("state"))).unwrap());
        let delivery = Delivery { batch: 2, start_at: StartAt::Beginning, ..Delivery::default() };
        for pid in 1..=5 {
            journal.append_event(&mut kill(pid));
        }
        drain(&mut file_worker(&journal, &out, delivery.clone()), &journal);
        assert_eq!(seqs_in(&out), vec![1, 2, 3, 4, 5], "in batches of two, in order, directory created");
        // A new worker (the daemon started again) takes up after seq 5.
        for pid in 6..=7 {
            journal.append_event(&mut kill(pid));
        }
        let mut again = file_worker(&journal, &out, delivery);
        drain(&mut again, &journal);
        assert_eq!(seqs_in(&out), (1..=7).collect::<Vec<_>>());
        assert_eq!(again.stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(journal.reader().unwrap().state("sink.file.cursor").unwrap().as_deref(), Some("7"));
    }

    #[test]
    fn a_new_sink_starts_at_the_end_and_a_bounded_backlog_counts_what_it_skips() {
        let d = dir("bounds");
        let out = d.0.join("events.json");
        let journal = Arc::new(Journal::open(JournalConfig::new(d.0.join("state"))).unwrap());
        for pid in 1..=3 {
            journal.append_event(&mut kill(pid));
        }
        let mut w = file_worker(&journal, &out, Delivery { max_backlog: 4, ..Delivery::default() });
        drain(&mut w, &journal);
        assert_eq!(seqs_in(&out), Vec::<u64>::new(), "start_at = end: nothing from before");
        for pid in 4..=13 {
            journal.append_event(&mut kill(pid));
        }
        drain(&mut w, &journal);
        assert_eq!(seqs_in(&out), vec![10, 11, 12, 13], "the newest max_backlog");
        assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn an_unwritable_file_is_retried_and_nothing_moves_the_cursor() {
        let d = dir("retry");
        // A directory where the file should be: every open fails.
        let out = d.0.join("events.json");
        std::fs::create_dir_all(&out).unwrap();
        let journal = Arc::new(Journal::open(JournalConfig::new(d.0.join("state"))).unwrap());
        let mut w = file_worker(&journal, &out, Delivery { start_at: StartAt::Beginning, ..Delivery::default() });
        journal.append_event(&mut kill(1));
        assert!(journal.flush(Duration::from_secs(10)));
        let reader = journal.reader().unwrap();
        w.stats.cursor.store(w.initial_cursor(&reader), Ordering::Relaxed);
        assert!(matches!(w.step(&reader).unwrap(), Step::Retry(None)));
        assert_eq!(w.cursor(), 0);
        assert_eq!(w.stats.send_failures.load(Ordering::Relaxed), 1);
        assert!(!w.stats.up.load(Ordering::Relaxed));
        std::fs::remove_dir(&out).unwrap();
        assert!(matches!(w.step(&reader).unwrap(), Step::Progress));
        assert_eq!((w.cursor(), seqs_in(&out)), (1, vec![1]));
        assert!(w.stats.up.load(Ordering::Relaxed));
    }

    #[test]
    fn record_uids_name_the_machine_and_the_journal_seq() {
        assert_eq!(journal_record_uid(&host(), 7, "t"), format!("{}-7-t", "m".repeat(32)));
        let no_machine = HostIdentity { machine_id: String::new(), ..host() };
        assert_eq!(journal_record_uid(&no_machine, 7, "t"), format!("{}-7-t", "b".repeat(32)));
    }
}
