//! OOM-kill delivery latency: real kills, one at a time, from the kernel's
//! timestamp of the kill (`ktime_ns`, CLOCK_MONOTONIC at `oom/mark_victim`)
//! to receipt by two tail clients of the same daemon:
//! - a client of the event socket in this process (`{"op":"tail"}`, the
//!   NDJSON read directly): the daemon's delivery, the figure with the target;
//! - `oomwatch tail --json`, its line read here through a pipe: what a person
//!   at a terminal sees, one more process and one more wakeup later.
//!
//! Peer, same run: a bpftrace one-liner on the same tracepoint printing
//! `nsecs` (CLOCK_MONOTONIC too), timed the same way, and its RSS.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use oomwatch_tests::{ChildGuard, Daemon, Tail, TestCgroup, monotonic_ns};
use serde_json::json;

use super::{Ctx, Report, Row, Target, percentile, procfs, ratio};

const MIB: u64 = 1 << 20;
const SPACING: Duration = Duration::from_millis(50);
pub const BPFTRACE_PROGRAM: &str =
    r#"tracepoint:oom:mark_victim { printf("%d %llu\n", args->pid, nsecs); }"#;

/// Starts a memory hog in `cg` and waits for the OOM killer; its pid.
pub fn kill_one(ctx: &Ctx, cg: &TestCgroup) -> Result<u32> {
    let mut hog = ChildGuard(cg.spawn(ctx.memhog().args(["hog", "128"])));
    let status = hog
        .wait_timeout(Duration::from_secs(30))
        .context("memhog was not OOM-killed within 30 s")?;
    use std::os::unix::process::ExitStatusExt as _;
    if status.signal() != Some(libc::SIGKILL) {
        bail!("memhog ended with {status}, not an OOM kill (SIGKILL)");
    }
    Ok(hog.pid())
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    min: f64,
    mean: f64,
}

fn stats(v: &[f64]) -> Stats {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Stats {
        p50: percentile(&s, 50.0),
        p99: percentile(&s, 99.0),
        max: s.last().copied().unwrap_or(f64::NAN),
        min: s.first().copied().unwrap_or(f64::NAN),
        mean: s.iter().sum::<f64>() / s.len().max(1) as f64,
    }
}

pub fn run(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let cg = TestCgroup::new("bench-latency", Some(32 * MIB));
    pass(ctx, rep, &cg, "", "latency")?;
    // The kernel prints "Memory cgroup out of memory: Killed process ..."
    // (KERN_ERR) on every console whose loglevel lets it through; a serial
    // console writes it byte by byte with interrupts off, holding the CPU
    // the daemon was just woken on for about 2 ms on these VMs. Measured
    // again without it, so the table shows which part is the console's.
    match QuietConsole::engage()? {
        Some(quiet) => {
            println!("latency: again with the serial console quiet (kernel.printk {} -> {})", quiet.saved, quiet.quiet);
            let measured = pass(ctx, rep, &cg, " (serial console quiet)", "latency_quiet_console");
            drop(quiet);
            measured?;
        }
        None => rep.note("latency: no serial console prints OOM kills on this host: measured once".to_owned()),
    }
    Ok(())
}

/// `kernel.printk`'s console loglevel lowered to 3 (KERN_ERR and below
/// stay off the consoles; dmesg keeps every line) while a serial console is
/// active, restored on drop.
struct QuietConsole {
    saved: String,
    quiet: String,
}

impl QuietConsole {
    const PRINTK: &'static str = "/proc/sys/kernel/printk";

    fn engage() -> Result<Option<Self>> {
        let consoles = std::fs::read_to_string("/proc/consoles").unwrap_or_default();
        let serial = consoles.lines().any(|l| l.starts_with("ttyS") || l.starts_with("ttyAMA"));
        let saved = std::fs::read_to_string(Self::PRINTK).with_context(|| format!("reading {}", Self::PRINTK))?;
        let saved = saved.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut levels = saved.split(' ');
        let console_level: u32 = levels.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        if !serial || console_level <= 3 {
            return Ok(None);
        }
        let quiet = std::iter::once("3").chain(levels).collect::<Vec<_>>().join(" ");
        std::fs::write(Self::PRINTK, &quiet).with_context(|| format!("writing {quiet:?} to {}", Self::PRINTK))?;
        Ok(Some(Self { saved, quiet }))
    }
}

impl Drop for QuietConsole {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(Self::PRINTK, &self.saved) {
            eprintln!("latency: could not restore {} to {:?}: {e}", Self::PRINTK, self.saved);
        }
    }
}

/// One measurement: `suffix` names its figures, `key` its JSON detail.
fn pass(ctx: &Ctx, rep: &mut Report, cg: &TestCgroup, suffix: &str, key: &str) -> Result<()> {
    let n = ctx.pick(100, 20);

    // Blocks of oomwatch alone, then bpftrace alone, in turn, so drift of
    // a shared machine hits both sides alike.
    let rounds = ctx.pick(2usize, 1);
    // As many kills as ours: a p99 of 30 samples is nearly their max, and
    // would not compare with a p99 of 100.
    let peer_n = n;
    let mut ours = Vec::with_capacity(n);
    let mut via_cli = Vec::with_capacity(n);
    let mut misattributed = 0;
    let mut daemon_rss = None;
    let mut peer_lat: Vec<f64> = Vec::new();
    let mut peer_rss: Option<f64> = None;
    let mut peer_err = None;
    for round in 0..rounds {
        let daemon = Daemon::start(&[]);
        let mut socket = Tail::connect(&daemon);
        let mut tail = Tail::start(&daemon, &["--kind", "oom_kill"]);
        for i in 0..n / rounds {
            let pid = kill_one(ctx, cg)?;
            let is_ours = |v: &serde_json::Value| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid;
            let (ev, at) = socket
                .wait_for(Duration::from_secs(10), is_ours)
                .with_context(|| {
                    format!("round {round} kill {i}: no oom_kill for pid {pid} on the socket within 10 s")
                })?;
            let (_, cli_at) = tail.wait_for(Duration::from_secs(10), is_ours).with_context(|| {
                format!("round {round} kill {i}: no oom_kill for pid {pid} from oomwatch tail within 10 s")
            })?;
            let ktime = ev["ktime_ns"]
                .as_u64()
                .context("oom_kill event without ktime_ns")?;
            if ev["cgroup"] != cg.path.as_str() {
                misattributed += 1;
            }
            ours.push(at.saturating_sub(ktime) as f64 / 1e3);
            via_cli.push(cli_at.saturating_sub(ktime) as f64 / 1e3);
            std::thread::sleep(SPACING);
        }
        drop(socket);
        daemon_rss = procfs::rss_mib(daemon.pid()).or(daemon_rss);
        drop(tail);
        drop(daemon);
        if peer_err.is_none() {
            match bpftrace_peer(ctx, cg, peer_n / rounds) {
                Ok((lat, rss)) => {
                    peer_lat.extend(lat);
                    peer_rss = rss.or(peer_rss);
                }
                Err(e) => peer_err = Some(format!("{e:#}")),
            }
        }
    }
    let n = ours.len();
    let s = stats(&ours);
    let cli = stats(&via_cli);
    println!(
        "oomwatch: {n} kills, kernel -> socket tail client: p50 {:.0} us, p99 {:.0} us, max {:.0} us (min {:.0}, mean {:.0})",
        s.p50, s.p99, s.max, s.min, s.mean
    );
    println!(
        "oomwatch: {n} kills, kernel -> `oomwatch tail` line read here: p50 {:.0} us, p99 {:.0} us, max {:.0} us (min {:.0}, mean {:.0})",
        cli.p50, cli.p99, cli.max, cli.min, cli.mean
    );
    let peer_stats = (!peer_lat.is_empty() && peer_err.is_none()).then(|| stats(&peer_lat));
    if let Some(p) = &peer_stats {
        println!(
            "bpftrace: {} kills, kernel -> printed line: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            peer_lat.len(),
            p.p50,
            p.p99,
            p.max
        );
    }
    if let Some(e) = &peer_err {
        println!("bpftrace peer not measured: {e}");
        rep.note(format!("bpftrace peer not measured: {e}"));
    }
    let peer_txt = |ours: f64, pick: fn(&Stats) -> f64| match &peer_stats {
        Some(p) => format!(
            "bpftrace {:.2} ms ({})",
            pick(p) / 1e3,
            ratio(ours, pick(p))
        ),
        None => String::new(),
    };

    rep.row(
        Row::new(
            "OOM latency",
            format!("kernel -> socket tail client p50 ({n} kills){suffix}"),
            s.p50 / 1e3,
            "ms",
        )
        .peer(peer_txt(s.p50, |p| p.p50)),
    );
    rep.row(
        Row::new("OOM latency", format!("kernel -> socket tail client p99{suffix}"), s.p99 / 1e3, "ms")
            .target(Target::AtMost(1.0))
            .peer(peer_txt(s.p99, |p| p.p99)),
    );
    rep.row(
        Row::new("OOM latency", format!("kernel -> socket tail client max{suffix}"), s.max / 1e3, "ms")
            .peer(peer_txt(s.max, |p| p.max)),
    );
    type Pick = (&'static str, f64, fn(&Stats) -> f64);
    let picks: [Pick; 3] =
        [("p50", cli.p50, |p| p.p50), ("p99", cli.p99, |p| p.p99), ("max", cli.max, |p| p.max)];
    for (label, v, pick) in picks {
        rep.row(
            Row::new("OOM latency", format!("kernel -> `oomwatch tail` output {label}{suffix}"), v / 1e3, "ms")
                .peer(peer_txt(v, pick)),
        );
    }
    if misattributed > 0 {
        rep.row(
            Row::new(
                "OOM latency",
                format!("kills attributed to another cgroup{suffix}"),
                misattributed as f64,
                "",
            )
            .target(Target::Exactly(0.0)),
        );
    }
    if let (Some(ours_rss), Some(p)) = (daemon_rss, peer_rss) {
        rep.row(
            Row::new("OOM latency", format!("daemon RSS after the kills{suffix}"), ours_rss, "MiB")
                .peer(format!("bpftrace {p:.1} MiB ({})", ratio(ours_rss, p))),
        );
    }
    let breakdown = if ctx.breakdown && suffix.is_empty() {
        match breakdown(ctx, cg, ctx.pick(30, 10), rep) {
            Ok(v) => Some(v),
            Err(e) => {
                rep.note(format!("latency breakdown not measured: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    rep.detail(
        key,
        json!({
            "kills": n,
            "spacing_ms": SPACING.as_millis() as u64,
            "limit_bytes": 32 * MIB,
            "oomwatch_us": ours,
            "oomwatch": {"p50_us": s.p50, "p99_us": s.p99, "max_us": s.max, "min_us": s.min, "mean_us": s.mean},
            "oomwatch_tail_cli_us": via_cli,
            "oomwatch_tail_cli": {"p50_us": cli.p50, "p99_us": cli.p99, "max_us": cli.max, "min_us": cli.min, "mean_us": cli.mean},
            "daemon_rss_mib": daemon_rss,
            "breakdown": breakdown,
            "rounds": rounds,
            "bpftrace": match &peer_stats {
                Some(p) => json!({
                    "program": BPFTRACE_PROGRAM,
                    "kills": peer_lat.len(),
                    "latency_us": peer_lat,
                    "p50_us": p.p50, "p99_us": p.p99, "max_us": p.max, "min_us": p.min, "mean_us": p.mean,
                    "rss_mib": peer_rss,
                }),
                _ => json!({"error": peer_err}),
            },
        }),
    );
    Ok(())
}

/// bpftrace printing `pid nsecs` at each kill; latency from `nsecs` to our
/// read of its line, and its RSS once attached.
fn bpftrace_peer(ctx: &Ctx, cg: &TestCgroup, n: usize) -> Result<(Vec<f64>, Option<f64>)> {
    let mut child = Command::new("bpftrace")
        .args(["-B", "none", "-e", BPFTRACE_PROGRAM])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bpftrace (apt-get install bpftrace)")?;
    let (tx, rx) = mpsc::channel::<(String, u64)>();
    for stream in [
        Box::new(child.stdout.take().context("bpftrace stdout")?) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().context("bpftrace stderr")?),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send((line, monotonic_ns())).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut guard = ChildGuard(child);
    let pid = guard.pid();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .context("bpftrace did not attach within 60 s")?;
        match rx.recv_timeout(left) {
            Ok((line, _)) if line.starts_with("Attaching") => break,
            // bpftrace 0.17 says "ERROR: ... couldn't set RLIMIT_MEMLOCK" without
            // CAP_SYS_RESOURCE and goes on (BPF memory is charged to the memcg).
            Ok((line, _)) if line.contains("ERROR") && !line.contains("RLIMIT_MEMLOCK") => {
                bail!("bpftrace: {line}")
            }
            Ok(_) => {}
            Err(_) => bail!(
                "bpftrace did not attach within 60 s (exit: {:?})",
                guard.0.try_wait().ok().flatten()
            ),
        }
    }
    // "Attaching" is printed before the attach completes.
    std::thread::sleep(Duration::from_millis(500));
    let rss = procfs::rss_mib(pid);
    let mut lat_us = Vec::with_capacity(n);
    for i in 0..n {
        let victim = kill_one(ctx, cg)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .with_context(|| {
                    format!("bpftrace kill {i}: no line for pid {victim} within 10 s")
                })?;
            let (line, at) = rx
                .recv_timeout(left)
                .with_context(|| format!("bpftrace kill {i}: no line for pid {victim}"))?;
            let mut f = line.split_whitespace();
            if let (Some(p), Some(ns)) = (
                f.next().and_then(|p| p.parse::<u32>().ok()),
                f.next().and_then(|n| n.parse::<u64>().ok()),
            ) && p == victim
            {
                lat_us.push(at.saturating_sub(ns) as f64 / 1e3);
                break;
            }
        }
        std::thread::sleep(SPACING);
    }
    let rss = procfs::rss_mib(pid)
        .or(rss)
        .map(|r| r.max(rss.unwrap_or(0.0)));
    // SAFETY: plain kill(2) of the pid we started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = guard.wait_timeout(Duration::from_secs(5));
    Ok((lat_us, rss))
}

/// Where the latency goes, per kill: a separate pass (tracing adds its own
/// cost, so these kills are not in the figures above) with bpftrace on the
/// daemon's and tail's syscalls, relative to the kernel's mark_victim:
/// - wake: until the daemon's epoll_wait returns with the ring buffer ready;
/// - daemon: until it sends the event on the socket (cgroup files opened
///   on the way are counted);
/// - tail: until `oomwatch tail` writes the line to its stdout;
/// - pipe: until this process has read the line.
const BREAKDOWN_SCRIPT: &str = r#"
tracepoint:oom:mark_victim { @mark = nsecs; printf("%llu MARK %d\n", nsecs, args->pid); }
tracepoint:syscalls:sys_exit_epoll_wait /pid == $1/ { if (@mark && nsecs - @mark < 50000000 && args->ret > 0) { printf("%llu WAKE %d\n", nsecs, tid); } }
tracepoint:syscalls:sys_enter_openat /pid == $1/ { if (@mark && nsecs - @mark < 50000000) { printf("%llu OPEN %d\n", nsecs, tid); } }
tracepoint:syscalls:sys_enter_sendto /pid == $1/ { if (@mark && nsecs - @mark < 50000000) { printf("%llu SEND %d\n", nsecs, tid); } }
tracepoint:syscalls:sys_enter_write /pid == $1/ { if (@mark && nsecs - @mark < 50000000) { printf("%llu SEND %d\n", nsecs, tid); } }
tracepoint:syscalls:sys_enter_writev /pid == $1/ { if (@mark && nsecs - @mark < 50000000) { printf("%llu SEND %d\n", nsecs, tid); } }
tracepoint:syscalls:sys_enter_write /pid == $2/ { if (@mark && nsecs - @mark < 50000000) { printf("%llu TAIL %d\n", nsecs, tid); } }
tracepoint:sched:sched_wakeup { if (@mark && nsecs - @mark < 50000000 && args->comm == "oomwatch") { printf("%llu WAKEUP %d\n", nsecs, args->pid); } }
"#;

fn breakdown(ctx: &Ctx, cg: &TestCgroup, n: usize, rep: &mut Report) -> Result<serde_json::Value> {
    let daemon = Daemon::start(&[]);
    let mut tail = Tail::start(&daemon, &["--kind", "oom_kill"]);
    let mut child = Command::new("bpftrace")
        .args([
            "-B",
            "none",
            "-e",
            BREAKDOWN_SCRIPT,
            &daemon.pid().to_string(),
            &tail.pid().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace")?;
    let out = child.stdout.take().context("bpftrace stdout")?;
    let mut guard = ChildGuard(child);
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .context("bpftrace did not attach within 60 s")?;
        let line = rx.recv_timeout(left).context("bpftrace did not attach")?;
        if line.starts_with("Attaching") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let mut received = Vec::new();
    for i in 0..n {
        let pid = kill_one(ctx, cg)?;
        let (ev, at) = tail
            .wait_for(Duration::from_secs(10), |v| {
                v["kind"] == "oom_kill" && v["victim"]["pid"] == pid
            })
            .with_context(|| format!("breakdown kill {i}: no oom_kill for pid {pid}"))?;
        received.push((pid, ev["ktime_ns"].as_u64().unwrap_or(0), at));
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) of the pid we started.
    unsafe { libc::kill(guard.pid() as i32, libc::SIGINT) };
    let _ = guard.wait_timeout(Duration::from_secs(10));
    drop(guard);
    let _ = reader.join();
    let lines: Vec<(u64, String, u32)> = rx
        .try_iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
            ))
        })
        .collect();

    let mut seg: std::collections::BTreeMap<&str, Vec<f64>> = std::collections::BTreeMap::new();
    let mut opens = Vec::new();
    let tail_pid = tail.pid();
    for (pid, ktime, at) in &received {
        let Some(start) = lines.iter().position(|(_, k, p)| k == "MARK" && p == pid) else {
            continue;
        };
        let mark = lines[start].0;
        let after = &lines[start + 1..];
        let next_mark = after
            .iter()
            .position(|(_, k, _)| k == "MARK")
            .unwrap_or(after.len());
        let after = &after[..next_mark];
        let find = |from: usize, to: usize, kind: &str, tid: Option<u32>| {
            after[from..to]
                .iter()
                .position(|(_, k, t)| k == kind && tid.is_none_or(|x| x == *t))
                .map(|i| i + from)
        };
        let rfind = |from: usize, to: usize, kind: &str, tid: u32| {
            after[from..to]
                .iter()
                .rposition(|(_, k, t)| k == kind && *t == tid)
                .map(|i| i + from)
        };
        let Some(w) = find(0, after.len(), "WAKE", None) else {
            continue;
        };
        let Some(s) = find(w, after.len(), "SEND", None) else {
            continue;
        };
        let Some(t) = find(s, after.len(), "TAIL", None) else {
            continue;
        };
        let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
        let ts = |i: usize| after[i].0;
        let mut push = |k: &'static str, v: f64| seg.entry(k).or_default().push(v);
        push("1 wake", us(mark, ts(w)));
        // Split of the wake: the kernel's wakeup of the daemon thread, then its wait for a CPU.
        let dtid = after[w].2;
        if let Some(wu) = rfind(0, w, "WAKEUP", dtid) {
            push(
                "1a wake: mark_victim -> daemon thread woken",
                us(mark, ts(wu)),
            );
            push("1b wake: woken -> epoll_wait returns", us(ts(wu), ts(w)));
        }
        push("2 daemon", us(ts(w), ts(s)));
        let first_open = find(w, s, "OPEN", None);
        let last_open = after[w..s]
            .iter()
            .rposition(|(_, k, _)| k == "OPEN")
            .map(|i| i + w);
        if let (Some(a), Some(b)) = (first_open, last_open) {
            push(
                "2a daemon: ring buffer -> first cgroup file open",
                us(ts(w), ts(a)),
            );
            push(
                "2b daemon: cgroup file opens (first -> last)",
                us(ts(a), ts(b)),
            );
            push("2c daemon: last open -> event sent", us(ts(b), ts(s)));
        }
        push("3 tail", us(ts(s), ts(t)));
        if let Some(wu) = rfind(s, t, "WAKEUP", tail_pid) {
            push("3a tail: woken -> line written", us(ts(wu), ts(t)));
        }
        push("4 pipe", us(ts(t), *at));
        push("5 total", us(*ktime, *at));
        opens.push(after[w..s].iter().filter(|(_, k, _)| k == "OPEN").count() as f64);
    }
    let wake = seg.get("1 wake").cloned().unwrap_or_default();
    if wake.is_empty() {
        bail!(
            "no kill could be followed through the trace ({} trace lines)",
            lines.len()
        );
    }
    let g = "OOM latency breakdown (bpftrace-traced pass)";
    let mut out = serde_json::Map::new();
    let label = |k: &str| -> &'static str {
        match k {
            "1 wake" => "kernel mark_victim -> daemon epoll_wait returns",
            "1a wake: mark_victim -> daemon thread woken" => {
                "  of which: kernel wakes the daemon thread"
            }
            "1b wake: woken -> epoll_wait returns" => {
                "  of which: woken -> running (run queue, preemption)"
            }
            "2 daemon" => "daemon: ring buffer -> event sent on the socket",
            "2a daemon: ring buffer -> first cgroup file open" => {
                "  of which: decode, resolve, model"
            }
            "2b daemon: cgroup file opens (first -> last)" => {
                "  of which: limit verdict, cgroup files opened"
            }
            "2c daemon: last open -> event sent" => "  of which: build, serialize, publish, send",
            "3 tail" => "socket -> oomwatch tail writes the line",
            "3a tail: woken -> line written" => {
                "  of which: tail woken -> line written (run queue, parse, write)"
            }
            "4 pipe" => "tail stdout -> read by this client",
            _ => "total, kernel -> this client (traced run)",
        }
    };
    for (key, v) in &seg {
        let st = stats(v);
        let p90 = percentile_of(v, 90.0);
        println!(
            "breakdown {key}: p50 {:.0} us, p90 {p90:.0} us, max {:.0} us ({} kills)",
            st.p50,
            st.max,
            v.len()
        );
        rep.row(
            Row::new(g, format!("{}, p50", label(key)), st.p50 / 1e3, "ms").shown(format!(
                "{:.3} ms (p90 {:.3}, max {:.3}; n={})",
                st.p50 / 1e3,
                p90 / 1e3,
                st.max / 1e3,
                v.len()
            )),
        );
        out.insert(
            key.to_string(),
            json!({"p50_us": st.p50, "p90_us": p90, "max_us": st.max, "values_us": v}),
        );
    }
    let opens_median = stats(&opens).p50;
    rep.row(Row::new(
        g,
        "cgroup files opened by the daemon per kill, before sending",
        opens_median,
        "",
    ));
    out.insert("opens_per_kill".into(), json!(opens));
    Ok(serde_json::Value::Object(out))
}

fn percentile_of(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, p)
}
