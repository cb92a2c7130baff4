//! Reads the kernel's per-thread stall map (`RECLAIM_THREADS`) in chunks:
//! `BPF_MAP_LOOKUP_BATCH` (one syscall per few hundred entries, Linux 5.6+)
//! where the kernel has it, else key by key. Memory: one chunk, whatever the
//! map holds.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{HashMap, IterableMap as _, MapData};
use oomwatch_common::reclaim::ThreadStalls;

/// Entries per batch call. A batch must hold a whole hash bucket; buckets
/// of more than this are only possible with pathological keys, and then the
/// key-by-key walk takes over.
const CHUNK: usize = 256;

/// At most this many entries are visited per walk, even if the kernel
/// restarts the key-by-key iteration (a key evicted under us sends
/// `get_next_key` back to the first key). Above the map's size (10240).
pub const MAX_WALK: usize = 16_384;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`, the `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `f` with every entry of the map. Returns whether the walk was
/// complete (it may stop early at [`MAX_WALK`] in the key-by-key mode).
pub fn for_each(map: &HashMap<MapData, u32, ThreadStalls>, mut f: impl FnMut(u32, &ThreadStalls)) -> bool {
    match batched(map, &mut f) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("RECLAIM_THREADS: batch lookup unavailable ({e}); reading key by key");
            for (n, item) in map.iter().enumerate() {
                if n >= MAX_WALK {
                    return false;
                }
                if let Ok((tid, t)) = item {
                    f(tid, &t);
                }
            }
            true
        }
    }
}

/// The batch walk; an error before the first entry was handed out means
/// "use the other way" (the kernel or the map type has no batch lookup).
fn batched(map: &HashMap<MapData, u32, ThreadStalls>, f: &mut impl FnMut(u32, &ThreadStalls)) -> std::io::Result<()> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut keys = vec![0u32; CHUNK];
    let mut values = vec![ThreadStalls::default(); CHUNK];
    // The kernel's resume token for hash maps is a bucket index (u32); room
    // for a u64 in case that ever grows.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    let mut seen = 0usize;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attr points at buffers of `count` keys and values of
        // the map's key and value sizes, and at two 8-byte tokens; all live
        // across the call.
        let r = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as libc::c_uint)
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        let done = match &err {
            None => false,
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Some(e) => {
                if first {
                    return Err(std::io::Error::new(e.kind(), e.to_string()));
                }
                // Mid-walk failure: what was handed out stays handed out.
                log::debug!("RECLAIM_THREADS: batch lookup stopped after {seen} entries: {e}");
                return Ok(());
            }
        };
        let n = (attr.count as usize).min(CHUNK);
        for (k, v) in keys[..n].iter().zip(&values[..n]) {
            f(*k, v);
        }
        seen += n;
        if done || seen >= MAX_WALK {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}
