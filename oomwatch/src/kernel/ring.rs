//! Drains the ring buffer as soon as the kernel wakes us, on a thread of
//! its own blocked in poll(2) on the ring buffer's fd.
//!
//! Not a task on the async runtime: there a kill waited for the runtime's
//! I/O driver to notice the fd, then for a worker to run the task, and
//! shared both workers with every other task (scrapes, sinks, the
//! sampler's follow-ups). Measured on a 2-vCPU host during a kill, the
//! worker woken by the kernel often found the other one busy or was
//! queued behind the daemon's own threads woken by the same kill (the
//! kernel log reader, the journal writer). A thread that does one thing
//! is woken once and runs the kill to its publication; see
//! docs/performance.md.

use std::{
    io,
    os::fd::{AsRawFd as _, RawFd},
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, RingBuf};

use super::decode::{self, Record};

/// The ring buffer, shared by the readers: whichever is running first when
/// the kernel wakes them drains it; the other finds it empty.
pub struct SharedRing {
    ring: Mutex<RingBuf<MapData>>,
    fd: RawFd,
}

impl SharedRing {
    pub fn new(ring: RingBuf<MapData>) -> Arc<Self> {
        let fd = ring.as_raw_fd();
        Arc::new(Self { ring: Mutex::new(ring), fd })
    }
}

/// Calls `on_record` for every decoded record, and `on_garbage` for records
/// that do not decode (counted by the caller, never fatal). Blocks the
/// calling thread; returns only when polling the fd fails. Several threads
/// may run it on one ring: records are handled in order, by one at a time.
pub fn run_blocking(ring: &SharedRing, on_record: &(impl Fn(Record) + Sync), on_garbage: &(impl Fn(decode::DecodeError) + Sync)) -> io::Error {
    loop {
        // Drain before each poll: records may be there already. A reader
        // that finds the other draining leaves it the records.
        match ring.ring.try_lock() {
            Ok(mut r) => {
                while let Some(item) = r.next() {
                    match decode::decode(&item) {
                        Ok(record) => on_record(record),
                        Err(e) => on_garbage(e),
                    }
                }
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_micros(50)),
        }
        let mut pfd = libc::pollfd { fd: ring.fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call; the fd is
        // owned by the ring buffer in `ring`, which outlives it.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return e;
            }
        }
    }
}
