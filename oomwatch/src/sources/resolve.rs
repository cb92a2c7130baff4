//! cgroup id -> path. A cgroup's id is its kernfs inode number, and kernfs
//! supports file handles, so `open_by_handle_at` on the hierarchy's mount
//! turns an id into the directory, whose /proc/self/fd link is its path.
//! Resolved paths stay in a bounded cache that outlives the cgroup, so late
//! events (a victim's exit after its cgroup was removed) still get a name.

use std::{
    collections::{HashMap, VecDeque},
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::readers::Hierarchy;


struct Mount {
    root: PathBuf,
    fd: OwnedFd,
}

pub struct CgroupResolver {
    memory: Option<Mount>,
    unified: Option<Mount>,
    cache: Mutex<Cache>,
}

/// FIFO-bounded map; old entries go first. Plenty for 10,000 cgroups.
struct Cache {
    map: HashMap<(Hierarchy, u64), String>,
    order: VecDeque<(Hierarchy, u64)>,
    capacity: usize,
}

impl Cache {
    fn insert(&mut self, key: (Hierarchy, u64), path: String) {
        if self.map.insert(key, path).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl CgroupResolver {
    pub const DEFAULT_CAPACITY: usize = 32_768;

    pub fn new(memory_root: Option<&Path>, unified_root: Option<&Path>, capacity: usize) -> Self {
        let mount = |root: Option<&Path>| {
            let root = root?;
            match open_dir(root) {
                Ok(fd) => Some(Mount { root: root.to_path_buf(), fd }),
                Err(e) => {
                    log::warn!("{}: {e}; cgroup ids on it cannot be resolved", root.display());
                    None
                }
            }
        };
        Self {
            memory: mount(memory_root),
            unified: mount(unified_root),
            cache: Mutex::new(Cache { map: HashMap::new(), order: VecDeque::new(), capacity }),
        }
    }

    fn mount(&self, h: Hierarchy) -> Option<&Mount> {
        match h {
            Hierarchy::Memory => self.memory.as_ref(),
            Hierarchy::Unified => self.unified.as_ref(),
        }
    }

    pub fn root(&self, h: Hierarchy) -> Option<&Path> {
        self.mount(h).map(|m| m.root.as_path())
    }

    /// The cgroup path ("/a/b", "/" for the root), relative to its hierarchy.
    pub fn resolve(&self, h: Hierarchy, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.lock().map.get(&(h, id)) {
            return Some(p.clone());
        }
        let path = self.lookup(h, id)?;
        self.lock().insert((h, id), path.clone());
        Some(path)
    }

    /// Remembers a path learned elsewhere (a directory scan), so it resolves
    /// after the cgroup is gone.
    pub fn remember(&self, h: Hierarchy, id: u64, path: String) {
        self.lock().insert((h, id), path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, h: Hierarchy, id: u64) -> Option<String> {
        let mount = self.mount(h)?;
        let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
        // SAFETY: the handle struct matches `struct file_handle` with an
        // 8-byte payload; the fd returned is owned below.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.fd.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let full = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        relative_path(&mount.root, &full)
    }
}

fn relative_path(root: &Path, full: &Path) -> Option<String> {
    let rel = full.strip_prefix(root).ok()?;
    Some(format!("/{}", crate::readers::path_string(rel.as_os_str().as_encoded_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_keeps_recent_entries() {
        let r = CgroupResolver::new(None, None, 3);
        for id in 1..=5 {
            r.remember(Hierarchy::Memory, id, format!("/c{id}"));
        }
        assert_eq!(r.resolve(Hierarchy::Memory, 1), None);
        assert_eq!(r.resolve(Hierarchy::Memory, 5).as_deref(), Some("/c5"));
        assert_eq!(r.lock().map.len(), 3);
        assert_eq!(r.resolve(Hierarchy::Memory, 0), None);
    }
}
