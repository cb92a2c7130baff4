//! Opening the database: pragmas, schema, and what to do with a file that
//! is not a healthy journal (moved aside, a new one started).

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _};

use super::JournalError;

/// `PRAGMA user_version` of the layout below.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// `events.seq` is the rowid: replay (`seq > N`) and "newest first" walk the
/// table itself. `kind, seq` serves kind filters; `time_ms` time ranges and
/// age retention; `cgroup_id, seq` cgroup filters, through `cgroups`, which
/// holds each path once (a Kubernetes path is ~170 bytes; the id is 1-3).
/// The body stays the full JSON line users see. `kinds` and `kills_daily`
/// are kept at write time, so counts and the kill summary read a few rows
/// instead of every event.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    cgroup_id INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time_ms);
CREATE INDEX IF NOT EXISTS events_by_cgroup ON events (cgroup_id, seq);
CREATE TABLE IF NOT EXISTS cgroups (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS kinds (
    kind TEXT PRIMARY KEY,
    events INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kills_daily (
    day INTEGER NOT NULL,
    cgroup TEXT NOT NULL,
    workload TEXT NOT NULL,
    kills INTEGER NOT NULL,
    PRIMARY KEY (day, cgroup, workload)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Keys of `meta`.
pub(super) const META_SEQ_LEASE: &str = "seq_lease";
/// Every seq up to this is written (or was dropped): incidents may be
/// written ahead of high-rate events with lower seqs, so readers that
/// resume from a seq stop here.
pub(super) const META_COMMITTED_THROUGH: &str = "committed_through";

/// A write transaction waits this long for another writer (there is none in
/// normal operation: only a second daemon on the same directory).
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers only wait while another connection recovers the WAL.
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// The WAL is cut back to this after checkpoints.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

pub(super) fn open_flags_rw() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Why an existing file is not used.
#[derive(Debug)]
pub(super) enum Damage {
    Header(String),
    Sqlite(rusqlite::Error),
    Check(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header(s) | Self::Check(s) => f.write_str(s),
            Self::Sqlite(e) => write!(f, "{e}"),
        }
    }
}

pub(super) enum OpenFailure {
    Damaged(Damage),
    Fatal(JournalError),
}

pub(super) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// Creates the directory if needed and proves it writable: a read-only
/// mount or a directory we may not write is one clear error, before SQLite
/// says something vaguer ("unable to open database file").
pub(super) fn prepare_dir(dir: &Path) -> Result<(), JournalError> {
    let read_only = |source: io::Error| JournalError::ReadOnly { path: dir.to_owned(), source };
    let io_err = |source: io::Error| JournalError::Io { path: dir.to_owned(), source };
    if let Err(e) = fs::create_dir_all(dir) {
        return Err(if denies_writing(&e) { read_only(e) } else { io_err(e) });
    }
    let probe = dir.join(format!(".oomwatch-write-probe-{}", std::process::id()));
    match fs::OpenOptions::new().write(true).create(true).truncate(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if denies_writing(&e) => Err(read_only(e)),
        Err(e) => Err(io_err(e)),
    }
}

/// One writer per state directory: SQLite would let a second daemon write
/// too, each waiting on the other's transactions. Readers take no lock.
pub(super) fn lock_writer(dir: &Path, path: &Path) -> Result<fs::File, JournalError> {
    use std::os::fd::AsRawFd as _;
    let lock_path = dir.join("journal.lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| JournalError::Io { path: lock_path.clone(), source })?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            JournalError::Busy { path: path.to_owned(), lock: lock_path }
        } else {
            JournalError::Io { path: lock_path, source: e }
        });
    }
    Ok(file)
}

fn denies_writing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied)
        || e.raw_os_error() == Some(libc::EROFS)
        || e.raw_os_error() == Some(libc::EPERM)
}

/// Opens (creating when missing) the writer's connection and checks the
/// file; a damaged file is reported as such, for the caller to move aside.
pub(super) fn open_writer(path: &Path) -> Result<Connection, OpenFailure> {
    check_header(path)?;
    let fatal = |e| OpenFailure::Fatal(JournalError::sqlite(path, e));
    let classify = |e: rusqlite::Error| if is_damage(&e) { OpenFailure::Damaged(Damage::Sqlite(e)) } else { fatal(e) };
    let conn = Connection::open_with_flags(path, open_flags_rw()).map_err(classify)?;
    conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(fatal)?;
    bound_page_cache(&conn).map_err(fatal)?;
    // Checked before anything is written, so a damaged file is moved aside
    // exactly as it was found. A full `quick_check` reads every page (13 s
    // for 800 MiB here): it runs in the background after the start
    // ([`full_check`]), and what it finds is moved aside at the next one.
    if let Some(reason) = read_marker(path) {
        return Err(OpenFailure::Damaged(Damage::Check(reason)));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(classify)?;
    if version > SCHEMA_VERSION {
        return Err(OpenFailure::Fatal(JournalError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        }));
    }
    let has_tables: bool = conn
        .query_row("SELECT 1 FROM sqlite_schema WHERE type = 'table' LIMIT 1", [], |_| Ok(true))
        .optional()
        .map_err(classify)?
        .unwrap_or(false);
    if has_tables && version == 0 {
        return Err(OpenFailure::Damaged(Damage::Check("an SQLite database that is not an oomwatch journal".into())));
    }
    if !has_tables {
        // Only possible before the first table: lets retention hand deleted
        // pages back to the file system (`PRAGMA incremental_vacuum`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(classify)?;
    }
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenFailure::Fatal(JournalError::Io {
            path: path.to_owned(),
            source: io::Error::other(format!("SQLite refused WAL mode (got {mode}); the file system may not support shared memory")),
        }));
    }
    // NORMAL: a commit returns once its WAL frames are written, which
    // survives the daemon's death; the writer fsyncs the WAL right after
    // (Writer::sync_wal), so a commit is durable as with FULL, but a tail
    // client gets a kill without waiting for the disk.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(classify)?;
    // Checkpoints run on their own thread and connection, so a kill's
    // commit never pays for copying the WAL into the database.
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(classify)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(classify)?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(SCHEMA).map_err(classify)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(classify)?;
    } else {
        probe(&conn).map_err(classify)?;
    }
    Ok(conn)
}

/// Touches both ends of every table and index, and the small tables whole:
/// a truncated or scribbled file usually fails here, in milliseconds.
fn probe(conn: &Connection) -> rusqlite::Result<()> {
    for sql in [
        // One min() or max() per statement: SQLite reads an index end for
        // those, and scans the whole table for two.
        "SELECT min(seq) FROM events",
        "SELECT max(seq) FROM events",
        "SELECT min(time_ms) FROM events",
        "SELECT max(time_ms) FROM events",
        "SELECT kind FROM events INDEXED BY events_by_kind ORDER BY kind, seq LIMIT 1",
        "SELECT kind FROM events INDEXED BY events_by_kind ORDER BY kind DESC, seq DESC LIMIT 1",
        "SELECT cgroup_id FROM events INDEXED BY events_by_cgroup ORDER BY cgroup_id, seq LIMIT 1",
        "SELECT cgroup_id FROM events INDEXED BY events_by_cgroup ORDER BY cgroup_id DESC, seq DESC LIMIT 1",
        "SELECT count(*), sum(length(path)) FROM cgroups",
        "SELECT count(*), sum(events) FROM kinds",
        "SELECT count(*), sum(kills) FROM kills_daily",
        "SELECT count(*), sum(length(value)) FROM state",
        "SELECT count(*) FROM meta",
    ] {
        // An empty table has no row to return: reading is the probe, not a row.
        conn.prepare(sql)?.query([])?.next()?;
    }
    Ok(())
}

/// Where a damage found while running is noted for the next open.
pub(super) fn marker_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.damaged", path.display()))
}

fn read_marker(path: &Path) -> Option<String> {
    let text = fs::read_to_string(marker_path(path)).ok()?;
    Some(format!("found damaged while running: {}", text.trim()))
}

pub(super) fn write_marker(path: &Path, reason: &str) {
    if let Err(e) = fs::write(marker_path(path), reason) {
        log::debug!("journal: noting the damage of {} for the next start: {e}", path.display());
    }
}

/// The full check: every page of every table and index. Runs on a reader
/// connection of its own, so the writer goes on meanwhile.
pub(super) fn full_check(conn: &Connection, path: &Path) -> Result<Option<String>, JournalError> {
    let check: String =
        conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(|e| JournalError::sqlite(path, e))?;
    Ok((check != "ok").then_some(check))
}

/// SQLite treats an empty file as a new database; anything else must start
/// with its magic string, or it is damaged (a zeroed or foreign file).
fn check_header(path: &Path) -> Result<(), OpenFailure> {
    use std::io::Read as _;
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OpenFailure::Fatal(JournalError::Io { path: path.to_owned(), source: e })),
    };
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(OpenFailure::Fatal(JournalError::Io { path: path.to_owned(), source: e })),
        }
    }
    if got == 0 {
        return Ok(());
    }
    if &head[..got] != b"SQLite format 3\0" {
        return Err(OpenFailure::Damaged(Damage::Header(format!(
            "not an SQLite database (first {got} bytes: {:02x?})",
            &head[..got.min(8)]
        ))));
    }
    let short = truncated(&mut file).map_err(|e| OpenFailure::Fatal(JournalError::Io { path: path.to_owned(), source: e }))?;
    if let Some(short) = short
        && !has_wal(path)
    {
        return Err(OpenFailure::Damaged(Damage::Header(short)));
    }
    Ok(())
}

fn has_wal(path: &Path) -> bool {
    fs::metadata(format!("{}-wal", path.display())).is_ok_and(|m| m.len() > 0)
}

/// Without a WAL to supply them, pages missing from the end of the file
/// mean it was truncated.
fn truncated(file: &mut fs::File) -> io::Result<Option<String>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut header = [0u8; 100];
    file.seek(SeekFrom::Start(0))?;
    if file.read_exact(&mut header).is_err() {
        return Ok(Some("shorter than an SQLite header".into()));
    }
    let Some(want) = claimed_len(&header) else { return Ok(None) };
    let len = file.metadata()?.len();
    Ok((len < want).then(|| format!("truncated: {len} bytes, its header says {want}")))
}

/// How long an SQLite file says it is: page count (offset 28) times page
/// size (16). None when the header does not say: too short, a page size
/// SQLite does not use, or a count that is stale (valid only while the
/// change counter at 24 equals "version valid for" at 92).
pub fn claimed_len(header: &[u8]) -> Option<u64> {
    if header.len() < 100 {
        return None;
    }
    let be32 = |at: usize| -> Option<u32> { Some(u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?)) };
    let raw_page_size = u16::from_be_bytes(header.get(16..18)?.try_into().ok()?);
    let page_size = if raw_page_size == 1 { 65_536 } else { u64::from(raw_page_size) };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let pages = u64::from(be32(28)?);
    if pages == 0 || be32(24)? != be32(92)? {
        return None;
    }
    Some(pages * page_size)
}

/// Moves the damaged file and its WAL and shared-memory files aside (the
/// WAL must go with it: a new database would otherwise try to replay it).
/// Returns where the database went.
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, JournalError> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
    let mut target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt-{stamp}.{n}", path.display()));
        n += 1;
    }
    fs::rename(path, &target).map_err(|source| JournalError::Io { path: path.to_owned(), source })?;
    // The note of a damage found while running has done its job.
    let _ = fs::remove_file(marker_path(path));
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", target.display()));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(JournalError::Io { path: from, source }),
        }
    }
    Ok(target)
}

/// Page cache per connection, in KiB. SQLite's default (2 MiB) is sized
/// for databases that are read at random; the journal appends, and reads
/// recent rows by index, so a small cache costs nothing measurable and
/// keeps the daemon's resident memory (three connections) 4.5 MiB lower.
const PAGE_CACHE_KIB: i64 = 512;

fn bound_page_cache(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
}

/// A read-only connection for queries. Never creates the file.
pub(super) fn open_reader(path: &Path) -> Result<Connection, JournalError> {
    if !path.exists() {
        return Err(JournalError::Missing { path: path.to_owned() });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // On a read-only mount SQLite cannot create the WAL index it needs to
    // read a WAL-mode database; nothing can write there either, so the file
    // is opened as immutable (no locks, no WAL index).
    let conn = if on_read_only_mount(path) {
        let uri = format!("file:{}?immutable=1", uri_escape(path));
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| JournalError::sqlite(path, e))?;
    conn.busy_timeout(READER_BUSY_TIMEOUT).map_err(|e| JournalError::sqlite(path, e))?;
    bound_page_cache(&conn).map_err(|e| JournalError::sqlite(path, e))?;
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| JournalError::sqlite(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(JournalError::NewerSchema { path: path.to_owned(), found: version, supported: SCHEMA_VERSION });
    }
    if version < SCHEMA_VERSION {
        return Err(JournalError::Missing { path: path.to_owned() });
    }
    Ok(conn)
}

fn on_read_only_mount(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: statvfs only writes into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// A path as an SQLite URI path: `%`, `?` and `#` are its metacharacters.
fn uri_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// The checkpointer's connection: copies committed WAL frames into the
/// database without ever blocking the writer (PASSIVE).
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, JournalError> {
    let conn = Connection::open_with_flags(path, open_flags_rw()).map_err(|e| JournalError::sqlite(path, e))?;
    conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(|e| JournalError::sqlite(path, e))?;
    bound_page_cache(&conn).map_err(|e| JournalError::sqlite(path, e))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(|e| JournalError::sqlite(path, e))?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(|e| JournalError::sqlite(path, e))?;
    Ok(conn)
}

pub(super) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

pub(super) fn meta_set(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value],
    )
    .map(drop)
}

/// Bytes on disk: the database and its WAL.
pub(super) fn file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(Path::new(&format!("{}-wal", path.display())))
}
