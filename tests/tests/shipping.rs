//! The shipping outputs against real receivers: systemd-journald 252 (in a
//! private mount namespace, tests/src/journald.rs) and an OTLP/HTTP
//! receiver that decodes with the official opentelemetry-proto package
//! (tests/otlp/receiver.py). The rotated file is covered by the unit tests
//! of oomwatch::outputs::file (a plain directory is the real thing there).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use oomwatch::{
    outputs::{
        delivery::{HostIdentity, Outcome, Record},
        http_client::HttpClient,
        journald::{self, Journald, JournaldConfig, Transport},
        otlp::{Encoding, OtlpConfig, OtlpExporter},
    },
    wire::{
        AlertEvent, AlertName, AlertState, Attribution, Constraint, Event, EventBody, OomKill, Ramp, ReclaimKindName, ReclaimStall, Severity,
        Trigger, Victim, Workload,
    },
};
use oomwatch_tests::{
    ChildGuard, Daemon, TestCgroup, Value, journald::Journald as TestJournald, memhog, metric_value, oomwatch_bin, otlp::OtlpReceiver, require_root, signal, temp_dir,
    write_config,
};

/// Names as a hostile or unlucky workload can make them: newlines (a forged
/// second log line), terminal escapes, `=` (the native protocol's
/// separator), tabs, DEL, C1 controls, and U+FFFD, which is what a comm or
/// cgroup name that is not UTF-8 becomes when oomwatch decodes it.
const HOSTILE: &str = "evil\nMESSAGE=forged\u{1b}[31mred\u{1b}[0m\t=\u{7f}\u{85}\u{fffd}\u{fffd}é";

fn kill(seq: u64, history_points: usize) -> Event {
    let ramp = Ramp {
        seconds_ago: (0..history_points as u32).rev().collect(),
        usage_bytes: (0..history_points as u64).map(|i| (i + 1) << 20).collect(),
        working_set_bytes: (0..history_points as u64).map(|i| i << 20).collect(),
        pressure_some_avg10: Vec::new(),
        limit_bytes: None,
    };
    Event {
        body: EventBody::OomKill(Box::new(OomKill {
            victim: Victim {
                pid: 4242,
                tgid: Some(4242),
                comm: Some(HOSTILE.into()),
                uid: Some(1000),
                oom_score_adj: Some(-17),
                total_vm_bytes: Some(1 << 30),
                anon_rss_bytes: Some(64 << 20),
                file_rss_bytes: Some(1 << 20),
                shmem_rss_bytes: Some(0),
                pgtables_bytes: Some(1 << 16),
            },
            trigger: Trigger { pid: 77, tid: 78, comm: format!("trig{HOSTILE}"), cgroup: Some(format!("/a/{HOSTILE}")) },
            attribution: Attribution::Exact,
            constraint: Constraint::Memcg,
            limit_cgroup: Some("/kubepods/burstable".into()),
            limit_cgroup_usage_bytes: Some(67_100_000),
            limit_bytes: Some(64 << 20),
            workload: Workload {
                unit: None,
                container_id: Some("3c4d".repeat(16)),
                runtime: Some("containerd".into()),
                pod_uid: Some("1f2e3d4c-0000-1111-2222-333344445555".into()),
                qos: Some("burstable".into()),
                ..Default::default()
            },
            main_process: None,
            history: (history_points > 0).then_some(ramp),
            oom_control: None,
            unavailable: vec!["oom_control".into()],
            cgroup_id: Some(12345),
            cgroup_from: None,
            exit_latency_ms: Some(2.75),
            why: None,
            kernel_report: None,
            incident: None,
            throttled_for_s: None,
            top_consumers: Vec::new(),
            limit_history: None,
            composition: None,
        })),
        time: "2026-11-22T05:46:54.250123Z".into(),
        cgroup: format!("/kubepods/burstable/pod1f2e/{HOSTILE}"),
        ktime_ns: Some(123_456_789),
        seq,
    }
}

fn stall(seq: u64) -> Event {
    Event {
        body: EventBody::ReclaimStall(ReclaimStall {
            pid: 10,
            tid: 11,
            comm: "java".into(),
            duration_ms: 153.25,
            reclaim_kind: ReclaimKindName::Memcg,
            nr_reclaimed: Some(64),
            order: Some(0),
            suppressed: 2,
        }),
        time: "2026-11-22T05:46:55.000001Z".into(),
        cgroup: "/system.slice/app.service".into(),
        ktime_ns: None,
        seq,
    }
}

fn alert(seq: u64) -> Event {
    Event {
        body: EventBody::Alert(AlertEvent {
            alert: AlertName::OomForecast,
            severity: Severity::Critical,
            state: AlertState::Firing,
            value: Some(42.5),
            summary: "memory runs out in 42 s".into(),
            firing_since: Some("2026-11-22T05:46:00Z".into()),
            workload: None,
        }),
        time: "2026-11-22T05:46:56Z".into(),
        cgroup: "/system.slice/app.service".into(),
        ktime_ns: None,
        seq,
    }
}

// ------------------------------------------------------------------ journald

/// Every field oomwatch sent is in the stored entry, byte for byte.
fn assert_entry_has(entry: &oomwatch_tests::journald::Entry, record: &Record) {
    for (name, value) in journald::entry_fields(record) {
        let got = entry.bytes(&name).unwrap_or_else(|| panic!("{name} missing from the stored entry"));
        assert!(got == value.as_bytes(), "{name}: stored {:?}, sent {:?}", String::from_utf8_lossy(got), value);
    }
    assert_eq!(entry.text("_TRANSPORT").as_deref(), Some("journal"));
    let stored: Value = serde_json::from_slice(entry.bytes("OOMWATCH_JSON").unwrap()).unwrap();
    assert_eq!(stored, record.json);
}

#[test]
fn journald_keeps_every_field_of_a_kill_with_hostile_names_in_a_datagram_and_through_a_memfd() {
    if !require_root("journald_keeps_every_field_of_a_kill_with_hostile_names") {
        return;
    }
    let journald = TestJournald::start();
    let host = HostIdentity::read();
    let out = Journald::new(&JournaldConfig { socket: journald.socket().to_path_buf(), timeout: Duration::from_secs(2) }).unwrap();

    let small = Record::from_event(&kill(1, 0), &host);
    // 12,000 points of history: the JSON alone is over 200 KiB, more than
    // a datagram on a socket with the default send buffer can carry.
    let large = Record::from_event(&kill(2, 12_000), &host);
    assert!(large.line.len() > 200 << 10, "{} bytes", large.line.len());
    assert_eq!(out.send(&small).unwrap(), Transport::Datagram);
    assert_eq!(out.send(&large).unwrap(), Transport::Memfd);

    for record in [&small, &large] {
        let seq = record.json["seq"].to_string();
        let entries = journald.wait_for(&[("MESSAGE_ID", journald::message_id("oom_kill")), ("OOMWATCH_SEQ", &seq)], 1, Duration::from_secs(15));
        assert_eq!(entries.len(), 1, "seq {seq} stored once");
        let entry = &entries[0];
        assert_entry_has(entry, record);
        // The fields a person queries by, with the values they expect.
        assert_eq!(entry.bytes("OOMWATCH_VICTIM_COMM"), Some(HOSTILE.as_bytes()));
        assert_eq!(entry.text("OOMWATCH_VICTIM_PID").as_deref(), Some("4242"));
        assert_eq!(entry.bytes("OOMWATCH_TRIGGER_COMM"), Some(format!("trig{HOSTILE}").as_bytes()));
        assert_eq!(entry.text("OOMWATCH_CONSTRAINT").as_deref(), Some("memcg"));
        assert_eq!(entry.text("OOMWATCH_LIMIT_BYTES").as_deref(), Some("67108864"));
        assert_eq!(entry.text("OOMWATCH_WORKLOAD_RUNTIME").as_deref(), Some("containerd"));
        assert_eq!(entry.text("PRIORITY").as_deref(), Some("3"));
        assert_eq!(entry.text("SYSLOG_IDENTIFIER").as_deref(), Some("oomwatch"));
        assert_eq!(entry.bytes("MESSAGE"), Some(record.message.as_bytes()));
        assert!(entry.bytes("OOMWATCH_HISTORY_SECONDS_AGO").is_none(), "the history series is not flattened");
        // Queryable by a field whose value only the hostile name has.
        assert_eq!(journald.query(&[("OOMWATCH_VICTIM_UID", "1000"), ("OOMWATCH_SEQ", &seq)]).len(), 1);
    }
}

#[test]
fn journald_takes_a_burst_of_200_events_and_keeps_each_once() {
    if !require_root("journald_takes_a_burst_of_200_events_and_keeps_each_once") {
        return;
    }
    let journald = TestJournald::start();
    let host = HostIdentity::read();
    let out = Journald::new(&JournaldConfig { socket: journald.socket().to_path_buf(), timeout: Duration::from_secs(2) }).unwrap();
    let records: Vec<Record> = (0..200u64)
        .map(|seq| match seq % 3 {
            0 => kill(seq, 60),
            1 => stall(seq),
            _ => alert(seq),
        })
        .map(|e| Record::from_event(&e, &host))
        .collect();
    let outcomes = out.send_batch(&records);
    assert!(outcomes.iter().all(Outcome::is_delivered), "{:?}", outcomes.iter().find(|o| !o.is_delivered()));

    let entries = journald.wait_for(&[("SYSLOG_IDENTIFIER", "oomwatch")], 200, Duration::from_secs(30));
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &entries {
        *seen.entry(e.text("OOMWATCH_SEQ").unwrap().parse().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (0..200).collect::<Vec<_>>());
    assert!(seen.values().all(|&n| n == 1), "each once: {seen:?}");
    // Priorities by kind: a kill at a cgroup limit, a stall, a critical alert firing.
    let priority = |seq: u64| entries.iter().find(|e| e.text("OOMWATCH_SEQ") == Some(seq.to_string())).and_then(|e| e.text("PRIORITY"));
    assert_eq!((priority(0).as_deref(), priority(1).as_deref(), priority(2).as_deref()), (Some("3"), Some("5"), Some("2")));
}

// ---------------------------------------------------------------------- OTLP

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn exporter(receiver: &OtlpReceiver, encoding: Encoding) -> OtlpExporter {
    let mut config = OtlpConfig::new(receiver.endpoint());
    config.encoding = encoding;
    config.headers = vec![("x-scope-orgid".into(), "tenant-1".into())];
    config.timeout = Duration::from_secs(5);
    OtlpExporter::new(&config, &HostIdentity::read(), HttpClient::new()).unwrap()
}

fn batch() -> Vec<Record> {
    let host = HostIdentity::read();
    [kill(1, 3), stall(2), alert(3)].iter().map(|e| Record::from_event(e, &host)).collect()
}

/// An AnyValue as MessageToDict gives it, back to the JSON it was made of.
fn any_to_json(v: &Value) -> Value {
    let (kind, inner) = v.as_object().and_then(|o| o.iter().next()).expect("a set AnyValue");
    match kind.as_str() {
        "string_value" | "bool_value" | "double_value" => inner.clone(),
        // int64 is a JSON string in protobuf's JSON mapping.
        "int_value" => Value::from(inner.as_str().unwrap().parse::<i64>().unwrap()),
        "array_value" => Value::Array(inner.get("values").and_then(Value::as_array).map(|a| a.iter().map(any_to_json).collect()).unwrap_or_default()),
        "kvlist_value" => Value::Object(
            inner
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|kv| (kv["key"].as_str().unwrap().to_owned(), any_to_json(&kv["value"]))).collect())
                .unwrap_or_default(),
        ),
        other => panic!("unexpected AnyValue {other}: {v}"),
    }
}

/// key -> (AnyValue type, value) of a decoded attribute list.
fn attributes(list: &Value) -> BTreeMap<String, (String, Value)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let (kind, value) = kv["value"].as_object().unwrap().iter().next().unwrap();
            (kv["key"].as_str().unwrap().to_owned(), (kind.clone(), value.clone()))
        })
        .collect()
}

fn typed(kind: &str, value: impl Into<Value>) -> (String, Value) {
    (kind.to_owned(), value.into())
}

#[test]
fn otlp_protobuf_and_json_both_decode_with_the_official_definitions_and_carry_semantic_conventions() {
    let records = batch();
    let mut decoded = Vec::new();
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        let receiver = OtlpReceiver::start(&[]);
        let exporter = exporter(&receiver, encoding);
        let outcomes = runtime().block_on(exporter.export(&records));
        assert_eq!(outcomes, vec![Outcome::Delivered; 3], "{encoding:?}");
        let requests = receiver.wait_for_requests(1, Duration::from_secs(10));
        let req = &requests[0];
        assert!(req.get("decode_error").is_none(), "{encoding:?}: {req}");
        assert_eq!(req["unknown_field_bytes"], 0, "{encoding:?}: every field is one the official .proto defines");
        assert_eq!(req["path"], "/v1/logs");
        assert_eq!(req["content_type"], encoding.content_type());
        assert_eq!(req["headers"]["x-scope-orgid"], "tenant-1");
        decoded.push(req["request"].clone());
    }

    // The same request either way (but for when it was encoded).
    let strip = |mut v: Value| {
        for r in v["resource_logs"][0]["scope_logs"][0]["log_records"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("observed_time_unix_nano");
        }
        v
    };
    assert_eq!(strip(decoded[0].clone()), strip(decoded[1].clone()), "protobuf and JSON decode to the same request");

    let req = &decoded[0];
    let resource = attributes(&req["resource_logs"][0]["resource"]["attributes"]);
    assert_eq!(resource["service.name"], typed("string_value", "oomwatch"));
    assert_eq!(resource["service.version"].0, "string_value");
    assert_eq!(resource["host.name"], typed("string_value", HostIdentity::read().hostname));
    assert_eq!(req["resource_logs"][0]["scope_logs"][0]["scope"]["name"], "oomwatch");

    let logs = req["resource_logs"][0]["scope_logs"][0]["log_records"].as_array().unwrap();
    assert_eq!(logs.len(), 3);
    for (log, record) in logs.iter().zip(&records) {
        assert_eq!(any_to_json(&log["body"]), record.json, "the body is the whole event");
        assert_eq!(log["event_name"], format!("oomwatch.{}", record.kind()));
        assert!(log["observed_time_unix_nano"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        let a = attributes(&log["attributes"]);
        assert_eq!(a["log.record.uid"], typed("string_value", record.uid.clone()));
        assert_eq!(a["oomwatch.kind"], typed("string_value", record.kind()));
        assert_eq!(a["oomwatch.cgroup"], typed("string_value", record.json["cgroup"].clone()));
        assert_eq!(a["oomwatch.seq"], typed("int_value", record.json["seq"].to_string()));
        assert!(a.keys().all(|k| !k.contains("history")), "{a:?}");
    }

    // The kill: 2026-11-22T05:46:54.250123Z, at a cgroup limit (ERROR).
    let (kill, a) = (&logs[0], attributes(&logs[0]["attributes"]));
    assert_eq!(kill["time_unix_nano"], "1795326414250123000");
    assert_eq!((kill["severity_number"].as_str(), kill["severity_text"].as_str()), (Some("SEVERITY_NUMBER_ERROR"), Some("ERROR")));
    assert_eq!(a["process.pid"], typed("int_value", "4242"));
    assert_eq!(a["process.executable.name"], typed("string_value", HOSTILE));
    assert_eq!(a["container.id"], typed("string_value", "3c4d".repeat(16)));
    assert_eq!(a["container.runtime.name"], typed("string_value", "containerd"));
    assert_eq!(a["k8s.pod.uid"], typed("string_value", "1f2e3d4c-0000-1111-2222-333344445555"));
    assert_eq!(a["oomwatch.constraint"], typed("string_value", "memcg"));
    assert_eq!(a["oomwatch.limit_bytes"], typed("int_value", (64u64 << 20).to_string()));
    assert_eq!(a["oomwatch.trigger.comm"], typed("string_value", format!("trig{HOSTILE}")));
    assert_eq!(a["oomwatch.exit_latency_ms"], typed("double_value", 2.75));
    assert_eq!(a["oomwatch.workload.qos"], typed("string_value", "burstable"));
    assert!(!a.contains_key("oomwatch.victim.pid") && !a.contains_key("oomwatch.unavailable"));

    // The stall: the stalled thread, a notice.
    let (stall, a) = (&logs[1], attributes(&logs[1]["attributes"]));
    assert_eq!(stall["severity_number"], "SEVERITY_NUMBER_INFO2");
    assert_eq!(a["process.pid"], typed("int_value", "10"));
    assert_eq!(a["thread.id"], typed("int_value", "11"));
    assert_eq!(a["process.executable.name"], typed("string_value", "java"));
    assert_eq!(a["oomwatch.duration_ms"], typed("double_value", 153.25));

    // The alert: critical and firing.
    let (alert, a) = (&logs[2], attributes(&logs[2]["attributes"]));
    assert_eq!((alert["severity_number"].as_str(), alert["severity_text"].as_str()), (Some("SEVERITY_NUMBER_ERROR2"), Some("CRITICAL")));
    assert_eq!(a["oomwatch.alert"], typed("string_value", "oom_forecast"));
    assert_eq!(a["oomwatch.value"], typed("double_value", 42.5));
}

#[test]
fn otlp_503_is_retried_after_retry_after_then_delivered_with_the_same_record_ids() {
    let receiver = OtlpReceiver::start(&["503:1"]);
    let exporter = exporter(&receiver, Encoding::Protobuf);
    let records = batch();
    let rt = runtime();
    let first = rt.block_on(exporter.export(&records));
    let after = match &first[0] {
        Outcome::Retry { after, reason } => {
            assert!(reason.contains("503"), "{reason}");
            *after
        }
        other => panic!("a 503 is retried: {other:?}"),
    };
    assert_eq!(after, Some(Duration::from_secs(1)), "Retry-After is honored");
    assert!(first.iter().all(|o| *o == first[0]));
    std::thread::sleep(after.unwrap());
    assert_eq!(rt.block_on(exporter.export(&records)), vec![Outcome::Delivered; 3]);

    let requests = receiver.wait_for_requests(2, Duration::from_secs(10));
    assert_eq!(requests.len(), 2);
    let uids = |r: &Value| -> BTreeSet<String> {
        r["request"]["resource_logs"][0]["scope_logs"][0]["log_records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| attributes(&l["attributes"])["log.record.uid"].1.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(uids(&requests[0]), uids(&requests[1]), "a receiver can drop the copies by log.record.uid");
    assert_eq!(uids(&requests[0]).len(), 3);
    let c = &exporter.counters;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!((c.retryable_failures.load(Relaxed), c.exported_records.load(Relaxed), c.dropped_records.load(Relaxed)), (1, 3, 0));
}

#[test]
fn otlp_a_dropped_connection_is_retried_and_a_400_is_dropped_for_good() {
    let receiver = OtlpReceiver::start(&["close", "400", "partial:1"]);
    let exporter = exporter(&receiver, Encoding::Json);
    let records = batch();
    let rt = runtime();
    match &rt.block_on(exporter.export(&records))[0] {
        Outcome::Retry { after: None, reason } => assert!(reason.contains(&receiver.endpoint()), "{reason}"),
        other => panic!("a closed connection is retried: {other:?}"),
    }
    let refused = rt.block_on(exporter.export(&records));
    match &refused[0] {
        Outcome::Rejected { reason } => assert!(reason.contains("400") && !reason.contains('\n'), "{reason}"),
        other => panic!("a 400 is not retried: {other:?}"),
    }
    assert_eq!(refused.len(), 3);
    // Partially accepted: delivered, the rejected one counted.
    assert_eq!(rt.block_on(exporter.export(&records)), vec![Outcome::Delivered; 3]);
    use std::sync::atomic::Ordering::Relaxed;
    let c = &exporter.counters;
    assert_eq!(
        (c.retryable_failures.load(Relaxed), c.dropped_records.load(Relaxed), c.exported_records.load(Relaxed), c.rejected_records.load(Relaxed)),
        (1, 3, 3, 1)
    );
    assert_eq!(receiver.wait_for_requests(3, Duration::from_secs(10)).len(), 3);
}

#[test]
fn otlp_nothing_listening_is_a_retry_naming_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = OtlpConfig::new(format!("http://127.0.0.1:{port}"));
    let exporter = OtlpExporter::new(&config, &HostIdentity::read(), HttpClient::new()).unwrap();
    match &runtime().block_on(exporter.export(&batch()))[0] {
        Outcome::Retry { reason, .. } => assert!(reason.contains(&format!("127.0.0.1:{port}/v1/logs")), "{reason}"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------- the daemon's delivery

const MIB: u64 = 1 << 20;

/// A real OOM kill: a hog in a 64 MiB cgroup of its own. Returns its pid.
fn real_kill(name: &str) -> u32 {
    let cg = TestCgroup::new(name, Some(64 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "256"])));
    let status = hog.wait_timeout(Duration::from_secs(30)).expect("the hog is killed within 30 s");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "hog: {status}");
    assert_eq!(cg.oom_kills(), 1, "the kernel counts one OOM kill in {}", cg.dir.display());
    hog.pid()
}

/// Every log record the receiver decoded, with the time its request came.
fn received_logs(requests: &[Value]) -> Vec<(Value, u64)> {
    requests
        .iter()
        .filter(|r| r.get("decode_error").is_none())
        .flat_map(|r| {
            let at = r["received_unix_nano"].as_u64().unwrap_or(0);
            r["request"]["resource_logs"][0]["scope_logs"][0]["log_records"].as_array().cloned().unwrap_or_default().into_iter().map(move |l| (l, at))
        })
        .collect()
}

/// The kills of `pids` among `logs` (other tests on this host kill too):
/// seq -> (record uid, times received).
fn kills_by_seq(logs: &[(Value, u64)], pids: &[u32]) -> BTreeMap<u64, (String, usize)> {
    let mut out: BTreeMap<u64, (String, usize)> = BTreeMap::new();
    for (log, _) in logs.iter().filter(|(l, _)| l["event_name"] == "oomwatch.oom_kill") {
        let a = attributes(&log["attributes"]);
        let pid: u64 = a["process.pid"].1.as_str().unwrap().parse().unwrap();
        if !pids.iter().any(|p| u64::from(*p) == pid) {
            continue;
        }
        let seq = a["oomwatch.seq"].1.as_str().unwrap().parse().unwrap();
        let uid = a["log.record.uid"].1.as_str().unwrap().to_owned();
        let entry = out.entry(seq).or_insert_with(|| (uid.clone(), 0));
        assert_eq!(entry.0, uid, "a copy of seq {seq} carries the same record uid");
        entry.1 += 1;
    }
    out
}

fn kill_pids(logs: &[(Value, u64)]) -> BTreeSet<u64> {
    logs.iter()
        .filter(|(l, _)| l["event_name"] == "oomwatch.oom_kill")
        .map(|(l, _)| attributes(&l["attributes"])["process.pid"].1.as_str().unwrap().parse().unwrap())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    metric_value(&daemon.metrics(), series).unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

#[test]
fn a_real_kill_reaches_journald_otlp_and_the_file_with_its_fields() {
    if !require_root("a_real_kill_reaches_journald_otlp_and_the_file_with_its_fields") {
        return;
    }
    let journald = TestJournald::start();
    let receiver = OtlpReceiver::start(&[]);
    let dir = temp_dir("ship-all");
    let file = dir.0.join("log/events.json");
    let config = write_config(
        &dir,
        &format!(
            "[sinks.journald]\nenabled = true\nsocket = \"{}\"\n\n[[sinks.otlp]]\nendpoint = \"{}\"\nheaders = {{ x-scope-orgid = \"tenant-1\" }}\n\n[[sinks.file]]\npath = \"{}\"\n",
            journald.socket().display(),
            receiver.endpoint(),
            file.display()
        ),
    );
    let check = std::process::Command::new(oomwatch_bin()).arg("check").arg("--config").arg(&config).output().unwrap();
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let pid = real_kill("ship-all");

    // OTLP: the kill, with the semantic conventions and the whole event.
    let mut logs = Vec::new();
    wait_until("the kill at the OTLP receiver", Duration::from_secs(20), || {
        logs = received_logs(&receiver.requests());
        kill_pids(&logs).contains(&u64::from(pid))
    });
    let (log, received_at) = logs
        .iter()
        .find(|(l, _)| l["event_name"] == "oomwatch.oom_kill" && attributes(&l["attributes"])["process.pid"].1 == pid.to_string())
        .unwrap();
    let a = attributes(&log["attributes"]);
    let body = any_to_json(&log["body"]);
    assert_eq!(a["process.pid"], typed("int_value", pid.to_string()));
    assert_eq!(a["process.executable.name"], typed("string_value", "memhog"));
    assert_eq!(a["oomwatch.constraint"], typed("string_value", "memcg"));
    assert_eq!(a["oomwatch.limit_bytes"], typed("int_value", (64 * MIB).to_string()));
    assert_eq!(body["kind"], "oom_kill");
    assert_eq!(body["victim"]["pid"], pid);
    assert_eq!((log["severity_text"].as_str(), log["severity_number"].as_str()), (Some("ERROR"), Some("SEVERITY_NUMBER_ERROR")));
    let seq = body["seq"].as_u64().expect("the event's seq");
    let uid = a["log.record.uid"].1.as_str().unwrap().to_owned();
    assert!(uid.contains(&format!("-{seq}-")), "the uid names the journal seq: {uid}");
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r["headers"]["x-scope-orgid"] == "tenant-1" && r["unknown_field_bytes"] == 0), "{requests:?}");
    let kill_ns = log["time_unix_nano"].as_str().unwrap().parse::<u64>().unwrap();
    println!("kill -> OTLP receiver: {:.1} ms", received_at.saturating_sub(kill_ns) as f64 / 1e6);

    // journald: the same event, by MESSAGE_ID and seq.
    let entries = journald.wait_for(&[("MESSAGE_ID", journald::message_id("oom_kill")), ("OOMWATCH_SEQ", &seq.to_string())], 1, Duration::from_secs(20));
    assert_eq!(entries.len(), 1, "stored once");
    let e = &entries[0];
    assert_eq!(e.text("OOMWATCH_VICTIM_PID"), Some(pid.to_string()));
    assert_eq!(e.text("OOMWATCH_VICTIM_COMM").as_deref(), Some("memhog"));
    assert_eq!(e.text("OOMWATCH_CONSTRAINT").as_deref(), Some("memcg"));
    assert_eq!(e.text("OOMWATCH_LIMIT_BYTES"), Some((64 * MIB).to_string()));
    assert_eq!(e.text("OOMWATCH_RECORD_UID").as_deref(), Some(uid.as_str()), "one uid for the event in every sink");
    assert_eq!(e.text("PRIORITY").as_deref(), Some("3"));
    assert!(e.text("MESSAGE").is_some_and(|m| m.contains("OOM-KILL") && m.contains(&pid.to_string())), "{:?}", e.text("MESSAGE"));
    let stored: Value = serde_json::from_slice(e.bytes("OOMWATCH_JSON").unwrap()).unwrap();
    assert_same_kill(&stored, &body, "journald and OTLP carry the same event");

    // The file: the line `tail --json` prints, created with its directory.
    let mut line = None;
    wait_until("the kill in the file", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        line = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["seq"] == seq);
        line.is_some()
    });
    assert_same_kill(&line.unwrap(), &body, "the file and OTLP carry the same event");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);

    for sink in ["journald", "otlp", "file"] {
        wait_until(&format!("{sink} backlog 0"), Duration::from_secs(10), || {
            metric(&daemon, &format!("oomwatch_sink_backlog_events{{sink=\"{sink}\"}}")) == 0.0
        });
        assert!(metric(&daemon, &format!("oomwatch_sink_events_total{{sink=\"{sink}\",result=\"delivered\"}}")) >= 1.0);
        assert_eq!(metric(&daemon, &format!("oomwatch_sink_events_total{{sink=\"{sink}\",result=\"dropped\"}}")), 0.0);
        assert_eq!(metric(&daemon, &format!("oomwatch_sink_up{{sink=\"{sink}\"}}")), 1.0);
    }
    assert!(check.status.success(), "oomwatch check accepts the sinks: {}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn otlp_down_for_a_while_then_back_gets_every_kill_once() {
    if !require_root("otlp_down_for_a_while_then_back_gets_every_kill_once") {
        return;
    }
    let receiver = OtlpReceiver::start(&[]);
    let port = receiver.port();
    let dir = temp_dir("ship-outage");
    let config = write_config(&dir, &format!("[[sinks.otlp]]\nendpoint = \"{}\"\nmax_retry_interval = \"2s\"\n", receiver.endpoint()));
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let first = real_kill("ship-outage");
    let mut before = Vec::new();
    wait_until("the first kill delivered", Duration::from_secs(20), || {
        before = received_logs(&receiver.requests());
        kill_pids(&before).contains(&u64::from(first))
    });
    drop(receiver);

    // Down: kills wait in the journal, the sink says so.
    let during: Vec<u32> = (0..3).map(|i| real_kill(&format!("ship-outage-{i}"))).collect();
    wait_until("failures counted while the receiver is down", Duration::from_secs(20), || {
        metric(&daemon, "oomwatch_sink_send_failures_total{sink=\"otlp\"}") >= 2.0 && metric(&daemon, "oomwatch_sink_up{sink=\"otlp\"}") == 0.0
    });
    let backlog = metric(&daemon, "oomwatch_sink_backlog_events{sink=\"otlp\"}");
    assert!(backlog >= 3.0, "three kills at least wait: backlog {backlog}");
    std::thread::sleep(Duration::from_secs(5));

    // Back on the same port: the backlog drains.
    let back = OtlpReceiver::start_on(port, &[]);
    let started = std::time::Instant::now();
    let mut after = Vec::new();
    wait_until("the kills of the outage delivered", Duration::from_secs(30), || {
        after = received_logs(&back.requests());
        let pids = kill_pids(&after);
        during.iter().all(|p| pids.contains(&u64::from(*p)))
    });
    println!("backlog of {backlog} events drained {:.1} s after the receiver came back", started.elapsed().as_secs_f64());
    wait_until("backlog 0", Duration::from_secs(10), || metric(&daemon, "oomwatch_sink_backlog_events{sink=\"otlp\"}") == 0.0);
    assert_eq!(metric(&daemon, "oomwatch_sink_up{sink=\"otlp\"}"), 1.0);

    let all: Vec<(Value, u64)> = before.into_iter().chain(received_logs(&back.requests())).collect();
    let ours: Vec<u32> = [first].iter().chain(&during).copied().collect();
    let kills = kills_by_seq(&all, &ours);
    assert_eq!(kills.len(), 4, "four kills: {kills:?}");
    assert!(kills.values().all(|(_, n)| *n == 1), "none twice: {kills:?}");
    assert_eq!(metric(&daemon, "oomwatch_sink_events_total{sink=\"otlp\",result=\"dropped\"}"), 0.0);
}

#[test]
fn the_daemon_killed_and_started_again_resumes_without_loss_or_repeats() {
    if !require_root("the_daemon_killed_and_started_again_resumes_without_loss_or_repeats") {
        return;
    }
    let receiver = OtlpReceiver::start(&[]);
    let dir = temp_dir("ship-restart");
    let state = dir.0.join("state");
    let file = dir.0.join("events.json");
    let config = write_config(
        &dir,
        &format!("[[sinks.otlp]]\nendpoint = \"{}\"\nmax_retry_interval = \"1s\"\n\n[[sinks.file]]\npath = \"{}\"\n", receiver.endpoint(), file.display()),
    );
    let args = ["--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let mut pids = Vec::new();
    let mut daemon = Daemon::start(&args);
    pids.push(real_kill("ship-restart-a"));
    wait_until("the first kill delivered", Duration::from_secs(20), || kill_pids(&received_logs(&receiver.requests())).contains(&u64::from(pids[0])));
    // Its cursor is committed right after the delivery.
    std::thread::sleep(Duration::from_millis(500));
    signal(daemon.pid(), libc::SIGKILL);
    daemon.stop();

    let mut daemon = Daemon::start(&args);
    pids.push(real_kill("ship-restart-b"));
    wait_until("the second kill delivered", Duration::from_secs(20), || kill_pids(&received_logs(&receiver.requests())).contains(&u64::from(pids[1])));
    // Killed again mid-delivery: the receiver down, a kill being retried.
    let port = receiver.port();
    let before = received_logs(&receiver.requests());
    drop(receiver);
    pids.push(real_kill("ship-restart-c"));
    wait_until("the sink retrying", Duration::from_secs(20), || metric(&daemon, "oomwatch_sink_send_failures_total{sink=\"otlp\"}") >= 1.0);
    signal(daemon.pid(), libc::SIGKILL);
    daemon.stop();
    let back = OtlpReceiver::start_on(port, &[]);
    let mut daemon = Daemon::start(&args);
    wait_until("the kill of the outage delivered after the restart", Duration::from_secs(30), || {
        kill_pids(&received_logs(&back.requests())).contains(&u64::from(pids[2]))
    });
    wait_until("backlog 0", Duration::from_secs(10), || metric(&daemon, "oomwatch_sink_backlog_events{sink=\"otlp\"}") == 0.0);

    // A clean stop and start (SIGTERM, as systemd restarts it): nothing is sent again.
    std::thread::sleep(Duration::from_millis(500));
    let file_lines = || -> Vec<(u64, String)> {
        std::fs::read_to_string(&file).unwrap().lines().map(|l| (serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap(), l.to_owned())).collect()
    };
    let before_clean_stop = file_lines();
    daemon.stop();
    let daemon = Daemon::start(&args);
    pids.push(real_kill("ship-restart-d"));
    wait_until("the kill after the clean restart delivered", Duration::from_secs(20), || {
        kill_pids(&received_logs(&back.requests())).contains(&u64::from(pids[3]))
    });
    wait_until("file backlog 0", Duration::from_secs(10), || metric(&daemon, "oomwatch_sink_backlog_events{sink=\"file\"}") == 0.0);

    let all: Vec<(Value, u64)> = before.into_iter().chain(received_logs(&back.requests())).collect();
    let kills = kills_by_seq(&all, &pids);
    assert_eq!(kills.len(), 4, "no kill lost: {kills:?}");
    assert!(kills.values().all(|(_, n)| *n == 1), "no kill sent twice across restarts: {kills:?}");
    // Every event, not only kills: no seq twice at the receiver (it was
    // down when the daemon was killed mid-delivery, so nothing was in flight).
    let mut seqs: BTreeMap<u64, usize> = BTreeMap::new();
    for (log, _) in &all {
        *seqs.entry(attributes(&log["attributes"])["oomwatch.seq"].1.as_str().unwrap().parse().unwrap()).or_default() += 1;
    }
    assert!(seqs.values().all(|n| *n == 1), "each seq once at the receiver: {seqs:?}");

    // The file sink was writing when SIGKILL came: the batch whose cursor was
    // not yet stored may be there twice (same seq, kind and time). After the
    // clean stop, nothing repeats.
    let lines = file_lines();
    let mut copies: BTreeMap<u64, BTreeSet<(String, String)>> = BTreeMap::new();
    for (seq, line) in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        copies.entry(*seq).or_default().insert((v["kind"].to_string(), v["time"].to_string()));
    }
    // One event (a kill may have been amended in between: its exit latency).
    assert!(copies.values().all(|c| c.len() == 1), "copies of one seq are one event: {copies:?}");
    println!("file: {} lines, {} events ({} repeated after a SIGKILL)", lines.len(), copies.len(), lines.len() - copies.len());
    let last_before = before_clean_stop.iter().map(|(s, _)| *s).max().unwrap();
    let after: Vec<u64> = lines[before_clean_stop.len()..].iter().map(|(s, _)| *s).collect();
    assert!(!after.is_empty() && after.iter().all(|s| *s > last_before), "after a clean restart nothing is written again: {last_before} then {after:?}");
    let kill_seqs: BTreeSet<u64> = kills.keys().copied().collect();
    assert!(kill_seqs.iter().all(|s| copies.contains_key(s)), "every kill in the file too: {kill_seqs:?}");
    assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "in seq order");
}

#[test]
fn the_pipeline_examples_read_what_the_journald_sink_writes_and_the_readme_lists_every_message_id() {
    let root = oomwatch_tests::workspace_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let ident = format!("SYSLOG_IDENTIFIER={}", journald::SYSLOG_IDENTIFIER);
    let vector: Value = serde_yaml_ng::from_str(&read("deploy/shipping/vector.yaml")).expect("vector.yaml is YAML");
    assert_eq!(vector["sources"]["oomwatch_journal"]["include_matches"]["SYSLOG_IDENTIFIER"][0], journald::SYSLOG_IDENTIFIER);
    assert_eq!(vector["sinks"]["elasticsearch"]["id_key"], "record_uid", "copies collapse by record uid");
    let fluent = read("deploy/shipping/fluent-bit.conf");
    assert!(fluent.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Systemd_Filter", ident.as_str()]), "{fluent}");
    assert!(fluent.contains("Key_Name      OOMWATCH_JSON"));
    let alloy = read("deploy/shipping/alloy.alloy");
    assert!(alloy.contains(&format!("matches        = \"{ident}\"")) && alloy.contains("\"OOMWATCH_JSON\""), "{alloy}");
    let readme = read("docs/fleet.md");
    for (kind, id) in journald::MESSAGE_IDS.iter().chain([&("other", journald::OTHER_MESSAGE_ID)]) {
        assert!(readme.contains(id), "docs/fleet.md lists the MESSAGE_ID of {kind}");
    }
}

/// The kill as published, without what amends it later (the kernel's report
/// and the why it rewrites, the exit latency): a sink sends the event as the
/// journal holds it when the sink reads it, so one sink may carry an
/// amendment another sent before it arrived.
/// The kill as first published: the kernel's report may amend it between
/// one sink's read and another's (`explain::amend_with_report`), replacing
/// `composition`, adding its tasks to `top_consumers` and rewriting `why`;
/// exit confirmation adds `exit_latency_ms`.
fn unamended(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for key in ["kernel_report", "why", "exit_latency_ms", "composition"] {
            o.remove(key);
        }
        // The child cgroups stay as published; the report's tasks carry a pid.
        let cgroups: Vec<Value> = o.get("top_consumers").and_then(Value::as_array).into_iter().flatten().filter(|c| c.get("pid").is_none()).cloned().collect();
        o.remove("top_consumers");
        if !cgroups.is_empty() {
            o.insert("top_consumers".into(), Value::Array(cgroups));
        }
    }
    v
}

/// Two sinks' copies of one kill: the same event as published, and the
/// same amended event when both were sent after the report amended it.
fn assert_same_kill(a: &Value, b: &Value, what: &str) {
    assert_eq!(unamended(a), unamended(b), "{what}");
    if a.get("kernel_report").is_some() && b.get("kernel_report").is_some() {
        let without_exit = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().map(|o| o.remove("exit_latency_ms"));
            v
        };
        assert_eq!(without_exit(a), without_exit(b), "{what}, both amended by the kernel's report");
    }
}


/// CI run of stop 24: journald sent the kill as published, OTLP after the
/// kernel's report amended it (its composition and its top task).
fn published_and_amended() -> (Value, Value) {
    let published = serde_json::json!({
        "kind": "oom_kill", "seq": 1, "victim": {"pid": 23506, "comm": "memhog"},
        "composition": {"anon_bytes": 0, "file_bytes": 0, "sampled_seconds_ago": 0},
        "why": "memhog was killed", "limit_bytes": 67108864
    });
    let mut amended = published.clone();
    amended["composition"] = serde_json::json!({"anon_bytes": 66908160, "kernel_bytes": 200704});
    amended["top_consumers"] = serde_json::json!([{"pid": 23506, "comm": "memhog", "bytes": 68976640, "victim": true, "trigger": true}]);
    amended["why"] = "memhog was killed (64 MiB anon)".into();
    amended["kernel_report"] = serde_json::json!({"kmsg_seq": 7});
    (published, amended)
}

#[test]
fn copies_of_a_kill_agree_across_the_kernel_reports_amendment() {
    let (published, amended) = published_and_amended();
    assert_same_kill(&published, &amended, "published and amended");
    assert_same_kill(&amended, &amended, "both amended");
}

#[test]
#[should_panic(expected = "carry the same event")]
fn copies_of_two_different_kills_do_not_agree() {
    let (published, mut amended) = published_and_amended();
    amended["victim"]["pid"] = 1.into();
    assert_same_kill(&published, &amended, "carry the same event");
}

#[test]
#[should_panic(expected = "both amended")]
fn two_amended_copies_must_agree_on_the_amendment() {
    let (_, amended) = published_and_amended();
    let mut other = amended.clone();
    other["composition"]["anon_bytes"] = 1.into();
    assert_same_kill(&amended, &other, "carry the same event");
}
