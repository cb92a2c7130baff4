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
use crate::wire::{Event, EventBody, EventKind, Request, RequestOp};

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
    let filter = Filter { kinds, cgroup: cgroup_glob };

    let mut stream = connect(&args).map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {}: {e}; is the daemon running? (start it with `oomwatch daemon`)",
            args.socket.display()
        )
    })?;
    let mut since = args.since.map(|d| d.as_secs_f64());
    let mut shown = 0u64;
    let stdout = std::io::stdout();
    loop {
        let lost_at = follow(&mut stream, since, &args, &filter, &mut shown, &mut stdout.lock())?;
        let Some(lost_at) = lost_at else { return Ok(ExitCode::SUCCESS) };
        eprintln!("oomwatch tail: daemon went away; reconnecting");
        stream = reconnect(&args);
        eprintln!("oomwatch tail: reconnected to {}", args.socket.display());
        // Ask for what happened while we were away (as far as the new daemon saw).
        since = Some(lost_at.elapsed().as_secs_f64() + 1.0);
    }
}

struct Filter {
    kinds: Vec<EventKind>,
    cgroup: Option<glob::Pattern>,
}

impl Filter {
    fn keep(&self, e: &Event) -> bool {
        let kind = e.body.kind();
        if kind == EventKind::Lagged {
            return true;
        }
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self.cgroup.as_ref().is_none_or(|g| g.matches(&e.cgroup))
    }
}

fn connect(args: &TailArgs) -> std::io::Result<UnixStream> {
    let mut stream = UnixStream::connect(&args.socket)?;
    let request = Request { op: RequestOp::Tail, since_secs: args.since.map(|d| d.as_secs_f64()) };
    // A refusal arrives as the first line (and the daemon hangs up without
    // reading): `follow` reads and reports it.
    let _ = writeln!(stream, "{}", serde_json::to_string(&request).unwrap_or_default());
    Ok(stream)
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

/// Prints events until the stream ends. Returns when the connection was lost
/// (Some), or None when `--count` events were shown.
fn follow(
    stream: &mut UnixStream,
    since: Option<f64>,
    args: &TailArgs,
    filter: &Filter,
    shown: &mut u64,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Option<Instant>> {
    // A reconnect sends its own request with the gap to replay.
    if since != args.since.map(|d| d.as_secs_f64()) {
        let request = Request { op: RequestOp::Tail, since_secs: since };
        let _ = writeln!(stream, "{}", serde_json::to_string(&request).unwrap_or_default());
    }
    let reader = BufReader::new(stream.try_clone()?);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(why) = crate::outputs::socket::refusal_reason(&line) {
            bail!("{}: the daemon refused this client: {why}", args.socket.display());
        }
        let event: Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(_) => {
                // Kinds newer than this client: pass JSON through, skip in text.
                if args.json && args.kind.is_empty() {
                    writeln!(out, "{line}")?;
                }
                continue;
            }
        };
        if !filter.keep(&event) {
            continue;
        }
        if args.json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", human(&event))?;
        }
        out.flush()?;
        if !matches!(event.body, EventBody::Lagged { .. }) {
            *shown += 1;
            if args.count.is_some_and(|c| *shown >= c) {
                return Ok(None);
            }
        }
    }
    Ok(Some(Instant::now()))
}

pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b}B") } else { format!("{v:.1}{}", UNITS[u]) }
}

/// One line for a person at 3 a.m.: when, what, where, who.
pub fn human(e: &Event) -> String {
    let time = e.time.get(..23).unwrap_or(&e.time);
    match &e.body {
        EventBody::OomKill(k) => {
            let comm = k.victim.comm.as_deref().unwrap_or("?");
            let rss = k.victim.rss_bytes().map(|b| format!(" rss={}", format_bytes(b))).unwrap_or_default();
            let trigger = if k.trigger.pid == k.victim.pid {
                "itself".to_owned()
            } else {
                format!(
                    "{} ({}){}",
                    k.trigger.pid,
                    k.trigger.comm,
                    k.trigger.cgroup.as_deref().map(|c| format!(" in {c}")).unwrap_or_default()
                )
            };
            let exit = k.exit_latency_ms.map(|ms| format!(" exited after {ms:.1}ms")).unwrap_or_default();
            let approx = match k.attribution {
                crate::wire::Attribution::Exact => "",
                crate::wire::Attribution::Approximate => " [cgroup approximate]",
                crate::wire::Attribution::Unknown => " [cgroup unknown]",
            };
            format!(
                "{time} OOM-KILL {} victim={} ({comm}){rss} trigger={trigger}{exit}{approx}",
                e.cgroup, k.victim.pid
            )
        }
        EventBody::VictimExit(x) => format!(
            "{time} EXITED   {} pid={} ({}) {:.1}ms after the kill",
            e.cgroup, x.pid, x.comm, x.exit_latency_ms
        ),
        EventBody::Pressure(p) => format!(
            "{time} PRESSURE {} some avg10={}% full avg10={}% (trigger {})",
            e.cgroup,
            p.some_avg10.map(|v| format!("{v:.2}")).unwrap_or_else(|| "?".into()),
            p.full_avg10.map(|v| format!("{v:.2}")).unwrap_or_else(|| "?".into()),
            p.trigger
        ),
        EventBody::Alert(a) => format!(
            "{time} ALERT    {} {} {} {}: {}",
            e.cgroup,
            a.alert.as_str(),
            a.severity.as_str(),
            a.state.as_str().to_uppercase(),
            a.summary
        ),
        EventBody::ReclaimStall(s) => {
            let mut line = format!(
                "{time} STALL    {} pid={} ({}) {:.1}ms in {} reclaim",
                e.cgroup,
                s.pid,
                s.comm,
                s.duration_ms,
                s.reclaim_kind.as_str()
            );
            if let Some(n) = s.nr_reclaimed {
                line.push_str(&format!(", {n} pages reclaimed"));
            }
            if let Some(o) = s.order.filter(|&o| o > 0) {
                line.push_str(&format!(", order {o}"));
            }
            if s.suppressed > 0 {
                line.push_str(&format!(" (+{} more in this cgroup not shown)", s.suppressed));
            }
            line
        }
        EventBody::UnobservedKills(u) => format!(
            "{time} UNSEEN   {} {} OOM kill(s) the kernel counted were not observed (kernel {} since start, oomwatch {})",
            e.cgroup, u.count, u.kernel_total, u.observed_total
        ),
        EventBody::Lagged { dropped } => {
            format!("{time} LAGGED   this client fell behind: {dropped} events dropped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let f = Filter { kinds: vec![EventKind::OomKill], cgroup: Some(glob::Pattern::new("/kubepods*").unwrap()) };
        assert!(f.keep(&e(true, "/kubepods/burstable/pod1")));
        assert!(!f.keep(&e(true, "/system.slice")));
        assert!(!f.keep(&e(false, "/kubepods/x")));
    }
}
