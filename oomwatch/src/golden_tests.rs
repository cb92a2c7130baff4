//! What users see, pinned: the JSON shape of every event kind and the set of
//! metric families with their types and label names. A change to either is a
//! contract change: bless it on purpose (`OOMWATCH_BLESS=1 cargo test golden`)
//! and say so in the README and the closing note.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{model::Model, wire::*};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `lines` with the golden file, or writes it when blessing.
fn check_golden(name: &str, lines: &BTreeSet<String>) {
    let path = golden_dir().join(name);
    let got: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if std::env::var_os("OOMWATCH_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (OOMWATCH_BLESS=1 writes it)", path.display()));
    let want: BTreeSet<&str> = want.lines().collect();
    let got_set: BTreeSet<&str> = got.lines().collect();
    let missing: Vec<_> = want.difference(&got_set).collect();
    let added: Vec<_> = got_set.difference(&want).collect();
    assert!(
        missing.is_empty() && added.is_empty(),
        "{} changed: a contract users rely on.\n  gone: {missing:?}\n  new:  {added:?}\n(bless on purpose with OOMWATCH_BLESS=1)",
        path.display()
    );
}

/// "kind path type" for every leaf of the JSON value; arrays contribute
/// their element shape once.
fn shape(kind: &str, prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                shape(kind, &p, v, out);
            }
        }
        Value::Array(a) => match a.first() {
            Some(first) => shape(kind, &format!("{prefix}[]"), first, out),
            None => {
                out.insert(format!("{kind} {prefix}[] empty"));
            }
        },
        Value::Null => {
            out.insert(format!("{kind} {prefix} null"));
        }
        Value::Bool(_) => {
            out.insert(format!("{kind} {prefix} bool"));
        }
        Value::Number(_) => {
            out.insert(format!("{kind} {prefix} number"));
        }
        Value::String(_) => {
            out.insert(format!("{kind} {prefix} string"));
        }
    }
}

fn event(body: EventBody) -> Event {
    Event { body, time: "2026-12-06T03:00:00.000001Z".into(), cgroup: "/a".into(), ktime_ns: Some(1), seq: 1 }
}

/// A kernel report with every optional field present.
fn kernel_report() -> crate::wire::KernelReport {
    crate::wire::KernelReport {
        kmsg_seq: 1,
        missing: Some("rate_limited".into()),
        gfp_mask: Some("0xcc0".into()),
        gfp_flags: vec!["GFP_KERNEL".into()],
        order: Some(0),
        constraint: Some("CONSTRAINT_MEMCG".into()),
        oom_memcg: Some("/a".into()),
        task_memcg: Some("/a".into()),
        memcg: Some(crate::wire::KernelMemcg { usage_bytes: 1, limit_bytes: 1, failcnt: 1, swap_usage_bytes: Some(0), swap_limit_bytes: Some(1) }),
        composition: Some(crate::wire::Composition {
            anon_bytes: Some(1),
            file_bytes: Some(1),
            shmem_bytes: Some(1),
            kernel_bytes: Some(1),
            pagetables_bytes: Some(1),
            sock_bytes: Some(1),
            swap_bytes: Some(1),
            sampled_seconds_ago: None,
        }),
        top_tasks: vec![crate::wire::ReportTask { pid: 1, comm: "hog".into(), rss_bytes: 1 }],
        tasks_in_table: Some(1),
    }
}

/// A kill with every optional field present.
fn example_kill() -> OomKill {
    OomKill {
        victim: Victim {
            pid: 1,
            tgid: Some(1),
            comm: Some("hog".into()),
            uid: Some(0),
            oom_score_adj: Some(0),
            total_vm_bytes: Some(1),
            anon_rss_bytes: Some(1),
            file_rss_bytes: Some(1),
            shmem_rss_bytes: Some(1),
            pgtables_bytes: Some(1),
        },
        trigger: Trigger { pid: 1, tid: 1, comm: "hog".into(), cgroup: Some("/a".into()) },
        attribution: Attribution::Exact,
        constraint: Constraint::Memcg,
        limit_cgroup: Some("/a".into()),
        limit_cgroup_usage_bytes: Some(1),
        limit_bytes: Some(1),
        workload: Workload {
            unit: Some("u".into()),
            container_id: Some("c".into()),
            runtime: Some("docker".into()),
            pod_uid: Some("p".into()),
            qos: Some("burstable".into()),
            container_name: Some("web".into()),
            image: Some("nginx:1.25".into()),
            pod: Some("web-7d9f".into()),
            namespace: Some("shop".into()),
            container: Some("frontend".into()),
        },
        main_process: Some(false),
        history: Some(Ramp { seconds_ago: vec![1], usage_bytes: vec![1], working_set_bytes: vec![1], pressure_some_avg10: vec![1.0], limit_bytes: Some(1) }),
        oom_control: Some(OomControl {
            memcg: Some("/a".into()),
            totalpages: 1,
            points: 1,
            constraint: Some("CONSTRAINT_MEMCG".into()),
            gfp_mask: "0xcc0".into(),
            order: 0,
        }),
        unavailable: vec!["x".into()],
        cgroup_id: Some(1),
        cgroup_from: None,
        exit_latency_ms: Some(1.0),
        why: Some("w".into()),
        kernel_report: Some(Box::new(kernel_report())),
        incident: Some(crate::wire::IncidentRef { id: 1, victims_so_far: 1, first_victim_cgroup: "/a".into() }),
        throttled_for_s: Some(1.0),
        top_consumers: vec![crate::wire::Consumer { cgroup: Some("/a/b".into()), pid: Some(1), comm: Some("hog".into()), workload: Some("w".into()), bytes: 1, victim: true, trigger: true }],
        limit_history: Some(Ramp { seconds_ago: vec![1], usage_bytes: vec![1], working_set_bytes: vec![1], pressure_some_avg10: vec![1.0], limit_bytes: Some(1) }),
        composition: kernel_report().composition.map(|c| crate::wire::Composition { sampled_seconds_ago: Some(1), ..c }),
    }
}

/// One event of every kind, every optional field present.
fn every_kind() -> Vec<Event> {
    vec![
        event(EventBody::OomKill(Box::new(example_kill()))),
        event(EventBody::KillSeen({
            let k = example_kill();
            crate::wire::KillNotice {
                victim: k.victim,
                trigger: k.trigger,
                attribution: k.attribution,
                cgroup_id: k.cgroup_id,
                workload: k.workload,
                main_process: k.main_process,
            }
        })),
        event(EventBody::KillExplained(crate::wire::KillExplained {
            pid: 1,
            comm: "hog".into(),
            kill_seq: 1,
            why: Some("w".into()),
            kernel_report: Box::new(kernel_report()),
        })),
        event(EventBody::VictimExit(VictimExit { pid: 1, comm: "hog".into(), exit_latency_ms: 1.0 })),
        event(EventBody::Pressure(PressureEvent {
            trigger: "some 1 2".into(),
            some_avg10: Some(1.0),
            full_avg10: Some(1.0),
            some_total_us: Some(1),
            full_total_us: Some(1),
        })),
        event(EventBody::Alert(AlertEvent {
            alert: crate::wire::AlertName::OomKill,
            severity: crate::wire::Severity::Critical,
            state: crate::wire::AlertState::Firing,
            value: Some(1.0),
            summary: "s".into(),
            firing_since: Some("t".into()),
            workload: Some(crate::wire::Workload {
                namespace: Some("shop".into()),
                pod: Some("web-7d9f".into()),
                container: Some("frontend".into()),
                ..Default::default()
            }),
        })),
        event(EventBody::UnobservedKills(UnobservedKills { count: 1, kernel_total: 1, observed_total: 0 })),
        event(EventBody::ReclaimStall(ReclaimStall {
            pid: 1,
            tid: 1,
            comm: "hog".into(),
            duration_ms: 1.0,
            reclaim_kind: ReclaimKindName::Memcg,
            nr_reclaimed: Some(1),
            order: Some(0),
            suppressed: 0,
        })),
        event(EventBody::Incident(crate::wire::Incident {
            id: 1,
            trigger: Trigger { pid: 1, tid: 1, comm: "hog".into(), cgroup: Some("/a".into()) },
            constraint: Constraint::Memcg,
            limit_cgroup: Some("/a".into()),
            count: 2,
            victims: vec![crate::wire::IncidentVictim { pid: 1, comm: Some("hog".into()), cgroup: "/a".into() }],
            span_ms: 1.0,
        })),
        event(EventBody::Throttled(crate::wire::Throttled {
            state: crate::wire::ThrottleState::Ended,
            since: "2026-12-06T03:00:00.000001Z".into(),
            duration_s: 1.0,
            high_events: 1,
            high_bytes: Some(1),
            some_avg10: Some(1.0),
            full_avg10: Some(1.0),
        })),
        event(EventBody::Lagged { dropped: 1 }),
    ]
}

#[test]
fn golden_event_json_shapes() {
    let events = every_kind();
    let kinds: BTreeSet<EventKind> = events.iter().map(|e| e.body.kind()).collect();
    assert_eq!(kinds, EventKind::ALL.iter().copied().collect(), "an example for every kind");
    let mut lines = BTreeSet::new();
    for e in &events {
        let v = serde_json::to_value(e).unwrap();
        assert_eq!(v["kind"], e.body.kind().as_str(), "EventKind names match the JSON");
        shape(e.body.kind().as_str(), "", &v, &mut lines);
    }
    check_golden("events.txt", &lines);
}

/// "family type label,label" for every family a populated daemon exports.
fn families(text: &str) -> BTreeSet<String> {
    let mut types: Vec<(String, String)> = Vec::new();
    let mut labels: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, ty) = t.split_once(' ').unwrap();
            types.push((name.to_owned(), ty.to_owned()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let family = types.iter().rev().find(|(f, _)| name.starts_with(f.as_str())).map(|(f, _)| f.clone()).unwrap();
        let set = labels.entry(family).or_default();
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            // Label names only; values may hold anything (escaped).
            let mut s = rest;
            while let Some((name, after)) = s.split_once("=\"") {
                if name != "le" && name != "quantile" {
                    set.insert(name.trim_start_matches(',').to_owned());
                }
                let mut end = 0;
                let bytes = after.as_bytes();
                while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
                    end += 1;
                }
                s = &after[end + 1..];
                if s.starts_with('}') {
                    break;
                }
            }
        }
    }
    types
        .into_iter()
        .map(|(f, ty)| {
            let l: Vec<String> = labels.get(&f).map(|s| s.iter().cloned().collect()).unwrap_or_default();
            format!("{f} {ty} {}", l.join(","))
        })
        .collect()
}

const MIB: u64 = 1 << 20;

/// A model with every kind of per-cgroup and host state the exporters read.
fn populated_model() -> Arc<Model> {
    use crate::readers::{MemoryEvents, MemorySample};
    let model = Arc::new(Model::default());
    let t0 = Instant::now();
    let path = "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
    model.admit(path, 7, std::path::Path::new("/x"));
    let events = MemoryEvents {
        low: Some(1),
        high: Some(1),
        max: Some(1),
        oom: Some(1),
        oom_kill: Some(1),
        oom_group_kill: Some(1),
    };
    for i in 0..20u64 {
        let sample = MemorySample {
            usage_bytes: (10 + 4 * i) * MIB,
            working_set_bytes: (10 + 4 * i) * MIB,
            inactive_file_bytes: Some(0),
            limit_bytes: Some(200 * MIB),
            high_bytes: Some(190 * MIB),
            swap_usage_bytes: Some(0),
            swap_limit_bytes: Some(0),
            events,
            ..Default::default()
        };
        model.observe_full(path, &sample, Some(0), t0 + Duration::from_secs(i));
    }
    let psi = crate::readers::Pressure {
        some: crate::readers::PsiLine { avg10: 1.0, avg60: 1.0, avg300: 1.0, total_us: 10 },
        full: Some(crate::readers::PsiLine { avg10: 1.0, avg60: 1.0, avg300: 1.0, total_us: 5 }),
    };
    model.observe_pressure(path, psi);
    model.observe_node(
        crate::model::NodeState {
            meminfo: Some(crate::readers::MemInfo { total_bytes: 1000 * MIB, available_bytes: 500 * MIB, swap_total_bytes: 0, swap_free_bytes: 0 }),
            pressure: Some(psi),
            forecast: None,
        },
        t0,
    );
    for i in 0..20u64 {
        let used = 500 * MIB + 20 * i * MIB;
        model.observe_node(
            crate::model::NodeState {
                meminfo: Some(crate::readers::MemInfo { total_bytes: 1000 * MIB, available_bytes: 1000 * MIB - used, swap_total_bytes: 0, swap_free_bytes: 0 }),
                pressure: Some(psi),
                forecast: None,
            },
            t0 + Duration::from_secs(i),
        );
    }
    model.update_forecasts(t0 + Duration::from_secs(19));
    model.record_kill(path, Constraint::Memcg, Some("hog"), t0);
    // A named container: the kill counter carries its names.
    model.remember_container(
        path,
        crate::readers::runtime::ContainerMeta {
            id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            name: Some("k8s_frontend_web".into()),
            image: Some("nginx:1.25".into()),
            pod: Some("web-7d9f".into()),
            namespace: Some("shop".into()),
            container: Some("frontend".into()),
            ..Default::default()
        },
    );
    let (workload, _) = model.workload(path);
    model.record_workload_kill(path, Constraint::Memcg, Some("hog"), &workload, Some(false), t0);
    model
}

/// One thread that stalled in reclaim (and in memstall), as the kernel map
/// would hold it, read into the model.
fn feed_reclaim_stalls(model: &Model) {
    let mut t = oomwatch_common::reclaim::ThreadStalls { born_ns: 1, memcg_id: 7, count: 1, total_ns: 1000, memstall_ns: 1000, ..Default::default() };
    t.buckets[3] = 1;
    let mut read = model.begin_reclaim_read();
    read.observe(10, &t, Instant::now(), |_| Some("/a".to_owned()));
    read.finish(true, Instant::now());
}

#[test]
fn golden_metric_families() {
    let model = populated_model();
    let mut has_forecast = false;
    model.for_each_cgroup(|_, c| has_forecast |= c.forecast.is_some());
    assert!(has_forecast && model.node().forecast.is_some(), "the example model must have forecasts");
    let alerts = crate::outputs::alerts::Alerts::new(Default::default(), &Default::default());
    let t = alerts.engine_for_tests().on_kill("/a", "hog (pid 1)", Instant::now(), std::time::SystemTime::now());
    assert!(!t.is_empty());
    let probes = crate::kernel::loader::PROBES.iter().map(crate::kernel::loader::ProbeReport::attached_for_tests).collect();
    let counters = Arc::new(crate::model::counters::DaemonCounters::default());
    let mut metrics = crate::outputs::metrics::Metrics::with_kernel_counters(model.clone(), Some(Box::new(|_| Some(1))), probes, counters, Some(alerts));
    metrics.register("push_failures", "push", prometheus_client::metrics::counter::Counter::<u64>::default());
    feed_reclaim_stalls(&model);
    metrics.register_collector(Box::new(crate::outputs::metrics::reclaim::StallCollector { model: model.clone(), memstall: true }));
    // The journal's series as a running daemon has them: a real journal in
    // a scratch directory.
    let state = std::env::temp_dir().join(format!("oomwatch-golden-journal-{}", std::process::id()));
    let journal = crate::outputs::journal::Journal::open(crate::outputs::journal::JournalConfig::new(&state)).expect("a journal in a scratch directory");
    metrics.register_collector(Box::new(crate::outputs::metrics::journal::JournalCollector { journal: Some(Arc::new(journal)) }));
    for openmetrics in [false, true] {
        let body = metrics.render(openmetrics);
        let name = if openmetrics { "metrics-openmetrics.txt" } else { "metrics-text.txt" };
        check_golden(name, &families(&body));
    }
    // Text 0.0.4 is converted in batches while encoding: byte for byte
    // what converting the finished OpenMetrics body gave.
    let (text, om) = (metrics.render(false), metrics.render(true));
    assert_eq!(text, crate::outputs::metrics::text::tests::converted_whole(&om));
    // A scrape sent as it is rendered gets the same bytes, in chunks.
    for (openmetrics, whole) in [(false, &text), (true, &om)] {
        for chunk_bytes in [1, 100, 4096] {
            let mut chunks = Vec::new();
            metrics.render_in_chunks(openmetrics, chunk_bytes, |c| chunks.push(c));
            assert!(chunks.len() > whole.len() / (chunk_bytes + 4096), "{} chunks of {chunk_bytes}", chunks.len());
            assert_eq!(&chunks.concat(), whole, "openmetrics {openmetrics}, chunks of {chunk_bytes}");
        }
    }
    let _ = std::fs::remove_dir_all(&state);
}
