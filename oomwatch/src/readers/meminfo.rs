//! Host-wide memory: /proc/meminfo and /proc/pressure/memory.

use std::path::Path;

use crate::readers::parse_flat_keyed;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemInfo {
    pub total_bytes: u64,
    /// The kernel's estimate of memory available without swapping.
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

/// Parses /proc/meminfo ("MemTotal:  16318412 kB" lines). None when the
/// essential keys are missing, or a value is too large to be bytes in a u64.
pub fn parse_meminfo(content: &[u8]) -> Option<MemInfo> {
    // parse_flat_keyed reads "key value" pairs; meminfo has "Key:" and a
    // "kB" suffix, so normalise the few lines we need first.
    let mut norm = Vec::with_capacity(256);
    for line in content.split(|&b| b == b'\n') {
        for key in [&b"MemTotal:"[..], b"MemAvailable:", b"SwapTotal:", b"SwapFree:"] {
            if let Some(rest) = line.strip_prefix(key) {
                norm.extend_from_slice(&key[..key.len() - 1]);
                norm.push(b' ');
                let digits: Vec<u8> = rest.iter().copied().skip_while(|b| *b == b' ').take_while(u8::is_ascii_digit).collect();
                norm.extend_from_slice(&digits);
                norm.push(b'\n');
            }
        }
    }
    let [total, available, swap_total, swap_free] = parse_flat_keyed(&norm, ["MemTotal", "MemAvailable", "SwapTotal", "SwapFree"]);
    let bytes = |kib: u64| kib.checked_mul(1024);
    Some(MemInfo {
        total_bytes: bytes(total?)?,
        available_bytes: bytes(available?)?,
        swap_total_bytes: bytes(swap_total.unwrap_or(0))?,
        swap_free_bytes: bytes(swap_free.unwrap_or(0))?,
    })
}

pub fn read_meminfo(proc_root: &Path) -> Option<MemInfo> {
    parse_meminfo(&std::fs::read(proc_root.join("meminfo")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text = b"MemTotal:       24568000 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 24568000 * 1024);
        assert_eq!(m.available_bytes, 22000000 * 1024);
        assert_eq!(m.swap_total_bytes, 0);
        assert_eq!(parse_meminfo(b"garbage"), None);
        assert!(read_meminfo(Path::new("/proc")).is_some_and(|m| m.total_bytes > 0));
    }

    #[test]
    fn kib_values_that_overflow_bytes_are_refused() {
        // Found by the `meminfo` fuzz target: `* 1024` overflowed (a panic in
        // debug builds, a wrapped, wrong total in release builds).
        assert_eq!(parse_meminfo(b"MemTotal:84467440661251658\n"), None);
        assert_eq!(parse_meminfo(b"MemTotal: 1 kB\nMemAvailable: 1 kB\nSwapFree: 18014398509481984 kB\n"), None);
        let max = u64::MAX / 1024;
        let m = parse_meminfo(format!("MemTotal: {max} kB\nMemAvailable: {max} kB\n").as_bytes()).unwrap();
        assert_eq!(m.total_bytes, max * 1024);
    }
}
