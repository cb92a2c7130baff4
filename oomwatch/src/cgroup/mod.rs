//! cgroup layout discovery, memory file readers, id/path resolution, metadata.
