//! The usage walk from the daemon's side: a BPF cgroup iterator linked to
//! the memory hierarchy's root, run once a tick by the sampler, which
//! copies the page counter of every tracked cgroup into a BPF array this
//! process has mapped (`oomwatch_common::usage`). One read(2) for all
//! cgroups, where cgroupfs needs one per cgroup: on a host of 10,000
//! cgroups those reads were two thirds of the daemon's CPU.
//!
//! The kernel holds cgroup_mutex for the walk (mkdir, rmdir and moves of
//! tasks between cgroups wait for it): about 0.2 µs a cgroup.

use std::{
    io::Read as _,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
    ptr::NonNull,
};

use aya::maps::{HashMap, MapData};
use oomwatch_common::usage::{UsageSlot, WALK_SLOT};

#[derive(Debug, thiserror::Error)]
pub enum UsageWalkError {
    #[error("{path}: cannot open the memory cgroup root for the usage walk: {source}")]
    Root { path: std::path::PathBuf, source: std::io::Error },
    #[error("{call} failed for the usage walk: {source}")]
    Syscall { call: &'static str, source: std::io::Error },
    #[error("the usage walk's {what}")]
    Map { what: String },
}

// From include/uapi/linux/bpf.h.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;
const BPF_CGROUP_ITER_DESCENDANTS_PRE: u32 = 2;

/// `union bpf_iter_link_info`, its `cgroup` member.
#[repr(C)]
struct CgroupIterInfo {
    order: u32,
    cgroup_fd: u32,
    cgroup_id: u64,
}

/// The part of `union bpf_attr` BPF_LINK_CREATE reads for an iterator;
/// the kernel checks that the bytes after what it knows are zero.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: [u32; 9],
}

fn bpf(cmd: libc::c_long, attr: &mut [u8], call: &'static str) -> Result<OwnedFd, UsageWalkError> {
    // SAFETY: `attr` is a valid, writable buffer of the given size, laid
    // out as the command's `union bpf_attr` member.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(UsageWalkError::Syscall { call, source: std::io::Error::last_os_error() });
    }
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn as_bytes<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: a plain #[repr(C)] struct of integers, viewed as its bytes.
    unsafe { std::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), size_of::<T>()) }
}

/// Links the loaded iterator program to the cgroups under `root` (pre-order),
/// and runs one walk to prove the link works. aya's `Iter::attach` passes no
/// iterator info, which a cgroup iterator requires.
pub fn link(prog: BorrowedFd<'_>, root: &Path) -> Result<OwnedFd, UsageWalkError> {
    let dir = std::fs::File::open(root).map_err(|source| UsageWalkError::Root { path: root.to_path_buf(), source })?;
    let mut info = CgroupIterInfo { order: BPF_CGROUP_ITER_DESCENDANTS_PRE, cgroup_fd: dir.as_raw_fd() as u32, cgroup_id: 0 };
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_TRACE_ITER,
        iter_info: (&raw mut info) as u64,
        iter_info_len: size_of::<CgroupIterInfo>() as u32,
        ..Default::default()
    };
    let link = bpf(BPF_LINK_CREATE, as_bytes(&mut attr), "bpf(BPF_LINK_CREATE)")?;
    run_once(link.as_fd())?;
    Ok(link)
}

/// One walk: a new iterator from the link, read to its end.
fn run_once(link: BorrowedFd<'_>) -> Result<(), UsageWalkError> {
    let mut attr = [0u32; 2];
    attr[0] = link.as_raw_fd() as u32;
    // SAFETY: viewing two u32 as their 8 bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(attr.as_mut_ptr().cast::<u8>(), 8) };
    let iter = bpf(BPF_ITER_CREATE, bytes, "bpf(BPF_ITER_CREATE)")?;
    let mut file = std::fs::File::from(iter);
    // The program writes nothing: the first read runs the whole walk and
    // returns 0. A buffer, in case a kernel adds output.
    let mut buf = [0u8; 256];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(UsageWalkError::Syscall { call: "read of the cgroup iterator", source }),
        }
    }
}

/// Slots handed to cgroups: the lowest free first, never [`WALK_SLOT`].
#[derive(Debug)]
pub struct SlotAllocator {
    free: Vec<u32>,
    next: u32,
    end: u32,
}

impl SlotAllocator {
    /// Slots `1..end`.
    pub fn new(end: u32) -> Self {
        Self { free: Vec::new(), next: WALK_SLOT + 1, end }
    }

    pub fn take(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        if self.next >= self.end {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    pub fn give_back(&mut self, slot: u32) {
        if slot != WALK_SLOT && slot < self.next && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }
}

/// The walk, owned by the sampler's thread.
pub struct UsageWalk {
    link: OwnedFd,
    slots: HashMap<MapData, u64, u32>,
    /// Kept open for the mapping's lifetime (it would survive a close, but
    /// this says whose it is).
    _usages: MapData,
    mapped: NonNull<UsageSlot>,
    len: usize,
    allocator: SlotAllocator,
    /// The walk running or last run; a slot with another number is stale.
    walk: u64,
    page_size: u64,
}

// SAFETY: the mapping is owned by this value alone and only touched
// through `&self`/`&mut self`; the kernel writes it only during `run`,
// inside the read(2) of the thread that owns the value.
unsafe impl Send for UsageWalk {}

impl UsageWalk {
    /// Maps `usages` (an array of [`UsageSlot`] made mmapable) and takes
    /// ownership of the link and the slot map.
    pub fn new(link: OwnedFd, slots: HashMap<MapData, u64, u32>, usages: MapData) -> Result<Self, UsageWalkError> {
        let info = usages.info().map_err(|e| UsageWalkError::Map { what: format!("array info: {e}") })?;
        let len = info.max_entries() as usize;
        const BPF_F_MMAPABLE: u32 = 1 << 10;
        if info.value_size() as usize != size_of::<UsageSlot>() || len <= WALK_SLOT as usize || info.map_flags() & BPF_F_MMAPABLE == 0 {
            return Err(UsageWalkError::Map {
                what: format!("array has {len} values of {} bytes, flags {:#x} (want {}-byte values, mmapable)", info.value_size(), info.map_flags(), size_of::<UsageSlot>()),
            });
        }
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let bytes = (len * size_of::<UsageSlot>()).div_ceil(page_size) * page_size;
        // SAFETY: mapping a BPF array map's fd, shared, at its full
        // (page-rounded) size, as the kernel allows for BPF_F_MMAPABLE maps.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, usages.fd().as_fd().as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(UsageWalkError::Syscall { call: "mmap of the usage array", source: std::io::Error::last_os_error() });
        }
        let mapped = NonNull::new(ptr.cast::<UsageSlot>()).ok_or_else(|| UsageWalkError::Map { what: "mapping is NULL".into() })?;
        Ok(Self { link, slots, _usages: usages, mapped, len, allocator: SlotAllocator::new(len as u32), walk: 0, page_size: page_size as u64 })
    }

    /// Puts a cgroup on the walk; `None` when every slot is taken or the
    /// kernel refused the entry (the sampler then reads its file).
    pub fn track(&mut self, cgroup_id: u64) -> Option<u32> {
        let slot = self.allocator.take()?;
        match self.slots.insert(cgroup_id, slot, 0) {
            Ok(()) => Some(slot),
            Err(e) => {
                log::debug!("usage walk: cgroup {cgroup_id} not added: {e}");
                self.allocator.give_back(slot);
                None
            }
        }
    }

    pub fn forget(&mut self, cgroup_id: u64, slot: u32) {
        let _ = self.slots.remove(&cgroup_id);
        self.allocator.give_back(slot);
    }

    /// Runs one walk; afterwards [`Self::usage_bytes`] answers for the
    /// cgroups it reached. Returns how many cgroups it visited, tracked or
    /// not.
    pub fn run(&mut self) -> Result<u64, UsageWalkError> {
        self.walk += 1;
        let walk_slot = self.mapped.as_ptr().wrapping_add(WALK_SLOT as usize);
        // SAFETY: WALK_SLOT < len (checked in new): an aligned slot of the
        // mapping; the program writes it only inside run_once, below.
        unsafe { std::ptr::write_volatile(walk_slot, UsageSlot { pages: 0, walk: self.walk }) };
        run_once(self.link.as_fd())?;
        // SAFETY: as above; the walk has ended.
        Ok(unsafe { std::ptr::read_volatile(walk_slot) }.pages)
    }

    /// The usage the last walk read for `slot`; `None` when it did not
    /// reach that cgroup.
    pub fn usage_bytes(&self, slot: u32) -> Option<u64> {
        if self.walk == 0 || slot == WALK_SLOT || slot as usize >= self.len {
            return None;
        }
        // SAFETY: in bounds (above) of the mapping; the kernel writes slots
        // only inside `run`, on this thread, so nothing writes it now.
        let v = unsafe { std::ptr::read_volatile(self.mapped.as_ptr().add(slot as usize)) };
        (v.walk == self.walk).then(|| v.pages.saturating_mul(self.page_size))
    }
}

impl Drop for UsageWalk {
    fn drop(&mut self) {
        let bytes = (self.len * size_of::<UsageSlot>()).div_ceil(self.page_size as usize) * self.page_size as usize;
        // SAFETY: the mapping made in `new`, of this size, unmapped once.
        unsafe { libc::munmap(self.mapped.as_ptr().cast(), bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_never_the_walk_slot() {
        let mut a = SlotAllocator::new(4);
        assert_eq!((a.take(), a.take(), a.take(), a.take()), (Some(1), Some(2), Some(3), None));
        a.give_back(2);
        a.give_back(2);
        a.give_back(WALK_SLOT);
        a.give_back(9);
        assert_eq!((a.take(), a.take()), (Some(2), None));
    }

    #[test]
    fn link_attr_is_laid_out_as_the_kernel_reads_it() {
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, iter_info), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, iter_info_len), 24);
        assert_eq!(size_of::<CgroupIterInfo>(), 16);
    }
}
