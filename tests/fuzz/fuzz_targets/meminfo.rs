//! /proc/meminfo (`oomwatch::readers::parse_meminfo`): never panic; what it
//! returns is what the text says, in bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::parse_meminfo;

/// /proc/meminfo is about 1.5 KiB.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some(m) = parse_meminfo(data) else {
        return;
    };
    for v in [m.total_bytes, m.available_bytes, m.swap_total_bytes, m.swap_free_bytes] {
        assert_eq!(v % 1024, 0);
    }
    let text = format!(
        "MemTotal: {} kB\nMemAvailable: {} kB\nSwapTotal: {} kB\nSwapFree: {} kB\n",
        m.total_bytes / 1024,
        m.available_bytes / 1024,
        m.swap_total_bytes / 1024,
        m.swap_free_bytes / 1024
    );
    assert_eq!(parse_meminfo(text.as_bytes()), Some(m), "{text}");
});
