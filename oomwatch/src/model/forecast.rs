//! Time to OOM: when will the working set reach the limit?
//!
//! The level is the part of the working set the kernel cannot reclaim
//! without swap: usage minus file cache (shmem and tmpfs stay counted). The
//! cAdvisor working set (usage minus inactive file) still holds active page
//! cache, which swings hard in a cgroup that streams files at its limit;
//! extrapolating it would cry OOM all day for a cache-heavy workload. A
//! cgroup full of cache without growing anonymous memory has no ETA.
//!
//! Two shapes are told apart:
//!
//! - Cycles. A garbage-collected heap fills most of its limit and frees it
//!   again, over and over: the slope of one fill says nothing about the
//!   kill. When the level swings by more than [`SWING_FRACTION`] of the
//!   limit at least twice, the forecast judges the troughs (what survives
//!   each collection) and the peaks with a Theil-Sen slope, which a single
//!   odd cycle cannot tilt. Flat troughs and peaks: no ETA, however close
//!   the peaks come. Climbing troughs (a leak under the GC): the next peak
//!   is the trough line plus the largest swing seen, and the ETA is when it
//!   reaches the limit. Climbing peaks alone count only once the newest
//!   peak stands above every earlier one by more than one sample's worth of
//!   fill: sampled once a second, a fast fill is caught at a different
//!   point of each cycle, and those aliased peaks rise for several cycles
//!   in a row without anything growing.
//! - A trend. Otherwise, a least-squares slope over a few windows (the
//!   shortest reacts within seconds of a leak starting, the longest rides
//!   out noise); a window only counts when its fit is good (r >= 0.8), the
//!   slope stands far out of the noise around it (t-statistic >= 6), the
//!   growth over it is real (at least `min_growth_fraction` of the limit),
//!   and the level is still rising now: it rose in most samples of the last
//!   [`SUSTAIN_S`] seconds (a step that stopped, a warm-up that finished
//!   and the first fill of a heap have no ETA). When the logarithm of the
//!   level fits better than the level (doubling buffers), the exponential
//!   ETA is used if sooner. The smallest qualifying ETA wins.
//!
//! Pressure (PSI, reclaim stalls) is supporting evidence: it never makes an
//! ETA on its own (a cgroup streaming cache at its limit stalls all day),
//! but under pressure two climbing troughs are enough instead of three, and
//! the alert text says so.

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

/// What the forecast was made from, for the person reading the alert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Basis {
    /// The level is at or over the limit now.
    AtLimit,
    /// A steady trend.
    Linear,
    /// Growth that doubles every so often.
    Exponential { doubling_s: f64 },
    /// Fills and frees whose troughs (or peaks) climb.
    Cycles { cycles: usize, period_s: f64, troughs_rising: bool },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// Seconds until the working set reaches the limit.
    pub eta_s: f64,
    /// Growth of the working set, bytes per second (of the troughs or
    /// peaks for cycles).
    pub slope_bytes_per_s: f64,
    pub basis: Basis,
    /// Tasks stalled on memory while it was made (see [`Pressure`]).
    pub under_pressure: bool,
}

impl Forecast {
    /// What was seen and what it leads to, e.g. "troughs rising 2.0 MiB/s
    /// under a GC pattern (9 cycles, one every ~5s): the next peak reaches
    /// the memory limit"; the alert appends when.
    pub fn describe(&self, what: &str) -> String {
        let rate = self.slope_bytes_per_s / 1048576.0;
        let pressure = if self.under_pressure { ", with tasks stalled on memory" } else { "" };
        match self.basis {
            Basis::AtLimit => format!("the working set is at the limit{pressure}: {what}"),
            Basis::Linear => format!("growing {rate:.1} MiB/s{pressure}: {what}"),
            Basis::Exponential { doubling_s } => format!("doubling every {doubling_s:.0}s{pressure}: {what}"),
            Basis::Cycles { cycles, period_s, troughs_rising } => {
                let which = if troughs_rising { "troughs" } else { "peaks" };
                let subject = if what.starts_with("the working set") { what.replacen("the working set", "the next peak", 1) } else { what.to_owned() };
                format!("{which} rising {rate:.1} MiB/s under a GC pattern ({cycles} cycles, one every ~{period_s:.0}s){pressure}: {subject}")
            }
        }
    }
}

/// Stall evidence at the time of the forecast.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    /// PSI "some" avg10, percent.
    pub psi_some_avg10: Option<f64>,
    /// Share of wall time in reclaim stalls over the last interval.
    pub reclaim_ratio: Option<f64>,
}

impl Pressure {
    /// Stalls that matter: 1% of the time waiting on memory.
    fn stalled(&self) -> bool {
        self.psi_some_avg10.is_some_and(|v| v >= 1.0) || self.reclaim_ratio.is_some_and(|r| r >= 0.01)
    }
}

const MIN_R: f64 = 0.8;
const MIN_T: f64 = 6.0;
/// A swing (fill then free, or free then fill) must move the level by this
/// share of the limit to count as a cycle: noise and small frees do not.
pub const SWING_FRACTION: f64 = 0.08;
/// A trend must still be rising over this many seconds.
pub const SUSTAIN_S: u32 = 6;
/// Extremes the cycle trends look back over.
const CYCLES_KEPT: usize = 8;
/// Share of pairs of troughs (or peaks) that must climb.
const MIN_CLIMBING_PAIRS: f64 = 0.75;

/// `points` oldest first; `limit` in bytes; `now_s` on the points' clock.
pub fn forecast(points: &[Point], limit: u64, now_s: u32, p: &ForecastParams, pressure: Pressure) -> Option<Forecast> {
    let last = points.last()?;
    let level = kib_bytes(last.unreclaimable_kib);
    let limit = limit as f64;
    let stalled = pressure.stalled();
    if level >= limit {
        return Some(Forecast { eta_s: 0.0, slope_bytes_per_s: 0.0, basis: Basis::AtLimit, under_pressure: stalled });
    }
    // Most cgroups of a big host sit still: a level that did not move over
    // the whole history has no swing (no cycles) and no growth (no trend),
    // so the answer is known without the series and fits below.
    if p.min_growth_fraction > 0.0 && points.iter().all(|q| q.unreclaimable_kib == last.unreclaimable_kib) {
        return None;
    }
    let series: Vec<(f64, f64)> = points.iter().map(|q| (f64::from(q.at_s), kib_bytes(q.unreclaimable_kib))).collect();
    let extremes = extremes(&series, SWING_FRACTION * limit);
    let found = match Cycles::of(&extremes, f64::from(now_s)) {
        Some(c) if level <= c.highest_peak + SWING_FRACTION * limit => c.forecast(&series, limit, f64::from(now_s), p, stalled),
        // A fill above every earlier peak breaks out of the pattern: judge
        // what came since the last free as a trend.
        Some(_) => {
            let since = extremes.last().map_or(0.0, |e| e.at_s);
            trend(&points[points.partition_point(|q| f64::from(q.at_s) < since)..], limit, now_s, p)
        }
        None => trend(points, limit, now_s, p),
    };
    found.filter(|f| f.eta_s <= p.horizon_s).map(|f| Forecast { under_pressure: stalled, ..f })
}

fn kib_bytes(kib: u32) -> f64 {
    f64::from(kib) * 1024.0
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Extreme {
    at_s: f64,
    level: f64,
    peak: bool,
}

/// Peaks and troughs confirmed by a move of at least `swing` the other
/// way (a zigzag). The first turn is not reported: nothing says what came
/// before the series began (a cgroup created empty is no trough).
fn extremes(series: &[(f64, f64)], swing: f64) -> Vec<Extreme> {
    let mut out = Vec::new();
    let Some(&first) = series.first() else { return out };
    let (mut hi, mut lo) = (first, first);
    // +1 looking for a peak, -1 for a trough, 0 before the first swing.
    let mut dir = 0i8;
    for &q in &series[1..] {
        match dir {
            1 if q.1 > hi.1 => hi = q,
            1 if hi.1 - q.1 >= swing => {
                out.push(Extreme { at_s: hi.0, level: hi.1, peak: true });
                (dir, lo) = (-1, q);
            }
            -1 if q.1 < lo.1 => lo = q,
            -1 if q.1 - lo.1 >= swing => {
                out.push(Extreme { at_s: lo.0, level: lo.1, peak: false });
                (dir, hi) = (1, q);
            }
            0 => {
                if q.1 > hi.1 {
                    hi = q;
                }
                if q.1 < lo.1 {
                    lo = q;
                }
                if hi.1 - lo.1 >= swing {
                    dir = if lo.0 < hi.0 { 1 } else { -1 };
                }
            }
            _ => {}
        }
    }
    out
}

/// A live pattern of fills and frees.
struct Cycles {
    peaks: Vec<(f64, f64)>,
    troughs: Vec<(f64, f64)>,
    /// Largest fill from a trough to the next peak.
    swing: f64,
    /// The highest peak seen: a fill well above it breaks the pattern.
    highest_peak: f64,
    period_s: f64,
    cycles: usize,
}

impl Cycles {
    /// At least two frees, and the last turn recent (within two periods
    /// and a bit): a heap that stopped collecting is judged as a trend.
    fn of(extremes: &[Extreme], now_s: f64) -> Option<Self> {
        let all_peaks: Vec<(f64, f64)> = extremes.iter().filter(|e| e.peak).map(|e| (e.at_s, e.level)).collect();
        let troughs: Vec<(f64, f64)> = extremes.iter().filter(|e| !e.peak).map(|e| (e.at_s, e.level)).collect();
        if all_peaks.len() < 2 || troughs.is_empty() {
            return None;
        }
        let mut gaps: Vec<f64> = all_peaks.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let period_s = median(&mut gaps);
        if now_s - extremes.last()?.at_s > 2.0 * period_s + 3.0 {
            return None;
        }
        let swing = extremes.windows(2).filter(|w| !w[0].peak && w[1].peak).map(|w| w[1].level - w[0].level).fold(0.0, f64::max);
        let highest_peak = all_peaks.iter().map(|p| p.1).fold(0.0, f64::max);
        let keep = |v: &[(f64, f64)]| v[v.len().saturating_sub(CYCLES_KEPT)..].to_vec();
        Some(Self { cycles: all_peaks.len(), peaks: keep(&all_peaks), troughs: keep(&troughs), swing, highest_peak, period_s })
    }

    fn forecast(&self, series: &[(f64, f64)], limit: f64, now_s: f64, p: &ForecastParams, stalled: bool) -> Option<Forecast> {
        let min_growth = p.min_growth_fraction * limit;
        let basis = |troughs_rising| Basis::Cycles { cycles: self.cycles, period_s: self.period_s, troughs_rising };
        let min_troughs = if stalled { 2 } else { 3 };
        let by_troughs = climb(&self.troughs, min_troughs, min_growth).map(|(slope, intercept)| {
            let next_peak = slope * now_s + intercept + self.swing;
            Forecast { eta_s: ((limit - next_peak) / slope).max(0.0), slope_bytes_per_s: slope, basis: basis(true), under_pressure: false }
        });
        let by_peaks = self.peaks_climb(series, min_growth).and_then(|(slope, intercept)| {
            let at_now = slope * now_s + intercept;
            (at_now < limit).then(|| Forecast { eta_s: (limit - at_now) / slope, slope_bytes_per_s: slope, basis: basis(false), under_pressure: false })
        });
        match (by_troughs, by_peaks) {
            (Some(t), Some(pk)) => Some(if pk.eta_s < t.eta_s { pk } else { t }),
            (t, pk) => t.or(pk),
        }
    }

    /// The peaks' climb, when the newest peak is a new high by more than a
    /// sample's worth of fill (see the module comment on aliasing).
    fn peaks_climb(&self, series: &[(f64, f64)], min_growth: f64) -> Option<(f64, f64)> {
        let (&newest, earlier) = self.peaks.split_last()?;
        let earlier_high = earlier.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let fill_step = largest_rise_before_peaks(series, &self.peaks);
        if newest.1 < earlier_high + fill_step.max(min_growth) {
            return None;
        }
        climb(&self.peaks, 4, min_growth)
    }
}

/// The median over cycles of the largest rise between two samples in the
/// seconds before each peak.
fn largest_rise_before_peaks(series: &[(f64, f64)], peaks: &[(f64, f64)]) -> f64 {
    let mut rises: Vec<f64> = peaks
        .iter()
        .map(|&(at, _)| {
            let end = series.partition_point(|q| q.0 <= at);
            let start = series[..end].partition_point(|q| q.0 < at - 10.0);
            series[start..end].windows(2).map(|w| w[1].1 - w[0].1).fold(0.0, f64::max)
        })
        .collect();
    median(&mut rises)
}

/// A robust climb of `pts` (troughs or peaks): Theil-Sen slope over at
/// least `min_pts` of them, most pairs climbing, a rise over their span of
/// at least `min_growth` and well above their scatter around the line.
/// Returns the line: slope (bytes/s) and intercept (bytes at 0 s).
fn climb(pts: &[(f64, f64)], min_pts: usize, min_growth: f64) -> Option<(f64, f64)> {
    if pts.len() < min_pts {
        return None;
    }
    let mut slopes = Vec::new();
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            if b.0 > a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    let climbing = slopes.iter().filter(|s| **s > 0.0).count() as f64 / slopes.len().max(1) as f64;
    let slope = median(&mut slopes);
    let mut offsets: Vec<f64> = pts.iter().map(|q| q.1 - slope * q.0).collect();
    let intercept = median(&mut offsets);
    let mut scatter: Vec<f64> = pts.iter().map(|q| (q.1 - slope * q.0 - intercept).abs()).collect();
    let scatter = median(&mut scatter);
    let span = pts[pts.len() - 1].0 - pts[0].0;
    let rise = slope * span;
    // The newest one at (or near) the top: climbing now, not a while ago.
    let newest = pts[pts.len() - 1].1;
    let earlier_high = pts[..pts.len() - 1].iter().map(|q| q.1).fold(f64::MIN, f64::max);
    (newest >= earlier_high - scatter && slope > 0.0 && climbing >= MIN_CLIMBING_PAIRS && rise >= min_growth && rise >= 4.0 * scatter).then_some((slope, intercept))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// Whether the level rose in most samples of the last [`SUSTAIN_S`]
/// seconds, with no real fall among them.
fn still_rising(points: &[Point], now_s: u32, limit: f64) -> bool {
    let from = points.partition_point(|q| q.at_s < now_s.saturating_sub(SUSTAIN_S));
    let recent = &points[from.saturating_sub(1)..];
    let steps: Vec<f64> = recent.windows(2).map(|w| kib_bytes(w[1].unreclaimable_kib) - kib_bytes(w[0].unreclaimable_kib)).collect();
    let span = recent.last().map_or(0, |l| l.at_s) - recent.first().map_or(0, |f| f.at_s);
    // A rise counts when it is a fair share of the average one: jitter
    // between the jumps of a staircase is not growth.
    let mean = steps.iter().sum::<f64>() / steps.len().max(1) as f64;
    let rises = steps.iter().filter(|d| **d > 0.0 && **d >= 0.25 * mean).count();
    span >= SUSTAIN_S && rises * 5 >= steps.len() * 4 && steps.iter().all(|d| *d > -0.005 * limit)
}

fn trend(points: &[Point], limit: f64, now_s: u32, p: &ForecastParams) -> Option<Forecast> {
    let last = points.last()?;
    let level = kib_bytes(last.unreclaimable_kib);
    if !still_rising(points, now_s, limit) {
        return None;
    }
    // What the last SUSTAIN_S seconds grew: a window whose slope they fall
    // far short of has seen growth that has since stopped (steps).
    let recent_from = points.partition_point(|q| q.at_s < now_s.saturating_sub(SUSTAIN_S)).saturating_sub(1);
    let recent = &points[recent_from];
    let recent_rate = (level - kib_bytes(recent.unreclaimable_kib)) / f64::from((now_s.saturating_sub(recent.at_s)).max(1));
    let mut best: Option<Forecast> = None;
    for window in [p.window_s / 4, p.window_s / 2, p.window_s] {
        let from = now_s.saturating_sub(window.max(2));
        let w = &points[points.partition_point(|q| q.at_s < from)..];
        if w.len() < p.min_points {
            continue;
        }
        let Some((slope, r, t)) = fit(w, |y| y) else { continue };
        let growth = level - kib_bytes(w[0].unreclaimable_kib);
        if slope <= 0.0 || r < MIN_R || t < MIN_T || growth < p.min_growth_fraction * limit || recent_rate < 0.5 * slope {
            continue;
        }
        let mut found = Forecast { eta_s: (limit - level) / slope, slope_bytes_per_s: slope, basis: Basis::Linear, under_pressure: false };
        // Doubling buffers: the logarithm of the level fits better.
        if let Some((rate, r_log, _)) = fit(w, |y| y.max(1.0).ln())
            && rate > 0.0
            && r_log > r
        {
            let eta = (limit / level).ln() / rate;
            if eta < found.eta_s {
                found = Forecast { eta_s: eta, basis: Basis::Exponential { doubling_s: std::f64::consts::LN_2 / rate }, ..found };
            }
        }
        if best.is_none_or(|b| found.eta_s < b.eta_s) {
            best = Some(found);
        }
    }
    best
}

/// Least-squares slope of `y(level)` over time, the correlation
/// coefficient r, and the slope's t-statistic (slope over its standard
/// error; infinite for a perfect line).
fn fit(w: &[Point], y_of: impl Fn(f64) -> f64) -> Option<(f64, f64, f64)> {
    let n = w.len() as f64;
    let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let t0 = f64::from(w[0].at_s);
    for q in w {
        let x = f64::from(q.at_s) - t0;
        let y = y_of(kib_bytes(q.unreclaimable_kib));
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
    const LIMIT: f64 = 256.0 * MIB;
    /// The default alert thresholds: warning under 60 s, held 2 s.
    const WARN_ETA: f64 = 60.0;

    fn point(at_s: u32, bytes: f64) -> Point {
        let kib = (bytes.max(0.0) / 1024.0) as u32;
        Point { at_s, usage_kib: kib, working_set_kib: kib, unreclaimable_kib: kib }
    }

    fn series(f: impl Fn(u32) -> f64, from: u32, to: u32) -> Vec<Point> {
        (from..=to).map(|t| point(t, f(t))).collect()
    }

    fn eta_with(points: &[Point], limit: f64, pressure: Pressure) -> Option<f64> {
        let now = points.last().unwrap().at_s;
        forecast(points, limit as u64, now, &ForecastParams::default(), pressure).map(|f| f.eta_s)
    }

    fn eta(points: &[Point], limit_mib: f64) -> Option<f64> {
        eta_with(points, limit_mib * MIB, Pressure::default())
    }

    /// The model forecasts a level that never moved from its last point
    /// alone (most cgroups of a big host, every tick): same answer.
    #[test]
    fn a_level_that_never_moved_forecasts_as_its_last_point() {
        let p = ForecastParams::default();
        let stalled = Pressure { psi_some_avg10: Some(50.0), reclaim_ratio: Some(0.5) };
        for (level, limit) in [(0.0, LIMIT), (100.0 * MIB, LIMIT), (LIMIT, LIMIT), (300.0 * MIB, LIMIT)] {
            let flat = series(|_| level, 0, 119);
            for pressure in [Pressure::default(), stalled] {
                let all = forecast(&flat, limit as u64, 119, &p, pressure);
                let last = forecast(&flat[flat.len() - 1..], limit as u64, 119, &p, pressure);
                assert_eq!(all, last, "level {level}, limit {limit}");
            }
        }
        let at_limit = series(|_| LIMIT, 0, 119);
        assert!(forecast(&at_limit, LIMIT as u64, 119, &p, Pressure::default()).is_some_and(|f| f.basis == Basis::AtLimit));
    }

    /// splitmix64, so every case replays from its seed.
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + self.unit() * (hi - lo)
        }
    }

    /// A garbage-collected heap as memhog's sawtooth mode runs it: from an
    /// empty cgroup, each cycle keeps `trough + drift * start` and fills
    /// `swing` more over `fill` seconds, then frees it.
    #[derive(Debug, Clone, Copy)]
    struct Saw {
        trough: f64,
        swing: f64,
        fill: f64,
        period: f64,
        drift: f64,
        /// When in the second the sampler reads.
        phase: f64,
        noise: f64,
    }

    impl Saw {
        fn random(r: &mut Rng, drift_mib_s: (f64, f64)) -> Self {
            let trough = r.range(0.15, 0.3) * LIMIT;
            // A fill under 1.5 s can slip between two samples a second
            // apart and go unseen; memhog's scenarios fill slower too.
            let fill = r.range(1.5, 4.0);
            Saw {
                trough,
                swing: r.range(0.3, 0.6) * LIMIT,
                fill,
                period: fill + r.range(1.0, 4.0),
                drift: r.range(drift_mib_s.0, drift_mib_s.1) * MIB,
                phase: r.unit(),
                noise: 0.005 * LIMIT,
            }
        }
        fn level(&self, t: f64) -> f64 {
            let start = (t / self.period).floor() * self.period;
            let base = self.trough + self.drift * start;
            base + self.swing * ((t - start) / self.fill).min(1.0) * f64::from(u8::from(t - start < self.fill))
        }
        /// When the first peak reaches the limit (the kernel kills there).
        fn kill_s(&self) -> Option<f64> {
            (0..1000).map(|k| f64::from(k) * self.period).find_map(|start| {
                let base = self.trough + self.drift * start;
                (base + self.swing >= LIMIT).then(|| start + self.fill * ((LIMIT - base) / self.swing).max(0.0))
            })
        }
        fn sample(&self, r: &mut Rng, to: u32) -> Vec<Point> {
            (0..=to).map(|s| point(s, if s == 0 { 0.0 } else { self.level(f64::from(s) + self.phase) + r.range(-1.0, 1.0) * self.noise })).collect()
        }
    }

    /// The second at which a warning would fire (ETA under 60 s on two
    /// evaluations in a row), evaluating as the daemon does once a second.
    fn warned_at(points: &[Point]) -> Option<u32> {
        let mut held = 0;
        for end in 1..points.len() {
            let e = eta_with(&points[end.saturating_sub(120)..=end], LIMIT, Pressure::default());
            held = if e.is_some_and(|e| e < WARN_ETA) { held + 1 } else { 0 };
            if held >= 2 {
                return Some(points[end].at_s);
            }
        }
        None
    }

    /// Every second at which some ETA was made.
    fn etas(points: &[Point]) -> Vec<(u32, f64)> {
        (1..points.len()).filter_map(|end| eta_with(&points[end.saturating_sub(120)..=end], LIMIT, Pressure::default()).map(|e| (points[end].at_s, e))).collect()
    }

    #[test]
    fn flat_sawtooth_near_the_limit_has_no_eta() {
        for seed in 1..=40 {
            let mut r = Rng(seed);
            let mut saw = Saw::random(&mut r, (0.0, 0.0));
            // Peaks at 80-95% of the limit.
            saw.swing = r.range(0.8, 0.95) * LIMIT - saw.trough;
            let pts = saw.sample(&mut r, 150);
            assert_eq!(etas(&pts), vec![], "seed {seed}: {saw:?}");
        }
    }

    /// A leak that kills within four cycles and 20 s cannot be told from
    /// a heap's first fills (three troughs make a trend, and sampling once
    /// a second can miss a fast fill): those cases are drawn again.
    #[test]
    fn rising_troughs_get_an_eta_at_least_15s_before_the_kill() {
        let mut redrawn = 0;
        for seed in 1..=40 {
            let mut r = Rng(seed);
            let (saw, kill) = loop {
                let saw = Saw::random(&mut r, (1.0, 3.0));
                let kill = saw.kill_s().unwrap();
                if kill >= 4.0 * saw.period + 20.0 {
                    break (saw, kill);
                }
                redrawn += 1;
            };
            let pts = saw.sample(&mut r, kill as u32);
            let warned = warned_at(&pts).unwrap_or_else(|| panic!("seed {seed}: no warning before the kill at {kill:.1}s: {saw:?}"));
            assert!(kill - f64::from(warned) >= 15.0, "seed {seed}: warned at {warned}s, kill at {kill:.1}s: {saw:?}");
        }
        assert!(redrawn < 40, "most cases are slow enough: {redrawn} redrawn");
    }

    #[test]
    fn rising_troughs_are_described_as_a_leak_under_gc() {
        let mut r = Rng(7);
        let saw = Saw { drift: 2.0 * MIB, ..Saw::random(&mut r, (0.0, 0.0)) };
        let pts = saw.sample(&mut r, 40);
        let f = forecast(&pts, LIMIT as u64, 40, &ForecastParams::default(), Pressure::default()).expect("an ETA");
        assert!(matches!(f.basis, Basis::Cycles { troughs_rising: true, .. }), "{f:?}");
        let text = f.describe("the working set reaches the memory limit");
        let rate: f64 = text.strip_prefix("troughs rising ").and_then(|t| t.split(' ').next()?.parse().ok()).unwrap_or(0.0);
        assert!((1.6..=2.4).contains(&rate) && text.contains("MiB/s under a GC pattern") && text.contains("the next peak reaches"), "{text}");
    }

    #[test]
    fn pressure_lets_two_climbing_troughs_count() {
        // Two frees, the second trough 20 MiB higher.
        let saw = Saw { trough: 60.0 * MIB, swing: 120.0 * MIB, fill: 2.0, period: 5.0, drift: 4.0 * MIB, phase: 0.5, noise: 0.0 };
        let pts = saw.sample(&mut Rng(1), 12);
        let stalled = Pressure { psi_some_avg10: Some(12.0), reclaim_ratio: None };
        assert_eq!(eta_with(&pts, LIMIT, Pressure::default()), None, "two troughs alone are not a trend");
        let f = forecast(&pts, LIMIT as u64, 12, &ForecastParams::default(), stalled).expect("pressure confirms the climb");
        assert!(f.under_pressure && f.describe("x").contains("stalled on memory"), "{f:?}");
    }

    #[test]
    /// Steps a few seconds apart are growth while they last (an ETA for a
    /// second or two is fair), but never long enough to warn, and none
    /// once the steps stop.
    fn step_growth_that_stops_raises_no_warning() {
        for seed in 1..=40 {
            let mut r = Rng(seed);
            let (start, step, every) = (r.range(0.08, 0.2) * LIMIT, r.range(0.12, 0.2) * LIMIT, r.range(4.0, 10.0));
            let level = |t: u32| if t == 0 { 0.0 } else { start + step * (f64::from(t) / every).floor().min(3.0) };
            let pts: Vec<Point> = (0..=80).map(|t| point(t, level(t) + r.range(-0.5, 0.5) * MIB)).collect();
            let what = format!("seed {seed}: {:.0} MiB + 3 x {:.0} MiB every {every:.1}s", start / MIB, step / MIB);
            assert_eq!(warned_at(&pts), None, "{what}");
            let last_step = (3.0 * every).ceil() as u32;
            let late: Vec<(u32, f64)> = etas(&pts).into_iter().filter(|(t, _)| *t > last_step + SUSTAIN_S).collect();
            assert_eq!(late, vec![], "{what}");
        }
    }

    #[test]
    fn exponential_growth_is_warned_before_the_kill() {
        for seed in 1..=20 {
            let mut r = Rng(seed);
            let (start, doubling) = (r.range(4.0, 12.0) * MIB, r.range(4.0, 7.0));
            let kill = doubling * (LIMIT / start).log2();
            let pts = series(|t| start * (f64::from(t) / doubling).exp2(), 0, kill as u32);
            let warned = warned_at(&pts).unwrap_or_else(|| panic!("seed {seed}: no warning, kill at {kill:.1}s"));
            assert!(kill - f64::from(warned) >= 5.0, "seed {seed}: warned at {warned}s, kill at {kill:.1}s (doubling {doubling:.1}s)");
        }
    }

    #[test]
    fn exponential_growth_is_described_as_doubling() {
        let pts = series(|t| 8.0 * MIB * (f64::from(t) / 5.0).exp2(), 0, 16);
        let f = forecast(&pts, LIMIT as u64, 16, &ForecastParams::default(), Pressure::default()).expect("an ETA");
        let Basis::Exponential { doubling_s } = f.basis else { panic!("{f:?}") };
        assert!((doubling_s - 5.0).abs() < 0.5, "{doubling_s}");
        // 8 MiB * 2^(16/5) is 73.5 MiB: 256 MiB is 9 s away.
        assert!((f.eta_s - 9.0).abs() < 1.5, "{f:?}");
    }

    #[test]
    fn linear_leak_is_warned_20_s_before_the_kill() {
        // 8 MiB/s from 32 MiB into 256 MiB: the kill is 28 s after the start.
        let pts = series(|t| if t == 0 { 0.0 } else { (32.0 + 8.0 * f64::from(t)) * MIB }, 0, 28);
        let warned = warned_at(&pts).expect("warned");
        assert!(28 - warned >= 19, "warned at {warned}s");
    }

    #[test]
    fn linear_leak_is_forecast_within_seconds() {
        let pts = series(|t| (32.0 + 8.0 * f64::from(t)) * MIB, 0, 6);
        let e = eta(&pts, 256.0).expect("forecast after 6 s");
        assert!((e - 22.0).abs() < 1.5, "eta {e}");
        let f = forecast(&pts, 256 << 20, 6, &ForecastParams::default(), Pressure::default()).unwrap();
        assert_eq!(f.describe("it reaches the limit"), "growing 8.0 MiB/s: it reaches the limit");
    }

    #[test]
    fn leak_after_a_long_flat_period_is_seen_quickly() {
        let pts = series(|t| if t < 60 { 40.0 * MIB } else { (40.0 + 8.0 * f64::from(t - 60)) * MIB }, 0, 66);
        let e = eta(&pts, 256.0).expect("short window sees the new leak");
        assert!(e < 30.0, "eta {e}");
    }

    #[test]
    fn a_leak_that_breaks_out_of_a_sawtooth_is_seen() {
        // Cycles for a minute, then the heap stops freeing and grows 8 MiB/s
        // past every earlier peak.
        let saw = Saw { trough: 40.0 * MIB, swing: 80.0 * MIB, fill: 2.0, period: 5.0, drift: 0.0, phase: 0.3, noise: 0.0 };
        let pts = series(|t| if t < 60 { saw.level(f64::from(t) + 0.3) } else { (40.0 + 8.0 * f64::from(t - 60)) * MIB }, 0, 78);
        let e = eta_with(&pts, LIMIT, Pressure::default()).expect("a breakout is a trend");
        assert!(e < 15.0, "eta {e}");
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
        for seed in 1..=20 {
            let mut r = Rng(seed);
            let (mean, amp) = (r.range(0.4, 0.8) * LIMIT, r.range(0.01, 0.07) * LIMIT);
            let pts: Vec<Point> = (0..=150).map(|t| point(t, mean + r.range(-1.0, 1.0) * amp)).collect();
            assert_eq!(etas(&pts), vec![], "seed {seed}: {:.0} MiB +- {:.0} MiB", mean / MIB, amp / MIB);
        }
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
        // anonymous memory flat at 20 MiB, and the tasks stalled in reclaim.
        let pts: Vec<Point> = (0..30)
            .map(|t| {
                let swing = if t % 3 == 0 { 60 } else { 20 };
                Point { at_s: t, usage_kib: 96 * 1024, working_set_kib: (20 + swing) * 1024, unreclaimable_kib: 20 * 1024 }
            })
            .collect();
        let stalled = Pressure { psi_some_avg10: Some(40.0), reclaim_ratio: Some(0.3) };
        assert_eq!(forecast(&pts, 100 << 20, 29, &ForecastParams::default(), stalled), None);
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
