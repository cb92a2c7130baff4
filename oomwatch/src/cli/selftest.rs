//! `oomwatch selftest`: proves on this host that the whole chain works.
//! Creates a sandbox memory cgroup, runs a controlled leak in it until the
//! kernel kills it, and checks each step through the running daemon's real
//! event stream: early warning, critical warning, the kill, the exit.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::SelftestArgs;
use crate::{
    readers::{CgroupVersion, mountinfo as layout},
    wire::{AlertName, AlertState, Event, EventBody, Request, RequestOp, Severity},
};

const MIB: u64 = 1 << 20;

#[derive(Serialize)]
struct Step {
    name: &'static str,
    passed: bool,
    /// Seconds since the leak started.
    #[serde(skip_serializing_if = "Option::is_none")]
    at_s: Option<f64>,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    passed: bool,
    sandbox: String,
    limit_bytes: u64,
    leak_bytes_per_s: u64,
    steps: Vec<Step>,
}

/// The sandbox cgroup; removed on drop (after its processes are killed by
/// the pids this command started).
struct Sandbox {
    dir: PathBuf,
    leaker: Option<Child>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(c) = self.leaker.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sandbox_location(v1: bool, memory_root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let name = format!("oomwatch-selftest-{}", std::process::id());
    if v1 {
        // Under our own memory cgroup: nothing else on the host is touched.
        let own = std::fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctrl, path) = (p.next()?, p.next()?, p.next()?);
                ctrl.split(',').any(|c| c == "memory").then(|| path.to_owned())
            })
            .unwrap_or_else(|| "/".into());
        let parent = memory_root.join(own.trim_start_matches('/'));
        Ok((parent.join(&name), format!("{}/{name}", own.trim_end_matches('/'))))
    } else {
        // v2: a cgroup with processes cannot delegate the memory controller,
        // so the sandbox goes at the top, where it is usually enabled.
        let controls = std::fs::read_to_string(memory_root.join("cgroup.subtree_control")).unwrap_or_default();
        if !controls.split_whitespace().any(|c| c == "memory") {
            bail!(
                "cannot create a sandbox cgroup: the memory controller is not enabled for children of {} (cgroup.subtree_control lacks \"memory\")",
                memory_root.display()
            );
        }
        Ok((memory_root.join(&name), format!("/{name}")))
    }
}

pub fn main(args: SelftestArgs) -> anyhow::Result<ExitCode> {
    if let Some(rate) = args.leak_worker {
        leak(rate);
    }
    // Connect first: without a daemon there is nothing to prove.
    let events = subscribe(&args.socket)?;
    let (mut sandbox, plan) = make_sandbox(&args)?;
    // Give the daemon a moment to find the sandbox before it fills.
    std::thread::sleep(Duration::from_millis(2500));
    let start = Instant::now();
    let pid = start_leak(&mut sandbox, plan.rate)?;
    if !args.json {
        println!("selftest: leaking {}/s into {} (limit {}); pid {pid}", fmt_mib(plan.rate), plan.path, fmt_mib(plan.limit));
    }
    let timeline = watch(&events, &mut sandbox, &plan.path, pid, start, args.duration);
    let mut steps = timeline.steps(pid, &plan.path);
    let dir = sandbox.dir.clone();
    drop(sandbox);
    let cleaned = !dir.exists();
    let detail = if cleaned { format!("removed {}", dir.display()) } else { format!("could not remove {}", dir.display()) };
    steps.push(Step { name: "cleanup", passed: cleaned, at_s: None, detail });
    let passed = steps.iter().all(|s| s.passed);
    print_report(&Report { passed, sandbox: plan.path, limit_bytes: plan.limit, leak_bytes_per_s: plan.rate, steps }, args.json)?;
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The daemon's live events, read on a thread, with the time each arrived.
fn subscribe(socket: &Path) -> anyhow::Result<mpsc::Receiver<(Event, Instant)>> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!("selftest needs a running daemon: cannot connect to {}: {e} (start it with `oomwatch daemon`)", socket.display())
    })?;
    writeln!(stream, "{}", serde_json::to_string(&Request { op: RequestOp::Tail, ..Request::default() })?)?;
    let (tx, rx) = mpsc::channel::<(Event, Instant)>();
    let reader = BufReader::new(stream);
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Ok(e) = serde_json::from_str::<Event>(&line)
                && tx.send((e, Instant::now())).is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}

/// Where the leak runs and how fast.
struct Plan {
    /// The sandbox's cgroup path, as events name it.
    path: String,
    limit: u64,
    rate: u64,
}

fn make_sandbox(args: &SelftestArgs) -> anyhow::Result<(Sandbox, Plan)> {
    let layout = layout::detect(Path::new("/proc")).context("selftest cannot find the memory cgroup hierarchy")?;
    let v1 = layout.memory_version == CgroupVersion::V1;
    let (dir, path) = sandbox_location(v1, &layout.memory_root)?;
    std::fs::create_dir(&dir).map_err(|e| anyhow::anyhow!("cannot create a sandbox cgroup at {}: {e} (selftest needs root)", dir.display()))?;
    let sandbox = Sandbox { dir: dir.clone(), leaker: None };
    let available = crate::readers::read_meminfo(Path::new("/proc")).map_or(u64::MAX, |m| m.available_bytes);
    let limit = (args.limit_mib * MIB).min(available / 4).max(64 * MIB);
    let limit_file = if v1 { "memory.limit_in_bytes" } else { "memory.max" };
    std::fs::write(dir.join(limit_file), limit.to_string()).with_context(|| format!("{}", dir.join(limit_file).display()))?;
    // Reach the limit in about `duration`, from a tenth of it: long enough
    // for the forecast to warn, then turn critical, before the kill.
    let rate = (limit as f64 * 0.9 / args.duration.as_secs_f64()) as u64;
    Ok((sandbox, Plan { path, limit, rate }))
}

/// Starts this binary as the leak, joined to the sandbox before it execs.
fn start_leak(sandbox: &mut Sandbox, rate: u64) -> anyhow::Result<u32> {
    let procs = sandbox.dir.join("cgroup.procs");
    let exe = std::env::current_exe().context("finding the oomwatch binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["selftest", "--leak-worker", &rate.to_string()]);
    let procs_c = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes())?;
    // SAFETY: only async-signal-safe calls (open, write, close) before exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        });
    }
    let child = cmd.spawn().context("starting the leak")?;
    let pid = child.id();
    sandbox.leaker = Some(child);
    Ok(pid)
}

/// When each step of the chain was seen, in seconds since the leak started.
#[derive(Default)]
struct Timeline {
    warning: Option<f64>,
    critical: Option<f64>,
    kill: Option<f64>,
    exit: Option<f64>,
    kill_alert: Option<f64>,
    kill_event: Option<Event>,
}

/// Follows the sandbox's events until the victim's exit and the kill alert
/// were seen, or long after the leak should have been killed.
fn watch(events: &mpsc::Receiver<(Event, Instant)>, sandbox: &mut Sandbox, path: &str, pid: u32, start: Instant, duration: Duration) -> Timeline {
    let mut t = Timeline::default();
    let deadline = start + duration * 3 + Duration::from_secs(30);
    while Instant::now() < deadline && (t.exit.is_none() || t.kill_alert.is_none()) {
        let Ok((e, at)) = events.recv_timeout(Duration::from_millis(200)) else {
            if let Some(c) = sandbox.leaker.as_mut()
                && c.try_wait().ok().flatten().is_some()
                && t.kill.is_none()
                && at_s(start, Instant::now()) > duration.as_secs_f64() * 3.0
            {
                break;
            }
            continue;
        };
        if e.cgroup != path {
            continue;
        }
        let at = Some(at_s(start, at));
        match &e.body {
            EventBody::Alert(a) if a.state == AlertState::Firing => match (a.alert, a.severity) {
                (AlertName::OomForecast, Severity::Warning) => t.warning = t.warning.or(at),
                (AlertName::OomForecast, Severity::Critical) => t.critical = t.critical.or(at),
                (AlertName::OomKill, _) => t.kill_alert = t.kill_alert.or(at),
                _ => {}
            },
            EventBody::OomKill(k) if k.victim.pid == pid => {
                t.kill = t.kill.or(at);
                t.kill_event = Some(e.clone());
            }
            EventBody::VictimExit(x) if x.pid == pid => t.exit = t.exit.or(at),
            _ => {}
        }
    }
    if let Some(c) = sandbox.leaker.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    t
}

impl Timeline {
    fn lead(&self, t: Option<f64>) -> String {
        match (t, self.kill) {
            (Some(w), Some(k)) => format!("{:.1}s before the kill", k - w),
            (Some(_), None) => "no kill seen".into(),
            (None, _) => "not seen".into(),
        }
    }

    fn steps(&self, pid: u32, path: &str) -> Vec<Step> {
        let before_kill = |t: Option<f64>| t.is_some() && (self.kill.is_none() || t < self.kill);
        let kill = match &self.kill_event {
            Some(Event { body: EventBody::OomKill(k), .. }) => Some(k),
            _ => None,
        };
        let kill_detail = match kill {
            Some(k) => format!(
                "oom_kill of pid {pid} ({}), attribution {:?}, limit cgroup {}",
                k.victim.comm.as_deref().unwrap_or("?"),
                k.attribution,
                k.limit_cgroup.as_deref().unwrap_or("-")
            ),
            None => format!("no oom_kill event for pid {pid}"),
        };
        let exit_detail = self.exit.zip(self.kill).map(|(x, k)| format!("victim exit confirmed {:.1} ms after the kill", (x - k) * 1e3));
        vec![
            Step { name: "warning", passed: before_kill(self.warning), at_s: self.warning, detail: format!("oom_forecast warning firing, {}", self.lead(self.warning)) },
            Step { name: "critical", passed: before_kill(self.critical), at_s: self.critical, detail: format!("oom_forecast critical firing, {}", self.lead(self.critical)) },
            Step { name: "kill", passed: kill.is_some_and(|k| k.limit_cgroup.as_deref() == Some(path)), at_s: self.kill, detail: kill_detail },
            Step { name: "exit", passed: self.exit.is_some(), at_s: self.exit, detail: exit_detail.unwrap_or_else(|| "no victim_exit event".into()) },
            Step { name: "kill alert", passed: self.kill_alert.is_some(), at_s: self.kill_alert, detail: "oom_kill alert firing".into() },
        ]
    }
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for s in &report.steps {
        let at = s.at_s.map(|t| format!("{t:6.1}s")).unwrap_or_else(|| "      -".into());
        println!("  [{}] {at}  {:<10} {}", if s.passed { "pass" } else { "FAIL" }, s.name, s.detail);
    }
    println!("selftest {}", if report.passed { "passed: the kernel -> daemon -> alerts chain works on this host" } else { "FAILED" });
    Ok(())
}

fn at_s(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64()
}

fn fmt_mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// The leak itself, run in the sandbox: grows at `rate` bytes/s from a
/// tenth of nothing, touching every page, until the kernel kills it.
fn leak(rate: u64) -> ! {
    let start = Instant::now();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut have = 0u64;
    loop {
        let want = (rate as f64 * start.elapsed().as_secs_f64()) as u64 + 8 * MIB;
        while have < want {
            let mut v = vec![0u8; MIB as usize];
            for i in (0..v.len()).step_by(4096) {
                v[i] = 1;
            }
            chunks.push(v);
            have += MIB;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
