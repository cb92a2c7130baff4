//! Time to OOM: when will the working set reach the limit at its recent
//! rate of growth?
//!
//! The level is the part of the working set the kernel cannot reclaim
//! without swap: usage minus file cache (shmem and tmpfs stay counted). The
//! cAdvisor working set (usage minus inactive file) still holds active page
//! cache, which swings hard in a cgroup that streams files at its limit;
//! extrapolating it would cry OOM all day for a cache-heavy workload. A
//! cgroup full of cache without growing anonymous memory has no ETA. The trend is a
//! least-squares slope over a few windows (the shortest reacts within
//! seconds of a leak starting, the longest rides out noise); a window only
//! counts when its fit is good (r >= 0.8), the slope stands far out of the
//! noise around it (t-statistic >= 6: a real leak scores in the hundreds,
//! a handful of jittery samples almost never), and the growth over it is
//! real (at least `min_growth_fraction` of the limit). The smallest
//! qualifying ETA wins.

use super::history::Point;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastParams {
    pub window_s: u32,
    pub min_points: usize,
    pub min_growth_fraction: f64,
    pub horizon_s: f64,
}

impl Default for ForecastParams {
    fn default() -> Self {
        Self { window_s: 20, min_points: 5, min_growth_fraction: 0.02, horizon_s: 3600.0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// Seconds until the working set reaches the limit.
    pub eta_s: f64,
    /// Growth of the working set, bytes per second.
    pub slope_bytes_per_s: f64,
}

const MIN_R: f64 = 0.8;
const MIN_T: f64 = 6.0;

/// `points` oldest first; `limit` in bytes; `now_s` on the points' clock.
pub fn forecast(points: &[Point], limit: u64, now_s: u32, p: &ForecastParams) -> Option<Forecast> {
    let last = points.last()?;
    let level = f64::from(last.unreclaimable_kib) * 1024.0;
    let limit = limit as f64;
    if level >= limit {
        return Some(Forecast { eta_s: 0.0, slope_bytes_per_s: 0.0 });
    }
    let mut best: Option<Forecast> = None;
    for window in [p.window_s / 4, p.window_s / 2, p.window_s] {
        let from = now_s.saturating_sub(window.max(2));
        let start = points.partition_point(|q| q.at_s < from);
        let w = &points[start..];
        if w.len() < p.min_points {
            continue;
        }
        let Some((slope, r, t)) = fit(w) else { continue };
        let growth = (f64::from(last.unreclaimable_kib) - f64::from(w[0].unreclaimable_kib)) * 1024.0;
        if slope <= 0.0 || r < MIN_R || t < MIN_T || growth < p.min_growth_fraction * limit {
            continue;
        }
        let eta = (limit - level) / slope;
        if eta <= p.horizon_s && best.is_none_or(|b| eta < b.eta_s) {
            best = Some(Forecast { eta_s: eta, slope_bytes_per_s: slope });
        }
    }
    best
}

/// Least-squares slope (bytes/s) of the level over time, the correlation
/// coefficient r, and the slope's t-statistic (slope over its standard
/// error; infinite for a perfect line).
fn fit(w: &[Point]) -> Option<(f64, f64, f64)> {
    let n = w.len() as f64;
    let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let t0 = f64::from(w[0].at_s);
    for q in w {
        let x = f64::from(q.at_s) - t0;
        let y = f64::from(q.unreclaimable_kib) * 1024.0;
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    let vx = n * sxx - sx * sx;
    let vy = n * syy - sy * sy;
    if vx <= 0.0 {
        return None;
    }
    let slope = (n * sxy - sx * sy) / vx;
    // A perfectly flat series has no variance: no correlation, no trend.
    let r = if vy <= 0.0 { 0.0 } else { ((n * sxy - sx * sy) / (vx * vy).sqrt()).clamp(-1.0, 1.0) };
    let t = if n <= 2.0 || r.abs() >= 1.0 { f64::INFINITY } else { r * ((n - 2.0) / (1.0 - r * r)).sqrt() };
    Some((slope, r, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1048576.0;

    fn series(f: impl Fn(u32) -> f64, from: u32, to: u32) -> Vec<Point> {
        (from..=to)
            .map(|t| {
                let kib = (f(t) / 1024.0) as u32;
                Point { at_s: t, usage_kib: kib, working_set_kib: kib, unreclaimable_kib: kib }
            })
            .collect()
    }

    fn eta(points: &[Point], limit_mib: f64) -> Option<f64> {
        let now = points.last().unwrap().at_s;
        forecast(points, (limit_mib * MIB) as u64, now, &ForecastParams::default()).map(|f| f.eta_s)
    }

    #[test]
    fn linear_leak_is_forecast_within_seconds() {
        // 8 MiB/s from 32 MiB into 256 MiB: the kill is 28 s after the start.
        let pts = series(|t| (32.0 + 8.0 * f64::from(t)) * MIB, 0, 5);
        let e = eta(&pts, 256.0).expect("forecast after 5 s");
        assert!((e - 23.0).abs() < 1.5, "eta {e}");
    }

    #[test]
    fn leak_after_a_long_flat_period_is_seen_quickly() {
        let pts = series(|t| if t < 60 { 40.0 * MIB } else { (40.0 + 8.0 * f64::from(t - 60)) * MIB }, 0, 65);
        let e = eta(&pts, 256.0).expect("short window sees the new leak");
        assert!(e < 30.0, "eta {e}");
    }

    #[test]
    fn flat_full_cgroup_has_no_eta() {
        let pts = series(|_| 250.0 * MIB, 0, 30);
        assert_eq!(eta(&pts, 256.0), None);
    }

    #[test]
    fn noise_without_trend_has_no_eta() {
        let pts = series(|t| (200.0 + if t % 2 == 0 { 6.0 } else { -6.0 }) * MIB, 0, 30);
        assert_eq!(eta(&pts, 256.0), None);
    }

    #[test]
    fn slow_growth_beyond_the_horizon_has_no_eta() {
        let pts = series(|t| (100.0 + 0.001 * f64::from(t)) * MIB, 0, 30);
        assert_eq!(eta(&pts, 100_000.0), None);
    }

    #[test]
    fn at_or_over_the_limit_is_zero() {
        let pts = series(|_| 300.0 * MIB, 0, 3);
        assert_eq!(eta(&pts, 256.0), Some(0.0));
    }

    #[test]
    fn swinging_page_cache_is_not_a_leak() {
        // Streaming a file at the limit: usage pinned, active cache swinging,
        // anonymous memory flat at 20 MiB.
        let pts: Vec<Point> = (0..30)
            .map(|t| {
                let swing = if t % 3 == 0 { 60 } else { 20 };
                Point { at_s: t, usage_kib: 96 * 1024, working_set_kib: (20 + swing) * 1024, unreclaimable_kib: 20 * 1024 }
            })
            .collect();
        assert_eq!(forecast(&pts, 100 << 20, 29, &ForecastParams::default()), None);
    }

    #[test]
    fn jitter_that_happens_to_rise_is_not_a_trend() {
        // Five samples of +-3 MiB jitter around 70 MiB that end up higher.
        let jitter = [0.0, 3.0, -2.0, 3.0, 2.5];
        let pts = series(|t| (70.0 + jitter[t as usize]) * MIB, 0, 4);
        assert_eq!(eta(&pts, 96.0), None);
    }

    #[test]
    fn a_plateau_stops_the_forecast() {
        let pts = series(|t| (32.0 + 8.0 * f64::from(t.min(12))) * MIB, 0, 40);
        assert_eq!(eta(&pts, 1024.0), None, "growth stopped 28 s ago");
    }
}
