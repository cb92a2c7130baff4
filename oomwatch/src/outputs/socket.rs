//! The event socket: NDJSON over a Unix socket (mode 0660, in a directory
//! only root can change). A client sends one request line, gets the
//! buffered events it asked for, then live ones. A client that cannot keep
//! up is told how many events it lost; it never slows the daemon or other
//! clients.
//!
//! Slots are bounded ([`MAX_CLIENTS`], [`MAX_CLIENTS_PER_USER`] for users
//! other than root, the last [`ROOT_RESERVED`] kept for root) and every
//! client gives its slot back promptly: a tail client when it hangs up (the
//! read side is watched while waiting for events), a status or alerts
//! client that does not read its answer after [`ANSWER_TIMEOUT`], a tail
//! client that stops reading after [`TAIL_WRITE_STALL`].

use std::{
    collections::HashMap,
    io,
    os::{
        fd::AsFd as _,
        unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter},
    net::{
        UnixListener, UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::broadcast::error::RecvError,
};

use crate::{
    kernel::clock::monotonic_ns,
    model::{
        Model,
        bus::{EventBus, lagged_event},
        counters::DaemonCounters,
    },
    outputs::{
        alerts::Alerts,
        journal::{Journal, Query},
        tail_lane::Lanes,
    },
    wire::{Event, EventKind, Request, RequestOp, StatusReport, rfc3339},
};

/// What the socket serves from.
pub struct Sources {
    pub bus: Arc<EventBus>,
    pub model: Arc<Model>,
    pub counters: Arc<DaemonCounters>,
    pub alerts: Arc<Alerts>,
    /// Where `tail --since` replays from, when the daemon keeps a journal.
    pub journal: Option<Arc<Journal>>,
    /// Caught-up tail clients, written to by the publishing thread.
    pub lanes: Arc<Lanes>,
}
pub const MAX_CLIENTS: usize = 128;
/// One user other than root cannot take every slot.
pub const MAX_CLIENTS_PER_USER: usize = 32;
/// Slots only root gets, so root's `oomwatch status` works whatever other
/// members of the socket's group hold.
pub const ROOT_RESERVED: usize = 8;
const MAX_REQUEST_BYTES: u64 = 4096;
/// A status or alerts answer must be read within this.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// A tail client whose socket stays full this long (it stopped reading:
/// a suspended pager, a dead pipeline) is let go; `oomwatch tail`
/// reconnects and asks for what it missed.
pub const TAIL_WRITE_STALL: Duration = Duration::from_secs(30);
/// How long a tail client's kill waits for the journal to keep it.
const KEPT_WAIT: Duration = Duration::from_secs(2);
/// A refused client gets its one line within this, or nothing.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: another oomwatch daemon is serving this socket; stop it or choose another --socket")]
    InUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; remove it or choose another --socket")]
    NotASocket { path: PathBuf },
    #[error(
        "{dir}: {why}, so another user could replace the event socket and feed clients forged answers; {fix} or choose another --socket"
    )]
    UnsafeDirectory { dir: PathBuf, why: String, fix: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Removes the socket file on drop, if it is still the one we created.
pub struct SocketGuard {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates the missing directories of `dir` as 0750 (whatever the umask),
/// then refuses when `dir` or any directory above it could be changed by a
/// user other than root and the daemon's own: whoever can write there can
/// unlink the socket and listen in its place.
fn prepare_directory(dir: &Path) -> Result<(), SocketError> {
    fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SocketError + '_ {
        move |source| SocketError::Io { path: path.to_path_buf(), source }
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while std::fs::symlink_metadata(d).is_err() {
        missing.push(d);
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o750).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750)).map_err(io_err(d))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(d)(e)),
        }
    }
    let real = std::fs::canonicalize(dir).map_err(io_err(dir))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for d in real.ancestors() {
        let meta = std::fs::metadata(d).map_err(io_err(d))?;
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        let unsafe_dir = |why: String, fix: String| SocketError::UnsafeDirectory { dir: d.to_path_buf(), why, fix };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(unsafe_dir(format!("owned by uid {}", meta.uid()), format!("`chown root {}`", d.display())));
        }
        // Sticky directories (/tmp) let only an entry's owner remove it.
        if mode & 0o022 != 0 && !sticky {
            return Err(unsafe_dir(format!("writable by its group or by others (mode {mode:04o})"), format!("`chmod go-w {}`", d.display())));
        }
    }
    Ok(())
}

pub fn bind(path: &Path) -> Result<(std::os::unix::net::UnixListener, SocketGuard), SocketError> {
    let io_err = |source| SocketError::Io { path: path.to_path_buf(), source };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    prepare_directory(parent)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(SocketError::NotASocket { path: path.to_path_buf() }),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            // Someone answers: never unlink a live daemon's socket.
            Ok(_) => return Err(SocketError::InUse { path: path.to_path_buf() }),
            Err(_) => std::fs::remove_file(path).map_err(io_err)?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    let ino = std::fs::metadata(path).map_err(io_err)?.ino();
    Ok((listener, SocketGuard { path: path.to_path_buf(), ino }))
}

/// How long a client waits for a slot before it is refused: clients that
/// hung up a moment ago may still hold theirs until their task runs, and a
/// burst of connect-and-hang-up must not lock out the next `oomwatch status`.
const SLOT_WAIT: Duration = Duration::from_millis(500);

/// Who holds the slots: a count per user id.
#[derive(Default)]
struct Slots {
    by_uid: Mutex<HashMap<u32, usize>>,
    /// Woken whenever a slot is given back.
    freed: tokio::sync::Notify,
    /// Clients waiting for a slot; bounded so a flood of connections is
    /// refused at once instead of holding descriptors while it waits.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Gives a slot back when its client ends.
struct SlotGuard<'a> {
    slots: &'a Slots,
    uid: u32,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut by_uid = self.slots.by_uid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                by_uid.remove(&self.uid);
            }
        }
        drop(by_uid);
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    /// A slot for a client of `uid`, or why not.
    fn take(&self, uid: u32) -> Result<SlotGuard<'_>, String> {
        let mut by_uid = self.by_uid.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_uid.values().sum();
        let mine = by_uid.get(&uid).copied().unwrap_or(0);
        if total >= MAX_CLIENTS {
            return Err(format!("too many clients ({total} connected, at most {MAX_CLIENTS}); close idle `oomwatch tail` sessions or retry"));
        }
        if uid != 0 {
            if mine >= MAX_CLIENTS_PER_USER {
                return Err(format!(
                    "too many clients of uid {uid} ({mine} connected, at most {MAX_CLIENTS_PER_USER} per user); close some of them"
                ));
            }
            if total >= MAX_CLIENTS - ROOT_RESERVED {
                return Err(format!("too many clients ({total} connected; the last {ROOT_RESERVED} slots are kept for root); retry later"));
            }
        }
        *by_uid.entry(uid).or_default() += 1;
        Ok(SlotGuard { slots: self, uid })
    }

    /// A slot for a client of `uid`, waiting up to `patience` for one to be
    /// given back; the last reason it could not have one otherwise.
    async fn take_within(&self, uid: u32, patience: Duration) -> Result<SlotGuard<'_>, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = tokio::time::Instant::now() + patience;
        let first = match self.take(uid) {
            Ok(slot) => return Ok(slot),
            Err(why) => why,
        };
        if self.waiting.fetch_add(1, Relaxed) >= MAX_CLIENTS {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(first);
        }
        let got = self.wait_for_slot(uid, deadline).await;
        self.waiting.fetch_sub(1, Relaxed);
        got
    }

    async fn wait_for_slot(&self, uid: u32, deadline: tokio::time::Instant) -> Result<SlotGuard<'_>, String> {
        loop {
            // Registered before the check, so a slot freed in between wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let why = match self.take(uid) {
                Ok(slot) => return Ok(slot),
                Err(why) => why,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(why);
            }
        }
    }
}

pub async fn serve(listener: std::os::unix::net::UnixListener, sources: Arc<Sources>) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("event socket: {e}");
            return;
        }
    };
    let slots = Arc::new(Slots::default());
    sources.bus.set_immediate(sources.lanes.clone());
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("event socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The kernel's word, not the client's: SO_PEERCRED.
        let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let sources = sources.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let _slot = match slots.take_within(uid, SLOT_WAIT).await {
                Ok(slot) => slot,
                Err(why) => {
                    log::debug!("event socket: refused a client of uid {uid}: {why}");
                    return refuse(stream, &why).await;
                }
            };
            if let Err(e) = client(stream, sources).await {
                log::debug!("event client ended: {e}");
            }
        });
    }
}

/// The one line a refused client gets; `oomwatch tail`, `status` and
/// `alerts` print its `error` and exit non-zero.
pub fn refusal_line(why: &str) -> String {
    let line = serde_json::json!({"kind": "error", "time": rfc3339(std::time::SystemTime::now()), "cgroup": "/", "error": why});
    format!("{line}\n")
}

/// What the daemon said when it refused this client, if `line` is that.
pub fn refusal_reason(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("kind")?.as_str()? != "error" {
        return None;
    }
    Some(v.get("error").and_then(|e| e.as_str()).unwrap_or("refused").to_owned())
}

async fn refuse(mut stream: UnixStream, why: &str) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.write_all(refusal_line(why).as_bytes())).await;
}

/// The request line; None when the client hung up before sending one.
async fn read_request(reader: &mut BufReader<OwnedReadHalf>) -> Option<Request> {
    let mut line = String::new();
    let mut limited = (&mut *reader).take(MAX_REQUEST_BYTES);
    match tokio::time::timeout(Duration::from_secs(2), limited.read_line(&mut line)).await {
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(_)) => Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            log::debug!("bad request line {line:?}: {e}; serving a plain tail");
            Request::default()
        })),
        // Silent clients (`socat - UNIX:...`) get a plain tail.
        Err(_) => Some(Request::default()),
    }
}

/// Writes one answer and flushes, or gives up after `limit`.
async fn send(out: &mut BufWriter<OwnedWriteHalf>, line: &[u8], limit: Duration) -> io::Result<()> {
    let write = async {
        out.write_all(line).await?;
        out.write_all(b"\n").await?;
        out.flush().await
    };
    tokio::time::timeout(limit, write).await.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "client does not read")))
}

async fn client(stream: UnixStream, sources: Arc<Sources>) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let Some(request) = read_request(&mut reader).await else { return Ok(()) };
    let mut out = BufWriter::new(write);
    let Sources { model, alerts, .. } = &*sources;
    match request.op {
        RequestOp::Alerts => {
            let line = serde_json::to_string(&alerts.report()).unwrap_or_default();
            send(&mut out, line.as_bytes(), ANSWER_TIMEOUT).await
        }
        RequestOp::Status => {
            let report = StatusReport {
                time: rfc3339(std::time::SystemTime::now()),
                cgroups: model.counts(),
                kills_total: model.total_kills(),
                rows: model.status(),
                top_stallers: model.top_stallers(),
            };
            let line = serde_json::to_string(&report).unwrap_or_default();
            send(&mut out, line.as_bytes(), ANSWER_TIMEOUT).await
        }
        RequestOp::Tail => tail(&request, &sources, reader, out).await,
    }
}

/// A tail client: what it asked to replay, then live events until it hangs
/// up or stops reading. Once it has caught up, the events it is given are
/// written by the publishing thread when it can (`outputs::tail_lane`).
async fn tail(request: &Request, sources: &Sources, mut reader: BufReader<OwnedReadHalf>, mut out: BufWriter<OwnedWriteHalf>) -> io::Result<()> {
    let Sources { bus, counters, lanes, .. } = sources;
    let filter = Arc::new(TailFilter::of_request(request));
    let (mut rx, mut through) = match (&sources.journal, replay_from_journal(request)) {
        (Some(journal), Some(from)) => {
            let (next, last_seq, rx) = bus.subscribe_after_store();
            replay_journal(journal, from, next, &filter, &mut out).await?;
            (rx, last_seq)
        }
        _ => {
            let since_ns = request
                .since_secs
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| monotonic_ns().saturating_sub((s * 1e9) as u64));
            // Without a journal, seqs start again with each daemon:
            // a resuming client's time is the better guide.
            let sub = bus.subscribe_live(|e| {
                filter.keep(e)
                    && match (since_ns, request.since_seq) {
                        (Some(since), _) => e.ktime_ns.is_some_and(|k| k >= since),
                        (None, Some(after)) => e.seq > after,
                        (None, None) => false,
                    }
            });
            let replay = async {
                for p in sub.past {
                    out.write_all(p.json.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                }
                out.flush().await
            };
            tokio::time::timeout(TAIL_WRITE_STALL, replay).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
            (sub.rx, sub.last_seq)
        }
    };
    let lane = lanes.open(out.get_ref().as_ref().as_fd(), through, filter.clone())?;
    let mut scratch = [0u8; 256];
    let mut flushed = true;
    loop {
        if flushed {
            lane.hand_back(through, || rx.is_empty());
        }
        let event = tokio::select! {
            event = rx.recv() => event,
            // Nothing more is expected from a tail client: end of
            // file (or an error) means it is gone, and its slot is
            // freed now, not when the next event fails to reach it.
            n = reader.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        if let (Ok(p), Some(journal)) = (&event, &sources.journal)
            && p.kept_first
            && filter.keep(&p.event)
        {
            // Meanwhile the lane may give it to the client from the
            // writer's thread; `already_given` below then skips it.
            kept(journal, p.event.seq).await;
        }
        let given = lane.take_over();
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "tail client stopped reading");
        match event {
            Ok(p) => {
                let already_given = p.event.seq <= given.through_seq || !filter.keep(&p.event);
                through = through.max(p.event.seq);
                let write = async {
                    out.write_all(&given.rest).await?;
                    if !already_given {
                        out.write_all(p.json.as_bytes()).await?;
                        out.write_all(b"\n").await?;
                    }
                    // Batch what is already queued, then flush once.
                    let flush = rx.is_empty();
                    if flush {
                        out.flush().await?;
                    }
                    Ok::<_, io::Error>(flush)
                };
                flushed = tokio::time::timeout(TAIL_WRITE_STALL, write).await.map_err(|_| stalled())??;
            }
            Err(RecvError::Lagged(n)) => {
                counters.stream_events_dropped.inc_by(n);
                let lag = lagged_event(n, rfc3339(std::time::SystemTime::now()));
                let line = serde_json::to_string(&lag).unwrap_or_default();
                out.write_all(&given.rest).await?;
                send(&mut out, line.as_bytes(), TAIL_WRITE_STALL).await?;
                flushed = true;
            }
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

/// Waits until the journal keeps `seq` (committed: it survives the daemon's
/// death; the fsync follows): a kill a client was shown must survive it.
/// Gives up when the journal cannot keep it (a failed write drops the
/// wait) or takes longer than [`KEPT_WAIT`]: a sick disk must not hide
/// kills from the operator.
async fn kept(journal: &Journal, seq: u64) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    journal.when_kept(
        seq,
        Box::new(move || {
            let _ = tx.send(());
        }),
    );
    match tokio::time::timeout(KEPT_WAIT, rx).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => log::debug!("event socket: seq {seq} could not be kept by the journal; the client gets it anyway"),
        Err(_) => log::warn!("event socket: the journal did not keep seq {seq} within {KEPT_WAIT:?}; the client gets it anyway"),
    }
}

/// The events a tail client asked for: the request's `kinds` and `cgroup`,
/// as the daemon applies them and `oomwatch tail` again (in case the daemon
/// is older than them). `lagged` notices always pass.
#[derive(Debug, Default)]
pub struct TailFilter {
    /// None: every kind. Some(empty): only kinds this daemon does not know
    /// were asked for, so none.
    pub kinds: Option<Vec<EventKind>>,
    pub cgroup: Option<glob::Pattern>,
}

impl TailFilter {
    /// The filter of `request`: kinds this daemon does not know match
    /// nothing; a glob that does not parse is not applied (the client's
    /// own filter then decides), and is logged.
    pub fn of_request(request: &Request) -> Self {
        let kinds = (!request.kinds.is_empty()).then(|| request.kinds.iter().filter_map(|k| EventKind::from_name(k)).collect());
        let cgroup = request.cgroup.as_deref().and_then(|g| {
            glob::Pattern::new(g).map_err(|e| log::debug!("event socket: tail cgroup glob {g:?}: {e}; not applied")).ok()
        });
        Self { kinds, cgroup }
    }

    pub fn keep(&self, e: &Event) -> bool {
        self.keep_kind_in(e.body.kind(), &e.cgroup)
    }

    /// [`TailFilter::keep`] for an event of `kind` in `cgroup`.
    pub fn keep_kind_in(&self, kind: EventKind, cgroup: &str) -> bool {
        // A kill's first word goes only to a client that names it: one
        // that takes every kind would get each kill twice.
        let asked = match &self.kinds {
            None => kind != EventKind::KillSeen,
            Some(k) => k.contains(&kind),
        };
        kind == EventKind::Lagged || (asked && self.cgroup.as_ref().is_none_or(|g| g.matches(cgroup)))
    }

    /// The journal query's `kinds`; None when no stored event can match.
    fn query_kinds(&self) -> Option<Vec<String>> {
        match &self.kinds {
            None => Some(Vec::new()),
            Some(k) if k.is_empty() => None,
            Some(k) => Some(k.iter().map(|k| k.as_str().to_owned()).collect()),
        }
    }
}

/// Where a tail client's replay starts in the journal, if it asked for one.
enum ReplayFrom {
    Seq(u64),
    Time(std::time::SystemTime),
}

fn replay_from_journal(request: &Request) -> Option<ReplayFrom> {
    if let Some(after) = request.since_seq {
        return Some(ReplayFrom::Seq(after));
    }
    let secs = request.since_secs.filter(|s| s.is_finite() && *s > 0.0)?;
    let ago = std::time::Duration::try_from_secs_f64(secs).ok()?;
    Some(ReplayFrom::Time(std::time::SystemTime::now().checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH)))
}

/// Stored events from `from` up to (not including) `next`, the first seq
/// the client's live subscription gets: no gap and no duplicate at the
/// seam. Read in pages on the blocking pool; the page in flight is the only
/// memory a long replay (`--since 7d`) costs.
async fn replay_journal(
    journal: &Arc<Journal>,
    from: ReplayFrom,
    next: u64,
    filter: &TailFilter,
    out: &mut BufWriter<OwnedWriteHalf>,
) -> io::Result<()> {
    const PAGE: usize = 2048;
    let Some(kinds) = filter.query_kinds() else { return Ok(()) };
    let journal = journal.clone();
    let (mut after, since) = match from {
        ReplayFrom::Seq(s) => (s, None),
        ReplayFrom::Time(t) => (0, Some(t)),
    };
    // What was published before the subscription may still be queued.
    let j = journal.clone();
    let reader = tokio::task::spawn_blocking(move || {
        j.flush(std::time::Duration::from_secs(2));
        j.reader()
    })
    .await
    .map_err(io::Error::other)?
    .map_err(io::Error::other)?;
    let reader = Arc::new(std::sync::Mutex::new(reader));
    while after + 1 < next {
        let q = Query {
            after_seq: Some(after),
            through_seq: Some(next - 1),
            since,
            limit: Some(PAGE),
            kinds: kinds.clone(),
            cgroup: filter.cgroup.clone(),
            ..Query::default()
        };
        let r = reader.clone();
        let page = tokio::task::spawn_blocking(move || r.lock().unwrap_or_else(|e| e.into_inner()).query(&q))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        let write = async {
            for e in &page {
                out.write_all(e.json.as_bytes()).await?;
                out.write_all(b"\n").await?;
            }
            out.flush().await
        };
        tokio::time::timeout(TAIL_WRITE_STALL, write).await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tail client stopped reading"))??;
        after = last;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_sock(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oomwatch-sock-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.sock")
    }

    #[tokio::test]
    async fn refuses_to_steal_a_live_socket_and_replaces_a_stale_one() {
        let path = tmp_sock("live");
        let (_listener, guard) = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        assert!(matches!(bind(&path), Err(SocketError::InUse { .. })));
        drop(_listener);
        drop(guard);
        assert!(!path.exists(), "guard removes its own socket");

        // A stale socket (nobody listening) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let (_l, _g) = bind(&path).unwrap();
    }

    #[tokio::test]
    async fn an_answer_nobody_reads_gives_up_after_its_limit() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_read, write) = ours.into_split();
        let mut out = BufWriter::new(write);
        // Far more than the socket buffers hold, to a peer that never reads.
        let answer = vec![b'x'; 8 << 20];
        let t = std::time::Instant::now();
        let err = send(&mut out, &answer, Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        drop(theirs);
    }

    #[test]
    fn missing_directories_are_created_0750_whatever_the_umask() {
        let base = tmp_sock("mkdir").parent().unwrap().to_path_buf();
        let path = base.join("run/oomwatch/events.sock");
        let (_l, _g) = bind(&path).unwrap();
        for d in [base.join("run"), base.join("run/oomwatch")] {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777, 0o750, "{}", d.display());
        }
    }

    #[test]
    fn directories_others_can_write_are_refused_sticky_ones_are_not() {
        let base = tmp_sock("unsafe").parent().unwrap().to_path_buf();
        let open = base.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.join("events.sock")).err().unwrap().to_string();
        assert!(err.contains(&open.display().to_string()) && err.contains("mode 0777") && err.contains("chmod go-w"), "{err}");
        assert_eq!(err.lines().count(), 1);
        // Below it, too: the open directory could rename the whole subtree.
        let below = open.join("sub");
        std::fs::create_dir_all(&below).unwrap();
        std::fs::set_permissions(&below, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(bind(&below.join("e.sock")), Err(SocketError::UnsafeDirectory { .. })));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (_l, _g) = bind(&open.join("events.sock")).unwrap();
    }

    #[tokio::test]
    async fn a_kill_is_handed_to_a_client_only_once_the_journal_keeps_it() {
        use crate::{model::bus::Durable, outputs::journal::{Appended, JournalConfig}, wire::{Event, EventBody, OomKill}};
        let dir = tmp_sock("kept").parent().unwrap().join("state");
        let journal = Arc::new(Journal::open(JournalConfig::new(&dir)).unwrap());
        let kill = |pid| Event::new(EventBody::OomKill(Box::new(OomKill::of_pid(pid))), String::new(), "/a".into(), None);
        // Written ahead of its commit by the publishing thread: given at once.
        let bus = EventBus::with_durable(16, 16, Some(journal.clone() as Arc<dyn Durable>));
        let mut rx = bus.subscribe(|_| false).1;
        bus.publish_kept(kill(1));
        assert!(!rx.recv().await.unwrap().kept_first, "a kill the journal kept at once needs no wait");
        // Otherwise a client waits for the commit.
        for pid in 2..=20 {
            let Appended::Queued(seq) = journal.append_event(&mut kill(pid)) else { panic!("not queued") };
            kept(&journal, seq).await;
            let held = journal.reader().unwrap().query(&crate::outputs::journal::Query { after_seq: Some(seq - 1), ..Default::default() }).unwrap();
            assert!(held.iter().any(|e| e.seq == seq), "kill {pid}: kept() returned before the journal kept seq {seq}");
        }
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_tail_request_filters_by_kind_and_cgroup_and_unknown_kinds_match_nothing() {
        use crate::wire::{Event, EventBody, OomKill};
        let kill = |cgroup: &str| Event::new(EventBody::OomKill(Box::new(OomKill::of_pid(1))), String::new(), cgroup.into(), None);
        let lagged = crate::model::bus::lagged_event(3, String::new());
        let request = |kinds: &[&str], cgroup: Option<&str>| Request {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            cgroup: cgroup.map(str::to_owned),
            ..Request::default()
        };
        let all = TailFilter::of_request(&request(&[], None));
        assert!(all.keep(&kill("/a")) && all.query_kinds() == Some(vec![]));
        let kills_in_pods = TailFilter::of_request(&request(&["oom_kill", "pressure"], Some("/pods/*")));
        assert!(kills_in_pods.keep(&kill("/pods/a")) && !kills_in_pods.keep(&kill("/system.slice/a")));
        assert_eq!(kills_in_pods.query_kinds(), Some(vec!["oom_kill".to_owned(), "pressure".to_owned()]));
        let newer = TailFilter::of_request(&request(&["from_the_future"], None));
        assert!(!newer.keep(&kill("/a")), "a kind this daemon does not know matches nothing, not everything");
        assert_eq!(newer.query_kinds(), None);
        assert!(newer.keep(&lagged), "lag notices always pass");
        let first_word = Event::new(
            EventBody::KillSeen(crate::wire::KillNotice {
                victim: Default::default(),
                trigger: Default::default(),
                attribution: crate::wire::Attribution::Exact,
                cgroup_id: None,
                workload: Default::default(),
                main_process: None,
            }),
            String::new(),
            "/pods/a".into(),
            None,
        );
        assert!(!all.keep(&first_word), "a kill's first word only to those that name it");
        assert!(!kills_in_pods.keep(&first_word));
        assert!(TailFilter::of_request(&request(&["kill_seen"], Some("/pods/*"))).keep(&first_word));
        let bad_glob = TailFilter::of_request(&request(&[], Some("/pods/[")));
        assert!(bad_glob.keep(&kill("/x")), "a glob that does not parse is not applied");
    }

    #[tokio::test]
    async fn a_client_waits_briefly_for_a_slot_given_back_then_is_refused() {
        let slots = Arc::new(Slots::default());
        let mut held: Vec<_> = (0..MAX_CLIENTS).map(|_| slots.take(0).unwrap()).collect();
        // Nothing is given back: refused after its patience, with the reason.
        let t = std::time::Instant::now();
        let err = slots.take_within(0, Duration::from_millis(50)).await.err().unwrap();
        assert!(err.contains("too many clients") && t.elapsed() >= Duration::from_millis(50), "{err} after {:?}", t.elapsed());
        // A slot given back while it waits is its.
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take_within(0, Duration::from_secs(10)).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "got a slot while all were held");
        drop(held.pop());
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken when a slot was freed").unwrap();
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn slots_per_user_and_for_root() {
        let slots = Slots::default();
        let users: Vec<_> = (0..MAX_CLIENTS_PER_USER).map(|_| slots.take(1000).unwrap()).collect();
        let err = slots.take(1000).err().unwrap();
        assert!(err.contains("uid 1000") && err.contains(&MAX_CLIENTS_PER_USER.to_string()), "{err}");
        let mut others = Vec::new();
        for uid in 1001.. {
            match slots.take(uid) {
                Ok(s) => others.push(s),
                Err(e) => {
                    assert!(e.contains("kept for root"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(users.len() + others.len(), MAX_CLIENTS - ROOT_RESERVED);
        let root: Vec<_> = (0..ROOT_RESERVED).map(|_| slots.take(0).unwrap()).collect();
        let err = slots.take(0).err().unwrap();
        assert!(err.contains("too many clients") && err.contains("128"), "{err}");
        drop(root);
        drop(users);
        assert!(slots.take(1000).is_ok(), "slots come back");
        let line = refusal_line(&err);
        assert_eq!(refusal_reason(&line).as_deref(), Some(err.as_str()));
        assert_eq!(refusal_reason("{\"kind\":\"oom_kill\"}"), None);
        assert_eq!(refusal_reason("not json"), None);
    }

    #[tokio::test]
    async fn refuses_a_path_that_is_not_a_socket() {
        let path = tmp_sock("file");
        std::fs::write(&path, b"x").unwrap();
        let err = bind(&path).err().unwrap().to_string();
        assert!(err.contains("not a socket"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
