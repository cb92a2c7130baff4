//! Peers: programs measured in the same run as the daemon (node_exporter,
//! bpftrace). Each is stopped by the pid we started, gently first, so
//! bpftrace detaches its probes and flushes its last lines.

use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use oomwatch_tests::{ChildGuard, monotonic_ns};

use super::bpf;

/// How long a peer may take to exit on its own before ChildGuard's SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

pub struct Peer {
    child: ChildGuard,
    stop_signal: libc::c_int,
}

impl Peer {
    /// `starting` names the step in the error when the program cannot start.
    pub fn spawn(cmd: &mut Command, stop_signal: libc::c_int, starting: &str) -> Result<Self> {
        let child = cmd.spawn().with_context(|| starting.to_owned())?;
        Ok(Self {
            child: ChildGuard(child),
            stop_signal,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Polls `ready` (given the pid) until it holds; fails when the peer
    /// exits first or `within` passes, as "`name` `not_ready` after N s".
    pub fn wait_ready(
        &mut self,
        name: &str,
        within: Duration,
        not_ready: &str,
        mut ready: impl FnMut(u32) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.0.try_wait() {
                bail!("{name} exited at start: {s}");
            }
            if ready(self.pid()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{name} {not_ready} after {} s", within.as_secs())
    }

    /// Signals the peer and waits up to `grace`. One already reaped is left
    /// alone: its pid may belong to another process by now.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.0.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) of the pid we started, not reaped yet.
            unsafe { libc::kill(self.pid() as i32, self.stop_signal) };
            let _ = self.child.wait_timeout(grace);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop(GRACE);
        // ChildGuard's own drop kills (SIGKILL) and reaps if still running.
    }
}

/// bpftrace running `script` with its output discarded, once it holds
/// `programs` tracepoint programs (what a run-time comparison measures).
pub fn bpftrace_quiet(script: &str, programs: usize) -> Result<Peer> {
    let mut cmd = Command::new("bpftrace");
    cmd.args(["-e", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut peer = Peer::spawn(&mut cmd, libc::SIGINT, "starting bpftrace")?;
    peer.wait_ready(
        "bpftrace",
        Duration::from_secs(60),
        "has not loaded its programs",
        |pid| {
            bpf::progs_of(pid).is_ok_and(|p| {
                p.values()
                    .filter(|p| p.prog_type == bpf::TRACEPOINT)
                    .count()
                    >= programs
            })
        },
    )?;
    Ok(peer)
}

/// bpftrace whose output (stdout and stderr) is read as it comes, each line
/// with the CLOCK_MONOTONIC time it was read here.
pub struct BpftraceLines {
    peer: Peer,
    lines: mpsc::Receiver<(String, u64)>,
    readers: Vec<JoinHandle<()>>,
}

impl BpftraceLines {
    /// `bpftrace -B none ARGS` (unbuffered: a line leaves when printed),
    /// once it says it is attaching.
    pub fn start(args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new("bpftrace");
        cmd.args(["-B", "none"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut peer = Peer::spawn(
            &mut cmd,
            libc::SIGINT,
            "starting bpftrace (apt-get install bpftrace)",
        )?;
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(peer.child.0.stdout.take().context("bpftrace stdout")?),
            Box::new(peer.child.0.stderr.take().context("bpftrace stderr")?),
        ];
        let (tx, lines) = mpsc::channel();
        let readers = streams
            .into_iter()
            .map(|stream| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        if tx.send((line, monotonic_ns())).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        // Only the readers may hold senders, so the channel closes when bpftrace does.
        drop(tx);
        let mut me = Self {
            peer,
            lines,
            readers,
        };
        me.wait_attached()?;
        Ok(me)
    }

    fn wait_attached(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.next_line(deadline) {
                Some((line, _)) if line.starts_with("Attaching") => return Ok(()),
                // bpftrace 0.17 says "ERROR: ... couldn't set RLIMIT_MEMLOCK" without
                // CAP_SYS_RESOURCE and goes on (BPF memory is charged to the memcg).
                Some((line, _)) if line.contains("ERROR") && !line.contains("RLIMIT_MEMLOCK") => {
                    bail!("bpftrace: {line}")
                }
                Some(_) => {}
                None => bail!(
                    "bpftrace did not attach within 60 s (exit: {:?})",
                    self.peer.child.0.try_wait().ok().flatten()
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.peer.pid()
    }

    /// The next line and when it was read; None once `deadline` passed or
    /// bpftrace closed its output.
    pub fn next_line(&self, deadline: Instant) -> Option<(String, u64)> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.lines.recv_timeout(left).ok()
    }

    /// Stops bpftrace (given `grace` to exit) and returns the lines not
    /// read yet, through the last one it printed.
    pub fn finish(self, grace: Duration) -> Vec<(String, u64)> {
        let Self {
            mut peer,
            lines,
            readers,
        } = self;
        peer.stop(grace);
        drop(peer);
        for r in readers {
            let _ = r.join();
        }
        lines.try_iter().collect()
    }
}
