//! Kernel timestamps (CLOCK_MONOTONIC, from bpf_ktime_get_ns) to wall time.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Now, on the clock the kernel programs stamp records with.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Converts kernel timestamps to wall time. The offset is re-measured by
/// `refresh` so NTP steps do not skew event times for long.
pub struct KernelClock {
    realtime_minus_monotonic: AtomicI64,
}

impl Default for KernelClock {
    fn default() -> Self {
        let c = Self { realtime_minus_monotonic: AtomicI64::new(0) };
        c.refresh();
        c
    }
}

impl KernelClock {
    pub fn refresh(&self) {
        let offset = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
        self.realtime_minus_monotonic.store(offset, Ordering::Relaxed);
    }

    /// Re-measures the offset every `period`, for as long as the daemon runs.
    pub async fn keep_fresh(self: std::sync::Arc<Self>, period: std::time::Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.refresh();
        }
    }

    pub fn wall_time(&self, ktime_ns: u64) -> SystemTime {
        let ns = ktime_ns as i64 + self.realtime_minus_monotonic.load(Ordering::Relaxed);
        UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_of_now_is_now() {
        let c = KernelClock::default();
        let got = c.wall_time(monotonic_ns());
        let diff = SystemTime::now().duration_since(got).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }
}
