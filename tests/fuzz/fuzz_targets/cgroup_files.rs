//! cgroup memory files (`parse_flat_keyed` for memory.stat, memory.events
//! and memory.oom_control; `parse_limit`; `parse_u64`): never panic, and
//! agree with a plain reference parser built on `str::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::{Limit, parse_flat_keyed, parse_limit, parse_u64};
use oomwatch::readers::cgroup::{V1_OOM_CONTROL_KEYS, V1_STAT_KEYS, V1_UNLIMITED_THRESHOLD, V2_EVENT_KEYS, V2_STAT_KEYS};

/// memory.stat is the largest of these files, about 1.5 KiB.
const MAX_INPUT: usize = 64 * 1024;

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

    assert_eq!(parse_flat_keyed(data, V2_STAT_KEYS), reference_keyed(data, V2_STAT_KEYS));
    assert_eq!(parse_flat_keyed(data, V1_STAT_KEYS), reference_keyed(data, V1_STAT_KEYS));
    assert_eq!(parse_flat_keyed(data, V2_EVENT_KEYS), reference_keyed(data, V2_EVENT_KEYS));
    assert_eq!(parse_flat_keyed(data, V1_OOM_CONTROL_KEYS), reference_keyed(data, V1_OOM_CONTROL_KEYS));
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
