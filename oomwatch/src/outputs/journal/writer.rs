//! The write side: a bounded queue between the daemon's threads and one
//! writer thread that owns the database connection, plus a checkpointer.
//!
//! Callers never wait on the disk: `append` takes a mutex for a push and
//! returns. Incidents (kills, alerts, ...), amendments and state writes wake
//! the writer at once and are committed in the next transaction; high-rate
//! kinds wait for a full batch or `batch_linger`. When the queue is full,
//! an incident takes the place of the oldest waiting high-rate event. When
//! the disk is full or failing, the writer retries once a second and the
//! events it cannot write are counted by reason, with one log line when the
//! episode starts and one when writes resume.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, ErrorCode, OptionalExtension as _, TransactionBehavior, params};

use super::{
    INCIDENT_KINDS, JournalConfig, JournalError, JournalReader, JournalStats, Record, day_of, is_incident, now_ms,
    schema::{self, META_COMMITTED_THROUGH, META_SEQ_LEASE, OpenFailure},
    stats::Histogram,
};
use super::intent::{self, IntentLog};
use crate::wire::Event;

/// Seqs are leased from the database in blocks: the lease is stored (in a
/// commit) before the seqs in it are handed out, so after a crash the next
/// run starts past every seq a client may have seen, even one whose event
/// never reached the disk. A clean close stores the exact last seq.
const SEQ_LEASE: u64 = 65_536;
/// While writes fail, the writer tries again this often.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Rows deleted per retention transaction: small enough that a kill
/// arriving meanwhile waits a few milliseconds at most.
const RETENTION_CHUNK: i64 = 1_000;
/// Pages handed back to the file system per retention transaction.
const VACUUM_PAGES: i64 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The writer fell behind (a slow disk or a flood): the queue was full.
    QueueFull,
    /// The file system is full (SQLITE_FULL / ENOSPC).
    DiskFull,
    /// Any other write failure.
    IoError,
    /// Appended after the journal was closed (or its writer stopped).
    Closed,
}

impl DropReason {
    pub const ALL: [Self; 4] = [Self::QueueFull, Self::DiskFull, Self::IoError, Self::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::DiskFull => "disk_full",
            Self::IoError => "io_error",
            Self::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn of(e: &rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::DiskFull,
            _ => Self::IoError,
        }
    }
}

/// What `append` did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// On the queue; durable once [`Journal::durable_seq`] reaches it.
    Queued(u64),
    Dropped(u64, DropReason),
}

impl Appended {
    pub fn seq(self) -> u64 {
        match self {
            Self::Queued(s) | Self::Dropped(s, _) => s,
        }
    }
}

/// One change to the state area; the ops of one `update_state` call are
/// applied in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum StateOp {
    Put { key: String, value: String },
    Delete { key: String },
    /// Every key starting with `prefix` (to replace a set, e.g. the firing
    /// alerts, delete the prefix and put the new members in the same call).
    DeletePrefix { prefix: String },
}

/// A damaged journal found at open, and where it was moved.
#[derive(Clone, Debug, PartialEq)]
pub struct MovedAside {
    pub from: PathBuf,
    pub to: PathBuf,
    pub reason: String,
}

enum Op {
    Append(Record),
    Amend { seq: u64, json: String },
    State(Vec<StateOp>),
}

struct Pending {
    op: Op,
    at: Instant,
    /// Committed at once, and never evicted for room.
    urgent: bool,
}

impl Pending {
    fn is_bulk_append(&self) -> bool {
        !self.urgent && matches!(self.op, Op::Append(_))
    }
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<Pending>,
    /// High-rate appends in `ops`.
    bulk: usize,
    /// Urgent ops in `ops` (incidents, amendments, state writes).
    urgent: usize,
    /// Everything queued is to be written now.
    flush: bool,
    oldest_bulk_at: Option<Instant>,
    /// Ops taken by the writer so far / pushed so far: `flush` waits for
    /// the first to reach the second.
    taken: u64,
    pushed: u64,
    closed: bool,
    /// Set by the writer while writes fail: overflow is counted under this.
    failing: Option<DropReason>,
    /// Queue-full drops of the current episode, and since the last take.
    overflow_episode: u64,
    overflow_since_take: u64,
}

#[derive(Default)]
struct Progress {
    /// Ops the writer has finished with (written or dropped).
    done: u64,
    /// Every seq up to this is written or was dropped.
    durable_seq: u64,
    /// Incidents written ahead of high-rate events with lower seqs.
    durable_ahead: std::collections::BTreeSet<u64>,
    /// What to run once a seq is kept ([`Journal::when_kept`]).
    on_durable: Vec<(u64, OnDurable)>,
}

/// Run by the writer once a seq is durable.
pub type OnDurable = Box<dyn FnOnce() + Send>;

/// Pending [`Journal::when_durable`] calls at most: past it (the disk
/// stalls), a new one is dropped and its seq reaches readers another way.
const ON_DURABLE_MAX: usize = 1024;

impl Progress {
    fn is_durable(&self, seq: u64) -> bool {
        seq <= self.durable_seq || self.durable_ahead.contains(&seq)
    }
}

#[derive(Default)]
struct WriterStats {
    events_by_kind: BTreeMap<String, u64>,
    oldest_time_ms: Option<i64>,
    commit_latency: Histogram,
    incident_durable_latency: Histogram,
    retention_dropped: BTreeMap<String, u64>,
    failed_updates: u64,
}

struct Shared {
    path: PathBuf,
    config: JournalConfig,
    queue: Mutex<Queue>,
    work: Condvar,
    progress: Mutex<Progress>,
    progressed: Condvar,
    /// The next seq to hand out.
    next_seq: AtomicU64,
    dropped: [AtomicU64; 4],
    stats: Mutex<WriterStats>,
    commits: AtomicU64,
    /// Set when a damage was found while running (the full check, or a
    /// write that SQLite refused as corrupt).
    damaged: Mutex<Option<String>>,
    /// Kills written ahead of their commit (`intent.rs`).
    intent: Mutex<IntentLog>,
}

impl Shared {
    fn new(path: PathBuf, config: JournalConfig, last: u64, stats: WriterStats) -> Self {
        let config_dir = config.dir.clone();
        Self {
            path,
            config,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            progress: Mutex::new(Progress { durable_seq: last, ..Default::default() }),
            progressed: Condvar::new(),
            next_seq: AtomicU64::new(last + 1),
            dropped: Default::default(),
            stats: Mutex::new(stats),
            commits: AtomicU64::new(0),
            damaged: Mutex::new(None),
            intent: Mutex::new(IntentLog::open(&config_dir)),
        }
    }

    /// One log line; the file is moved aside at the next start.
    fn note_damage(&self, reason: &str) {
        let mut damaged = lock(&self.damaged);
        if damaged.is_none() {
            log::error!(
                "journal: {} is damaged ({reason}); it is moved aside and a new journal started at the next start",
                self.path.display()
            );
            schema::write_marker(&self.path, reason);
            *damaged = Some(reason.to_owned());
        }
    }
}

/// A writable connection on a journal that passed the checks at open.
struct Opened {
    conn: Connection,
    loaded: Loaded,
    moved_aside: Option<MovedAside>,
}

/// Opens the journal and reads what the writer needs; a file found damaged
/// on the way is moved aside once and a new journal started in its place.
fn open_sound(path: &Path) -> Result<Opened, JournalError> {
    let (conn, moved_aside) = match schema::open_writer(path) {
        Ok(conn) => (conn, None),
        Err(OpenFailure::Fatal(e)) => return Err(e),
        Err(OpenFailure::Damaged(damage)) => {
            let (conn, moved) = start_afresh(path, damage.to_string())?;
            (conn, Some(moved))
        }
    };
    let sqlite = |e| JournalError::sqlite(path, e);
    match load(&conn) {
        Ok(loaded) => Ok(Opened { conn, loaded, moved_aside }),
        // The cheap checks passed but reading what the writer needs did
        // not: damaged all the same.
        Err(e) if schema::is_damage(&e) && moved_aside.is_none() => {
            drop(conn);
            let (conn, moved) = start_afresh(path, e.to_string())?;
            let loaded = load(&conn).map_err(sqlite)?;
            Ok(Opened { conn, loaded, moved_aside: Some(moved) })
        }
        Err(e) => Err(sqlite(e)),
    }
}

/// Moves the damaged file at `path` aside and creates a new journal there.
fn start_afresh(path: &Path, damage: String) -> Result<(Connection, MovedAside), JournalError> {
    let to = schema::move_aside(path)?;
    log::warn!("journal: {} is damaged ({damage}); moved it to {} and started a new journal", path.display(), to.display());
    let conn = match schema::open_writer(path) {
        Ok(conn) => conn,
        Err(OpenFailure::Fatal(e)) => return Err(e),
        Err(OpenFailure::Damaged(again)) => {
            return Err(JournalError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(format!("a new journal is damaged at once: {again}")),
            });
        }
    };
    Ok((conn, MovedAside { from: path.to_owned(), to, reason: damage }))
}

fn spawn_writer(mut writer: Writer) -> Result<JoinHandle<()>, JournalError> {
    let path = writer.shared.path.clone();
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            let shared = writer.shared.clone();
            if std::panic::catch_unwind(AssertUnwindSafe(|| writer.run())).is_err() {
                log::error!("journal: the writer thread panicked; events are no longer kept");
            }
            // Whatever happened, later appends are counted as closed
            // and flush() stops waiting.
            let mut q = lock(&shared.queue);
            q.closed = true;
            let left = q.ops.len() as u64;
            q.ops.clear();
            shared.dropped[DropReason::Closed.index()].fetch_add(left, Ordering::Relaxed);
            let pushed = q.pushed;
            drop(q);
            lock(&shared.progress).done = pushed;
            shared.progressed.notify_all();
        })
        .map_err(|source| JournalError::Io { path, source })
}

/// The checkpointer stops when the returned sender is dropped.
fn spawn_checkpointer(shared: &Arc<Shared>, conn: Connection) -> Result<(mpsc::Sender<()>, JoinHandle<()>), JournalError> {
    let (stop, stopped) = mpsc::channel();
    let shared = shared.clone();
    let path = shared.path.clone();
    let handle = std::thread::Builder::new()
        .name("journal-checkpoint".into())
        .spawn(move || checkpoint_loop(&shared, &conn, &stopped))
        .map_err(|source| JournalError::Io { path, source })?;
    Ok((stop, handle))
}

/// A journal works without its full check, so failing to start one is
/// worth a debug line only.
fn spawn_full_check(shared: &Arc<Shared>) -> Option<(rusqlite::InterruptHandle, JoinHandle<()>)> {
    let conn = match schema::open_reader(&shared.path) {
        Ok(conn) => conn,
        Err(e) => {
            log::debug!("journal: no full check: {e}");
            return None;
        }
    };
    let interrupt = conn.get_interrupt_handle();
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("journal-check".into())
        .spawn(move || match schema::full_check(&conn, &shared.path) {
            Ok(None) => log::debug!("journal: {} passed its full check", shared.path.display()),
            Ok(Some(reason)) => shared.note_damage(&reason),
            Err(e) => log::debug!("journal: full check: {e}"),
        })
        .map(|handle| (interrupt, handle))
        .map_err(|e| log::debug!("journal: no full check: {e}"))
        .ok()
}

/// The [`Journal::when_kept`] calls this batch settled: those to run
/// (their seq was committed), the rest of the settled ones dropped (a failed
/// commit, or a seq the writer dropped); the unsettled stay.
fn take_ready(p: &mut Progress, committed: bool) -> Vec<OnDurable> {
    let mut ready = Vec::new();
    let waiting = std::mem::take(&mut p.on_durable);
    for (seq, then) in waiting {
        if !p.is_durable(seq) {
            p.on_durable.push((seq, then));
        } else if committed {
            ready.push(then);
        }
    }
    ready
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The daemon's handle on the journal. Share it behind an `Arc`; dropping
/// (or [`Journal::close`]) writes what is queued and stops the threads.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    moved_aside: Option<MovedAside>,
    /// The full check running in the background, stopped at close.
    check: Option<(rusqlite::InterruptHandle, JoinHandle<()>)>,
    /// Held while open (released by the kernel if the process dies).
    _writer_lock: std::fs::File,
}

impl Journal {
    /// Opens (or creates) `<dir>/journal.db`. A damaged file is moved aside
    /// (one log line naming both paths; see [`Journal::moved_aside`]) and a
    /// new journal started. A directory that cannot be written is
    /// [`JournalError::ReadOnly`].
    pub fn open(config: JournalConfig) -> Result<Self, JournalError> {
        schema::prepare_dir(&config.dir)?;
        let path = config.path();
        let writer_lock = schema::lock_writer(&config.dir, &path)?;
        let Opened { conn, loaded: Loaded { last, stats, cgroup_ids }, moved_aside } = open_sound(&path)?;
        let lease_until = last + SEQ_LEASE;
        schema::meta_set(&conn, META_SEQ_LEASE, to_i64(lease_until))
            .map_err(|e| JournalError::sqlite(&path, e))?;
        let checkpoint_conn = schema::open_checkpointer(&path)?;
        let shared = Arc::new(Shared::new(path, config, last, stats));
        let writer = Writer {
            conn,
            shared: shared.clone(),
            lease_until,
            bytes_since_retention: 0,
            last_retention: Instant::now(),
            retention_pending: true,
            evicting: false,
            failing_since: None,
            cgroup_ids,
            last_took_urgent_only: false,
            wal: None,
            wal_sync_failing: false,
        };
        // Read before the writer runs: it empties the file once it commits.
        let left_over = intent::left_over(&shared.config.dir);
        let writer = spawn_writer(writer)?;
        let checkpointer = spawn_checkpointer(&shared, checkpoint_conn)?;
        let check = spawn_full_check(&shared);
        let journal = Self { shared, writer: Some(writer), checkpointer: Some(checkpointer), moved_aside, check, _writer_lock: writer_lock };
        journal.import_left_over(left_over);
        Ok(journal)
    }

    /// The kills a previous run wrote ahead of their commit and died before
    /// committing: they were shown to tail clients, so they go in now (by
    /// their seq: a kill the database holds is not added twice).
    fn import_left_over(&self, lines: std::io::Result<Vec<String>>) {
        let dir = &self.shared.config.dir;
        let lines = match lines {
            Ok(lines) => lines,
            Err(e) => {
                log::warn!("journal: {}: {e}; kills it may hold are not imported", dir.join(intent::INTENT_FILE).display());
                return;
            }
        };
        let mut imported = 0;
        for line in lines {
            match serde_json::from_str::<Event>(&line) {
                Ok(event) if event.seq > 0 => {
                    if matches!(self.append(super::Record::from_event(&event, line)), Appended::Queued(_)) {
                        imported += 1;
                    }
                }
                _ => log::warn!("journal: {}: a line that is not an event with a seq is skipped", dir.join(intent::INTENT_FILE).display()),
            }
        }
        if imported > 0 && self.flush(Duration::from_secs(10)) {
            log::info!("journal: {imported} kill(s) the last run showed before their commit are kept (by seq, never twice)");
        }
    }

    /// Writes the kill `seq`'s line ahead of its commit; true once written
    /// (it survives the daemon's death from then). `intent.rs`.
    pub fn keep_now(&self, seq: u64, json: &str) -> bool {
        lock(&self.shared.intent).write(seq, json)
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Set when the file found at open was damaged and moved aside.
    pub fn moved_aside(&self) -> Option<&MovedAside> {
        self.moved_aside.as_ref()
    }

    /// A read-only connection of its own, for queries from this process.
    pub fn reader(&self) -> Result<JournalReader, JournalError> {
        JournalReader::open_path(&self.shared.path)
    }

    /// Hands out the next seq. The event bus calls this under its own lock,
    /// so seqs follow publication order; it never touches the disk.
    pub fn next_seq(&self) -> u64 {
        self.shared.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The last seq handed out (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.shared.next_seq.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Every seq up to this is on disk, unless it was counted as dropped.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.shared.progress).durable_seq
    }

    /// Queues `event` (a seq is assigned when it has none) and returns at once.
    pub fn append_event(&self, event: &mut Event) -> Appended {
        if event.seq == 0 {
            event.seq = self.next_seq();
        } else {
            self.saw_seq(event.seq);
        }
        match serde_json::to_string(event) {
            Ok(json) => self.push(Record::from_event(event, json)),
            Err(e) => {
                log::debug!("journal: event {} not serializable: {e}", event.seq);
                self.count_drop(DropReason::IoError, 1);
                Appended::Dropped(event.seq, DropReason::IoError)
            }
        }
    }

    /// Queues a record whose JSON line is already made (the bus serializes
    /// each event once). A record with seq 0 gets the next seq, written into
    /// its JSON too.
    pub fn append(&self, mut record: Record) -> Appended {
        if record.seq == 0 {
            record.seq = self.next_seq();
            record.json = with_seq(&record.json, record.seq);
        } else {
            self.saw_seq(record.seq);
        }
        self.push(record)
    }

    /// Replaces the stored JSON of `seq` (a kill once its exit, kernel
    /// report or names are known). Committed at once; a seq the journal
    /// does not hold (dropped, or gone by retention) is left alone.
    pub fn amend(&self, seq: u64, json: String) -> Result<(), DropReason> {
        {
            // Still waiting: the queued line is replaced.
            let mut q = lock(&self.shared.queue);
            let queued = q.ops.iter_mut().rev().find_map(|p| match &mut p.op {
                Op::Append(r) if r.seq == seq => Some(r),
                _ => None,
            });
            if let Some(record) = queued {
                record.json = json;
                return Ok(());
            }
        }
        self.enqueue(Pending { op: Op::Amend { seq, json }, at: Instant::now(), urgent: true })
    }

    pub fn amend_event(&self, event: &Event) -> Result<(), DropReason> {
        let json = serde_json::to_string(event).map_err(|_| DropReason::IoError)?;
        self.amend(event.seq, json)
    }

    /// Applies `ops` to the state area in one transaction, committed at once.
    pub fn update_state(&self, ops: Vec<StateOp>) -> Result<(), DropReason> {
        self.enqueue(Pending { op: Op::State(ops), at: Instant::now(), urgent: true })
    }

    pub fn put_state(&self, key: impl Into<String>, value: impl Into<String>) -> Result<(), DropReason> {
        self.update_state(vec![StateOp::Put { key: key.into(), value: value.into() }])
    }

    /// Waits until everything queued before this call is written (or
    /// dropped). False on timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = {
            let mut q = lock(&self.shared.queue);
            q.flush = true;
            q.pushed
        };
        self.shared.work.notify_one();
        self.wait_progress(timeout, |p| p.done >= target)
    }

    /// Runs `then` once `seq` is kept: at once when it is already durable,
    /// else on the writer's thread right after the commit that holds it,
    /// before that commit is fsync'd (the commit survives the daemon's death
    /// from then; [`Journal::durable_seq`] and [`Journal::wait_durable`]
    /// follow the fsync, a power loss's measure). Never on a failed commit:
    /// a seq dropped is not run for.
    pub fn when_kept(&self, seq: u64, then: OnDurable) {
        let mut p = lock(&self.shared.progress);
        if p.is_durable(seq) {
            drop(p);
            then();
        } else if p.on_durable.len() < ON_DURABLE_MAX {
            p.on_durable.push((seq, then));
        }
    }

    /// Waits until `seq` is durable. False on timeout.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> bool {
        self.wait_progress(timeout, |p| p.durable_seq >= seq || p.durable_ahead.contains(&seq))
    }

    fn wait_progress(&self, timeout: Duration, done: impl Fn(&Progress) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut p = lock(&self.shared.progress);
        while !done(&p) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            p = self.shared.progressed.wait_timeout(p, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    pub fn stats(&self) -> JournalStats {
        let queue_len = lock(&self.shared.queue).ops.len();
        let durable_seq = self.durable_seq();
        let s = lock(&self.shared.stats);
        JournalStats {
            size_bytes: schema::file_bytes(&self.shared.path),
            events_by_kind: s.events_by_kind.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect(),
            oldest_event_age: s
                .oldest_time_ms
                .map(|t| Duration::from_millis(u64::try_from(now_ms().saturating_sub(t)).unwrap_or(0))),
            commit_latency: s.commit_latency.clone(),
            incident_durable_latency: s.incident_durable_latency.clone(),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.shared.dropped[r.index()].load(Ordering::Relaxed)))
                .collect(),
            retention_dropped: s.retention_dropped.clone(),
            failed_updates: s.failed_updates,
            queue_len,
            last_seq: self.last_seq(),
            durable_seq,
            damaged: lock(&self.shared.damaged).clone(),
        }
    }

    /// Writes what is queued, stores the exact last seq, stops the threads.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some((interrupt, check)) = self.check.take() {
            interrupt.interrupt();
            let _ = check.join();
        }
        lock(&self.shared.queue).closed = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some((stop, checkpointer)) = self.checkpointer.take() {
            drop(stop);
            let _ = checkpointer.join();
        }
    }

    fn saw_seq(&self, seq: u64) {
        self.shared.next_seq.fetch_max(seq.saturating_add(1), Ordering::Relaxed);
    }

    fn push(&self, record: Record) -> Appended {
        let seq = record.seq;
        let urgent = is_incident(&record.kind);
        match self.enqueue(Pending { op: Op::Append(record), at: Instant::now(), urgent }) {
            Ok(()) => Appended::Queued(seq),
            Err(reason) => Appended::Dropped(seq, reason),
        }
    }

    fn count_drop(&self, reason: DropReason, n: u64) {
        self.shared.dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    fn enqueue(&self, pending: Pending) -> Result<(), DropReason> {
        let capacity = self.shared.config.queue_capacity.max(1);
        let mut q = lock(&self.shared.queue);
        if q.closed {
            drop(q);
            self.count_drop(DropReason::Closed, 1);
            return Err(DropReason::Closed);
        }
        if q.ops.len() >= capacity {
            let reason = q.failing.unwrap_or(DropReason::QueueFull);
            // Urgent ops may overflow into a reserve, after taking the place
            // of a waiting high-rate event when there is one.
            let reserve = capacity + capacity / 4;
            let evict = pending.urgent && q.ops.len() < reserve;
            let evicted = evict && q.bulk > 0 && {
                if let Some(i) = q.ops.iter().position(Pending::is_bulk_append) {
                    q.ops.remove(i);
                    q.bulk -= 1;
                    // Never to be taken: `flush` must not wait for it.
                    q.pushed -= 1;
                    true
                } else {
                    false
                }
            };
            if !evict || evicted {
                // Something was dropped: the incoming op, or a waiting one.
                self.count_drop(reason, 1);
                if reason == DropReason::QueueFull {
                    if q.overflow_episode == 0 {
                        log::warn!(
                            "journal: {}: the writer is behind ({} events waiting); dropping high-rate events until it catches up",
                            self.shared.path.display(),
                            q.ops.len()
                        );
                    }
                    q.overflow_episode += 1;
                    q.overflow_since_take += 1;
                }
                if !evict {
                    return Err(reason);
                }
            }
        }
        let urgent = pending.urgent;
        let bulk = pending.is_bulk_append();
        let at = pending.at;
        q.ops.push_back(pending);
        q.pushed += 1;
        let mut wake = urgent || q.ops.len() >= self.shared.config.batch_max;
        if bulk {
            q.bulk += 1;
            if q.oldest_bulk_at.is_none() {
                q.oldest_bulk_at = Some(at);
                // The writer may be sleeping without a deadline.
                wake = true;
            }
        }
        if urgent {
            q.urgent += 1;
        }
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The JSON line with its top-level `seq` set.
fn with_seq(json: &str, seq: u64) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
        Ok(mut map) => {
            map.insert("seq".into(), seq.into());
            serde_json::to_string(&map).unwrap_or_else(|_| json.to_owned())
        }
        Err(_) => json.to_owned(),
    }
}

/// The name a kill is summarized under besides its cgroup: the name people
/// know the workload by (`shop/web-7d9f/frontend`, `docker:web`, a unit),
/// else its unit or container id, as before names were known.
pub(super) fn workload_label(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Kill {
        #[serde(default)]
        workload: Option<crate::wire::Workload>,
    }
    serde_json::from_str::<Kill>(json)
        .ok()
        .and_then(|k| k.workload)
        .and_then(|w| w.display_name().or(w.unit).or(w.container_id))
        .unwrap_or_default()
}

fn incident_list() -> String {
    INCIDENT_KINDS.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(",")
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    /// Seqs up to this are covered by the stored lease.
    lease_until: u64,
    bytes_since_retention: u64,
    last_retention: Instant,
    /// Retention has more to do (a chunk limit was hit).
    retention_pending: bool,
    /// Over the size limit: deleting down to 90% of it.
    evicting: bool,
    failing_since: Option<(Instant, DropReason, u64)>,
    /// Committed `cgroups` rows by path.
    cgroup_ids: HashMap<String, i64>,
    /// The last batch held incidents only: a due high-rate batch goes next,
    /// so a steady stream of kills cannot starve the high-rate kinds.
    last_took_urgent_only: bool,
    /// The WAL file (and its inode), fsync'd by the writer after each
    /// commit: see [`Writer::sync_wal`].
    wal: Option<(std::fs::File, u64)>,
    wal_sync_failing: bool,
}

/// Takes the next batch off the queue. Incidents (and amendments, state
/// writes) go in a small transaction of their own, ahead of any high-rate
/// events queued before them: a kill waits for at most the one commit in
/// flight, never for a backlog. `bulk_turn`: high-rate events are due and
/// the last batch was incidents only, so up to `batch_max` ops from the
/// front go now (with any incidents among them).
fn take_ops(q: &mut Queue, batch_max: usize, bulk_turn: bool) -> Vec<Pending> {
    if q.flush || q.closed {
        return q.ops.drain(..).collect();
    }
    if q.urgent > 0 && !bulk_turn {
        let (urgent, rest): (VecDeque<Pending>, VecDeque<Pending>) = q.ops.drain(..).partition(|p| p.urgent);
        q.ops = rest;
        return urgent.into();
    }
    let n = q.ops.len().min(batch_max);
    q.ops.drain(..n).collect()
}

/// What one taken batch holds.
struct Batch {
    ops: Vec<Pending>,
    end_overflow_episode: Option<u64>,
    /// The lowest seq still queued after this batch was taken.
    first_waiting: Option<u64>,
}

impl Writer {
    fn run(&mut self) {
        while let Some(batch) = self.next_batch() {
            if !batch.ops.is_empty() {
                self.write(batch.ops, batch.first_waiting);
            }
            if let Some(n) = batch.end_overflow_episode {
                log::info!("journal: {}: the writer caught up; {n} events were dropped (queue_full)", self.shared.path.display());
            }
            if self.retention_due() && self.failing_since.is_none() && lock(&self.shared.queue).urgent == 0 {
                self.retention_step();
            }
        }
        self.close_lease();
    }

    fn retention_due(&self) -> bool {
        let r = &self.shared.config.retention;
        self.retention_pending
            || self.last_retention.elapsed() >= r.check_interval
            || self.bytes_since_retention >= r.max_bytes / 64
    }

    /// Waits for work: urgent ops, a full batch, the linger deadline of the
    /// oldest high-rate event, or retention. None once closed and drained.
    fn next_batch(&mut self) -> Option<Batch> {
        let linger = self.shared.config.batch_linger;
        let batch_max = self.shared.config.batch_max.max(1);
        let mut q = lock(&self.shared.queue);
        loop {
            let now = Instant::now();
            let retry_at = self.failing_since.map(|(at, _, _)| at + RETRY_INTERVAL);
            let may_write = retry_at.is_none_or(|t| now >= t) || q.closed;
            let linger_at = q.oldest_bulk_at.map(|t| t + linger);
            // High-rate events queued before an incident that went ahead go
            // right after it: readers in seq order (the shipping sinks) would
            // otherwise wait out their linger behind every kill.
            let catch_up = self.last_took_urgent_only && q.bulk > 0;
            let ready = !q.ops.is_empty()
                && (q.urgent > 0
                    || q.flush
                    || q.closed
                    || catch_up
                    || q.ops.len() >= batch_max
                    || linger_at.is_some_and(|t| now >= t));
            if ready && may_write {
                let bulk_due = catch_up || q.bulk >= batch_max || linger_at.is_some_and(|t| now >= t);
                let ops = take_ops(&mut q, batch_max, bulk_due && self.last_took_urgent_only);
                self.last_took_urgent_only = !(q.flush || q.closed) && ops.iter().all(|p| p.urgent);
                q.taken += ops.len() as u64;
                q.bulk -= ops.iter().filter(|p| p.is_bulk_append()).count();
                q.urgent -= ops.iter().filter(|p| p.urgent).count();
                q.flush &= !q.ops.is_empty();
                q.oldest_bulk_at = q.ops.front().map(|p| p.at);
                let first_waiting = q.ops.iter().find_map(|p| match &p.op {
                    Op::Append(r) => Some(r.seq),
                    _ => None,
                });
                let end_overflow_episode = if q.overflow_episode > 0 && q.overflow_since_take == 0 {
                    Some(std::mem::take(&mut q.overflow_episode))
                } else {
                    None
                };
                q.overflow_since_take = 0;
                return Some(Batch { ops, end_overflow_episode, first_waiting });
            }
            if q.ops.is_empty() {
                // A flush with nothing queued is done.
                q.flush = false;
                if q.closed {
                    return None;
                }
            }
            if !ready && self.failing_since.is_none() && self.retention_due() {
                return Some(Batch { ops: Vec::new(), end_overflow_episode: None, first_waiting: None });
            }
            let mut wake = None;
            if ready {
                wake = retry_at;
            } else if !q.ops.is_empty() {
                wake = linger_at;
            }
            if self.failing_since.is_none() {
                let retention_at = self.last_retention + self.shared.config.retention.check_interval;
                wake = Some(wake.map_or(retention_at, |w: Instant| w.min(retention_at)));
            }
            let wait = wake.map_or(Duration::from_secs(3600), |w| w.saturating_duration_since(now)).max(Duration::from_millis(1));
            q = self.shared.work.wait_timeout(q, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn write(&mut self, ops: Vec<Pending>, first_waiting: Option<u64>) {
        let max_seq = ops
            .iter()
            .filter_map(|p| match &p.op {
                Op::Append(r) => Some(r.seq),
                _ => None,
            })
            .max();
        // Every seq below the first one still queued is done with after
        // this batch (written, or dropped if it fails); with none queued,
        // every seq handed out so far.
        let watermark = {
            let p = lock(&self.shared.progress);
            let upto = match first_waiting {
                Some(first) => first - 1,
                None => max_seq.into_iter().chain(p.durable_ahead.last().copied()).max().unwrap_or(0),
            };
            p.durable_seq.max(upto)
        };
        let started = Instant::now();
        let result = self.commit(&ops, watermark);
        if result.is_ok() {
            self.run_kept(&ops, watermark);
            self.sync_wal();
        }
        let finished = Instant::now();
        let events = ops.iter().filter(|p| matches!(p.op, Op::Append(_))).count() as u64;
        let committed = result.is_ok();
        match result {
            Ok(effects) => {
                {
                    let mut s = lock(&self.shared.stats);
                    s.commit_latency.observe(finished - started);
                    for p in ops.iter().filter(|p| p.urgent && matches!(p.op, Op::Append(_))) {
                        s.incident_durable_latency.observe(finished - p.at);
                    }
                    for (kind, n) in effects.added {
                        *s.events_by_kind.entry(kind).or_default() += n;
                    }
                    if let Some(t) = effects.min_time_ms {
                        s.oldest_time_ms = Some(s.oldest_time_ms.map_or(t, |o| o.min(t)));
                    }
                }
                self.bytes_since_retention += effects.bytes;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                if let Some((since, reason, dropped)) = self.failing_since.take() {
                    lock(&self.shared.queue).failing = None;
                    log::info!(
                        "journal: {}: writes resumed after {:.0?}; {dropped} events were dropped ({})",
                        self.shared.path.display(),
                        since.elapsed(),
                        reason.as_str()
                    );
                }
            }
            Err(e) => {
                if schema::is_damage(&e) {
                    self.shared.note_damage(&e.to_string());
                }
                let reason = DropReason::of(&e);
                self.shared.dropped[reason.index()].fetch_add(events, Ordering::Relaxed);
                let updates = ops.len() as u64 - events;
                lock(&self.shared.stats).failed_updates += updates;
                match &mut self.failing_since {
                    Some((at, _, dropped)) => {
                        *at = Instant::now();
                        *dropped += events;
                    }
                    None => {
                        log::warn!(
                            "journal: {}: {}: dropping events (counted as {}) until writes succeed again; retrying every {}s",
                            self.shared.path.display(),
                            crate::error_chain(&e),
                            reason.as_str(),
                            RETRY_INTERVAL.as_secs()
                        );
                        self.failing_since = Some((Instant::now(), reason, events));
                    }
                }
                lock(&self.shared.queue).failing = Some(reason);
            }
        }
        self.settle(&ops, watermark, committed);
    }

    /// Records what a batch settled: its ops are done, its seqs durable
    /// when it was committed (or dropped when not), and what waited for
    /// them runs; the intent file is emptied once it holds only durable kills.
    fn settle(&self, ops: &[Pending], watermark: u64, committed: bool) {
        let mut p = lock(&self.shared.progress);
        p.done += ops.len() as u64;
        if committed {
            for p_seq in ops.iter().filter_map(|o| match &o.op {
                Op::Append(r) if r.seq > watermark => Some(r.seq),
                _ => None,
            }) {
                p.durable_ahead.insert(p_seq);
            }
        }
        p.durable_seq = watermark;
        p.durable_ahead = p.durable_ahead.split_off(&(watermark + 1));
        let ready = take_ready(&mut p, committed);
        if committed {
            lock(&self.shared.intent).settle(|seq| p.is_durable(seq));
        }
        drop(p);
        self.shared.progressed.notify_all();
        for then in ready {
            then();
        }
    }

    /// Runs the [`Journal::when_kept`] calls a commit just settled: its
    /// WAL frames are written (synchronous=NORMAL), so it survives the
    /// daemon's death; a tail client then gets a kill without waiting for
    /// the disk's fsync.
    fn run_kept(&self, ops: &[Pending], watermark: u64) {
        let in_batch = |seq: u64| ops.iter().any(|o| matches!(&o.op, Op::Append(r) if r.seq == seq));
        let ready: Vec<(u64, OnDurable)> = {
            let mut p = lock(&self.shared.progress);
            let (ready, waiting) = std::mem::take(&mut p.on_durable).into_iter().partition(|(seq, _)| *seq <= watermark || in_batch(*seq));
            p.on_durable = waiting;
            ready
        };
        for (_, then) in ready {
            then();
        }
    }

    /// Fsyncs the WAL after a commit, which synchronous=NORMAL leaves to
    /// checkpoints: a commit is durable (survives a power loss) once this
    /// returns, as with FULL, but the [`Journal::when_kept`] calls ran
    /// before it. The file is opened again when SQLite replaced it.
    fn sync_wal(&mut self) {
        let mut wal_path = self.shared.path.clone().into_os_string();
        wal_path.push("-wal");
        let ino = match std::fs::metadata(&wal_path) {
            Ok(m) => std::os::unix::fs::MetadataExt::ino(&m),
            Err(e) => return self.wal_sync_failed(&wal_path, &e),
        };
        if self.wal.as_ref().is_none_or(|(_, open)| *open != ino) {
            match std::fs::File::open(&wal_path) {
                Ok(f) => self.wal = Some((f, ino)),
                Err(e) => return self.wal_sync_failed(&wal_path, &e),
            }
        }
        if let Some((f, _)) = &self.wal {
            match f.sync_data() {
                Ok(()) if self.wal_sync_failing => {
                    self.wal_sync_failing = false;
                    log::info!("journal: {}: fsync works again", Path::new(&wal_path).display());
                }
                Ok(()) => {}
                Err(e) => self.wal_sync_failed(&wal_path, &e),
            }
        }
    }

    fn wal_sync_failed(&mut self, wal_path: &std::ffi::OsStr, e: &std::io::Error) {
        if !std::mem::replace(&mut self.wal_sync_failing, true) {
            log::warn!("journal: {}: cannot fsync: {e}; recent events survive the daemon's death but maybe not a power loss", Path::new(wal_path).display());
        }
    }

    fn commit(&mut self, ops: &[Pending], watermark: u64) -> rusqlite::Result<Effects> {
        let mut effects = Effects::default();
        let mut new_ids = HashMap::new();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (seq, time_ms, kind, cgroup_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in ops {
                match &p.op {
                    Op::Append(r) => {
                        let id = cgroup_id(&tx, &self.cgroup_ids, &mut new_ids, &r.cgroup)?;
                        if insert.execute(params![to_i64(r.seq), r.time_ms, r.kind, id, r.json])? == 0 {
                            continue;
                        }
                        if r.kind == "oom_kill" {
                            add_kill(&tx, day_of(r.time_ms), &r.cgroup, &workload_label(&r.json), 1)?;
                        }
                        *effects.added.entry(r.kind.clone()).or_default() += 1;
                        effects.bytes += (r.json.len() + r.cgroup.len() + 32) as u64;
                        effects.min_time_ms = Some(effects.min_time_ms.map_or(r.time_ms, |t: i64| t.min(r.time_ms)));
                    }
                    Op::Amend { seq, json } => amend(&tx, &self.cgroup_ids, &mut new_ids, *seq, json)?,
                    Op::State(state_ops) => apply_state(&tx, state_ops)?,
                }
            }
        }
        count_kinds(&tx, effects.added.iter().map(|(k, n)| (k.as_str(), to_i64(*n))))?;
        schema::meta_set(&tx, META_COMMITTED_THROUGH, to_i64(watermark))?;
        let handed_out = self.shared.next_seq.load(Ordering::Relaxed).saturating_sub(1);
        let mut new_lease = None;
        if handed_out + SEQ_LEASE / 2 > self.lease_until {
            let lease = handed_out + SEQ_LEASE;
            schema::meta_set(&tx, META_SEQ_LEASE, to_i64(lease))?;
            new_lease = Some(lease);
        }
        tx.commit()?;
        if let Some(lease) = new_lease {
            self.lease_until = lease;
        }
        self.cgroup_ids.extend(new_ids);
        Ok(effects)
    }

    /// On a clean close the lease shrinks to the last seq handed out, so
    /// the next run continues without a gap.
    fn close_lease(&mut self) {
        let handed_out = self.shared.next_seq.load(Ordering::Relaxed).saturating_sub(1);
        let max_seq: i64 =
            self.conn.query_row("SELECT max(seq) FROM events", [], |r| r.get::<_, Option<i64>>(0)).ok().flatten().unwrap_or(0);
        let last = to_i64(handed_out).max(max_seq);
        if let Err(e) = schema::meta_set(&self.conn, META_SEQ_LEASE, last) {
            log::debug!("journal: storing the last seq at close: {e}");
        }
    }

    /// One bounded step of retention; sets `retention_pending` when more
    /// remains.
    fn retention_step(&mut self) {
        let r = self.shared.config.retention.clone();
        let started = Instant::now();
        match self.retention_transaction(&r) {
            Ok((removed, more)) => {
                self.retention_pending = more;
                if !more {
                    self.last_retention = Instant::now();
                    self.bytes_since_retention = 0;
                }
                if !removed.is_empty() {
                    let oldest: Option<i64> =
                        self.conn.query_row("SELECT min(time_ms) FROM events", [], |r| r.get(0)).unwrap_or(None);
                    let mut s = lock(&self.shared.stats);
                    for (kind, n) in removed {
                        if let Some(held) = s.events_by_kind.get_mut(&kind) {
                            *held = held.saturating_sub(n);
                        }
                        *s.retention_dropped.entry(kind).or_default() += n;
                    }
                    s.oldest_time_ms = oldest;
                }
                log::trace!("journal: retention step took {:?}", started.elapsed());
            }
            Err(e) => {
                // Tried again at the next interval; a full disk shows in the
                // writes themselves.
                log::debug!("journal: retention: {e}");
                self.retention_pending = false;
                self.last_retention = Instant::now();
            }
        }
    }

    fn retention_transaction(&mut self, r: &super::Retention) -> rusqlite::Result<(BTreeMap<String, u64>, bool)> {
        let now = now_ms();
        let incidents = incident_list();
        let mut removed = BTreeMap::new();
        let mut more = false;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let age_ms = |d: Duration| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let cut = age_ms(r.max_age);
        let n = delete_counting(
            &tx,
            &format!(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time_ms < ?1 AND kind NOT IN ({incidents}) LIMIT ?2) RETURNING kind"
            ),
            params![cut, RETENTION_CHUNK],
            &mut removed,
        )?;
        more |= n >= RETENTION_CHUNK;
        let incident_cut = age_ms(r.incident_max_age);
        let n = delete_counting(
            &tx,
            &format!(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time_ms < ?1 AND kind IN ({incidents}) LIMIT ?2) RETURNING kind"
            ),
            params![incident_cut, RETENTION_CHUNK],
            &mut removed,
        )?;
        more |= n >= RETENTION_CHUNK;
        tx.execute("DELETE FROM kills_daily WHERE day < ?1", [day_of(incident_cut)])?;

        let page_size: i64 = tx.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<(i64, i64)> {
            let total: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let free: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            Ok((total, free))
        };
        let (total, free) = pages(&tx)?;
        let used = (total - free) * page_size;
        let limit = to_i64(r.max_bytes);
        if used > limit || (self.evicting && used > limit / 10 * 9) {
            self.evicting = true;
            let held = to_i64(lock(&self.shared.stats).events_by_kind.values().sum());
            let per_row = (used / held.max(1)).max(1);
            let rows = ((used - limit / 10 * 9) / per_row).clamp(1, RETENTION_CHUNK);
            // High-rate events go first, oldest first; incidents only
            // once none is left.
            let mut n = delete_counting(
                &tx,
                &format!(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE kind NOT IN ({incidents}) ORDER BY seq LIMIT ?1) RETURNING kind"
                ),
                params![rows],
                &mut removed,
            )?;
            if n == 0 {
                n = delete_counting(
                    &tx,
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1) RETURNING kind",
                    params![rows],
                    &mut removed,
                )?;
            }
            if n == 0 {
                self.evicting = false;
            } else {
                more = true;
            }
        } else {
            self.evicting = false;
        }
        // Free pages are reused by later inserts anyway; once they are a
        // tenth of the file, hand some back to the file system.
        let (total, free) = pages(&tx)?;
        if free > 64 && free * 10 > total && !self.evicting {
            let mut vacuum = tx.prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
            more |= free > VACUUM_PAGES;
        }
        count_kinds(&tx, removed.iter().map(|(k, n)| (k.as_str(), -to_i64(*n))))?;
        tx.commit()?;
        Ok((removed, more))
    }
}

#[derive(Default)]
struct Effects {
    added: BTreeMap<String, u64>,
    bytes: u64,
    min_time_ms: Option<i64>,
}

fn delete_counting(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    removed: &mut BTreeMap<String, u64>,
) -> rusqlite::Result<i64> {
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let kind: String = row.get(0)?;
        *removed.entry(kind).or_default() += 1;
        n += 1;
    }
    Ok(n)
}

fn add_kill(tx: &rusqlite::Transaction<'_>, day: i64, cgroup: &str, workload: &str, n: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO kills_daily (day, cgroup, workload, kills) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (day, cgroup, workload) DO UPDATE SET kills = kills + excluded.kills",
    )?
    .execute(params![day, cgroup, workload, n])?;
    if n < 0 {
        tx.prepare_cached("DELETE FROM kills_daily WHERE day = ?1 AND cgroup = ?2 AND workload = ?3 AND kills <= 0")?
            .execute(params![day, cgroup, workload])?;
    }
    Ok(())
}

/// The new JSON may move the event (a kill attributed to its cgroup later,
/// or named): the columns and the kill summary follow it.
fn amend(
    tx: &rusqlite::Transaction<'_>,
    committed: &HashMap<String, i64>,
    new_ids: &mut HashMap<String, i64>,
    seq: u64,
    json: &str,
) -> rusqlite::Result<()> {
    let old: Option<(String, i64, String, String)> = tx
        .prepare_cached(
            "SELECT e.kind, e.time_ms, c.path, e.body FROM events e JOIN cgroups c ON c.id = e.cgroup_id WHERE e.seq = ?1",
        )?
        .query_row([to_i64(seq)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((kind, old_time, old_cgroup, old_body)) = old else {
        log::debug!("journal: amendment of seq {seq}, which the journal does not hold");
        return Ok(());
    };
    let (time_ms, cgroup) = match Record::from_json(json) {
        Ok(r) if r.kind == kind => (r.time_ms, r.cgroup),
        _ => (old_time, old_cgroup.clone()),
    };
    let id = cgroup_id(tx, committed, new_ids, &cgroup)?;
    tx.prepare_cached("UPDATE events SET body = ?2, time_ms = ?3, cgroup_id = ?4 WHERE seq = ?1")?
        .execute(params![to_i64(seq), json, time_ms, id])?;
    if kind == "oom_kill" {
        let before = (day_of(old_time), old_cgroup, workload_label(&old_body));
        let after = (day_of(time_ms), cgroup, workload_label(json));
        if before != after {
            add_kill(tx, before.0, &before.1, &before.2, -1)?;
            add_kill(tx, after.0, &after.1, &after.2, 1)?;
        }
    }
    Ok(())
}

/// The id of `path` in `cgroups`, added when new. Ids added by this
/// transaction stay in `new_ids` until it commits: a rolled-back one must
/// not be remembered.
fn cgroup_id(
    tx: &rusqlite::Transaction<'_>,
    committed: &HashMap<String, i64>,
    new_ids: &mut HashMap<String, i64>,
    path: &str,
) -> rusqlite::Result<i64> {
    if let Some(id) = committed.get(path).or_else(|| new_ids.get(path)) {
        return Ok(*id);
    }
    tx.prepare_cached("INSERT INTO cgroups (path) VALUES (?1) ON CONFLICT (path) DO NOTHING")?.execute([path])?;
    let id: i64 = tx.prepare_cached("SELECT id FROM cgroups WHERE path = ?1")?.query_row([path], |r| r.get(0))?;
    new_ids.insert(path.to_owned(), id);
    Ok(id)
}

fn count_kinds<'a>(tx: &rusqlite::Transaction<'_>, deltas: impl Iterator<Item = (&'a str, i64)>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO kinds (kind, events) VALUES (?1, max(?2, 0))
         ON CONFLICT (kind) DO UPDATE SET events = max(events + ?2, 0)",
    )?;
    for (kind, delta) in deltas {
        if delta != 0 {
            stmt.execute(params![kind, delta])?;
        }
    }
    Ok(())
}

struct Loaded {
    last: u64,
    stats: WriterStats,
    cgroup_ids: HashMap<String, i64>,
}

/// What the writer needs from the file at open; every read here is cheap
/// (the counts are kept in `kinds`).
fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    // A bare max() reads the end of the table; coalesce(max()) would scan it.
    let max_seq: i64 = conn.query_row("SELECT max(seq) FROM events", [], |r| r.get::<_, Option<i64>>(0))?.unwrap_or(0);
    let lease = schema::meta_get(conn, META_SEQ_LEASE)?.unwrap_or(0);
    let last = u64::try_from(max_seq.max(lease)).unwrap_or(0);
    let mut stats = WriterStats::default();
    let mut counts = conn.prepare("SELECT kind, events FROM kinds WHERE events > 0")?;
    for row in counts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (kind, n) = row?;
        stats.events_by_kind.insert(kind, u64::try_from(n).unwrap_or(0));
    }
    stats.oldest_time_ms = conn.query_row("SELECT min(time_ms) FROM events", [], |r| r.get(0))?;
    let mut cgroup_ids = HashMap::new();
    let mut paths = conn.prepare("SELECT path, id FROM cgroups")?;
    for row in paths.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (path, id) = row?;
        cgroup_ids.insert(path, id);
    }
    Ok(Loaded { last, stats, cgroup_ids })
}

fn apply_state(tx: &rusqlite::Transaction<'_>, ops: &[StateOp]) -> rusqlite::Result<()> {
    let now = now_ms();
    for op in ops {
        match op {
            StateOp::Put { key, value } => tx
                .prepare_cached(
                    "INSERT INTO state (key, value, updated_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                )?
                .execute(params![key, value, now])?,
            StateOp::Delete { key } => tx.prepare_cached("DELETE FROM state WHERE key = ?1")?.execute([key])?,
            StateOp::DeletePrefix { prefix } => tx
                .prepare_cached("DELETE FROM state WHERE substr(key, 1, length(?1)) = ?1")?
                .execute([prefix])?,
        };
    }
    Ok(())
}

/// Copies committed WAL frames into the database once a second when
/// something was committed. PASSIVE never waits for the writer or readers.
fn checkpoint_loop(shared: &Shared, conn: &Connection, stop: &mpsc::Receiver<()>) {
    let mut seen = 0;
    loop {
        match stop.recv_timeout(CHECKPOINT_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits == seen {
            continue;
        }
        seen = commits;
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            log::debug!("journal: checkpoint of {}: {e}", shared.path.display());
        }
    }
}
