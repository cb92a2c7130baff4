//! PSI pressure files (`oomwatch::pressure::parse_pressure`): never panic;
//! accepted values are finite and non-negative, and survive being written
//! back in the kernel's format and parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::psi::{PsiLine, parse_pressure};

/// The daemon reads at most 4 KiB of a pressure file.
const MAX_INPUT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let p = match parse_pressure(data) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.to_string().lines().count(), 1);
            return;
        }
    };
    let mut text = line("some", &p.some);
    if let Some(full) = &p.full {
        text.push_str(&line("full", full));
    }
    assert_eq!(parse_pressure(text.as_bytes()), Ok(p), "{text}");
});

fn line(kind: &str, l: &PsiLine) -> String {
    for v in [l.avg10, l.avg60, l.avg300] {
        assert!(v.is_finite() && v >= 0.0, "{v}");
    }
    format!("{kind} avg10={} avg60={} avg300={} total={}\n", l.avg10, l.avg60, l.avg300, l.total_us)
}
