//! The event socket's JSON: `Request` (what a client sends the daemon,
//! untrusted, at most 4 KiB) and `Event`, `StatusReport`, `AlertsReport`
//! (what `oomwatch tail`, `status` and `alerts` read). Never panic; a value
//! that parses serializes, and that text parses back to the same value and
//! serializes to the same text.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use oomwatch::wire::AlertsReport;
use oomwatch::outputs::socket::TailFilter;
use oomwatch::wire::{Event, EventKind, Request, StatusReport};
use serde::{Serialize, de::DeserializeOwned};

/// The daemon reads at most this much of a request line (api/socket.rs).
const MAX_REQUEST: usize = 4096;
/// Event lines are well under 4 KiB; a status report with 1,000 rows is larger.
const MAX_INPUT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A request's filter (kinds, cgroup glob) is applied by the daemon.
    let filter = (text.len() <= MAX_REQUEST).then(|| round_trip::<Request>(text.trim())).flatten().map(|r| TailFilter::of_request(&r));
    if let Some(e) = round_trip::<Event>(text) {
        assert!(EventKind::ALL.contains(&e.body.kind()));
        // A client that asks for nothing in particular gets every kind but
        // a kill's first word, which only a client naming it gets.
        let everything = TailFilter::default();
        let first_words = TailFilter { kinds: Some(vec![EventKind::KillSeen]), cgroup: None };
        if e.body.kind() == EventKind::KillSeen {
            assert!(!everything.keep(&e) && first_words.keep(&e));
        } else {
            assert!(everything.keep(&e));
        }
        if let Some(f) = filter {
            f.keep(&e);
        }
    }
    round_trip::<StatusReport>(text);
    round_trip::<AlertsReport>(text);
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(text: &str) -> Option<T> {
    let value: T = serde_json::from_str(text).ok()?;
    let line = serde_json::to_string(&value).expect("a parsed value serializes");
    assert!(!line.contains('\n'), "NDJSON needs one line: {line}");
    let again: T = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line} does not parse back: {e}"));
    assert_eq!(again, value, "{line}");
    assert_eq!(serde_json::to_string(&again).unwrap(), line);
    Some(value)
}
