//! Any event JSON -> the OTLP log record oomwatch exports. Invariants: the
//! protobuf request decodes back to itself; the OTLP/JSON form is JSON with
//! one record per event; the body is the event (when it nests no deeper
//! than the encoder follows); attribute keys are unique and each is
//! `log.record.uid`, a semantic-convention name, or `oomwatch.<path>`;
//! the severity is a valid SeverityNumber; the event name is
//! `oomwatch.<kind>`.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use oomwatch::outputs::{
    delivery::{HostIdentity, Record},
    otlp::{self, SEMCONV_ATTRIBUTES, proto},
};
use prost::Message as _;
use serde_json::Value;

const MAX_INPUT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let host = HostIdentity { hostname: "h".into(), boot_id: "b".into(), machine_id: "m".into() };
    let Ok(record) = Record::from_line(text, &host) else { return };

    let resource = proto::Resource { attributes: Vec::new(), dropped_attributes_count: 0 };
    let request = otlp::request(&resource, std::slice::from_ref(&record), std::time::UNIX_EPOCH);
    let bytes = request.encode_to_vec();
    assert_eq!(proto::ExportLogsServiceRequest::decode(&bytes[..]).expect("decodes"), request);
    let json = otlp::request_json(&request);
    let again: Value = serde_json::from_str(&json).expect("OTLP/JSON is JSON");
    assert_eq!(again["resourceLogs"][0]["scopeLogs"][0]["logRecords"].as_array().map(Vec::len), Some(1));

    let log = &request.resource_logs[0].scope_logs[0].log_records[0];
    assert!((1..=24).contains(&log.severity_number));
    assert_eq!(log.event_name, format!("oomwatch.{}", record.kind()));
    if depth(&record.json) <= 16 {
        assert_eq!(any_to_json(log.body.as_ref().expect("a body")), exact(&record.json), "the body is the event");
    }
    let mut keys = BTreeSet::new();
    for a in &log.attributes {
        assert!(keys.insert(a.key.as_str()), "{} twice", a.key);
        assert!(
            a.key == "log.record.uid" || a.key.starts_with("oomwatch.") || SEMCONV_ATTRIBUTES.iter().any(|(_, name)| *name == a.key),
            "unexpected attribute {}",
            a.key
        );
        let v = a.value.as_ref().and_then(|v| v.value.as_ref()).expect("attributes have values");
        assert!(!matches!(v, proto::any_value::Value::ArrayValue(_) | proto::any_value::Value::KvlistValue(_)), "{} is a scalar", a.key);
    }
    assert!(keys.contains("log.record.uid"));
});

/// The event as OTLP can hold it: integers beyond i64 travel as their text.
fn exact(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => Value::String(n.to_string()),
        Value::Array(a) => Value::Array(a.iter().map(exact).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), exact(v))).collect()),
        other => other.clone(),
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn any_to_json(v: &proto::AnyValue) -> Value {
    use proto::any_value::Value as Any;
    match &v.value {
        None => Value::Null,
        Some(Any::StringValue(s)) => Value::String(s.clone()),
        Some(Any::BoolValue(b)) => Value::Bool(*b),
        Some(Any::IntValue(i)) => Value::from(*i),
        Some(Any::DoubleValue(f)) => Value::from(*f),
        Some(Any::ArrayValue(a)) => Value::Array(a.values.iter().map(any_to_json).collect()),
        Some(Any::KvlistValue(l)) => Value::Object(l.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_to_json))).collect()),
        Some(Any::BytesValue(_)) => panic!("events have no bytes"),
    }
}
