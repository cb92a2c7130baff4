//! Events as OpenTelemetry logs: a batch becomes one OTLP/HTTP
//! `ExportLogsServiceRequest`, POSTed to `<endpoint>/v1/logs` in protobuf
//! (`application/x-protobuf`, the default) or OTLP/JSON
//! (`application/json`), with the crate's HTTP client.
//!
//! The protobuf messages are declared here with `prost` derives (field
//! numbers from opentelemetry-proto's `.proto` files, checked against the
//! official Python definitions by `tests/tests/shipping.rs`): no protoc at
//! build time, and none of `opentelemetry-proto`'s tonic and SDK crates for
//! the eleven messages used.
//!
//! Each event is one LogRecord:
//! - resource: `service.name` = oomwatch, `service.version`, `host.name`,
//!   `host.id` (machine id);
//! - `time_unix_nano` from the event's `time`, `observed_time_unix_nano`
//!   when it was encoded; `severity_number`/`severity_text` from
//!   [`Level`]; `event_name` = `oomwatch.<kind>`;
//! - body: the whole event as a map (what `oomwatch tail --json` prints);
//! - attributes: `log.record.uid` ([`Record::uid`]: the same event sent
//!   twice has the same uid, so a receiver drops duplicates of at-least-once
//!   delivery); the semantic-convention names of [`SEMCONV_ATTRIBUTES`]
//!   (`process.pid`, `process.executable.name`, `container.id`,
//!   `k8s.pod.uid`, ...); every other scalar of the event as `oomwatch.<path>`
//!   (`oomwatch.kind`, `oomwatch.cgroup`, `oomwatch.seq`,
//!   `oomwatch.constraint`, `oomwatch.trigger.comm`, ...). Integers are
//!   ints, fractions doubles, flags bools; arrays and `history` stay in the
//!   body only.
//!
//! Answers, as the OTLP/HTTP specification says to treat them: 2xx
//! delivered (records the receiver rejected in a `partial_success` are
//! counted and logged, never resent); 429, 502, 503, 504, no answer or a
//! timeout: retry, after `Retry-After` when the receiver gave one; any other
//! status: the batch is dropped, counted and logged, since the same request
//! would be refused again.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper::{
    Method, StatusCode,
    body::Bytes,
    header::{self, HeaderName, HeaderValue},
};
use prost::Message as _;
use serde_json::Value;

use super::delivery::{HostIdentity, Level, Outcome, Record};
use crate::outputs::http_client::HttpClient;

pub const DEFAULT_PATH: &str = "/v1/logs";
pub const SCOPE_NAME: &str = "oomwatch";

/// Event fields whose meaning has a name in the OpenTelemetry semantic
/// conventions; they are sent under that name instead of `oomwatch.<path>`.
/// The `workload` names the runtime enrichment gives (namespace, pod,
/// container, image) map here as soon as the event carries them.
pub const SEMCONV_ATTRIBUTES: &[(&str, &str)] = &[
    // oom_kill: the victim.
    ("victim.pid", "process.pid"),
    ("victim.comm", "process.executable.name"),
    // victim_exit, reclaim_stall.
    ("pid", "process.pid"),
    ("comm", "process.executable.name"),
    ("tid", "thread.id"),
    ("workload.container_id", "container.id"),
    ("workload.runtime", "container.runtime.name"),
    ("workload.pod_uid", "k8s.pod.uid"),
    ("workload.namespace", "k8s.namespace.name"),
    ("workload.pod", "k8s.pod.name"),
    ("workload.container", "k8s.container.name"),
    ("workload.container_name", "container.name"),
    ("workload.image", "container.image.name"),
];

/// The OTLP messages oomwatch sends and reads, from
/// opentelemetry/proto/{collector/logs,logs,common,resource}/v1/*.proto.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportLogsPartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_log_records: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "2")]
        pub dropped_attributes_count: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
        /// `SeverityNumber` (an enum in the .proto; the same varint on the wire).
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "7")]
        pub dropped_attributes_count: u32,
        #[prost(fixed32, tag = "8")]
        pub flags: u32,
        #[prost(string, tag = "12")]
        pub event_name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<any_value::Value>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            #[prost(bytes, tag = "7")]
            BytesValue(Vec<u8>),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

use proto::{AnyValue, KeyValue, any_value::Value as Any};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`: what every OTLP receiver takes.
    #[default]
    Protobuf,
    /// `application/json` (OTLP/JSON): for receivers or proxies that only
    /// speak JSON, and for reading requests by eye.
    Json,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// `http://host:4318` (then [`DEFAULT_PATH`] is added), or a full URL
    /// with its own path, used as is.
    pub endpoint: String,
    pub encoding: Encoding,
    /// Sent with every request (an API key, a tenant id).
    pub headers: Vec<(String, String)>,
    /// For the whole exchange, connecting included.
    pub timeout: Duration,
}

impl OtlpConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), encoding: Encoding::Protobuf, headers: Vec::new(), timeout: Duration::from_secs(10) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("OTLP header {name:?}: {reason}")]
    Header { name: String, reason: String },
}

/// What the exporter has done since it started (for metrics).
#[derive(Debug, Default)]
pub struct OtlpCounters {
    /// Records in requests the receiver accepted.
    pub exported_records: AtomicU64,
    /// Of those, records the receiver said it rejected (partial success).
    pub rejected_records: AtomicU64,
    /// Records in requests refused for good (4xx, other 5xx): dropped.
    pub dropped_records: AtomicU64,
    /// Requests that failed in a way worth retrying.
    pub retryable_failures: AtomicU64,
}

pub struct OtlpExporter {
    url: String,
    encoding: Encoding,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    client: HttpClient,
    resource: proto::Resource,
    pub counters: OtlpCounters,
}

impl OtlpExporter {
    pub fn new(config: &OtlpConfig, host: &HostIdentity, client: HttpClient) -> Result<Self, OtlpError> {
        let url = logs_url(&config.endpoint)?;
        let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(config.encoding.content_type()))];
        for (name, value) in &config.headers {
            let bad = |reason: String| OtlpError::Header { name: name.clone(), reason };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            if n == header::CONTENT_TYPE || n == header::CONTENT_LENGTH {
                return Err(bad("set by oomwatch from the encoding".into()));
            }
            headers.push((n, HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?));
        }
        Ok(Self {
            url,
            encoding: config.encoding,
            headers,
            timeout: config.timeout,
            client,
            resource: resource(host),
            counters: OtlpCounters::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request body for `records`, as [`export`](Self::export) sends it.
    pub fn encode(&self, records: &[Record], observed: SystemTime) -> Bytes {
        let request = request(&self.resource, records, observed);
        match self.encoding {
            Encoding::Protobuf => Bytes::from(request.encode_to_vec()),
            Encoding::Json => Bytes::from(request_json(&request)),
        }
    }

    /// Sends `records` as one request. One outcome per record (all the
    /// same: OTLP takes or refuses a request whole).
    pub async fn export(&self, records: &[Record]) -> Vec<Outcome> {
        if records.is_empty() {
            return Vec::new();
        }
        let body = self.encode(records, SystemTime::now());
        let n = records.len() as u64;
        let outcome = match self.client.request(Method::POST, &self.url, &self.headers, body, self.timeout).await {
            Err(reason) => {
                self.counters.retryable_failures.fetch_add(1, Ordering::Relaxed);
                Outcome::retry(reason.to_string())
            }
            Ok(reply) if reply.status.is_success() => {
                self.counters.exported_records.fetch_add(n, Ordering::Relaxed);
                if let Some((rejected, message)) = partial_success(self.encoding, &reply.body) {
                    self.counters.rejected_records.fetch_add(rejected, Ordering::Relaxed);
                    log::warn!("OTLP endpoint {} accepted {n} records but rejected {rejected} of them: {message}", self.url);
                }
                Outcome::Delivered
            }
            Ok(reply) => {
                let text = String::from_utf8_lossy(&reply.body).trim().chars().take(200).collect::<String>();
                let reason = format!("{}: HTTP {}: {}", self.url, reply.status, text.replace('\n', " "));
                if retryable(reply.status) {
                    self.counters.retryable_failures.fetch_add(1, Ordering::Relaxed);
                    let after = reply.headers.get(header::RETRY_AFTER).and_then(|v| retry_after(v, SystemTime::now()));
                    Outcome::Retry { after, reason }
                } else {
                    self.counters.dropped_records.fetch_add(n, Ordering::Relaxed);
                    log::warn!("OTLP endpoint refused {n} records for good, dropped: {reason}");
                    Outcome::Rejected { reason }
                }
            }
        };
        vec![outcome; records.len()]
    }
}

/// The statuses the OTLP/HTTP specification says to retry.
pub fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

fn logs_url(endpoint: &str) -> Result<String, OtlpError> {
    let bad = |reason: &str| OtlpError::Endpoint { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
    let uri: hyper::Uri = endpoint.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported; send to a local collector over http")),
        _ => return Err(bad("expected http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if matches!(uri.path(), "" | "/") && uri.query().is_none() {
        return Ok(format!("{}{DEFAULT_PATH}", endpoint.trim_end_matches('/')));
    }
    Ok(endpoint.to_owned())
}

fn resource(host: &HostIdentity) -> proto::Resource {
    let mut attributes = vec![
        kv("service.name", Any::StringValue("oomwatch".into())),
        kv("service.version", Any::StringValue(env!("CARGO_PKG_VERSION").into())),
        kv("host.name", Any::StringValue(host.hostname.clone())),
    ];
    if !host.machine_id.is_empty() {
        attributes.push(kv("host.id", Any::StringValue(host.machine_id.clone())));
    }
    proto::Resource { attributes, dropped_attributes_count: 0 }
}

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

/// The request for `records`: one resource (this host), one scope (oomwatch).
pub fn request(resource: &proto::Resource, records: &[Record], observed: SystemTime) -> proto::ExportLogsServiceRequest {
    let observed = unix_nanos(observed);
    proto::ExportLogsServiceRequest {
        resource_logs: vec![proto::ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![proto::ScopeLogs {
                scope: Some(proto::InstrumentationScope { name: SCOPE_NAME.into(), version: env!("CARGO_PKG_VERSION").into() }),
                log_records: records.iter().map(|r| log_record(r, observed)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn log_record(record: &Record, observed_unix_nanos: u64) -> proto::LogRecord {
    let level = Level::of(&record.json);
    let time = record
        .json
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .map_or(0, unix_nanos);
    let mut attributes = vec![kv("log.record.uid", Any::StringValue(record.uid.clone()))];
    if let Value::Object(map) = &record.json {
        for (key, value) in map {
            if key != "history" {
                attributes_of(key, value, 0, &mut attributes);
            }
        }
    }
    proto::LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed_unix_nanos,
        severity_number: level.otel_severity_number(),
        severity_text: level.as_str().into(),
        body: Some(any_value(&record.json, 0)),
        attributes,
        dropped_attributes_count: 0,
        flags: 0,
        event_name: format!("oomwatch.{}", record.kind()),
    }
}

const NESTING_LIMIT: usize = 16;

fn attributes_of(path: &str, value: &Value, depth: usize, out: &mut Vec<KeyValue>) {
    let scalar = match value {
        Value::Object(map) if depth < NESTING_LIMIT => {
            for (k, v) in map {
                attributes_of(&format!("{path}.{k}"), v, depth + 1, out);
            }
            return;
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) => any_value(value, depth),
        Value::Null | Value::Array(_) | Value::Object(_) => return,
    };
    let key = SEMCONV_ATTRIBUTES.iter().find(|(p, _)| *p == path).map_or_else(|| format!("oomwatch.{path}"), |(_, name)| (*name).to_owned());
    // An event carrying both `pid` and `victim.pid` (none does) keeps the first.
    if !out.iter().any(|a| a.key == key) {
        out.push(KeyValue { key, value: Some(scalar) });
    }
}

/// A JSON value as an OTLP AnyValue: objects become key-value lists,
/// integers ints (beyond i64: their decimal text), fractions doubles.
pub fn any_value(value: &Value, depth: usize) -> AnyValue {
    let v = match value {
        Value::Null => None,
        Value::Bool(b) => Some(Any::BoolValue(*b)),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Any::IntValue(i),
            (None, Some(f)) if !n.is_u64() => Any::DoubleValue(f),
            _ => Any::StringValue(n.to_string()),
        }),
        Value::String(s) => Some(Any::StringValue(s.clone())),
        _ if depth >= NESTING_LIMIT => None,
        Value::Array(items) => Some(Any::ArrayValue(proto::ArrayValue { values: items.iter().map(|v| any_value(v, depth + 1)).collect() })),
        Value::Object(map) => Some(Any::KvlistValue(proto::KeyValueList {
            values: map.iter().map(|(k, v)| KeyValue { key: k.clone(), value: Some(any_value(v, depth + 1)) }).collect(),
        })),
    };
    AnyValue { value: v }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// OTLP/JSON: the protobuf JSON mapping with lowerCamelCase names, 64-bit
/// integers as strings, enums as numbers, and default values left out.
/// Serialized straight from the messages (no `Value` tree in between).
pub fn request_json(request: &proto::ExportLogsServiceRequest) -> String {
    serde_json::to_string(&Json(request)).unwrap_or_default()
}

/// A message in its OTLP/JSON form.
struct Json<'a, T>(&'a T);

use serde::ser::{Serialize, SerializeMap as _, SerializeSeq as _, Serializer};

struct Seq<'a, T>(&'a [T]);

impl<T> Serialize for Seq<'_, T>
where
    for<'a> Json<'a, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&Json(item))?;
        }
        seq.end()
    }
}

impl Serialize for Json<'_, proto::ExportLogsServiceRequest> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("resourceLogs", &Seq(&self.0.resource_logs))?;
        m.end()
    }
}

impl Serialize for Json<'_, proto::ResourceLogs> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(r) = &self.0.resource {
            m.serialize_entry("resource", &Json(r))?;
        }
        m.serialize_entry("scopeLogs", &Seq(&self.0.scope_logs))?;
        if !self.0.schema_url.is_empty() {
            m.serialize_entry("schemaUrl", &self.0.schema_url)?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, proto::Resource> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("attributes", &Seq(&self.0.attributes))?;
        m.end()
    }
}

impl Serialize for Json<'_, proto::ScopeLogs> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(scope) = &self.0.scope {
            m.serialize_entry("scope", &Json(scope))?;
        }
        m.serialize_entry("logRecords", &Seq(&self.0.log_records))?;
        if !self.0.schema_url.is_empty() {
            m.serialize_entry("schemaUrl", &self.0.schema_url)?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, proto::InstrumentationScope> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", &self.0.name)?;
        m.serialize_entry("version", &self.0.version)?;
        m.end()
    }
}

impl Serialize for Json<'_, proto::LogRecord> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        if r.time_unix_nano != 0 {
            m.serialize_entry("timeUnixNano", &r.time_unix_nano.to_string())?;
        }
        if r.observed_time_unix_nano != 0 {
            m.serialize_entry("observedTimeUnixNano", &r.observed_time_unix_nano.to_string())?;
        }
        if r.severity_number != 0 {
            m.serialize_entry("severityNumber", &r.severity_number)?;
        }
        if !r.severity_text.is_empty() {
            m.serialize_entry("severityText", &r.severity_text)?;
        }
        if let Some(body) = &r.body {
            m.serialize_entry("body", &Json(body))?;
        }
        m.serialize_entry("attributes", &Seq(&r.attributes))?;
        if !r.event_name.is_empty() {
            m.serialize_entry("eventName", &r.event_name)?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, KeyValue> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.key)?;
        if let Some(v) = &self.0.value {
            m.serialize_entry("value", &Json(v))?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, AnyValue> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Values<'a, T>(&'a [T]);
        impl<T> Serialize for Values<'_, T>
        where
            for<'a> Json<'a, T>: Serialize,
        {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("values", &Seq(self.0))?;
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        match &self.0.value {
            None => {}
            Some(Any::StringValue(v)) => m.serialize_entry("stringValue", v)?,
            Some(Any::BoolValue(v)) => m.serialize_entry("boolValue", v)?,
            Some(Any::IntValue(v)) => m.serialize_entry("intValue", &v.to_string())?,
            // Values come from serde_json: always finite.
            Some(Any::DoubleValue(v)) => m.serialize_entry("doubleValue", v)?,
            Some(Any::ArrayValue(a)) => m.serialize_entry("arrayValue", &Values(&a.values))?,
            Some(Any::KvlistValue(l)) => m.serialize_entry("kvlistValue", &Values(&l.values))?,
            Some(Any::BytesValue(b)) => {
                use base64::Engine as _;
                m.serialize_entry("bytesValue", &base64::engine::general_purpose::STANDARD.encode(b))?
            }
        }
        m.end()
    }
}

/// The receiver's `partial_success`, when it rejected some records.
fn partial_success(encoding: Encoding, body: &[u8]) -> Option<(u64, String)> {
    if body.is_empty() {
        return None;
    }
    let (rejected, message) = match encoding {
        Encoding::Protobuf => {
            let p = proto::ExportLogsServiceResponse::decode(body).ok()?.partial_success?;
            (p.rejected_log_records, p.error_message)
        }
        Encoding::Json => {
            let v: Value = serde_json::from_slice(body).ok()?;
            let p = v.get("partialSuccess")?;
            let rejected = p.get("rejectedLogRecords").and_then(|r| r.as_i64().or_else(|| r.as_str()?.parse().ok())).unwrap_or(0);
            (rejected, p.get("errorMessage").and_then(Value::as_str).unwrap_or("").to_owned())
        }
    };
    (rejected > 0).then_some((rejected as u64, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostIdentity {
        HostIdentity { hostname: "node-1".into(), boot_id: "b".repeat(32), machine_id: "m".repeat(32) }
    }

    fn attr<'a>(r: &'a proto::LogRecord, key: &str) -> Option<&'a Any> {
        r.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn endpoints_get_the_logs_path_unless_they_have_one() {
        assert_eq!(logs_url("http://c:4318").unwrap(), "http://c:4318/v1/logs");
        assert_eq!(logs_url("http://c:4318/").unwrap(), "http://c:4318/v1/logs");
        assert_eq!(logs_url("http://c:4318/custom/logs").unwrap(), "http://c:4318/custom/logs");
        for bad in ["https://c/", "c:4318", "http:///x", "ftp://c/"] {
            let e = logs_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_kill_record_has_semantic_convention_attributes_with_their_types() {
        let json = serde_json::json!({
            "kind": "oom_kill", "time": "2026-11-22T05:40:01.123456Z", "cgroup": "/kubepods/pod1/c1", "seq": 12,
            "victim": {"pid": 4242, "comm": "java", "anon_rss_bytes": 1048576},
            "trigger": {"pid": 1, "tid": 2, "comm": "t"},
            "attribution": "exact", "constraint": "global", "limit_bytes": 67108864,
            "workload": {"container_id": "abc", "pod_uid": "u-1", "runtime": "containerd"},
            "history": {"seconds_ago": [2, 1], "usage_bytes": [1, 2], "working_set_bytes": [1, 2]},
            "exit_latency_ms": 2.5, "unavailable": ["oom_control"]
        });
        let record = Record::from_json(json, &host()).unwrap();
        let r = log_record(&record, 7);
        assert_eq!(r.time_unix_nano, 1_795_326_001_123_456_000);
        assert_eq!(r.observed_time_unix_nano, 7);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (18, "CRITICAL"), "a host-wide kill");
        assert_eq!(r.event_name, "oomwatch.oom_kill");
        assert_eq!(attr(&r, "process.pid"), Some(&Any::IntValue(4242)));
        assert_eq!(attr(&r, "process.executable.name"), Some(&Any::StringValue("java".into())));
        assert_eq!(attr(&r, "container.id"), Some(&Any::StringValue("abc".into())));
        assert_eq!(attr(&r, "container.runtime.name"), Some(&Any::StringValue("containerd".into())));
        assert_eq!(attr(&r, "k8s.pod.uid"), Some(&Any::StringValue("u-1".into())));
        assert_eq!(attr(&r, "oomwatch.kind"), Some(&Any::StringValue("oom_kill".into())));
        assert_eq!(attr(&r, "oomwatch.seq"), Some(&Any::IntValue(12)));
        assert_eq!(attr(&r, "oomwatch.trigger.comm"), Some(&Any::StringValue("t".into())));
        assert_eq!(attr(&r, "oomwatch.exit_latency_ms"), Some(&Any::DoubleValue(2.5)));
        assert_eq!(attr(&r, "log.record.uid"), Some(&Any::StringValue(record.uid.clone())));
        assert!(attr(&r, "oomwatch.victim.pid").is_none(), "named by semantic conventions instead");
        assert!(r.attributes.iter().all(|a| !a.key.contains("history") && a.key != "oomwatch.unavailable"));
        // The body is the whole event, history included.
        let Some(Any::KvlistValue(body)) = r.body.as_ref().and_then(|b| b.value.as_ref()) else { panic!("{:?}", r.body) };
        assert!(body.values.iter().any(|kv| kv.key == "history"));
    }

    #[test]
    fn protobuf_round_trips_and_json_uses_the_otlp_names() {
        let record = Record::from_line(r#"{"kind":"pressure","time":"2026-11-22T05:40:01Z","cgroup":"/","seq":1,"trigger":"some 1 2","some_avg10":1.5}"#, &host()).unwrap();
        let req = request(&resource(&host()), &[record.clone(), record], UNIX_EPOCH + Duration::from_secs(1));
        let bytes = req.encode_to_vec();
        assert_eq!(proto::ExportLogsServiceRequest::decode(&bytes[..]).unwrap(), req);
        let j: Value = serde_json::from_str(&request_json(&req)).unwrap();
        let rec = &j["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(rec["timeUnixNano"], "1795326001000000000");
        assert_eq!(rec["observedTimeUnixNano"], "1000000000");
        assert_eq!(rec["severityNumber"], 10);
        assert_eq!(rec["eventName"], "oomwatch.pressure");
        assert!(rec["attributes"].as_array().unwrap().iter().any(|a| a["key"] == "oomwatch.some_avg10" && a["value"]["doubleValue"] == 1.5));
        let resource = &j["resourceLogs"][0]["resource"]["attributes"];
        assert!(resource.as_array().unwrap().iter().any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "oomwatch"));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(&HeaderValue::from_static("3"), now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&HeaderValue::from_str(&later).unwrap(), now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&HeaderValue::from_static("soon"), now), None);
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE) && retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::BAD_REQUEST) && !retryable(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn partial_success_is_read_in_both_encodings() {
        let pb = proto::ExportLogsServiceResponse {
            partial_success: Some(proto::ExportLogsPartialSuccess { rejected_log_records: 2, error_message: "too old".into() }),
        }
        .encode_to_vec();
        assert_eq!(partial_success(Encoding::Protobuf, &pb), Some((2, "too old".into())));
        let js = br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"x"}}"#;
        assert_eq!(partial_success(Encoding::Json, js), Some((3, "x".into())));
        assert_eq!(partial_success(Encoding::Json, b"{}"), None);
        assert_eq!(partial_success(Encoding::Protobuf, b""), None);
    }

    #[test]
    fn bad_headers_are_refused_by_name() {
        let mut c = OtlpConfig::new("http://127.0.0.1:4318");
        c.headers = vec![("x-ok".into(), "1".into()), ("bad header".into(), "v".into())];
        let e = OtlpExporter::new(&c, &host(), HttpClient::new()).err().unwrap().to_string();
        assert!(e.contains("\"bad header\""), "{e}");
        c.headers = vec![("content-type".into(), "text/plain".into())];
        assert!(OtlpExporter::new(&c, &host(), HttpClient::new()).is_err());
    }
}
