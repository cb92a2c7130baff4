//! `oomwatch tail`: follow the daemon's events. Reconnects with backoff when
//! the daemon restarts, and says so.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::TailArgs;
use crate::{
    outputs::socket::TailFilter,
    wire::{Event, EventBody, EventKind, Request, RequestOp, kill_usage_line},
};
pub use crate::wire::{format_bytes, human};

pub fn main(args: TailArgs) -> anyhow::Result<ExitCode> {
    let mut kinds = Vec::new();
    for k in &args.kind {
        let Some(kind) = EventKind::from_name(k) else {
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            bail!("--kind: unknown kind '{k}' (expected one of: {})", names.join(", "));
        };
        kinds.push(kind);
    }
    let cgroup_glob = args
        .cgroup
        .as_deref()
        .map(glob::Pattern::new)
        .transpose()
        .context("--cgroup: invalid glob")?;
    // On a terminal a kill's first line comes from its first word
    // (`kill_seen`), and the full record adds its why under it. JSON shows
    // only what was asked for.
    let ask_first_word = !args.json && (kinds.is_empty() || kinds.contains(&EventKind::OomKill));
    if ask_first_word {
        if kinds.is_empty() {
            kinds = EventKind::ALL.to_vec();
        }
        if !kinds.contains(&EventKind::KillSeen) {
            kinds.push(EventKind::KillSeen);
        }
    }
    let asked: Vec<String> = if ask_first_word { kinds.iter().map(|k| k.as_str().to_owned()).collect() } else { args.kind.clone() };
    let filter = TailFilter { kinds: (!kinds.is_empty()).then_some(kinds), cgroup: cgroup_glob };

    let mut stream = UnixStream::connect(&args.socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {}: {e}; is the daemon running? (start it with `oomwatch daemon`)",
            args.socket.display()
        )
    })?;
    // The daemon filters too (a daemon older than the request's `kinds`
    // and `cgroup` ignores them; `filter` below keeps the output right).
    let mut request = Request {
        op: RequestOp::Tail,
        since_secs: args.since.map(|d| d.as_secs_f64()),
        since_seq: None,
        kinds: asked,
        cgroup: args.cgroup.clone(),
    };
    let mut progress = Progress::default();
    let mut stdout = std::io::stdout();
    loop {
        let lost_at = follow(&mut stream, &request, &args, &filter, &mut progress, &mut stdout)?;
        let Some(lost_at) = lost_at else { return Ok(ExitCode::SUCCESS) };
        eprintln!("oomwatch tail: daemon went away; reconnecting");
        stream = reconnect(&args);
        eprintln!("oomwatch tail: reconnected to {}", args.socket.display());
        // Ask for what happened while we were away: after the last event
        // seen, where the daemon keeps a journal (seqs go on across its
        // restarts: no gap, no repeat); else what it saw since we lost it.
        request.since_seq = (progress.last_seq > 0).then_some(progress.last_seq);
        request.since_secs = Some(lost_at.elapsed().as_secs_f64() + 1.0);
    }
}

/// The fields of an event line every line is read for; the rest is
/// skipped unread.
#[derive(serde::Deserialize)]
struct EventHead {
    kind: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    cgroup: String,
}

/// What this client has shown so far.
#[derive(Default)]
struct Progress {
    shown: u64,
    last_seq: u64,
    /// The first lines of the last kills shown from their first word, by
    /// victim pid: their full record then adds only what is new.
    heads: std::collections::VecDeque<(u32, String)>,
}

/// Kills whose first line is remembered (a group kill's victims arrive
/// together).
const HEADS: usize = 64;

impl Progress {
    /// The text for `event`: a kill whose first word showed the same first
    /// line gives only the lines under it.
    fn text(&mut self, event: &Event) -> String {
        let text = human(event);
        match &event.body {
            EventBody::KillSeen(k) => {
                if self.heads.len() == HEADS {
                    self.heads.pop_front();
                }
                self.heads.push_back((k.victim.pid, text.clone()));
                text
            }
            EventBody::OomKill(k) => {
                let Some(i) = self.heads.iter().position(|(pid, _)| *pid == k.victim.pid) else { return text };
                let (_, head) = self.heads.remove(i).unwrap_or_default();
                match text.split_once('\n') {
                    Some((first, rest)) if first == head => rest.to_owned(),
                    None if text == head => String::new(),
                    _ => text,
                }
            }
            _ => text,
        }
    }
}

fn reconnect(args: &TailArgs) -> UnixStream {
    let mut delay = Duration::from_millis(100);
    loop {
        std::thread::sleep(delay);
        if let Ok(s) = UnixStream::connect(&args.socket) {
            return s;
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Readers of the daemon's socket, each kept on a CPU of its own.
const READERS: usize = 2;

/// A line read is written at once: each reader asks to run as soon as the
/// daemon's write wakes it, rather than behind a busy CPU's slice.
const READER_SLICE: Duration = Duration::from_micros(100);

/// How a follow ended.
enum End {
    /// The stream ended or failed: the daemon went away.
    Lost(Instant),
    /// `--count` events were shown.
    Shown,
    Failed(anyhow::Error),
}

/// Whether to read on after a line.
enum Flow {
    More,
    Shown,
}

/// The stream as the readers share it: whichever is woken first reads
/// every complete line, shows them, and keeps a partial one for later.
struct Lines<'a, W> {
    reader: BufReader<UnixStream>,
    partial: Vec<u8>,
    progress: &'a mut Progress,
    out: &'a mut W,
    on_terminal: bool,
    end: Option<End>,
}

/// Prints events until the stream ends. Returns when the connection was lost
/// (Some), or None when `--count` events were shown.
///
/// Two readers, each kept on one of the first two CPUs this process may
/// use, as the daemon's ring buffer readers are: the CPU that kills keeps
/// busy (its console writing the kernel's report, 2-3 ms) holds one of them
/// at most, and the other shows the kill at once. One reader left to the
/// scheduler is woken on that CPU whenever it last ran there
/// (docs/performance.md).
fn follow<W: std::io::Write + Send>(
    stream: &mut UnixStream,
    request: &Request,
    args: &TailArgs,
    filter: &TailFilter,
    progress: &mut Progress,
    out: &mut W,
) -> anyhow::Result<Option<Instant>> {
    // A refusal arrives as the first line (and the daemon hangs up without
    // reading): read below and reported.
    let _ = writeln!(stream, "{}", serde_json::to_string(request).unwrap_or_default());
    stream.set_nonblocking(true).context("the event socket")?;
    let lines = std::sync::Mutex::new(Lines {
        reader: BufReader::new(stream.try_clone()?),
        partial: Vec::new(),
        progress,
        out,
        on_terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        end: None,
    });
    let cpus = crate::kernel::sched::allowed_cpus(READERS);
    let pins: Vec<Option<usize>> = if cpus.len() < 2 { vec![None] } else { cpus.into_iter().map(Some).collect() };
    let stream = &*stream;
    let readers = std::thread::scope(|s| {
        let lines = &lines;
        pins.into_iter()
            .enumerate()
            .filter(|&(i, pin)| {
                std::thread::Builder::new()
                    .name(format!("oomwatch-tail{i}"))
                    .spawn_scoped(s, move || read_lines(stream, pin, lines, args, filter))
                    .is_ok()
            })
            .count()
    });
    if readers == 0 {
        bail!("{}: cannot start a thread to read it", args.socket.display());
    }
    let end = lines.into_inner().unwrap_or_else(|e| e.into_inner()).end;
    match end {
        Some(End::Shown) => Ok(None),
        Some(End::Failed(e)) => Err(e),
        Some(End::Lost(at)) => Ok(Some(at)),
        None => Ok(Some(Instant::now())),
    }
}

/// One reader: waits for the socket, then reads what is there, until the
/// follow ends (then it wakes the other reader: a shut down socket is
/// readable).
fn read_lines<W: std::io::Write>(
    stream: &UnixStream,
    pin: Option<usize>,
    lines: &std::sync::Mutex<Lines<'_, W>>,
    args: &TailArgs,
    filter: &TailFilter,
) {
    if let Some(cpu) = pin {
        let _ = crate::kernel::sched::pin_to(cpu);
    }
    let _ = crate::kernel::sched::prefer_short_slice(READER_SLICE);
    loop {
        wait_readable(stream);
        let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.end.is_some() {
            return;
        }
        // A reader that panicked would leave the other waiting in poll(2)
        // for good: its follow ends as failed instead, and wakes it.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lines.read_available(args, filter)));
        let end = read.unwrap_or_else(|_| Some(End::Failed(anyhow::anyhow!("{}: a reader panicked", args.socket.display()))));
        if let Some(end) = end {
            lines.end = Some(end);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Until `stream` has something to read, has hung up, or a signal came.
fn wait_readable(stream: &UnixStream) {
    let mut fd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(stream), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, valid for the call. An error (EINTR) only means
    // the caller tries a read that finds nothing and waits again.
    unsafe { libc::poll(&mut fd, 1, -1) };
}

impl<W: std::io::Write> Lines<'_, W> {
    /// Shows every complete line the socket has now; how the follow ended,
    /// if it did.
    fn read_available(&mut self, args: &TailArgs, filter: &TailFilter) -> Option<End> {
        loop {
            match self.reader.read_until(b'\n', &mut self.partial) {
                // A line cut off by the end of the stream is no event.
                Ok(0) => return Some(End::Lost(Instant::now())),
                Ok(_) if self.partial.last() == Some(&b'\n') => {
                    let line = std::mem::take(&mut self.partial);
                    let Ok(line) = std::str::from_utf8(&line) else { return Some(End::Lost(Instant::now())) };
                    let line = line.trim_end_matches('\n').trim_end_matches('\r');
                    match show(line, args, filter, self.on_terminal, self.progress, self.out) {
                        Ok(Flow::More) => {}
                        Ok(Flow::Shown) => return Some(End::Shown),
                        Err(e) => return Some(End::Failed(e)),
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Some(End::Lost(Instant::now())),
            }
        }
    }
}

/// Shows one line of the daemon's, if `args` and `filter` keep it.
fn show(
    line: &str,
    args: &TailArgs,
    filter: &TailFilter,
    on_terminal: bool,
    progress: &mut Progress,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Flow> {
    // What every line needs (kind, seq, cgroup), read without building
    // the event: `--json` prints the line as it came.
    let head = serde_json::from_str::<EventHead>(line).ok().and_then(|h| Some((EventKind::from_name(&h.kind)?, h)));
    let Some((kind, head)) = head else {
        // A refusal (`"kind":"error"`) is no event.
        if let Some(why) = crate::outputs::socket::refusal_reason(line) {
            bail!("{}: the daemon refused this client: {why}", args.socket.display());
        }
        // Kinds newer than this client: pass JSON through, skip in text.
        if args.json && args.kind.is_empty() {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        return Ok(Flow::More);
    };
    progress.last_seq = progress.last_seq.max(head.seq);
    if !filter.keep_kind_in(kind, &head.cgroup) {
        return Ok(Flow::More);
    }
    if args.json {
        writeln!(out, "{line}")?;
    } else {
        // A body this client cannot read is skipped, as a newer kind is.
        let Ok(event) = serde_json::from_str::<Event>(line) else { return Ok(Flow::More) };
        let text = progress.text(&event);
        if !text.is_empty() {
            writeln!(out, "{text}")?;
        }
        // The kill's last minute under its why: bars on a terminal.
        if let EventBody::OomKill(k) = &event.body
            && let Some(usage) = kill_usage_line(k, on_terminal, "                        ")
        {
            writeln!(out, "{usage}")?;
        }
    }
    out.flush()?;
    // A kill's first word asked for on the user's behalf is not an
    // event of its own: `--count` counts the kill once, by its record.
    let implicit = kind == EventKind::KillSeen && !args.kind.iter().any(|k| k == EventKind::KillSeen.as_str());
    if kind != EventKind::Lagged && !implicit {
        progress.shown += 1;
        if args.count.is_some_and(|c| progress.shown >= c) {
            return Ok(Flow::Shown);
        }
    }
    Ok(Flow::More)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow_pair(args: &TailArgs, daemon: impl FnOnce(UnixStream) -> UnixStream + Send + 'static) -> (anyhow::Result<Option<Instant>>, Progress, String) {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let daemon = std::thread::spawn(move || {
            let mut request = String::new();
            BufReader::new(theirs.try_clone().unwrap()).read_line(&mut request).unwrap();
            assert!(request.contains(r#""op":"tail""#), "{request}");
            daemon(theirs)
        });
        let request = Request { op: RequestOp::Tail, since_secs: None, since_seq: None, kinds: Vec::new(), cgroup: None };
        let filter = TailFilter { kinds: None, cgroup: None };
        let (mut progress, mut out) = (Progress::default(), Vec::new());
        let ended = follow(&mut ours, &request, args, &filter, &mut progress, &mut out);
        // Held open until the follow returned (the --count case).
        drop(daemon.join().unwrap());
        (ended, progress, String::from_utf8(out).unwrap())
    }

    fn json_args(count: Option<u64>) -> TailArgs {
        TailArgs { socket: "/run/test.sock".into(), json: true, kind: Vec::new(), cgroup: None, since: None, count }
    }

    #[test]
    fn a_line_split_across_writes_is_shown_whole_and_count_ends_the_follow_on_an_open_socket() {
        let (ended, progress, out) = follow_pair(&json_args(Some(2)), |mut d| {
            d.write_all(b"{\"kind\":\"oom_kill\",\"seq\":1,\"cgroup\":\"/a\"}\n{\"kind\":\"oom_").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            d.write_all(b"kill\",\"seq\":2,\"cgroup\":\"/b\"}\r\n{\"kind\":\"oom_kill\",\"seq\":3}\n").unwrap();
            d
        });
        assert!(matches!(ended, Ok(None)), "--count 2 reached: {ended:?}");
        assert_eq!(out, "{\"kind\":\"oom_kill\",\"seq\":1,\"cgroup\":\"/a\"}\n{\"kind\":\"oom_kill\",\"seq\":2,\"cgroup\":\"/b\"}\n");
        assert_eq!((progress.shown, progress.last_seq), (2, 2));
    }

    #[test]
    fn a_hang_up_ends_the_follow_as_lost_and_a_cut_off_line_is_not_shown() {
        let (ended, progress, out) = follow_pair(&json_args(None), |mut d| {
            d.write_all(b"{\"kind\":\"oom_kill\",\"seq\":7}\n{\"kind\":\"oom_k").unwrap();
            d.shutdown(std::net::Shutdown::Write).unwrap();
            d
        });
        assert!(matches!(ended, Ok(Some(_))), "the daemon hung up: {ended:?}");
        assert_eq!(out, "{\"kind\":\"oom_kill\",\"seq\":7}\n");
        assert_eq!(progress.last_seq, 7);
    }

    #[test]
    fn a_refusal_is_an_error_naming_the_socket() {
        let (ended, _, out) = follow_pair(&json_args(None), |mut d| {
            d.write_all(b"{\"kind\":\"error\",\"error\":\"too many clients\"}\n").unwrap();
            d
        });
        let e = format!("{:#}", ended.expect_err("refused"));
        assert!(e.contains("/run/test.sock") && e.contains("too many clients"), "{e}");
        assert_eq!(out, "");
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(64 << 20), "64.0MiB");
        assert_eq!(format_bytes(3 << 30 | 512 << 20), "3.5GiB");
    }

    #[test]
    fn reclaim_stall_line() {
        let e = Event {
            body: EventBody::ReclaimStall(crate::wire::ReclaimStall {
                pid: 7,
                tid: 8,
                comm: "java".into(),
                duration_ms: 153.25,
                reclaim_kind: crate::wire::ReclaimKindName::Direct,
                nr_reclaimed: Some(64),
                order: Some(3),
                suppressed: 2,
            }),
            time: "2026-11-22T05:46:54.250123Z".into(),
            cgroup: "/kubepods/pod1".into(),
            ktime_ns: None,
            seq: 0,
        };
        assert_eq!(
            human(&e),
            "2026-11-22T05:46:54.250 STALL    /kubepods/pod1 pid=7 (java) 153.2ms in direct reclaim, 64 pages reclaimed, order 3 (+2 more in this cgroup not shown)"
        );
    }

    #[test]
    fn kill_line_names_the_workload_before_the_path_escaped() {
        let kill = |workload: crate::wire::Workload, main_process| {
            let mut k = crate::wire::OomKill::of_pid(7);
            k.victim.comm = Some("hog".into());
            k.trigger.pid = 7;
            k.workload = workload;
            k.main_process = main_process;
            human(&Event { body: EventBody::OomKill(Box::new(k)), time: "2026-11-22T05:46:54.250123Z".into(), cgroup: "/d/abc".into(), ktime_ns: None, seq: 0 })
        };
        let pod = crate::wire::Workload {
            container_id: Some("abc".into()),
            namespace: Some("shop".into()),
            pod: Some("web-7d9f".into()),
            container: Some("frontend".into()),
            container_name: Some("k8s_frontend_web".into()),
            runtime: Some("docker".into()),
            ..Default::default()
        };
        assert_eq!(kill(pod.clone(), Some(true)), "2026-11-22T05:46:54.250 OOM-KILL shop/web-7d9f/frontend /d/abc victim=7 (hog) trigger=itself");
        assert!(kill(pod, Some(false)).ends_with("trigger=itself [not the container's main process: the container kept running, and Kubernetes does not report this kill]"));
        let hostile = crate::wire::Workload {
            container_id: Some("abc".into()),
            container_name: Some("web\u{1b}[2J\u{202e}x".into()),
            runtime: Some("docker".into()),
            ..Default::default()
        };
        let line = kill(hostile, None);
        assert!(line.starts_with("2026-11-22T05:46:54.250 OOM-KILL docker:web"), "{line}");
        assert!(!line.contains('\u{1b}') && !line.contains('\u{202e}'), "{line:?}");
        let unit = crate::wire::Workload { unit: Some("nginx.service".into()), ..Default::default() };
        assert!(kill(unit, None).contains("OOM-KILL nginx.service /d/abc victim=7"));
        assert!(kill(Default::default(), None).contains("OOM-KILL /d/abc victim=7"));
    }

    /// On a terminal a kill is one OOM-KILL line: its first word prints
    /// it, its record adds the why under it, unless the record's line says
    /// more (a workload named meanwhile), when the record prints whole.
    #[test]
    fn a_kill_shown_from_its_first_word_is_not_shown_twice() {
        let mut k = crate::wire::OomKill::of_pid(7);
        k.victim.comm = Some("hog".into());
        k.trigger.pid = 7;
        k.why = Some("hog was killed".into());
        let seen = |k: &crate::wire::OomKill| crate::wire::KillNotice {
            victim: k.victim.clone(),
            trigger: k.trigger.clone(),
            attribution: k.attribution,
            cgroup_id: k.cgroup_id,
            workload: k.workload.clone(),
            main_process: k.main_process,
        };
        let event = |body| Event { body, time: "2026-12-07T01:00:00.000000Z".into(), cgroup: "/d/x".into(), ktime_ns: Some(5), seq: 0 };
        let mut progress = Progress::default();
        let head = progress.text(&event(EventBody::KillSeen(seen(&k))));
        assert_eq!(head, "2026-12-07T01:00:00.000 OOM-KILL /d/x victim=7 (hog) trigger=itself");
        let rest = progress.text(&event(EventBody::OomKill(Box::new(k.clone()))));
        assert_eq!(rest, "                        why: hog was killed");
        assert_eq!(progress.text(&event(EventBody::OomKill(Box::new(k.clone())))), format!("{head}\n{rest}"), "no first word: whole");

        progress.text(&event(EventBody::KillSeen(seen(&k))));
        k.workload.unit = Some("hog.service".into());
        let whole = progress.text(&event(EventBody::OomKill(Box::new(k))));
        assert!(whole.starts_with("2026-12-07T01:00:00.000 OOM-KILL hog.service /d/x victim=7") && whole.contains("why: "), "{whole}");
        assert!(progress.heads.is_empty());
    }

    #[test]
    fn filter_by_kind_and_glob() {
        let e = |kind_oom: bool, cgroup: &str| Event {
            body: if kind_oom {
                EventBody::OomKill(Box::new(crate::wire::OomKill::of_pid(0)))
            } else {
                EventBody::VictimExit(crate::wire::VictimExit { pid: 1, comm: "x".into(), exit_latency_ms: 1.0 })
            },
            time: "t".into(),
            cgroup: cgroup.into(),
            ktime_ns: None,
            seq: 0,
        };
        let f = TailFilter { kinds: Some(vec![EventKind::OomKill]), cgroup: Some(glob::Pattern::new("/kubepods*").unwrap()) };
        assert!(f.keep(&e(true, "/kubepods/burstable/pod1")));
        assert!(!f.keep(&e(true, "/system.slice")));
        assert!(!f.keep(&e(false, "/kubepods/x")));
    }
}
