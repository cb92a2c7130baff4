//! The journal on real files in temporary directories, with a second
//! process (this test binary run again in a child mode) for the
//! crash and concurrent-reader cases.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use super::*;
use crate::wire::{Event, EventBody, OomKill, PressureEvent, ReclaimKindName, ReclaimStall, Workload};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "oomwatch-journal-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn time_at(t: SystemTime) -> String {
    crate::wire::rfc3339(t)
}

fn kill(pid: u32, cgroup: &str, t: SystemTime) -> Event {
    let mut k = OomKill::of_pid(pid);
    k.workload = Workload { unit: Some(format!("unit-{}.service", pid % 3)), ..Default::default() };
    Event { body: EventBody::OomKill(Box::new(k)), time: time_at(t), cgroup: cgroup.into(), ktime_ns: Some(1), seq: 0 }
}

fn pressure(cgroup: &str, t: SystemTime, padding: usize) -> Event {
    Event {
        body: EventBody::Pressure(PressureEvent {
            trigger: format!("some 150000 2000000{}", " ".repeat(padding)),
            some_avg10: Some(12.5),
            full_avg10: Some(3.25),
            some_total_us: Some(123_456_789),
            full_total_us: Some(9_876_543),
        }),
        time: time_at(t),
        cgroup: cgroup.into(),
        ktime_ns: None,
        seq: 0,
    }
}

fn stall(cgroup: &str, t: SystemTime) -> Event {
    Event {
        body: EventBody::ReclaimStall(ReclaimStall {
            pid: 7,
            tid: 8,
            comm: "java".into(),
            duration_ms: 150.0,
            reclaim_kind: ReclaimKindName::Memcg,
            nr_reclaimed: Some(32),
            order: Some(0),
            suppressed: 0,
        }),
        time: time_at(t),
        cgroup: cgroup.into(),
        ktime_ns: Some(5),
        seq: 0,
    }
}

fn config(dir: &Path) -> JournalConfig {
    JournalConfig::new(dir)
}

fn open(dir: &Path) -> Journal {
    Journal::open(config(dir)).unwrap_or_else(|e| panic!("{e}"))
}

fn seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[test]
fn appended_events_read_back_by_seq_time_kind_and_cgroup() {
    let dir = TempDir::new("read");
    let j = open(&dir.0);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    let mut appended = Vec::new();
    for i in 0..30u32 {
        let t = t0 + Duration::from_secs(u64::from(i) * 60);
        let mut e = match i % 3 {
            0 => kill(i, &format!("/kubepods/pod{i}"), t),
            1 => pressure("/system.slice/db.service", t, 0),
            _ => stall("/user.slice", t),
        };
        let a = j.append_event(&mut e);
        assert_eq!(a, Appended::Queued(e.seq));
        appended.push(e);
    }
    assert!(j.flush(WAIT));
    assert_eq!(j.durable_seq(), appended.last().map(|e| e.seq).unwrap_or(0));
    let r = j.reader().unwrap_or_else(|e| panic!("{e}"));

    let all = r.query(&Query::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seqs(&all), appended.iter().map(|e| e.seq).collect::<Vec<_>>());
    // The stored line is the event as the socket sends it, seq included.
    assert_eq!(all[4].event().unwrap_or_else(|e| panic!("{e}")), appended[4]);

    let after = r.query(&Query { after_seq: Some(appended[26].seq), ..Default::default() }).unwrap();
    assert_eq!(seqs(&after), vec![appended[27].seq, appended[28].seq, appended[29].seq]);

    let newest_kills = r
        .query(&Query { kinds: vec!["oom_kill".into()], order: Order::NewestFirst, limit: Some(2), ..Default::default() })
        .unwrap();
    assert_eq!(seqs(&newest_kills), vec![appended[27].seq, appended[24].seq]);

    let window = r
        .query(&Query {
            since: Some(t0 + Duration::from_secs(600)),
            until: Some(t0 + Duration::from_secs(900)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(seqs(&window), (10..15).map(|i| appended[i].seq).collect::<Vec<_>>());

    let glob = r
        .query(&Query {
            cgroup: Some(glob::Pattern::new("/kubepods/pod1*").unwrap()),
            limit: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(glob.iter().map(|e| e.cgroup.as_str()).collect::<Vec<_>>(), vec!["/kubepods/pod12", "/kubepods/pod15", "/kubepods/pod18"]);

    let facts = r.facts().unwrap();
    assert_eq!(facts.events, 30);
    assert_eq!(facts.events_by_kind.get("oom_kill"), Some(&10));
    assert!(facts.writable);
    assert!(facts.oldest_event_age.is_some_and(|a| a >= Duration::from_secs(3590)), "{facts:?}");
    let stats = j.stats();
    assert_eq!(stats.events_by_kind.get("pressure"), Some(&10));
    assert!(stats.size_bytes > 0);
    assert!(stats.commit_latency.count >= 1);
    assert_eq!(stats.incident_durable_latency.count, 10);
}

#[test]
fn seq_continues_after_a_clean_close_and_never_goes_back() {
    let dir = TempDir::new("seq");
    let j = open(&dir.0);
    let mut last = 0;
    for i in 0..5 {
        last = j.append_event(&mut kill(i, "/a", SystemTime::now())).seq();
    }
    j.close();
    let j = open(&dir.0);
    assert_eq!(j.last_seq(), last);
    let next = j.append_event(&mut pressure("/", SystemTime::now(), 0)).seq();
    assert_eq!(next, last + 1);
    // A caller-assigned seq moves the counter forward, never back.
    let mut e = pressure("/", SystemTime::now(), 0);
    e.seq = next + 100;
    j.append_event(&mut e);
    assert_eq!(j.next_seq(), next + 101);
}

#[test]
fn json_lines_keep_their_seq_or_get_one() {
    let dir = TempDir::new("json");
    let mut cfg = config(&dir.0);
    // A fixed date: kept whatever day the test runs.
    cfg.retention.max_age = Duration::from_secs(100 * 365 * 86_400);
    let j = Journal::open(cfg).unwrap();
    let line = r#"{"kind":"pressure","trigger":"some 1 2","time":"2026-12-06T03:00:00.000000Z","cgroup":"/x"}"#;
    let record = Record::from_json(line).unwrap_or_else(|e| panic!("{e}"));
    let seq = j.append(record).seq();
    assert!(j.flush(WAIT));
    let got = j.reader().unwrap().query(&Query::default()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, seq);
    let v: serde_json::Value = serde_json::from_str(&got[0].json).unwrap();
    assert_eq!(v["seq"], seq);
    assert_eq!(got[0].time_ms, 1_796_526_000_000);
    assert!(Record::from_json("{\"kind\":1}").is_err());
    // Found by the fuzzer: a number no JSON reader takes, in a field the
    // head does not read. Stored, it would fail every later read.
    let huge = r#"{"kind":"victim_exit","pid":42888888844444e4444444444445888,"time":"2026-11-22T05:46:54Z","cgroup":"/x"}"#;
    assert!(Record::from_json(huge).is_err());
    assert!(Record::from_json(r#"{"kind":"x","cgroup":"/x","seq":-1}"#).is_err());
    assert!(Record::from_json("not json").is_err());
}

#[test]
fn an_amended_kill_is_stored_under_its_seq_and_moves_in_the_summary() {
    let dir = TempDir::new("amend");
    let j = open(&dir.0);
    let mut e = kill(42, "/kubepods/a", SystemTime::now());
    let seq = j.append_event(&mut e).seq();
    if let EventBody::OomKill(k) = &mut e.body {
        k.exit_latency_ms = Some(2.5);
        k.workload.unit = Some("named.service".into());
    }
    j.amend_event(&e).unwrap();
    // An amendment of a seq the journal does not hold changes nothing.
    j.amend(seq + 1000, "{}".into()).unwrap();
    assert!(j.flush(WAIT));
    let r = j.reader().unwrap();
    let got = r.query(&Query::default()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, seq);
    assert!(got[0].json.contains(r#""exit_latency_ms":2.5"#), "{}", got[0].json);
    let by_workload = r.summary(&SummaryQuery { by: SummaryBy::Workload, ..Default::default() }).unwrap();
    assert_eq!(by_workload.len(), 1, "{by_workload:?}");
    assert_eq!((by_workload[0].key.as_str(), by_workload[0].kills), ("named.service", 1));
}

#[test]
fn a_kill_without_a_workload_name_is_summarized_under_its_cgroup() {
    let dir = TempDir::new("unnamed");
    let j = open(&dir.0);
    let mut e = kill(7, "/system.slice/anon", SystemTime::now());
    if let EventBody::OomKill(k) = &mut e.body {
        k.workload = Workload::default();
    }
    j.append_event(&mut e);
    j.append_event(&mut kill(8, "/named", SystemTime::now()));
    assert!(j.flush(WAIT));
    let rows = j.reader().unwrap().summary(&SummaryQuery { by: SummaryBy::Workload, ..Default::default() }).unwrap();
    let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["/system.slice/anon", "unit-2.service"], "{rows:?}");
}

#[test]
fn summary_counts_kills_per_cgroup_per_day() {
    let dir = TempDir::new("summary");
    let mut cfg = config(&dir.0);
    // Fixed days in 2024: kept whatever day the test runs.
    cfg.retention.max_age = Duration::from_secs(100 * 365 * 86_400);
    cfg.retention.incident_max_age = cfg.retention.max_age;
    let j = Journal::open(cfg).unwrap();
    let day = |d: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + d * 86_400 + 3600);
    for (d, cgroup, n) in [(0, "/a", 3), (0, "/b", 1), (1, "/a", 2), (1, "/c/x", 5)] {
        for i in 0..n {
            j.append_event(&mut kill(i, cgroup, day(d)));
            j.append_event(&mut pressure(cgroup, day(d), 0));
        }
    }
    assert!(j.flush(WAIT));
    let r = j.reader().unwrap();
    let rows = r.summary(&SummaryQuery::default()).unwrap();
    let got: Vec<(&str, &str, u64)> = rows.iter().map(|r| (r.day.as_str(), r.key.as_str(), r.kills)).collect();
    assert_eq!(
        got,
        vec![("2024-10-05", "/c/x", 5), ("2024-10-05", "/a", 2), ("2024-10-04", "/a", 3), ("2024-10-04", "/b", 1)]
    );
    let only_day_1 = r
        .summary(&SummaryQuery { since: Some(day(1)), cgroup: Some(glob::Pattern::new("/a*").unwrap()), ..Default::default() })
        .unwrap();
    assert_eq!(only_day_1, vec![SummaryRow { day: "2024-10-05".into(), key: "/a".into(), kills: 2 }]);
}

#[test]
fn state_is_written_atomically_and_survives_a_restart() {
    let dir = TempDir::new("state");
    let j = open(&dir.0);
    j.update_state(vec![
        StateOp::Put { key: "alerts/firing/a".into(), value: "1".into() },
        StateOp::Put { key: "alerts/firing/b".into(), value: "2".into() },
        StateOp::Put { key: "sink_cursor/otlp".into(), value: "17".into() },
    ])
    .unwrap();
    // Replacing a set: the prefix goes and the new members come in one transaction.
    j.update_state(vec![
        StateOp::DeletePrefix { prefix: "alerts/firing/".into() },
        StateOp::Put { key: "alerts/firing/c".into(), value: "3".into() },
    ])
    .unwrap();
    j.update_state(vec![StateOp::Delete { key: "nothing".into() }]).unwrap();
    j.close();
    let r = JournalReader::open(&dir.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.state_prefix("alerts/firing/").unwrap(), vec![("alerts/firing/c".to_owned(), "3".to_owned())]);
    assert_eq!(r.state("sink_cursor/otlp").unwrap().as_deref(), Some("17"));
    assert_eq!(r.state("absent").unwrap(), None);
}

#[test]
fn a_second_writer_on_the_same_directory_is_refused() {
    let dir = TempDir::new("busy");
    let first = open(&dir.0);
    let e = Journal::open(config(&dir.0)).err().expect("one writer per directory");
    assert!(matches!(e, JournalError::Busy { .. }), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
    // Readers are not refused.
    let seq = first.append_event(&mut kill(1, "/k", SystemTime::now())).seq();
    assert!(first.wait_durable(seq, WAIT));
    assert_eq!(JournalReader::open(&dir.0).unwrap().last_seq().unwrap(), seq);
    first.close();
    drop(open(&dir.0));
}

#[test]
fn a_reader_on_a_missing_journal_says_so() {
    let dir = TempDir::new("missing");
    let e = JournalReader::open(&dir.0).err().expect("no journal there");
    assert!(matches!(e, JournalError::Missing { .. }), "{e}");
    assert!(!dir.0.join(FILE_NAME).exists(), "a reader must not create the journal");
}

/// Writes a journal with `n` events and closes it.
fn filled(dir: &Path, n: u32) {
    let j = open(dir);
    for i in 0..n {
        j.append_event(&mut pressure("/a/b", SystemTime::now(), 200));
        if i.is_multiple_of(10) {
            j.append_event(&mut kill(i, "/a/b", SystemTime::now()));
        }
    }
    j.close();
}

fn assert_moved_aside_and_fresh(dir: &Path, original: &[u8]) {
    let j = Journal::open(config(dir)).unwrap_or_else(|e| panic!("a damaged journal must not stop the open: {e}"));
    let moved = j.moved_aside().cloned().expect("the damaged file is moved aside");
    assert_eq!(moved.from, dir.join(FILE_NAME));
    assert!(moved.to.starts_with(dir) && moved.to.to_string_lossy().contains(".corrupt-"), "{moved:?}");
    let kept = fs::read(&moved.to).unwrap();
    let first_difference = kept.iter().zip(original).position(|(a, b)| a != b);
    assert!(
        kept.len() == original.len() && first_difference.is_none(),
        "the damaged file is kept as it was: {} bytes, was {}; first difference at {first_difference:?}",
        kept.len(),
        original.len()
    );
    // The new journal works.
    let seq = j.append_event(&mut kill(1, "/x", SystemTime::now())).seq();
    assert!(j.wait_durable(seq, WAIT));
    assert_eq!(seqs(&j.reader().unwrap().query(&Query::default()).unwrap()), vec![seq]);
    j.close();
    // And opens cleanly the next time.
    assert!(open(dir).moved_aside().is_none());
}

#[test]
fn the_header_check_reads_a_real_file_and_no_garbage() {
    let dir = TempDir::new("header");
    filled(&dir.0, 500);
    let bytes = fs::read(dir.0.join(FILE_NAME)).unwrap();
    assert_eq!(sqlite_header_claimed_len(&bytes[..100]), Some(bytes.len() as u64));
    assert_eq!(sqlite_header_claimed_len(&bytes[..99]), None);
    let mut odd_page = bytes[..100].to_vec();
    odd_page[16..18].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(sqlite_header_claimed_len(&odd_page), None);
    let mut stale = bytes[..100].to_vec();
    stale[92] ^= 1;
    assert_eq!(sqlite_header_claimed_len(&stale), None, "a stale page count claims nothing");
}

#[test]
fn a_garbage_file_is_moved_aside_and_a_new_journal_started() {
    let dir = TempDir::new("garbage");
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(dir.0.join(FILE_NAME), &garbage).unwrap();
    assert_moved_aside_and_fresh(&dir.0, &garbage);
}

#[test]
fn a_corrupted_page_is_moved_aside_and_a_new_journal_started() {
    let dir = TempDir::new("corrupt");
    filled(&dir.0, 3000);
    let path = dir.0.join(FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.len() > 64 * 4096, "{}", bytes.len());
    // Scribble over pages in the middle, keeping the header valid.
    for b in &mut bytes[20 * 4096..40 * 4096] {
        *b = 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    // The quick checks at open may miss pages in the middle; the full check
    // that runs after the start finds them, and the next start moves the
    // file aside.
    let j = Journal::open(config(&dir.0)).unwrap_or_else(|e| panic!("a damaged journal must not stop the open: {e}"));
    if j.moved_aside().is_none() {
        let deadline = Instant::now() + WAIT;
        while j.stats().damaged.is_none() {
            assert!(Instant::now() < deadline, "the full check did not find the damage");
            std::thread::sleep(Duration::from_millis(20));
        }
        j.close();
        let j = Journal::open(config(&dir.0)).unwrap_or_else(|e| panic!("{e}"));
        let moved = j.moved_aside().cloned().expect("moved aside at the next start");
        assert!(moved.reason.contains("found damaged while running"), "{moved:?}");
        assert!(moved.to.exists() && !dir.0.join(format!("{FILE_NAME}.damaged")).exists());
        let seq = j.append_event(&mut kill(1, "/x", SystemTime::now())).seq();
        assert!(j.wait_durable(seq, WAIT));
        assert_eq!(seqs(&j.reader().unwrap().query(&Query::default()).unwrap()), vec![seq]);
    }
}

#[test]
fn a_time_window_finds_events_published_after_later_ones() {
    let dir = TempDir::new("window");
    let j = open(&dir.0);
    let t0 = SystemTime::now() - Duration::from_secs(86_400);
    let mut inside = Vec::new();
    for i in 0..3000u64 {
        // Every tenth event is published 5 minutes after its time.
        let late = i % 10 == 9;
        let t = t0 + Duration::from_secs(i) - if late { Duration::from_secs(300) } else { Duration::ZERO };
        let seq = j.append_event(&mut pressure("/w", t, 0)).seq();
        let window = (t0 + Duration::from_secs(1000))..(t0 + Duration::from_secs(2000));
        if window.contains(&t) {
            inside.push(seq);
        }
    }
    assert!(j.flush(WAIT));
    let got = j
        .reader()
        .unwrap()
        .query(&Query {
            since: Some(t0 + Duration::from_secs(1000)),
            until: Some(t0 + Duration::from_secs(2000)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(seqs(&got), inside);
}

#[test]
fn a_truncated_file_is_moved_aside_and_a_new_journal_started() {
    let dir = TempDir::new("truncated");
    filled(&dir.0, 3000);
    let path = dir.0.join(FILE_NAME);
    let bytes = fs::read(&path).unwrap();
    let half = bytes[..bytes.len() / 2].to_vec();
    fs::write(&path, &half).unwrap();
    assert_moved_aside_and_fresh(&dir.0, &half);
}

#[test]
fn a_flood_of_high_rate_events_never_evicts_a_kill() {
    let dir = TempDir::new("flood");
    let mut cfg = config(&dir.0);
    cfg.retention.max_bytes = 2 << 20;
    let j = Journal::open(cfg).unwrap();
    let mut kills = Vec::new();
    for i in 0..40u32 {
        kills.push(j.append_event(&mut kill(i, "/k", SystemTime::now())).seq());
    }
    // About 8 MiB of pressure events into a 2 MiB journal.
    for _ in 0..20_000 {
        j.append_event(&mut pressure("/busy", SystemTime::now(), 200));
    }
    assert!(j.flush(WAIT));
    let deadline = Instant::now() + WAIT;
    let r = j.reader().unwrap();
    while used_bytes(&dir.0.join(FILE_NAME)) > 2 << 20 {
        assert!(Instant::now() < deadline, "retention did not bring the journal under its limit: {:?}", r.facts());
        std::thread::sleep(Duration::from_millis(50));
    }
    let held_kills = r.query(&Query { kinds: vec!["oom_kill".into()], ..Default::default() }).unwrap();
    assert_eq!(seqs(&held_kills), kills, "every kill is kept");
    let stats = j.stats();
    let dropped = stats.retention_dropped.get("pressure").copied().unwrap_or(0);
    assert!(dropped > 10_000, "{stats:?}");
    assert_eq!(stats.retention_dropped.get("oom_kill"), None);
    assert_eq!(stats.events_by_kind.get("pressure").copied().unwrap_or(0) + dropped, 20_000);
}

fn used_bytes(path: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let q = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0)).unwrap();
    (q("page_count") - q("freelist_count")) * q("page_size")
}

#[test]
fn kills_go_only_when_nothing_else_is_left_to_evict() {
    let dir = TempDir::new("kills-evicted");
    let mut cfg = config(&dir.0);
    cfg.retention.max_bytes = 256 << 10;
    let j = Journal::open(cfg).unwrap();
    let mut kills = Vec::new();
    for i in 0..2_000u32 {
        j.append_event(&mut pressure("/p", SystemTime::now(), 100));
        kills.push(j.append_event(&mut kill(i, "/k", SystemTime::now())).seq());
    }
    assert!(j.flush(WAIT));
    let r = j.reader().unwrap();
    let deadline = Instant::now() + WAIT;
    while used_bytes(&dir.0.join(FILE_NAME)) > 256 << 10 {
        assert!(Instant::now() < deadline, "size limit not enforced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let facts = r.facts().unwrap();
    assert_eq!(facts.events_by_kind.get("pressure"), None, "high-rate events go first: {facts:?}");
    let held = seqs(&r.query(&Query { kinds: vec!["oom_kill".into()], ..Default::default() }).unwrap());
    assert!(!held.is_empty() && held.len() < kills.len());
    // The oldest kills went, the newest stayed.
    assert_eq!(held.last(), kills.last());
    assert_eq!(j.stats().retention_dropped.get("oom_kill").copied(), Some((kills.len() - held.len()) as u64));
}

#[test]
fn age_limits_apply_per_class() {
    let dir = TempDir::new("age");
    let mut cfg = config(&dir.0);
    cfg.retention.max_age = Duration::from_secs(3600);
    cfg.retention.incident_max_age = Duration::from_secs(86_400);
    cfg.retention.check_interval = Duration::from_millis(100);
    let j = Journal::open(cfg).unwrap();
    let now = SystemTime::now();
    let old = now - Duration::from_secs(7200);
    let ancient = now - Duration::from_secs(2 * 86_400);
    let kept_kill = j.append_event(&mut kill(1, "/a", old)).seq();
    j.append_event(&mut kill(2, "/a", ancient));
    j.append_event(&mut pressure("/a", old, 0));
    let fresh = j.append_event(&mut stall("/a", now)).seq();
    assert!(j.flush(WAIT));
    let r = j.reader().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let held = seqs(&r.query(&Query::default()).unwrap());
        if held == vec![kept_kill, fresh] {
            break;
        }
        assert!(Instant::now() < deadline, "age retention left {held:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = j.stats();
    assert_eq!(stats.retention_dropped.get("pressure"), Some(&1));
    assert_eq!(stats.retention_dropped.get("oom_kill"), Some(&1));
    // The summary forgets days past the incident age too.
    let days = r.summary(&SummaryQuery::default()).unwrap();
    assert_eq!(days.iter().map(|d| d.kills).sum::<u64>(), 1, "{days:?}");
}

#[test]
fn a_full_queue_drops_high_rate_events_but_makes_room_for_kills() {
    let dir = TempDir::new("queue");
    let mut cfg = config(&dir.0);
    cfg.queue_capacity = 16;
    cfg.batch_max = 1_000;
    // High-rate events wait for this linger: the queue fills before it ends.
    cfg.batch_linger = Duration::from_secs(30);
    let j = Journal::open(cfg).unwrap();
    let mut results = Vec::new();
    for _ in 0..40 {
        results.push(j.append_event(&mut pressure("/p", SystemTime::now(), 0)));
    }
    let queued = results.iter().filter(|a| matches!(a, Appended::Queued(_))).count();
    assert_eq!(queued, 16);
    assert!(results[16..].iter().all(|a| matches!(a, Appended::Dropped(_, DropReason::QueueFull))));
    // A kill takes the place of the oldest waiting pressure event, and is
    // committed at once (not after the linger).
    let kill_seq = j.append_event(&mut kill(9, "/k", SystemTime::now()));
    assert!(matches!(kill_seq, Appended::Queued(_)));
    assert!(j.wait_durable(kill_seq.seq(), WAIT));
    let stats = j.stats();
    assert_eq!(stats.dropped.get("queue_full"), Some(&25));
    // The kill went alone; the pressure events still wait for their linger.
    assert!(j.flush(WAIT));
    let held = j.reader().unwrap().query(&Query::default()).unwrap();
    assert_eq!(held.len(), 16);
    assert_eq!(held.last().map(|e| e.seq), Some(kill_seq.seq()));
    assert_eq!(held.first().map(|e| e.seq), Some(results[1].seq()));
}

#[test]
fn high_rate_events_are_batched_and_kills_are_not() {
    let dir = TempDir::new("batch");
    let mut cfg = config(&dir.0);
    cfg.batch_linger = Duration::from_millis(300);
    let j = Journal::open(cfg).unwrap();
    let p = j.append_event(&mut pressure("/p", SystemTime::now(), 0)).seq();
    std::thread::sleep(Duration::from_millis(100));
    assert!(j.durable_seq() < p, "a lone pressure event waits for its batch");
    assert!(j.wait_durable(p, WAIT));
    let started = Instant::now();
    let k = j.append_event(&mut kill(1, "/k", SystemTime::now())).seq();
    assert!(j.wait_durable(k, WAIT));
    assert!(started.elapsed() < Duration::from_millis(250), "a kill is committed at once: {:?}", started.elapsed());
}

#[test]
fn a_kill_behind_a_backlog_of_high_rate_events_is_committed_first_on_its_own() {
    let dir = TempDir::new("priority");
    let mut cfg = config(&dir.0);
    // The backlog never becomes due on its own: only the kill can make
    // the writer commit. The kill goes in a commit of its own, first; the
    // backlog queued before it follows at once (readers in seq order, the
    // shipping sinks, would otherwise wait out the linger behind the kill).
    cfg.batch_max = 100_000;
    cfg.batch_linger = Duration::from_secs(30);
    let j = Journal::open(cfg).unwrap();
    let backlog: Vec<u64> = (0..5_000).map(|_| j.append_event(&mut pressure("/p", SystemTime::now(), 0)).seq()).collect();
    // What the journal holds at the instant the kill is durable: run on the
    // writer's thread right after that commit, before any other.
    let kill_seq = backlog.last().unwrap() + 1;
    let reader = j.reader().unwrap();
    let (tx, rx) = mpsc::channel();
    j.when_kept(kill_seq, Box::new(move || tx.send(reader.query(&Query::default()).map(|h| seqs(&h))).unwrap()));
    let k = j.append_event(&mut kill(7, "/k", SystemTime::now()));
    assert!(matches!(k, Appended::Queued(_)), "{k:?}");
    assert_eq!(k.seq(), kill_seq);
    let at_kill_commit = rx.recv_timeout(WAIT).expect("the kill is committed without waiting for the linger").unwrap();
    assert_eq!(at_kill_commit, vec![kill_seq], "the kill went in a commit of its own, ahead of the backlog queued before it");
    let started = Instant::now();
    assert!(j.wait_durable(*backlog.last().unwrap(), WAIT), "the backlog follows the kill");
    assert!(started.elapsed() < Duration::from_secs(10), "without its 30 s linger: {:?}", started.elapsed());
    // Everything, in seq order, the kill once.
    let held = j.reader().unwrap().query(&Query::default()).unwrap();
    let mut want = backlog.clone();
    want.push(k.seq());
    assert_eq!(seqs(&held), want);
    assert_eq!(j.durable_seq(), k.seq());
}

// --- A second process: this test binary, run again in a child mode ---

const CHILD_ENV: &str = "OOMWATCH_JOURNAL_CHILD_DIR";

/// Not a test of its own: the writer process of the crash and concurrent
/// reader tests. Appends kills and pressure events until killed (or for
/// the given count), printing the durable seq as it grows.
#[test]
#[ignore = "run by other tests as a child process"]
fn child_writer() {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let limit: u64 = std::env::var("OOMWATCH_JOURNAL_CHILD_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    let mut cfg = JournalConfig::new(PathBuf::from(dir));
    cfg.batch_linger = Duration::from_millis(20);
    let j = Journal::open(cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut out = std::io::stdout().lock();
    // After a newline: the test harness has just written "test ... " without one.
    let _ = writeln!(out, "\nOPENED {}", j.last_seq());
    let mut reported = 0;
    let mut i = 0u64;
    while i < limit {
        let a = if i.is_multiple_of(5) {
            j.append_event(&mut kill(i as u32, "/crash/kills", SystemTime::now()))
        } else {
            j.append_event(&mut pressure("/crash/pressure", SystemTime::now(), 100))
        };
        assert!(matches!(a, Appended::Queued(_)), "{a:?}");
        // The highest seq handed out goes first, so the parent knows what
        // the next run must start after.
        let _ = writeln!(out, "ASSIGNED {}", a.seq());
        let durable = j.durable_seq();
        if durable > reported {
            let dropped: u64 = j.stats().dropped.values().sum();
            let _ = writeln!(out, "DURABLE {durable} DROPPED {dropped}");
            reported = durable;
        }
        let _ = out.flush();
        i += 1;
        if i.is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(j.flush(Duration::from_secs(30)));
    let _ = writeln!(out, "DURABLE {} DROPPED 0", j.durable_seq());
    j.close();
    let _ = writeln!(out, "DONE");
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_writer(dir: &Path, events: Option<u64>) -> (ChildGuard, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "outputs::journal::tests::child_writer", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(n) = events {
        cmd.env("OOMWATCH_JOURNAL_CHILD_EVENTS", n.to_string());
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning the writer child: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (ChildGuard(child), rx)
}

#[test]
fn sigkill_while_appending_loses_nothing_reported_durable() {
    let dir = TempDir::new("sigkill");
    let mut previous_max = 0;
    for round in 0..8u64 {
        let (mut child, lines) = spawn_writer(&dir.0, None);
        let mut durable = 0;
        let mut assigned = 0;
        let mut opened = None;
        // Kill at a different moment each round, once writes are flowing.
        let kill_after = 20 + round * 17;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut durable_reports = 0;
        while durable_reports < kill_after {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("round {round}: the writer child stopped reporting"));
            let mut words = line.split_whitespace();
            match (words.next(), words.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("OPENED"), Some(last)) => opened = Some(last),
                (Some("ASSIGNED"), Some(seq)) => assigned = assigned.max(seq),
                (Some("DURABLE"), Some(seq)) => {
                    assert_eq!(words.nth(1), Some("0"), "round {round}: nothing may be dropped here: {line}");
                    durable = seq;
                    durable_reports += 1;
                }
                _ => {}
            }
        }
        // SAFETY: kill(2) on the pid of the child this test spawned and still holds.
        let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let _ = child.0.wait();
        for line in lines.try_iter() {
            if let Some(seq) = line.strip_prefix("ASSIGNED ").and_then(|v| v.parse::<u64>().ok()) {
                assigned = assigned.max(seq);
            }
        }
        let opened = opened.expect("the child opened the journal");
        assert!(opened >= previous_max, "round {round}: seq went back: opened at {opened} after {previous_max}");

        let j = Journal::open(config(&dir.0)).unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL: {e}"));
        assert!(j.moved_aside().is_none(), "round {round}: the journal was damaged by SIGKILL");
        let held = seqs(&j.reader().unwrap().query(&Query { after_seq: Some(opened), ..Default::default() }).unwrap());
        let expected: Vec<u64> = (opened + 1..=durable).collect();
        assert!(durable > opened, "round {round}: nothing became durable");
        assert!(
            held.len() >= expected.len() && held[..expected.len()] == expected[..],
            "round {round}: durable {}..={durable}, held {:?}..{:?} ({} events)",
            opened + 1,
            held.first(),
            held.last(),
            held.len()
        );
        assert!(held.windows(2).all(|w| w[0] < w[1]));
        let next = j.next_seq();
        assert!(next > assigned, "round {round}: next seq {next} does not pass the {assigned} handed out before the kill");
        previous_max = next;
        j.close();
    }
}

#[test]
fn another_process_reads_while_the_daemon_writes() {
    let dir = TempDir::new("concurrent");
    let (mut child, lines) = spawn_writer(&dir.0, Some(20_000));
    // Wait for the journal to exist.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.recv_timeout(Duration::from_secs(30)).unwrap_or_default().starts_with("DURABLE") {
        assert!(Instant::now() < deadline, "the writer child never committed");
    }
    let reader = JournalReader::open(&dir.0).unwrap_or_else(|e| panic!("{e}"));
    let mut last_seen = 0;
    let mut reads = 0;
    let mut done = false;
    // A long read transaction on a plain connection: the writer must go on.
    let long = rusqlite::Connection::open_with_flags(dir.0.join(FILE_NAME), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    long.execute_batch("BEGIN").unwrap();
    let pinned: i64 = long.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    let mut durable_while_pinned = 0;
    while !done {
        for line in lines.try_iter() {
            if line == "DONE" {
                done = true;
            }
            if let Some(d) = line.strip_prefix("DURABLE ").and_then(|v| v.split(' ').next()).and_then(|v| v.parse::<u64>().ok()) {
                durable_while_pinned = durable_while_pinned.max(d);
            }
        }
        let batch = reader
            .query(&Query { after_seq: Some(last_seen), limit: Some(5_000), ..Default::default() })
            .unwrap_or_else(|e| panic!("read while writing: {e}"));
        // Consistent: contiguous seqs (nothing is dropped here), each row whole.
        for e in &batch {
            assert_eq!(e.seq, last_seen + 1, "gap or repeat at the seam");
            let parsed = e.event().unwrap_or_else(|err| panic!("seq {}: {err}", e.seq));
            assert_eq!(parsed.seq, e.seq);
            last_seen = e.seq;
        }
        let facts = reader.facts().unwrap_or_else(|e| panic!("{e}"));
        assert!(facts.last_seq >= last_seen);
        reads += 1;
        assert!(Instant::now() < deadline + Duration::from_secs(120), "the writer child did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let still: i64 = long.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(still, pinned, "a read transaction sees one snapshot");
    long.execute_batch("COMMIT").unwrap();
    assert_eq!(child.0.wait().map(|s| s.success()).ok(), Some(true));
    assert!(durable_while_pinned >= 20_000 - 1, "the writer was held up by a reader: durable {durable_while_pinned}");
    let rest = reader.query(&Query { after_seq: Some(last_seen), ..Default::default() }).unwrap();
    assert_eq!(last_seen + rest.len() as u64, 20_000);
    assert!(reads > 3, "only {reads} reads overlapped the writer");
}

#[test]
fn a_journal_with_no_events_yet_opens_again() {
    // A daemon stopped before its first event, with only state written (a
    // shipping sink's cursor): the next start must not take it for damaged.
    let d = TempDir::new("empty-reopen");
    let j = Journal::open(JournalConfig::new(&d.0)).unwrap();
    j.put_state("sink.file.cursor", "0").unwrap();
    assert!(j.flush(WAIT));
    j.close();
    let j = Journal::open(JournalConfig::new(&d.0)).unwrap_or_else(|e| panic!("reopen: {e}"));
    assert!(j.moved_aside().is_none(), "kept, not moved aside");
    assert_eq!(j.reader().unwrap().state("sink.file.cursor").unwrap().as_deref(), Some("0"));
}

#[test]
fn what_waits_for_a_seq_runs_once_it_is_committed_and_at_once_when_it_is_durable() {
    let dir = TempDir::new("when-durable");
    let j = open(&dir.0);
    let mut e = kill(1, "/a", SystemTime::now());
    let Appended::Queued(seq) = j.append_event(&mut e) else { panic!("not queued") };
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    // Run right after the commit (before its fsync): another connection,
    // as a process reading after the daemon died, already finds the kill.
    let reader = j.reader().unwrap();
    let found = move || reader.query(&Query::default()).map(|h| seqs(&h).contains(&seq)).unwrap_or(false);
    j.when_kept(seq, Box::new(move || tx.send(if found() { "after the commit, readable" } else { "before it was readable" }).unwrap()));
    assert_eq!(rx.recv_timeout(WAIT), Ok("after the commit, readable"));
    assert!(j.wait_durable(seq, WAIT), "and durable (fsync'd) right after");
    j.when_kept(seq, Box::new(move || tx2.send("at once").unwrap()));
    assert_eq!(rx.try_recv(), Ok("at once"));
}

/// A kill written ahead of its commit (`intent.rs`) by a daemon that died
/// before committing it: shown to clients, so the next start keeps it, and
/// a kill the database already holds is not added twice.
#[test]
fn kills_written_ahead_of_their_commit_are_kept_at_the_next_start_once() {
    let dir = TempDir::new("intent");
    let j = open(&dir.0);
    let Appended::Queued(committed) = j.append_event(&mut kill(1, "/a", SystemTime::now())) else { panic!("not queued") };
    assert!(j.wait_durable(committed, WAIT));
    j.close();
    // What a daemon killed between its write(2) and the commit leaves.
    let mut lost = kill(2, "/b", SystemTime::now());
    lost.seq = committed + 5;
    let mut again = kill(1, "/a-rewritten", SystemTime::now());
    again.seq = committed;
    let lines = [serde_json::to_string(&again).unwrap(), serde_json::to_string(&lost).unwrap(), "{\"kind\":\"oom".to_owned()];
    std::fs::write(dir.0.join("kills.intent"), lines.join("\n")).unwrap();
    let j = open(&dir.0);
    let held = j.reader().unwrap().query(&Query::default()).unwrap();
    assert_eq!(seqs(&held), vec![committed, committed + 5], "the lost kill is kept, the committed one once");
    assert_eq!(held[0].cgroup, "/a", "what the database held stays");
    assert!(j.last_seq() >= committed + 5, "seqs go on after the imported kill");
    // Emptied once the database holds it; a kill kept at once is written there.
    assert!(j.keep_now(j.next_seq(), "{}"));
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::metadata(dir.0.join("kills.intent")).unwrap().len() > 0 {
        assert!(std::time::Instant::now() < deadline, "the intent file was not emptied");
        j.append_event(&mut pressure("/p", SystemTime::now(), 0));
        j.flush(WAIT);
        std::thread::sleep(Duration::from_millis(20));
    }
}
