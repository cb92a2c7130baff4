//! The text of an event for people (one line; a kill's `why` on a second): what `oomwatch tail` prints
//! and what journald shows as MESSAGE. One function, so the two never drift.

use super::event::{Attribution, Event, EventBody};

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

/// One line for a person at 3 a.m.: when, what, where, who. Names in it
/// are chosen by users: escaped as a whole (see [`super::printable`]).
/// A kill's `why` follows on a second line, escaped on its own.
pub fn human(e: &Event) -> String {
    let line = line(e);
    let mut text = match super::printable(&line) {
        std::borrow::Cow::Borrowed(_) => line,
        std::borrow::Cow::Owned(escaped) => escaped,
    };
    let why = match &e.body {
        EventBody::OomKill(k) => k.why.as_deref(),
        EventBody::KillExplained(x) => x.why.as_deref(),
        _ => None,
    };
    if let Some(why) = why {
        text.push('\n');
        text.push_str(WHY_INDENT);
        text.push_str("why: ");
        text.push_str(&super::printable(why));
    }
    text
}

/// What a kill's first line says, whether it comes from its first word
/// (`kill_seen`) or its full record: the same line from both, so that
/// `oomwatch tail` can tell the record adds nothing to it.
struct KillHead<'a> {
    victim: &'a super::Victim,
    trigger: &'a super::Trigger,
    attribution: Attribution,
    workload: &'a super::Workload,
    main_process: Option<bool>,
    exit_latency_ms: Option<f64>,
}

fn kill_head(time: &str, cgroup: &str, k: &KillHead<'_>) -> String {
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
        Attribution::Exact => "",
        Attribution::Approximate => " [cgroup approximate]",
        Attribution::Unknown => " [cgroup unknown]",
    };
    // The name people know first, then the path it runs in.
    let name = k.workload.display_name().map(|n| format!("{n} ")).unwrap_or_default();
    let kept_running = if k.main_process == Some(false) {
        " [not the container's main process: the container kept running, and Kubernetes does not report this kill]"
    } else {
        ""
    };
    format!("{time} OOM-KILL {name}{cgroup} victim={} ({comm}){rss} trigger={trigger}{exit}{approx}{kept_running}", k.victim.pid)
}

/// The explanation goes on its own line under the event's, indented past
/// the timestamp.
const WHY_INDENT: &str = "                        ";

fn line(e: &Event) -> String {
    let time = e.time.get(..23).unwrap_or(&e.time);
    match &e.body {
        EventBody::OomKill(k) => kill_head(time, &e.cgroup, &KillHead {
            victim: &k.victim,
            trigger: &k.trigger,
            attribution: k.attribution,
            workload: &k.workload,
            main_process: k.main_process,
            exit_latency_ms: k.exit_latency_ms,
        }),
        EventBody::KillSeen(k) => kill_head(time, &e.cgroup, &KillHead {
            victim: &k.victim,
            trigger: &k.trigger,
            attribution: k.attribution,
            workload: &k.workload,
            main_process: k.main_process,
            exit_latency_ms: None,
        }),
        EventBody::KillExplained(x) => {
            let r = &x.kernel_report;
            let mut line = format!("{time} REPORT   {} pid={} ({}) kernel report", e.cgroup, x.pid, x.comm);
            if let Some(missing) = &r.missing {
                line.push_str(&format!(": {}", super::missing_reason(missing)));
            }
            if let (Some(mask), Some(order)) = (&r.gfp_mask, r.order) {
                line.push_str(&format!(": gfp_mask={mask}({}) order={order}", r.gfp_flags.join("|")));
            }
            if let Some(m) = r.memcg {
                line.push_str(&format!(", usage {} limit {} failcnt {}", format_bytes(m.usage_bytes), format_bytes(m.limit_bytes), m.failcnt));
            }
            line
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
        EventBody::Incident(i) => incident_line(time, &e.cgroup, i),
        EventBody::Throttled(t) => throttled_line(time, &e.cgroup, t),
        EventBody::Lagged { dropped } => {
            format!("{time} LAGGED   this client fell behind: {dropped} events dropped")
        }
    }
}

fn incident_line(time: &str, cgroup: &str, i: &super::Incident) -> String {
    let victims: Vec<String> = i.victims.iter().map(|v| format!("{} ({})", v.pid, v.comm.as_deref().unwrap_or("?"))).collect();
    format!(
        "{time} INCIDENT {cgroup} {} victims of one OOM kill in {:.1}ms by {} ({}): {}",
        i.count,
        i.span_ms,
        i.trigger.pid,
        i.trigger.comm,
        victims.join(", ")
    )
}

fn throttled_line(time: &str, cgroup: &str, t: &super::Throttled) -> String {
    format!(
        "{time} THROTTLE {cgroup} {} at memory.high{}: {:.0} s since {}, {} high events{}",
        t.state.as_str(),
        t.high_bytes.map(|b| format!(" ({})", format_bytes(b))).unwrap_or_default(),
        t.duration_s,
        t.since,
        t.high_events,
        t.some_avg10.map(|v| format!(", memory pressure some avg10={v:.2}%")).unwrap_or_default()
    )
}
