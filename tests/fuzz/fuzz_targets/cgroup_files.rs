//! cgroup memory files (`parse_flat_keyed` for memory.stat, memory.events
//! and memory.oom_control; `parse_limit`; `parse_u64`): never panic, and
//! agree with a plain reference parser built on `str::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::cgroup::{Limit, parse_flat_keyed, parse_limit, parse_u64};
use oomwatch::cgroup::readers::V1_UNLIMITED_THRESHOLD;

/// memory.stat is the largest of these files, about 1.5 KiB.
const MAX_INPUT: usize = 64 * 1024;

const V2_STAT: [&str; 5] = ["inactive_file", "active_file", "anon", "file", "shmem"];
const V1_STAT: [&str; 10] = [
    "total_inactive_file",
    "inactive_file",
    "total_active_file",
    "active_file",
    "total_rss",
    "rss",
    "total_cache",
    "cache",
    "total_shmem",
    "shmem",
];
const V2_EVENTS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
const V1_OOM_CONTROL: [&str; 3] = ["oom_kill_disable", "under_oom", "oom_kill"];
/// Odd key lists: an empty key and a repeated one.
const ODD: [&str; 3] = ["", "max", "max"];

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    assert_eq!(parse_u64(data), reference_u64(data));
    let limit = parse_limit(data);
    let expected = if data.trim_ascii() == b"max" {
        Some(Limit::Unlimited)
    } else {
        reference_u64(data).map(|v| if v >= V1_UNLIMITED_THRESHOLD { Limit::Unlimited } else { Limit::Bytes(v) })
    };
    assert_eq!(limit, expected);

    assert_eq!(parse_flat_keyed(data, V2_STAT), reference_keyed(data, V2_STAT));
    assert_eq!(parse_flat_keyed(data, V1_STAT), reference_keyed(data, V1_STAT));
    assert_eq!(parse_flat_keyed(data, V2_EVENTS), reference_keyed(data, V2_EVENTS));
    assert_eq!(parse_flat_keyed(data, V1_OOM_CONTROL), reference_keyed(data, V1_OOM_CONTROL));
    assert_eq!(parse_flat_keyed(data, ODD), reference_keyed(data, ODD));
    assert_eq!(parse_flat_keyed(data, []), []);
});

/// An unsigned decimal with optional surrounding ASCII whitespace.
fn reference_u64(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b.trim_ascii()).ok()?;
    // u64::from_str takes a leading '+'; the kernel never writes one.
    if s.starts_with('+') {
        return None;
    }
    s.parse().ok()
}

/// "key value" lines; other lines are skipped; for each key the first line
/// with a valid value wins.
fn reference_keyed<const N: usize>(content: &[u8], keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in content.split(|&c| c == b'\n') {
        let words: Vec<&[u8]> = line.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).collect();
        let [key, value] = words[..] else { continue };
        if let Some(i) = keys.iter().position(|k| k.as_bytes() == key)
            && out[i].is_none()
        {
            out[i] = reference_u64(value);
        }
    }
    out
}
