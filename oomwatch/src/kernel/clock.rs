//! Kernel timestamps (CLOCK_MONOTONIC, from bpf_ktime_get_ns) to wall time.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
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

/// A kernel timestamp as an `Instant`, the clock the model keeps time on
/// (std reads CLOCK_MONOTONIC for it too); None before this process could
/// have measured it.
pub fn instant_of(ktime_ns: u64) -> Option<Instant> {
    Instant::now().checked_sub(Duration::from_nanos(monotonic_ns().saturating_sub(ktime_ns)))
}

/// A kernel timestamp on CLOCK_BOOTTIME (the clock of a process's start
/// time in /proc), in ns since boot. The two clocks differ by the time the
/// host spent suspended, measured now: a suspend since the timestamp makes
/// it later than it was, never earlier.
pub fn boottime_of(ktime_ns: u64) -> u64 {
    let suspended = clock_ns(libc::CLOCK_BOOTTIME) - clock_ns(libc::CLOCK_MONOTONIC);
    ktime_ns.saturating_add(suspended.max(0) as u64)
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

    #[test]
    fn a_kernel_timestamp_on_the_boot_clock_is_not_before_it() {
        let ktime = monotonic_ns();
        let boot = boottime_of(ktime);
        assert!(boot >= ktime);
        let boot_now = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        assert!(boot <= boot_now, "{boot} after now ({boot_now})");
    }

    #[test]
    fn a_kernel_timestamp_is_the_same_moment_as_an_instant() {
        let before = Instant::now();
        let ktime = monotonic_ns();
        let after = Instant::now();
        let at = instant_of(ktime).expect("a moment of this process's life");
        // The two clocks are read one after the other: a few µs apart.
        let slack = Duration::from_millis(1);
        assert!(at + slack >= before && at <= after + slack, "{before:?} <= {at:?} <= {after:?}");
        let earlier = instant_of(ktime - 1_000_000_000).expect("a second earlier");
        assert!(at.duration_since(earlier) > Duration::from_millis(990), "{:?}", at.duration_since(earlier));
    }
}
