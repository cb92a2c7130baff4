//! `oomwatch history`: what the journal kept, with or without a running
//! daemon. It opens the journal read-only (SQLite WAL: no lock the daemon
//! waits on), so it answers during an incident while the daemon writes.

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::ExitCode,
    time::SystemTime,
};

use anyhow::{Context as _, bail};

use super::HistoryArgs;
use crate::{
    outputs::journal::{JournalReader, Order, Query, SummaryBy, SummaryQuery, SummaryRow},
    wire::{EventKind, human, printable},
};

pub fn main(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let kinds = parse_kinds(&args.kind)?;
    let cgroup = args.cgroup.as_deref().map(glob::Pattern::new).transpose().context("--cgroup: invalid glob")?;
    let since = args.since.as_deref().map(|s| parse_time(s, "--since")).transpose()?;
    let until = args.until.as_deref().map(|s| parse_time(s, "--until")).transpose()?;
    let reader = JournalReader::open(&args.state_dir)?;
    if args.summary {
        let by = if args.by_cgroup { SummaryBy::Cgroup } else { SummaryBy::Workload };
        let rows = reader.summary(&SummaryQuery { since, until, cgroup, by })?;
        return print_summary(&rows, by, args.json);
    }
    let query = Query {
        since,
        until,
        kinds: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        cgroup,
        order: Order::OldestFirst,
        limit: args.limit,
        ..Query::default()
    };
    let events = reader.query(&query)?;
    let mut out = std::io::stdout().lock();
    for e in &events {
        if args.json {
            writeln!(out, "{}", e.json)?;
        } else {
            match e.event() {
                Ok(event) => writeln!(out, "{}", human(&event))?,
                // A kind newer than this binary: its JSON, escaped.
                Err(_) => writeln!(out, "{}", printable(&e.json))?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_kinds(names: &[String]) -> anyhow::Result<Vec<EventKind>> {
    names
        .iter()
        .map(|k| match EventKind::from_name(k) {
            Some(kind) if kind.is_kept() => Ok(kind),
            Some(kind) => bail!("--kind: {kind} is sent live only and never kept; follow it with `oomwatch tail --kind {kind}`"),
            None => {
                let kept: Vec<&str> = EventKind::ALL.iter().filter(|k| k.is_kept()).map(|k| k.as_str()).collect();
                bail!("--kind: unknown kind '{k}' (expected one of: {})", kept.join(", "))
            }
        })
        .collect()
}

/// "7d", "90m" (that long ago) or an RFC 3339 time ("2026-12-01T10:00:00Z").
pub fn parse_time(s: &str, flag: &str) -> anyhow::Result<SystemTime> {
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(SystemTime::now().checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Ok(t),
        Err(_) => bail!("{flag}: '{s}' is neither a duration (\"7d\", \"90m\") nor a time (\"2026-12-01T10:00:00Z\")"),
    }
}

/// Days shown as columns; older days count in the total only.
const DAY_COLUMNS: usize = 7;

/// Kills per workload (or cgroup) per day, a row per workload, the days
/// as columns, the most killed first: which workloads OOM, how often,
/// since when, at a glance.
fn print_summary(rows: &[SummaryRow], by: SummaryBy, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No OOM kills in the journal for this range.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut days: Vec<&str> = rows.iter().map(|r| r.day.as_str()).collect();
    days.sort_unstable();
    days.dedup();
    let shown: Vec<&str> = days.iter().rev().take(DAY_COLUMNS).rev().copied().collect();
    let mut table: BTreeMap<&str, (u64, BTreeMap<&str, u64>)> = BTreeMap::new();
    for r in rows {
        let entry = table.entry(r.key.as_str()).or_default();
        entry.0 += r.kills;
        *entry.1.entry(r.day.as_str()).or_default() += r.kills;
    }
    let mut keys: Vec<(&str, &(u64, BTreeMap<&str, u64>))> = table.iter().map(|(k, v)| (*k, v)).collect();
    keys.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let what = if by == SummaryBy::Cgroup { "CGROUP" } else { "WORKLOAD" };
    let mut header = format!("{:>6}", "TOTAL");
    for d in &shown {
        header.push_str(&format!(" {:>5}", d.get(5..).unwrap_or(d)));
    }
    println!("{header}  {what}");
    for (key, (total, per_day)) in keys {
        let mut line = format!("{total:>6}");
        for d in &shown {
            match per_day.get(d) {
                Some(n) => line.push_str(&format!(" {n:>5}")),
                None => line.push_str(&format!(" {:>5}", ".")),
            }
        }
        // Unnamed workloads come as their cgroup path; "/" is the last resort.
        let name = if key.is_empty() { "/" } else { key };
        println!("{line}  {}", printable(name));
    }
    if days.len() > shown.len() {
        println!("({} earlier day(s) with kills are in TOTAL: {} to {})", days.len() - shown.len(), days[0], days[days.len() - shown.len() - 1]);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn kinds_are_those_the_journal_keeps() {
        assert_eq!(parse_kinds(&["oom_kill".into(), "alert".into()]).unwrap(), vec![EventKind::OomKill, EventKind::Alert]);
        let live = parse_kinds(&["kill_seen".into()]).unwrap_err().to_string();
        assert!(live.starts_with("--kind: kill_seen is sent live only") && live.contains("oomwatch tail --kind kill_seen"), "{live}");
        let unknown = parse_kinds(&["nope".into()]).unwrap_err().to_string();
        assert!(unknown.contains("'nope'") && unknown.contains("oom_kill") && !unknown.contains("kill_seen"), "{unknown}");
    }

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let t = parse_time("7d", "--since").unwrap();
        let ago = SystemTime::now().duration_since(t).unwrap();
        assert!(ago >= Duration::from_secs(7 * 86_400 - 5) && ago <= Duration::from_secs(7 * 86_400 + 5));
        assert!(parse_time("2026-12-01T10:00:00Z", "--since").is_ok());
        let e = parse_time("yesterday", "--until").unwrap_err().to_string();
        assert!(e.starts_with("--until: 'yesterday'"), "{e}");
    }
}
