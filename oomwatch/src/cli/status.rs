//! `oomwatch status`: per-cgroup memory from a running daemon, riskiest first.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use super::{StatusArgs, tail::format_bytes};
use crate::wire::{Request, RequestOp, StatusReport, printable, sparkline};

/// Sends one request line and reads one JSON answer.
pub fn ask<T: serde::de::DeserializeOwned>(socket: &std::path::Path, op: RequestOp) -> anyhow::Result<T> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!("cannot connect to {}: {e}; is the daemon running? (start it with `oomwatch daemon`)", socket.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A daemon that refuses this client says why and hangs up without
    // reading the request: read its line even when sending failed.
    let sent = writeln!(stream, "{}", serde_json::to_string(&Request { op, ..Request::default() })?);
    let mut line = String::new();
    let read = BufReader::new(stream).read_line(&mut line);
    if let Some(why) = crate::outputs::socket::refusal_reason(&line) {
        anyhow::bail!("{}: the daemon refused this client: {why}", socket.display());
    }
    sent.with_context(|| format!("sending the request to {}", socket.display()))?;
    read.with_context(|| format!("reading the answer from {}", socket.display()))?;
    if line.is_empty() {
        anyhow::bail!("{}: the daemon closed the connection without answering", socket.display());
    }
    serde_json::from_str(&line).with_context(|| format!("{}: unexpected answer (daemon of another version?)", socket.display()))
}

/// Processes that stalled longest in reclaim, after the cgroup table.
fn print_top_stallers(top: &[crate::wire::TopStaller]) {
    if top.is_empty() {
        return;
    }
    let memstall = top.iter().any(|t| t.memstall_ms.is_some());
    println!();
    println!("Top reclaim stallers:");
    println!(
        "{:>8} {:<16} {:>7} {:>10} {:>9}{}  CGROUP",
        "PID",
        "COMM",
        "STALLS",
        "TOTAL",
        "MAX",
        if memstall { format!(" {:>10}", "MEMSTALL") } else { String::new() }
    );
    for t in top {
        println!(
            "{:>8} {:<16} {:>7} {:>8.1}ms {:>7.1}ms{}  {}",
            t.pid,
            printable(&t.comm),
            t.count,
            t.total_ms,
            t.max_ms,
            t.memstall_ms.map(|m| format!(" {m:>8.1}ms")).unwrap_or_default(),
            printable(&t.cgroup)
        );
    }
}

/// Columns of the last-minute bars: 3 s each.
const SPARK_COLUMNS: usize = 20;

/// A row's last minute against its limit; blank without a limit.
fn status_bars(r: &crate::wire::StatusRow) -> String {
    r.history.as_ref().map(|h| sparkline(h, h.limit_bytes.or(r.limit_bytes), 60, SPARK_COLUMNS)).unwrap_or_default()
}

pub fn main(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report: StatusReport = ask(&args.socket, RequestOp::Status)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &report.cgroups;
    let unreadable = match c.excluded_unreadable {
        0 => String::new(),
        n => format!(", {n} unreadable (see the daemon's log)"),
    };
    println!(
        "{} cgroups tracked ({} excluded by filter, {} over --max-cgroups{unreadable}), {} OOM kills seen",
        c.tracked, c.excluded_filter, c.excluded_cap, report.kills_total
    );
    // Bars of the last minute against the limit on a terminal; a pipe gets
    // the numbers alone (the table as before).
    let bars = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let last_minute = if bars { format!(" {:<SPARK_COLUMNS$}", "LAST 60s") } else { String::new() };
    println!("{:>10} {:>10} {:>9} {:>10} {:>8} {:>6} {:>7} {:>5}{last_minute}  CGROUP", "USAGE", "LIMIT", "HEADROOM", "WORKSET", "SWAP", "PSI10", "OOM-ETA", "KILLS");
    let rows = if args.top == 0 { &report.rows[..] } else { &report.rows[..report.rows.len().min(args.top)] };
    for r in rows {
        // The name people know first, the path after it.
        let name = match (&r.workload, &r.unit, &r.container_id) {
            (Some(w), _, _) if !r.cgroup.ends_with(w.as_str()) => format!("{w} {}", r.cgroup),
            (_, _, Some(id)) => format!("{} [{}]", r.cgroup, &id[..id.len().min(12)]),
            (_, Some(u), None) if !r.cgroup.ends_with(u.as_str()) => format!("{} [{u}]", r.cgroup),
            _ => r.cgroup.clone(),
        };
        let last_minute = if bars { format!(" {:<SPARK_COLUMNS$}", status_bars(r)) } else { String::new() };
        println!(
            "{:>10} {:>10} {:>9} {:>10} {:>8} {:>6} {:>7} {:>5}{last_minute}  {}",
            format_bytes(r.usage_bytes),
            r.limit_bytes.map(format_bytes).unwrap_or_else(|| "-".into()),
            r.headroom_percent.map(|h| format!("{h:.1}%")).unwrap_or_else(|| "-".into()),
            format_bytes(r.working_set_bytes),
            r.swap_bytes.map(format_bytes).unwrap_or_else(|| "-".into()),
            r.pressure_some_avg10.map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into()),
            r.oom_eta_seconds.map(|s| format!("{s:.0}s")).unwrap_or_else(|| "-".into()),
            r.kills,
            printable(&name),
        );
    }
    if rows.len() < report.rows.len() {
        println!("... {} more (use --top 0 for all)", report.rows.len() - rows.len());
    }
    print_top_stallers(&report.top_stallers);
    Ok(ExitCode::SUCCESS)
}
