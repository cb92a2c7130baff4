//! cgroup layout discovery, memory file readers, id/path resolution, metadata.

pub mod layout;
pub mod resolve;
