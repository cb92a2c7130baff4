//! cgroup layout discovery, memory file readers, id/path resolution, metadata.
//!
//! - [`layout`]: which hierarchy carries the memory controller (v2, hybrid,
//!   v1), found from `/proc/self/mountinfo`.
//! - [`readers`]: memory files of one cgroup directory, into [`MemorySample`]
//!   or the cheap partial readers the daemon polls every second.
//! - [`meta`]: names people recognize (systemd unit, container, pod, QoS)
//!   derived from a cgroup path.
//!
//! - [`resolve`]: the cgroup ids the kernel side reports (inode numbers of
//!   cgroup directories) to paths, with a cache that outlives the cgroup.
//!
//! Everything takes its root path as an argument so unit tests run on fake
//! trees in temp dirs; nothing here writes to a cgroup.

use std::{io, path::PathBuf};

pub mod layout;
pub mod meta;
pub mod readers;
pub mod resolve;
pub mod watch;

pub use layout::{
    CgroupLayout, CgroupMode, CgroupVersion, detect, own_memory_cgroup, parse_mountinfo,
};
pub use meta::{CgroupLabels, labels_for};
pub use readers::{
    CgroupPoller, Limit, MemoryEvents, MemorySample, parse_flat_keyed, parse_limit, parse_u64,
    read_events, read_events_local, read_memory, read_usage,
};

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
