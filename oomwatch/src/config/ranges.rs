//! The range of every numeric and duration setting, in one place. A value
//! outside its range is refused by `oomwatch check`, at start and on
//! reload, naming the key; inside it, nothing downstream can overflow or
//! panic (a zero period, a semaphore past its maximum, an instant past the
//! end of time). `oomwatch check --print-ranges` prints this table.

use std::{fmt, time::Duration};

use super::Config;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    Count { min: u64, max: u64 },
    Signed { min: i64, max: i64 },
    Duration { min: Duration, max: Duration },
    /// A float in `min..=max`; `min` itself excluded when `open_min`.
    Float { min: f64, max: f64, open_min: bool },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    Signed(i64),
    Duration(Duration),
    Float(f64),
}

const fn count(min: u64, max: u64) -> Range {
    Range::Count { min, max }
}

const fn secs(min_ms: u64, max_s: u64) -> Range {
    Range::Duration { min: Duration::from_millis(min_ms), max: Duration::from_secs(max_s) }
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// Queues hold at most this many items: past it, memory is the limit, and
/// tokio's semaphores refuse more permits than about 2^61.
const MAX_QUEUE: u64 = 100_000;

impl Range {
    fn check(self, v: Value) -> Result<(), String> {
        let ok = match (self, v) {
            (Range::Count { min, max }, Value::Count(x)) => (min..=max).contains(&x),
            (Range::Signed { min, max }, Value::Signed(x)) => (min..=max).contains(&x),
            (Range::Duration { min, max }, Value::Duration(x)) => (min..=max).contains(&x),
            (Range::Float { min, max, open_min }, Value::Float(x)) => x.is_finite() && x <= max && if open_min { x > min } else { x >= min },
            _ => false,
        };
        if ok { Ok(()) } else { Err(format!("{v} is outside {self}")) }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Range::Count { min, max } => write!(f, "{min}..={max}"),
            Range::Signed { min, max } => write!(f, "{min}..={max}"),
            Range::Duration { min, max } => write!(f, "{}..={}", human(min), human(max)),
            Range::Float { min, max, open_min: true } => write!(f, "({min}, {max}]"),
            Range::Float { min, max, open_min: false } => write!(f, "[{min}, {max}]"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Count(x) => write!(f, "{x}"),
            Value::Signed(x) => write!(f, "{x}"),
            Value::Duration(d) => f.write_str(&human(d)),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

fn human(d: Duration) -> String {
    if d.is_zero() { "0s".into() } else { humantime::format_duration(d).to_string() }
}

/// Calls `f` with every numeric and duration setting of `c`: its key, value
/// and allowed range. Sinks are named by position (`sinks.webhook[0].queue`).
pub fn each_setting(c: &Config, f: &mut dyn FnMut(&str, Value, Range)) {
    let n = |x: usize| Value::Count(x as u64);
    let d = Value::Duration;
    let dm = &c.daemon;
    f("daemon.backlog", n(dm.backlog), count(0, 1_000_000));
    f("daemon.stream_buffer", n(dm.stream_buffer), count(1, 1_000_000));
    f("daemon.oom_score_adj", Value::Signed(i64::from(dm.oom_score_adj)), Range::Signed { min: -1000, max: 1000 });
    // At least 1 s (the Pushgateway keeps only the last push anyway), at most
    // 5 min (beyond that the shipped OomwatchHostSilent rule would take a
    // healthy host for a dead one).
    f("daemon.push_interval", d(dm.push_interval), secs(1000, 5 * MINUTE));
    let cg = &c.cgroups;
    f("cgroups.max_cgroups", n(cg.max_cgroups), count(1, 1_000_000));
    f("cgroups.removal_grace", d(cg.removal_grace), secs(0, DAY));
    f("cgroups.sample_interval", d(cg.sample_interval), secs(100, MINUTE));
    f("cgroups.full_sample_every", d(cg.full_sample_every), secs(100, HOUR));
    let p = &c.pressure;
    // The kernel's own limits (WINDOW_MIN_US, WINDOW_MAX_US in psi.c).
    f("pressure.trigger_window", d(p.trigger_window), secs(500, 10));
    f("pressure.trigger_stall", d(p.trigger_stall), Range::Duration { min: Duration::from_micros(1), max: Duration::from_secs(10) });
    f("pressure.max_triggers", n(p.max_triggers), count(1, 10_000));
    let r = &c.reclaim;
    f("reclaim.stall_threshold", d(r.stall_threshold), secs(0, HOUR));
    f("reclaim.min_interval", d(r.min_interval), secs(0, HOUR));
    let fc = &c.forecast;
    f("forecast.window", d(fc.window), secs(200, 10 * MINUTE));
    f("forecast.min_points", n(fc.min_points), count(2, 10_000));
    f("forecast.min_growth_fraction", Value::Float(fc.min_growth_fraction), Range::Float { min: 0.0, max: 0.99, open_min: false });
    f("forecast.horizon", d(fc.horizon), secs(1000, 7 * DAY));
    let a = &c.alerts;
    f("alerts.history", n(a.history), count(1, 100_000));
    f("alerts.evaluate_every", d(a.evaluate_every), secs(100, HOUR));
    f("alerts.oom_forecast.warning_eta", d(a.oom_forecast.warning_eta), secs(1000, DAY));
    f("alerts.oom_forecast.critical_eta", d(a.oom_forecast.critical_eta), secs(1000, DAY));
    for (key, hold) in [
        ("alerts.oom_forecast.for", a.oom_forecast.for_),
        ("alerts.oom_forecast.resolve_for", a.oom_forecast.resolve_for),
        ("alerts.memory_pressure.for", a.memory_pressure.for_),
        ("alerts.memory_pressure.resolve_for", a.memory_pressure.resolve_for),
        ("alerts.reclaim_storm.for", a.reclaim_storm.for_),
        ("alerts.reclaim_storm.resolve_for", a.reclaim_storm.resolve_for),
        ("alerts.oom_kill.resolve_after", a.oom_kill.resolve_after),
    ] {
        f(key, d(hold), secs(0, DAY));
    }
    f("alerts.memory_pressure.some_avg10_percent", Value::Float(a.memory_pressure.some_avg10_percent), Range::Float { min: 0.0, max: 100.0, open_min: true });
    f("alerts.reclaim_storm.stall_ratio", Value::Float(a.reclaim_storm.stall_ratio), Range::Float { min: 0.0, max: 1.0, open_min: true });
    let j = &c.journal;
    f("journal.max_size_mib", Value::Count(j.max_size_mib), count(16, 1 << 20));
    f("journal.max_age", Value::Duration(j.max_age), secs(60_000, 3650 * DAY));
    f("journal.incident_max_age", Value::Duration(j.incident_max_age), secs(60_000, 3650 * DAY));
    f("workloads.max_remembered", Value::Count(c.workloads.max_remembered as u64), count(1, 1_000_000));
    each_sink_setting(c, f);
}

fn each_sink_setting(c: &Config, f: &mut dyn FnMut(&str, Value, Range)) {
    let queue = count(1, MAX_QUEUE);
    let timeout = secs(1, 5 * MINUTE);
    for (i, s) in c.sinks.alertmanager.iter().enumerate() {
        // Re-sent well within Alertmanager's resolve_timeout (5m by default).
        f(&format!("sinks.alertmanager[{i}].resend_interval"), Value::Duration(s.resend_interval), secs(1000, HOUR));
        f(&format!("sinks.alertmanager[{i}].timeout"), Value::Duration(s.timeout), timeout);
        f(&format!("sinks.alertmanager[{i}].queue"), Value::Count(s.queue as u64), queue);
    }
    for (i, s) in c.sinks.webhook.iter().enumerate() {
        f(&format!("sinks.webhook[{i}].timeout"), Value::Duration(s.timeout), timeout);
        f(&format!("sinks.webhook[{i}].queue"), Value::Count(s.queue as u64), queue);
    }
    for (i, s) in c.sinks.exec.iter().enumerate() {
        f(&format!("sinks.exec[{i}].timeout"), Value::Duration(s.timeout), timeout);
        f(&format!("sinks.exec[{i}].queue"), Value::Count(s.queue as u64), queue);
        f(&format!("sinks.exec[{i}].max_concurrent"), Value::Count(s.max_concurrent as u64), count(1, 64));
    }
    each_shipping_setting(c, f);
}

fn each_shipping_setting(c: &Config, f: &mut dyn FnMut(&str, Value, Range)) {
    let mut delivery = |prefix: &str, d: super::shipping::Delivery| {
        f(&format!("{prefix}.batch"), Value::Count(d.batch as u64), count(1, 10_000));
        // Up to a hundred million events behind (the journal's own size
        // limit usually comes first).
        f(&format!("{prefix}.max_backlog"), Value::Count(d.max_backlog), count(1, 100_000_000));
        f(&format!("{prefix}.max_retry_interval"), Value::Duration(d.max_retry_interval), secs(1000, HOUR));
    };
    let j = &c.sinks.journald;
    delivery("sinks.journald", j.delivery());
    for (i, s) in c.sinks.otlp.iter().enumerate() {
        delivery(&format!("sinks.otlp[{i}]"), s.delivery());
    }
    for (i, s) in c.sinks.file.iter().enumerate() {
        delivery(&format!("sinks.file[{i}]"), s.delivery());
    }
    f("sinks.journald.timeout", Value::Duration(j.timeout), secs(1, MINUTE));
    for (i, s) in c.sinks.otlp.iter().enumerate() {
        f(&format!("sinks.otlp[{i}].timeout"), Value::Duration(s.timeout), secs(1, 5 * MINUTE));
    }
    for (i, s) in c.sinks.file.iter().enumerate() {
        f(&format!("sinks.file[{i}].max_size_mib"), Value::Count(s.max_size_mib), count(1, 1 << 20));
        f(&format!("sinks.file[{i}].backups"), Value::Count(u64::from(s.backups)), count(0, 1000));
    }
}

/// The first setting outside its range: (key, reason).
pub fn check_ranges(c: &Config) -> Result<(), (String, String)> {
    let mut first = None;
    each_setting(c, &mut |key, value, range| {
        if first.is_none()
            && let Err(reason) = range.check(value)
        {
            first = Some((key.to_owned(), reason));
        }
    });
    first.map_or(Ok(()), Err)
}

/// The table `oomwatch check --print-ranges` prints: key, range, default.
pub fn table() -> String {
    let mut c = Config::default();
    c.sinks.alertmanager.push(super::AlertmanagerSink::example());
    c.sinks.webhook.push(super::WebhookSink::example());
    c.sinks.exec.push(super::ExecSink::example());
    c.sinks.otlp.push(super::OtlpSink::example());
    c.sinks.file.push(super::FileSink::example());
    let mut out = String::from("| setting | allowed | default |\n|---|---|---|\n");
    each_setting(&c, &mut |key, value, range| {
        let key = key.replace("[0]", "[]");
        out.push_str(&format!("| `{key}` | {range} | {value} |\n"));
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_in_range() {
        assert_eq!(check_ranges(&Config::default()), Ok(()));
        let t = table();
        assert!(t.contains("| `sinks.webhook[].queue` | 1..=100000 | 256 |"), "{t}");
        assert!(t.contains("| `alerts.evaluate_every` | 100ms..=1h | 1s |"), "{t}");
    }

    #[test]
    fn floats_refuse_nan_and_infinity() {
        let r = Range::Float { min: 0.0, max: 1.0, open_min: true };
        for bad in [f64::NAN, f64::INFINITY, 0.0, 1.5, -1.0] {
            assert!(r.check(Value::Float(bad)).is_err(), "{bad}");
        }
        assert!(r.check(Value::Float(1.0)).is_ok());
    }
}
