//! The last minute of a cgroup's memory as one line of text: a sparkline
//! scaled to its limit for a terminal, plain numbers for anything else
//! (a pipe, a log, a script).

use super::{
    event::{OomKill, Ramp},
    human::format_bytes,
};

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `columns` bars over the last `window_s` seconds of `r`'s usage, oldest
/// left: each the largest sample of its seconds, a column without one
/// repeats the one before (blank before the first sample). Scaled to
/// `limit` (a full bar is the limit), else to the largest sample.
pub fn sparkline(r: &Ramp, limit: Option<u64>, window_s: u32, columns: usize) -> String {
    let columns = columns.max(1);
    let per_column = (window_s as usize).div_ceil(columns).max(1);
    let mut peaks: Vec<Option<u64>> = vec![None; columns];
    for (&ago, &usage) in r.seconds_ago.iter().zip(&r.usage_bytes) {
        let from_right = ago as usize / per_column;
        if let Some(i) = columns.checked_sub(from_right + 1) {
            peaks[i] = Some(peaks[i].map_or(usage, |p| p.max(usage)));
        }
    }
    let top = limit.filter(|&l| l > 0).or_else(|| peaks.iter().flatten().copied().max()).unwrap_or(1).max(1);
    let mut last = None;
    peaks
        .iter()
        .map(|p| {
            last = p.or(last);
            last.map_or(' ', |v| BARS[((u128::from(v) * 8 / u128::from(top)) as usize).min(BARS.len() - 1)])
        })
        .collect()
}

/// The samples about every `window_s / 6` seconds, as "-60s 10.0MiB, ...,
/// 0s 63.0MiB": what a pipe or a log gets instead of bars.
pub fn plain_numbers(r: &Ramp, window_s: u32) -> String {
    let step = (window_s / 6).max(1);
    let mut out: Vec<String> = Vec::new();
    let mut shown_bucket = None;
    let n = r.seconds_ago.len().min(r.usage_bytes.len());
    for (i, (&ago, &usage)) in r.seconds_ago.iter().zip(&r.usage_bytes).enumerate() {
        // Buckets end on multiples of `step`: 51..=60 s ago is the one of 60.
        let bucket = ago.div_ceil(step);
        if shown_bucket != Some(bucket) || i + 1 == n {
            shown_bucket = Some(bucket);
            out.push(if ago == 0 { format!("0s {}", format_bytes(usage)) } else { format!("-{ago}s {}", format_bytes(usage)) });
        }
    }
    out.join(", ")
}

/// The kill's picture for `oomwatch tail`: the limit cgroup's usage over
/// its last 60 s against its limit, under the kill line. Bars on a
/// terminal, numbers otherwise; names escaped. None without a history.
pub fn kill_usage_line(k: &OomKill, terminal: bool, indent: &str) -> Option<String> {
    let r = k.limit_history.as_ref().or(k.history.as_ref())?;
    if r.usage_bytes.is_empty() {
        return None;
    }
    let limit = r.limit_bytes.or(k.limit_bytes);
    let cgroup = k.limit_cgroup.as_deref().map(|c| format!(" of {c}")).unwrap_or_default();
    let of_limit = limit.map(|l| format!(" of {}", format_bytes(l))).unwrap_or_default();
    let last = r.usage_bytes.last().copied().unwrap_or(0);
    let line = if terminal {
        format!("usage{cgroup}, last 60 s: {} {}{of_limit}", sparkline(r, limit, 60, 60), format_bytes(last))
    } else {
        format!("usage{cgroup}, last 60 s: {}{}", plain_numbers(r, 60), limit.map(|l| format!(" (limit {})", format_bytes(l))).unwrap_or_default())
    };
    Some(format!("{indent}{}", super::printable(&line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(points: &[(u32, u64)]) -> Ramp {
        Ramp {
            seconds_ago: points.iter().map(|p| p.0).collect(),
            usage_bytes: points.iter().map(|p| p.1 << 20).collect(),
            working_set_bytes: vec![0; points.len()],
            ..Default::default()
        }
    }

    #[test]
    fn bars_scale_to_the_limit_oldest_left() {
        let r = ramp(&[(7, 0), (6, 8), (5, 16), (4, 24), (3, 32), (2, 40), (1, 48), (0, 64)]);
        assert_eq!(sparkline(&r, Some(64 << 20), 8, 8), "▁▂▃▄▅▆▇█");
        // Without a limit the largest sample is a full bar.
        assert_eq!(sparkline(&r, None, 8, 8), "▁▂▃▄▅▆▇█");
        // Half the limit at most: half-height bars.
        assert_eq!(sparkline(&ramp(&[(1, 32), (0, 32)]), Some(64 << 20), 2, 2), "▅▅");
    }

    #[test]
    fn gaps_repeat_blank_before_the_first_and_columns_take_the_peak() {
        assert_eq!(sparkline(&ramp(&[(50, 32), (20, 64)]), Some(64 << 20), 60, 6), "▅▅▅███");
        assert_eq!(sparkline(&ramp(&[(20, 64)]), Some(64 << 20), 60, 6), "   ███");
        let r = ramp(&[(5, 10), (4, 60), (0, 1)]);
        assert_eq!(sparkline(&r, Some(64 << 20), 6, 2), "█▁", "the peak of each column (60 of 64 is the top eighth)");
        assert_eq!(sparkline(&Ramp::default(), Some(1), 60, 4), "    ");
        assert_eq!(sparkline(&ramp(&[(0, u64::MAX >> 20)]), Some(1), 1, 1), "█", "no overflow, capped");
    }

    #[test]
    fn plain_numbers_every_ten_seconds() {
        let r = ramp(&(0..=60).rev().map(|s| (s, 60 - u64::from(s))).collect::<Vec<_>>());
        assert_eq!(plain_numbers(&r, 60), "-60s 0B, -50s 10.0MiB, -40s 20.0MiB, -30s 30.0MiB, -20s 40.0MiB, -10s 50.0MiB, 0s 60.0MiB");
    }

    #[test]
    fn the_kill_line_escapes_names_and_falls_back_to_numbers() {
        let mut k = OomKill::of_pid(1);
        assert_eq!(kill_usage_line(&k, true, "  "), None);
        k.limit_cgroup = Some("/p\u{1b}[2J\u{202e}".into());
        k.limit_bytes = Some(64 << 20);
        k.limit_history = Some(ramp(&[(1, 32), (0, 64)]));
        let bars = kill_usage_line(&k, true, "  ").unwrap();
        assert!(bars.starts_with("  usage of /p\\x1b[2J\\u{202e}, last 60 s: "), "{bars}");
        assert!(bars.ends_with("▅█ 64.0MiB of 64.0MiB"), "{bars}");
        assert_eq!(kill_usage_line(&k, false, "").unwrap(), "usage of /p\\x1b[2J\\u{202e}, last 60 s: -1s 32.0MiB, 0s 64.0MiB (limit 64.0MiB)");
    }
}
