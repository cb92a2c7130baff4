//! Pure readers of what the kernel and container runtimes write: cgroup
//! memory files, mountinfo, PSI, meminfo, /proc, the kernel log and its OOM
//! reports, runtime records, names derived from cgroup paths. Each takes its root path or its bytes as an argument, so
//! unit tests and fuzz targets run on fake trees and garbage; nothing here
//! keeps state between calls or writes to a cgroup.
//!
//! May depend on: `wire` only.

use std::{io, path::PathBuf};

pub mod cgroup;
pub mod kmsg;
pub mod labels;
pub mod meminfo;
pub mod mountinfo;
pub mod oom_report;
pub mod procfs;
pub mod psi;
pub mod runtime;

pub use cgroup::{
    CgroupPoller, Limit, MemoryEvents, MemorySample, parse_flat_keyed, parse_limit, parse_u64,
    read_events, read_events_local, read_limit, read_limit_above, read_limit_hits, read_memory, read_own_oom_kills, read_usage,
};
pub use labels::{CgroupLabels, labels_for};
pub use meminfo::{MemInfo, parse_meminfo, read_meminfo};
pub use mountinfo::{
    CgroupLayout, CgroupMode, CgroupVersion, Hierarchy, detect, own_memory_cgroup, parse_mountinfo,
};
pub use procfs::{BootTime, ProcCgroup, ProcStat, boot_id, parse_proc_cgroup, parse_proc_stat, proc_memory_cgroup, vmstat_oom_kills};
pub use psi::{
    Pressure, PressureError, PressurePoller, PsiKind, PsiLine, PsiParseError, SpecError, TriggerSpec,
    parse_pressure, read_pressure,
};

/// A cgroup name or path as the daemon shows and keys it. Names are bytes
/// chosen by whoever created the cgroup: valid UTF-8 is kept as is (so
/// systemd's `\x2d` escapes read as systemctl shows them), and each byte
/// of an invalid sequence is written `\xNN`. Filesystem access never goes
/// through this string: the sampler keeps the real directory beside it.
pub fn path_string(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Errors of the cgroup room. Each one names the file it is about, because
/// "permission denied" without a path is useless to an operator.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file could not be read for a reason other than the cgroup going away
    /// (that case is not an error: readers return `Ok(None)`).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file was read but its content is not what the kernel writes there.
    #[error("{}: unexpected content {content:?}: {what}", path.display())]
    Parse {
        path: PathBuf,
        /// The offending text, cut short so a garbage file cannot flood the log.
        content: String,
        what: &'static str,
    },
    /// No mounted cgroup hierarchy carries the memory controller.
    #[error(
        "no cgroup hierarchy with the memory controller was found ({detail}); \
         mount cgroup v2 with the memory controller enabled, or the v1 memory hierarchy"
    )]
    NoMemoryController { detail: String },
    /// The directory exists but has no memory accounting files: it belongs to
    /// another hierarchy, or it is the v2 root (which has no `memory.current`;
    /// use /proc/meminfo for the whole host).
    #[error(
        "{}: not a memory cgroup (no {file}); point at a directory of the memory hierarchy",
        path.display()
    )]
    NotMemoryCgroup { path: PathBuf, file: &'static str },
}

impl CgroupError {
    /// Builds a [`CgroupError::Parse`], keeping at most 64 bytes of the content.
    pub(crate) fn parse(path: PathBuf, content: &[u8], what: &'static str) -> Self {
        let cut = &content[..content.len().min(64)];
        CgroupError::Parse {
            path,
            content: String::from_utf8_lossy(cut).into_owned(),
            what,
        }
    }
}
