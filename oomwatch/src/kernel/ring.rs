//! Drains the ring buffer as soon as the kernel wakes us (tokio AsyncFd).

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::decode::{self, Record};

/// Calls `on_record` for every decoded record, and `on_garbage` for records
/// that do not decode (counted by the caller, never fatal). Runs until the
/// fd fails.
pub async fn run(
    ring: RingBuf<MapData>,
    mut on_record: impl FnMut(Record),
    mut on_garbage: impl FnMut(decode::DecodeError),
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
    loop {
        let mut guard = fd.readable_mut().await?;
        // Clear first: a wakeup that lands while we drain re-arms the fd.
        guard.clear_ready();
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match decode::decode(&item) {
                Ok(record) => on_record(record),
                Err(e) => on_garbage(e),
            }
        }
    }
}
