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
    cgroup::{CgroupVersion, layout},
    event::{Event, EventBody, Request, RequestOp},
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
    let mut stream = UnixStream::connect(&args.socket).map_err(|e| {
        anyhow::anyhow!(
            "selftest needs a running daemon: cannot connect to {}: {e} (start it with `oomwatch daemon`)",
            args.socket.display()
        )
    })?;
    writeln!(stream, "{}", serde_json::to_string(&Request { op: RequestOp::Tail, since_secs: None })?)?;
    let layout = layout::detect(Path::new("/proc")).context("selftest cannot find the memory cgroup hierarchy")?;
    let v1 = layout.memory_version == CgroupVersion::V1;
    let (dir, path) = sandbox_location(v1, &layout.memory_root)?;
    std::fs::create_dir(&dir).map_err(|e| anyhow::anyhow!("cannot create a sandbox cgroup at {}: {e} (selftest needs root)", dir.display()))?;
    let mut sandbox = Sandbox { dir: dir.clone(), leaker: None };

    let available = crate::node::read_meminfo(Path::new("/proc")).map_or(u64::MAX, |m| m.available_bytes);
    let limit = (args.limit_mib * MIB).min(available / 4).max(64 * MIB);
    let limit_file = if v1 { "memory.limit_in_bytes" } else { "memory.max" };
    std::fs::write(dir.join(limit_file), limit.to_string()).with_context(|| format!("{}", dir.join(limit_file).display()))?;
    // Reach the limit in about `duration`, from a tenth of it: long enough
    // for the forecast to warn, then turn critical, before the kill.
    let rate = (limit as f64 * 0.9 / args.duration.as_secs_f64()) as u64;

    // Give the daemon a moment to find the sandbox before it fills.
    std::thread::sleep(Duration::from_millis(2500));

    let (tx, rx) = mpsc::channel::<(Event, Instant)>();
    let reader = BufReader::new(stream.try_clone()?);
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

    let procs = dir.join("cgroup.procs");
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
    let start = Instant::now();
    let child = cmd.spawn().context("starting the leak")?;
    let pid = child.id();
    sandbox.leaker = Some(child);
    if !args.json {
        println!("selftest: leaking {}/s into {path} (limit {}); pid {pid}", fmt_mib(rate), fmt_mib(limit));
    }

    let (mut warning, mut critical, mut kill, mut exit, mut kill_alert) = (None, None, None, None, None);
    let mut kill_event: Option<Event> = None;
    let deadline = start + args.duration * 3 + Duration::from_secs(30);
    while Instant::now() < deadline && (exit.is_none() || kill_alert.is_none()) {
        let Ok((e, at)) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Some(c) = sandbox.leaker.as_mut()
                && c.try_wait().ok().flatten().is_some()
                && kill.is_none()
                && at_s(start, Instant::now()) > args.duration.as_secs_f64() * 3.0
            {
                break;
            }
            continue;
        };
        if e.cgroup != path {
            continue;
        }
        let t = Some(at_s(start, at));
        match &e.body {
            EventBody::Alert(a) if a.state == crate::alert::AlertState::Firing => match (a.alert, a.severity) {
                (crate::alert::AlertName::OomForecast, crate::alert::Severity::Warning) => warning = warning.or(t),
                (crate::alert::AlertName::OomForecast, crate::alert::Severity::Critical) => critical = critical.or(t),
                (crate::alert::AlertName::OomKill, _) => kill_alert = kill_alert.or(t),
                _ => {}
            },
            EventBody::OomKill(k) if k.victim.pid == pid => {
                kill = kill.or(t);
                kill_event = Some(e.clone());
            }
            EventBody::VictimExit(x) if x.pid == pid => exit = exit.or(t),
            _ => {}
        }
    }
    if let Some(c) = sandbox.leaker.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }

    let mut steps = Vec::new();
    let lead = |t: Option<f64>| match (t, kill) {
        (Some(w), Some(k)) => format!("{:.1}s before the kill", k - w),
        (Some(_), None) => "no kill seen".into(),
        (None, _) => "not seen".into(),
    };
    steps.push(Step { name: "warning", passed: warning.is_some() && (kill.is_none() || warning < kill), at_s: warning, detail: format!("oom_forecast warning firing, {}", lead(warning)) });
    steps.push(Step { name: "critical", passed: critical.is_some() && (kill.is_none() || critical < kill), at_s: critical, detail: format!("oom_forecast critical firing, {}", lead(critical)) });
    let kill_detail = match &kill_event {
        Some(Event { body: EventBody::OomKill(k), .. }) => format!(
            "oom_kill of pid {pid} ({}), attribution {:?}, limit cgroup {}",
            k.victim.comm.as_deref().unwrap_or("?"),
            k.attribution,
            k.limit_cgroup.as_deref().unwrap_or("-")
        ),
        _ => format!("no oom_kill event for pid {pid}"),
    };
    let kill_ok = matches!(&kill_event, Some(Event { body: EventBody::OomKill(k), .. }) if k.limit_cgroup.as_deref() == Some(path.as_str()));
    steps.push(Step { name: "kill", passed: kill_ok, at_s: kill, detail: kill_detail });
    steps.push(Step { name: "exit", passed: exit.is_some(), at_s: exit, detail: exit.zip(kill).map(|(x, k)| format!("victim exit confirmed {:.1} ms after the kill", (x - k) * 1e3)).unwrap_or_else(|| "no victim_exit event".into()) });
    steps.push(Step { name: "kill alert", passed: kill_alert.is_some(), at_s: kill_alert, detail: "oom_kill alert firing".into() });
    drop(sandbox);
    let cleaned = !dir.exists();
    steps.push(Step { name: "cleanup", passed: cleaned, at_s: None, detail: if cleaned { format!("removed {}", dir.display()) } else { format!("could not remove {}", dir.display()) } });

    let passed = steps.iter().all(|s| s.passed);
    let report = Report { passed, sandbox: path, limit_bytes: limit, leak_bytes_per_s: rate, steps };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &report.steps {
            let at = s.at_s.map(|t| format!("{t:6.1}s")).unwrap_or_else(|| "      -".into());
            println!("  [{}] {at}  {:<10} {}", if s.passed { "pass" } else { "FAIL" }, s.name, s.detail);
        }
        println!("selftest {}", if passed { "passed: the kernel -> daemon -> alerts chain works on this host" } else { "FAILED" });
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
