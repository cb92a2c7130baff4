//! The read side: queries from any process, on a read-only connection. In
//! WAL mode a reader sees the last commit as of its statement (or of its
//! read transaction, for the queries that take several statements) and
//! never holds a lock the writer waits on.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension as _, ToSql};

use super::{FILE_NAME, JournalError, day_label, day_of, now_ms, schema, unix_ms};
use crate::wire::Event;

/// How much later than its time an event may be published (kills are
/// stamped by the kernel, and enrichment takes its time).
const TIME_SEQ_MARGIN_MS: i64 = 10 * 60 * 1000;
/// Up to this many matching cgroups are looked up by index.
const MAX_CGROUP_IDS_IN_SQL: usize = 512;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

/// Which events to read. Every filter is optional; they combine with AND.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only seq > this: the replay side of `tail --since`, whose live side
    /// then starts after the last seq returned. With it, reading stops at
    /// [`JournalReader::committed_through`], so resuming from the last seq
    /// returned never skips an event written later with a lower seq.
    pub after_seq: Option<u64>,
    /// Only seq <= this.
    pub through_seq: Option<u64>,
    /// Only events at or after this time...
    pub since: Option<SystemTime>,
    /// ...and before this one.
    pub until: Option<SystemTime>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
    /// Only cgroups matching this glob (as `oomwatch tail --cgroup`).
    pub cgroup: Option<glob::Pattern>,
    pub order: Order,
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: String,
    pub time_ms: i64,
    pub cgroup: String,
    /// The JSON line, as `oomwatch tail --json` prints it.
    pub json: String,
}

impl StoredEvent {
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SummaryBy {
    #[default]
    Cgroup,
    /// The workload's name (its unit or container id until enrichment
    /// names it); the cgroup path for kills with none.
    Workload,
}

#[derive(Clone, Debug, Default)]
pub struct SummaryQuery {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub cgroup: Option<glob::Pattern>,
    pub by: SummaryBy,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SummaryRow {
    /// UTC day, "2026-12-06".
    pub day: String,
    /// The cgroup or the workload, as asked.
    pub key: String,
    pub kills: u64,
}

/// What `oomwatch check` says about the journal.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JournalFacts {
    pub path: PathBuf,
    /// The database and its WAL.
    pub size_bytes: u64,
    /// Whether this process could write the directory (a read-only mount
    /// or missing permission says no).
    pub writable: bool,
    pub events: u64,
    pub events_by_kind: BTreeMap<String, u64>,
    pub oldest_event_age: Option<Duration>,
    pub newest_event_age: Option<Duration>,
    pub last_seq: u64,
}

/// Which cgroups a query keeps, and where it checks them.
enum CgroupFilter {
    Any,
    /// Few enough ids to list in the statement and use the cgroup index.
    InSql(HashSet<i64>),
    /// Too many to list: checked on each row read.
    WhileReading(HashSet<i64>),
}

/// The seqs a query reads: after `after`, through `through`.
#[derive(Clone, Copy)]
struct SeqWindow {
    after: Option<i64>,
    through: Option<i64>,
}

impl SeqWindow {
    fn through_at_most(&mut self, seq: i64) {
        self.through = Some(self.through.map_or(seq, |t| t.min(seq)));
    }
}

/// A query's statement with its numbered parameters.
struct Select {
    sql: String,
    args: Vec<Box<dyn ToSql>>,
}

impl Select {
    fn new(q: &Query, window: SeqWindow, cgroups: &CgroupFilter) -> Self {
        let mut select = Self {
            sql: String::from(
                "SELECT e.seq, e.kind, e.time_ms, c.path, e.body, e.cgroup_id FROM events e JOIN cgroups c ON c.id = e.cgroup_id WHERE 1",
            ),
            args: Vec::new(),
        };
        if let Some(s) = window.after {
            select.arg(" AND e.seq > ?", Box::new(s));
        }
        if let Some(s) = window.through {
            select.arg(" AND e.seq <= ?", Box::new(s));
        }
        if let Some(t) = q.since {
            select.arg(" AND e.time_ms >= ?", Box::new(unix_ms(t)));
        }
        if let Some(t) = q.until {
            select.arg(" AND e.time_ms < ?", Box::new(unix_ms(t)));
        }
        if !q.kinds.is_empty() {
            select.any_of("e.kind", q.kinds.iter().map(|kind| Box::new(kind.clone()) as Box<dyn ToSql>));
        }
        if let CgroupFilter::InSql(ids) = cgroups {
            let mut ids: Vec<i64> = ids.iter().copied().collect();
            ids.sort_unstable();
            select.any_of("e.cgroup_id", ids.into_iter().map(|id| Box::new(id) as Box<dyn ToSql>));
        }
        select.sql.push_str(match q.order {
            Order::OldestFirst => " ORDER BY e.seq ASC",
            Order::NewestFirst => " ORDER BY e.seq DESC",
        });
        // Rows dropped while reading must not count against the limit.
        if let (Some(limit), false) = (q.limit, matches!(cgroups, CgroupFilter::WhileReading(_))) {
            select.arg(" LIMIT ?", Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        select
    }

    /// Appends `clause` with its `?` numbered as the next parameter.
    fn arg(&mut self, clause: &str, value: Box<dyn ToSql>) {
        self.args.push(value);
        self.sql.push_str(&clause.replace('?', &format!("?{}", self.args.len())));
    }

    /// " AND column IN (?, ...)"
    fn any_of(&mut self, column: &str, values: impl Iterator<Item = Box<dyn ToSql>>) {
        self.sql.push_str(&format!(" AND {column} IN ("));
        for (i, value) in values.enumerate() {
            if i > 0 {
                self.sql.push(',');
            }
            self.arg("?", value);
        }
        self.sql.push(')');
    }
}

pub struct JournalReader {
    conn: Connection,
    path: PathBuf,
}

impl JournalReader {
    /// Opens `<dir>/journal.db` read-only; [`JournalError::Missing`] when
    /// no daemon has created it yet.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Self::open_path(&dir.join(FILE_NAME))
    }

    pub fn open_path(path: &Path) -> Result<Self, JournalError> {
        Ok(Self { conn: schema::open_reader(path)?, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> JournalError {
        JournalError::Sqlite { path: self.path.clone(), source: e }
    }

    pub fn query(&self, q: &Query) -> Result<Vec<StoredEvent>, JournalError> {
        let Some(cgroups) = self.cgroup_filter(q)? else { return Ok(Vec::new()) };
        let window = self.seq_window(q)?;
        let select = Select::new(q, window, &cgroups);
        self.read_rows(&select, &cgroups, q.limit)
    }

    /// None when a glob was given and matches no cgroup: nothing to read.
    fn cgroup_filter(&self, q: &Query) -> Result<Option<CgroupFilter>, JournalError> {
        // A cgroup glob is matched against the paths table with the same
        // crate as `tail`; the events are then found by id.
        let Some(glob) = &q.cgroup else { return Ok(Some(CgroupFilter::Any)) };
        let ids = self.cgroup_ids(glob)?;
        Ok(if ids.is_empty() {
            None
        } else if ids.len() <= MAX_CGROUP_IDS_IN_SQL {
            // Few matching cgroups: by the cgroup index. Many: filtered
            // as the rows are read.
            Some(CgroupFilter::InSql(ids))
        } else {
            Some(CgroupFilter::WhileReading(ids))
        })
    }

    fn seq_window(&self, q: &Query) -> Result<SeqWindow, JournalError> {
        let mut window = SeqWindow { after: q.after_seq.map(to_i64), through: q.through_seq.map(to_i64) };
        if window.after.is_some() {
            // Resuming from a seq: an incident may be written ahead of
            // high-rate events with lower seqs; stopping at the committed
            // watermark means the next read, from the last seq returned,
            // skips none of them.
            window.through_at_most(to_i64(self.committed_through()?));
        }
        // Time bounds become seq bounds through the time index (a few page
        // reads), so a time window reads its own rows only. Seq follows
        // publication, and an event is published at most the margin after
        // its time: an event timed a margin before `since` was published
        // before it, and so was every seq up to its own; likewise after
        // `until`. The exact time filter stays.
        if let Some(t) = q.since {
            let before = self.seq_by_time(
                "SELECT seq FROM events INDEXED BY events_by_time WHERE time_ms < ?1 ORDER BY time_ms DESC LIMIT 1",
                unix_ms(t).saturating_sub(TIME_SEQ_MARGIN_MS),
            )?;
            if let Some(before) = before {
                window.after = Some(window.after.map_or(before, |a| a.max(before)));
            }
        }
        if let Some(t) = q.until {
            let beyond = self.seq_by_time(
                "SELECT seq FROM events INDEXED BY events_by_time WHERE time_ms >= ?1 ORDER BY time_ms LIMIT 1",
                unix_ms(t).saturating_add(TIME_SEQ_MARGIN_MS),
            )?;
            if let Some(beyond) = beyond {
                window.through_at_most(beyond - 1);
            }
        }
        Ok(window)
    }

    fn seq_by_time(&self, sql: &str, time_ms: i64) -> Result<Option<i64>, JournalError> {
        self.conn.query_row(sql, [time_ms], |r| r.get(0)).optional().map_err(|e| self.err(e))
    }

    fn read_rows(&self, select: &Select, cgroups: &CgroupFilter, limit: Option<usize>) -> Result<Vec<StoredEvent>, JournalError> {
        let mut stmt = self.conn.prepare(&select.sql).map_err(|e| self.err(e))?;
        let params: Vec<&dyn ToSql> = select.args.iter().map(|b| b.as_ref()).collect();
        let mut rows = stmt.query(params.as_slice()).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let limit = limit.unwrap_or(usize::MAX);
        while out.len() < limit {
            let Some(row) = rows.next().map_err(|e| self.err(e))? else { break };
            if let CgroupFilter::WhileReading(ids) = cgroups {
                let id: i64 = row.get(5).map_err(|e| self.err(e))?;
                if !ids.contains(&id) {
                    continue;
                }
            }
            out.push(StoredEvent {
                seq: u64::try_from(row.get::<_, i64>(0).map_err(|e| self.err(e))?).unwrap_or(0),
                kind: row.get(1).map_err(|e| self.err(e))?,
                time_ms: row.get(2).map_err(|e| self.err(e))?,
                cgroup: row.get(3).map_err(|e| self.err(e))?,
                json: row.get(4).map_err(|e| self.err(e))?,
            });
        }
        Ok(out)
    }

    fn cgroup_ids(&self, glob: &glob::Pattern) -> Result<HashSet<i64>, JournalError> {
        let mut stmt = self.conn.prepare_cached("SELECT id, path FROM cgroups").map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut ids = HashSet::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let path: String = row.get(1).map_err(|e| self.err(e))?;
            if glob.matches(&path) {
                ids.insert(row.get(0).map_err(|e| self.err(e))?);
            }
        }
        Ok(ids)
    }

    /// Kills per day and cgroup (or workload), newest day first, most
    /// kills first within a day. Reads the daily table the writer keeps, so
    /// its cost does not grow with the number of events.
    pub fn summary(&self, q: &SummaryQuery) -> Result<Vec<SummaryRow>, JournalError> {
        let from = q.since.map_or(i64::MIN, |t| day_of(unix_ms(t)));
        let to = q.until.map_or(i64::MAX, |t| day_of(unix_ms(t)));
        let mut stmt = self
            .conn
            .prepare_cached("SELECT day, cgroup, workload, kills FROM kills_daily WHERE day BETWEEN ?1 AND ?2")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([from, to]).map_err(|e| self.err(e))?;
        let mut sums: BTreeMap<(i64, String), u64> = BTreeMap::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let day: i64 = row.get(0).map_err(|e| self.err(e))?;
            let cgroup: String = row.get(1).map_err(|e| self.err(e))?;
            if q.cgroup.as_ref().is_some_and(|g| !g.matches(&cgroup)) {
                continue;
            }
            let key = match q.by {
                SummaryBy::Cgroup => cgroup,
                SummaryBy::Workload => {
                    let workload: String = row.get(2).map_err(|e| self.err(e))?;
                    // A kill with no workload name is still a place a
                    // person can look up: its cgroup.
                    if workload.is_empty() { cgroup } else { workload }
                }
            };
            let kills: i64 = row.get(3).map_err(|e| self.err(e))?;
            *sums.entry((day, key)).or_default() += u64::try_from(kills).unwrap_or(0);
        }
        let mut out: Vec<(i64, String, u64)> = sums.into_iter().map(|((d, k), n)| (d, k, n)).collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
        Ok(out.into_iter().map(|(day, key, kills)| SummaryRow { day: day_label(day), key, kills }).collect())
    }

    /// Every seq up to this is written (or was dropped): where a reader
    /// that resumes from a seq (`Query::after_seq`) stops.
    pub fn committed_through(&self) -> Result<u64, JournalError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'committed_through'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        match v {
            Some(v) => Ok(u64::try_from(v).unwrap_or(0)),
            None => self.last_seq(),
        }
    }

    /// Events held with a seq above `after` (seqs have gaps: a restart
    /// skips ahead, dropped events leave holes).
    pub fn count_after(&self, after: u64) -> Result<u64, JournalError> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM events WHERE seq > ?1", [to_i64(after)], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The seq of the `n`th event (1-based) held above `after`.
    pub fn nth_seq_after(&self, after: u64, n: u64) -> Result<Option<u64>, JournalError> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1 OFFSET ?2", [to_i64(after), to_i64(n.saturating_sub(1))], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    }

    /// The highest seq held (0 when empty).
    pub fn last_seq(&self) -> Result<u64, JournalError> {
        // A bare max(): SQLite reads the end of the table for it, where
        // coalesce(max(..)) would scan every row.
        let seq: i64 = self
            .conn
            .query_row("SELECT max(seq) FROM events", [], |r| r.get::<_, Option<i64>>(0))
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    pub fn state(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .prepare_cached("SELECT value FROM state WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Every key starting with `prefix`, in key order.
    pub fn state_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM state WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// One read transaction, so counts, ages and seq agree with each other.
    pub fn facts(&self) -> Result<JournalFacts, JournalError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let mut events_by_kind = BTreeMap::new();
        {
            let mut stmt = tx.prepare_cached("SELECT kind, events FROM kinds WHERE events > 0").map_err(|e| self.err(e))?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.err(e))?;
            for row in rows {
                let (kind, n) = row.map_err(|e| self.err(e))?;
                events_by_kind.insert(kind, u64::try_from(n).unwrap_or(0));
            }
        }
        // One aggregate per statement, so each reads an index end instead
        // of scanning the table.
        let one = |sql: &str| -> Result<Option<i64>, JournalError> {
            tx.query_row(sql, [], |r| r.get(0)).map_err(|e| self.err(e))
        };
        let oldest = one("SELECT min(time_ms) FROM events")?;
        let newest = one("SELECT max(time_ms) FROM events")?;
        let last = one("SELECT max(seq) FROM events")?.unwrap_or(0);
        drop(tx);
        let now = now_ms();
        let age = |t: i64| Duration::from_millis(u64::try_from(now.saturating_sub(t)).unwrap_or(0));
        let dir = self.path.parent().unwrap_or(Path::new("."));
        Ok(JournalFacts {
            path: self.path.clone(),
            size_bytes: schema::file_bytes(&self.path),
            writable: writable(dir),
            events: events_by_kind.values().sum(),
            events_by_kind,
            oldest_event_age: oldest.map(age),
            newest_event_age: newest.map(age),
            last_seq: u64::try_from(last).unwrap_or(0),
        })
    }
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}
