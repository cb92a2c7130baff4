//! Was the victim of an OOM kill its container's main process?
//!
//! Kubernetes reports a container as `OOMKilled` only when its main process
//! died of it (kubernetes/kubernetes#78973): a worker killed while PID 1
//! lives on leaves no trace in the pod's status, which is why oomwatch
//! must say so itself. The main process is the container's PID 1; its
//! pid in the host namespace is what the runtime records (Docker's
//! `State.Pid`, containerd's `init.pid`, conmon's `pidfile`).

use serde::{Deserialize, Serialize};

/// The victim's place in its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MainProcess {
    /// The container's PID 1: the container dies with it, and its runtime
    /// (and Kubernetes) report the OOM kill.
    Main,
    /// Another process: the container lives on, and Kubernetes does not
    /// report the kill.
    NotMain,
    /// The container's init pid is not known.
    Unknown,
}

/// Compares the victim's thread-group id (its process id; a thread's own
/// id is not enough) with the container's init pid. Only meaningful while
/// the init pid is that container's: take it from a lookup made while the
/// container ran, not after it exited.
pub fn main_process(init_pid: Option<u32>, victim_tgid: u32) -> MainProcess {
    match init_pid {
        Some(init) if init == victim_tgid => MainProcess::Main,
        Some(_) => MainProcess::NotMain,
        None => MainProcess::Unknown,
    }
}

/// From `/proc/<pid>/status`: whether the process is PID 1 of its own
/// (innermost) pid namespace, i.e. the init of a container that has one.
/// `None` when the `NSpid` line is missing, malformed, or lists only the
/// host namespace (a process in the host's pid namespace, e.g. a container
/// run with the host's pids, cannot be told apart this way). Read it while
/// the victim still exists (between the kill and its exit).
pub fn is_pid_namespace_init(status: &str) -> Option<bool> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let mut levels = 0usize;
    let mut last = None;
    for field in line.split_ascii_whitespace() {
        last = Some(field.parse::<u32>().ok()?);
        levels += 1;
    }
    (levels >= 2).then(|| last == Some(1))
}

/// A pid file: a decimal pid, maybe followed by a newline. `None` for
/// anything else, including 0.
pub fn parse_pid_file(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&p| p > 0)
}
