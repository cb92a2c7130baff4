//! The journal's own parsers of bytes it did not write in this run:
//! `Record::from_json` (an event line, as the socket sends it) and the
//! SQLite header length check run on every file found at open. Never
//! panic; an accepted line is kept verbatim and its kind and cgroup are the
//! line's; a claimed length is a whole number of valid pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::outputs::journal::{Record, sqlite_header_claimed_len};

/// Kill lines are about 3 KiB; a report of the largest is well under this.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    if let Some(len) = sqlite_header_claimed_len(data) {
        assert!(data.len() >= 100);
        let page = match u16::from_be_bytes([data[16], data[17]]) {
            1 => 65_536,
            n => u64::from(n),
        };
        assert!(page.is_power_of_two() && (512..=65_536).contains(&page));
        assert!(len > 0 && len.is_multiple_of(page));
    }
    let Ok(line) = std::str::from_utf8(data) else { return };
    match Record::from_json(line) {
        Ok(r) => {
            assert_eq!(r.json, line);
            let v: serde_json::Value = serde_json::from_str(line).expect("an accepted line is JSON");
            assert_eq!(v["kind"].as_str(), Some(r.kind.as_str()));
            assert_eq!(v["cgroup"].as_str(), Some(r.cgroup.as_str()));
            assert_eq!(v.get("seq").map_or(Some(0), serde_json::Value::as_u64), Some(r.seq));
        }
        Err(e) => assert_eq!(e.to_string().lines().count(), 1, "{e}"),
    }
});
