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

use std::{io, os::fd::AsRawFd as _};

use aya::maps::{MapData, RingBuf};

use super::decode::{self, Record};

/// Calls `on_record` for every decoded record, and `on_garbage` for records
/// that do not decode (counted by the caller, never fatal). Blocks the
/// calling thread; returns only when polling the fd fails.
pub fn run_blocking(
    mut ring: RingBuf<MapData>,
    mut on_record: impl FnMut(Record),
    mut on_garbage: impl FnMut(decode::DecodeError),
) -> io::Error {
    let fd = ring.as_raw_fd();
    loop {
        // Drain before each poll: records may be there already.
        while let Some(item) = ring.next() {
            match decode::decode(&item) {
                Ok(record) => on_record(record),
                Err(e) => on_garbage(e),
            }
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call; the fd is
        // owned by `ring`, which outlives it.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return e;
            }
        }
    }
}
