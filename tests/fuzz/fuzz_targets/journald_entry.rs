//! Any event JSON (the daemon's, a stored line, or one with kinds, keys and
//! values no daemon writes) -> the journald entry oomwatch sends. The entry
//! is read back the way journald reads a native-protocol datagram
//! (systemd's src/journal/journald-native.c, `manager_process_entry`), but
//! strictly: whatever journald would skip, drop or split is a failure.
//!
//! Invariants: the entry is one entry (no separator line, no trailing
//! bytes) whose fields are exactly the ones oomwatch meant, in order, byte
//! for byte; every name is one journald keeps (`journal_field_valid`), none
//! repeats, and there are few enough that journald keeps the entry;
//! MESSAGE, MESSAGE_ID, PRIORITY and SYSLOG_IDENTIFIER are well formed;
//! OOMWATCH_JSON is the event's JSON line; every OOMWATCH_* field is a scalar of the
//! event under its flattened name, and when nothing collides or overflows,
//! every scalar of the event is there.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use oomwatch::outputs::{
    delivery::{HostIdentity, Record},
    journald::{self, MAX_EVENT_FIELDS},
};
use serde_json::Value;

const MAX_INPUT: usize = 256 * 1024;
/// journald's limits (src/journal/journald-native.c, journal-importer.h).
const ENTRY_FIELD_COUNT_MAX: usize = 1024;
const DATA_SIZE_MAX: u64 = 768 << 20;
/// Fields journald adds to every entry from the sender's credentials.
const JOURNALD_OWN_FIELDS: usize = 32;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let host = HostIdentity { hostname: "h".into(), boot_id: "0123456789abcdef0123456789abcdef".into(), machine_id: String::new() };
    let Ok(record) = Record::from_line(text, &host) else { return };

    let fields = journald::entry_fields(&record);
    let entry = journald::encode(&record);
    let decoded = decode(&entry).unwrap_or_else(|e| panic!("journald would not read the entry as sent: {e}"));
    let expected: Vec<(Vec<u8>, Vec<u8>)> = fields.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes())).collect();
    assert_eq!(decoded, expected, "the entry journald reads is the one oomwatch meant");

    let names: BTreeSet<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), fields.len(), "no field name twice");
    assert!(fields.len() + JOURNALD_OWN_FIELDS <= ENTRY_FIELD_COUNT_MAX);
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(get("MESSAGE"), Some(record.message.as_str()));
    let id = get("MESSAGE_ID").expect("MESSAGE_ID");
    assert!(id.len() == 32 && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{id}");
    assert!(matches!(get("PRIORITY"), Some("2" | "3" | "4" | "5" | "6")));
    assert_eq!(get("SYSLOG_IDENTIFIER"), Some("oomwatch"));
    // The line the file output writes and `tail --json` prints. (Compared
    // as text: serde_json's default float parsing is not exact, so a
    // re-serialized line can parse to a float one ulp away.)
    assert_eq!(get("OOMWATCH_JSON"), Some(record.line.as_str()));
    assert!(serde_json::from_str::<Value>(&record.line).is_ok_and(|v| v.is_object()), "OOMWATCH_JSON is a JSON object");
    assert!(!record.line.contains(['\n', '\r']), "one line");

    // Every OOMWATCH_* field is a scalar of the event, under its name.
    let mut reference: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut leaves = 0usize;
    if let Value::Object(map) = &record.json {
        for (k, v) in map.iter().filter(|(k, _)| *k != "history") {
            leaves_of(&journald::field_name("OOMWATCH", k), v, 0, &mut reference, &mut leaves);
        }
    }
    for (name, value) in fields.iter().filter(|(n, _)| n.starts_with("OOMWATCH_") && n != "OOMWATCH_JSON" && n != "OOMWATCH_RECORD_UID") {
        let candidates = reference.get(name).unwrap_or_else(|| panic!("{name} is no field of the event"));
        assert!(candidates.contains(value), "{name}={value:?} is not the event's ({candidates:?})");
    }
    let collisions = reference.values().any(|v| v.len() > 1) || reference.contains_key("OOMWATCH_JSON") || reference.contains_key("OOMWATCH_RECORD_UID");
    if !collisions && leaves <= MAX_EVENT_FIELDS {
        for (name, values) in &reference {
            assert_eq!(get(name), Some(values[0].as_str()), "{name} of the event is missing");
        }
    }
});

/// The event's scalars by flattened name, walked independently of the encoder.
fn leaves_of(name: &str, v: &Value, depth: usize, out: &mut BTreeMap<String, Vec<String>>, leaves: &mut usize) {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(map) => {
            if depth < 16 {
                for (k, v) in map {
                    leaves_of(&journald::field_name(name, k), v, depth + 1, out, leaves);
                }
            }
            return;
        }
        Value::Null | Value::Array(_) => return,
    };
    *leaves += 1;
    out.entry(name.to_owned()).or_default().push(text);
}

/// One native-protocol datagram read as journald reads it, refusing what
/// journald would skip or split instead of keeping.
fn decode(mut buf: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let mut fields = Vec::new();
    let mut entry_size = 0u64;
    while !buf.is_empty() {
        let Some(e) = buf.iter().position(|&b| b == b'\n') else {
            return Err(format!("trailing bytes without a newline (journald ignores them): {:?}", String::from_utf8_lossy(buf)));
        };
        if e == 0 {
            return Err("an empty line: journald would end the entry there".into());
        }
        if matches!(buf[0], b'.' | b'#') {
            return Err("a line journald takes for a control command or comment".into());
        }
        let line = &buf[..e];
        let (name, value, rest) = if let Some(q) = line.iter().position(|&b| b == b'=') {
            (&line[..q], &line[q + 1..], &buf[e + 1..])
        } else {
            let after = &buf[e + 1..];
            if after.len() < 8 + 1 {
                return Err("binary field without its length".into());
            }
            let len = u64::from_le_bytes(after[..8].try_into().unwrap());
            if len > DATA_SIZE_MAX {
                return Err(format!("binary field of {len} bytes: over DATA_SIZE_MAX"));
            }
            let len = len as usize;
            if after.len() < 8 + len + 1 || after[8 + len] != b'\n' {
                return Err("binary field not followed by a newline at its length".into());
            }
            (line, &after[8..8 + len], &after[8 + len + 1..])
        };
        if !journald::valid_field_name(name) {
            return Err(format!("journald drops the field {:?} (invalid name)", String::from_utf8_lossy(name)));
        }
        entry_size += (name.len() + 1 + value.len()) as u64;
        fields.push((name.to_vec(), value.to_vec()));
        if fields.len() > ENTRY_FIELD_COUNT_MAX {
            return Err("more fields than journald keeps in one entry".into());
        }
        buf = rest;
    }
    if fields.is_empty() {
        return Err("no field".into());
    }
    assert!(entry_size <= journald::MAX_ENTRY_BYTES as u64);
    Ok(fields)
}
