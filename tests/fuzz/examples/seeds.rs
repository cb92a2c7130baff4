//! Writes the seeds that cannot be copied from a running host: ring-buffer
//! records (bytes, as the kernel programs write them) and the event socket's
//! JSON (as the daemon writes it). Run once after a record or event changes:
//!
//!     cargo +nightly run --manifest-path tests/fuzz/Cargo.toml --example seeds -- tests/fuzz/corpus
//!
//! The other seeds are files of this machine (see tests/fuzz/README.md).

use std::{fs, path::Path};

use oomwatch::wire::{ActiveAlert, AlertKey, AlertName, AlertState, AlertsReport, Severity, Transition};
use oomwatch::wire::*;
use oomwatch::wire::{Constraint, Ramp};
use oomwatch_common::{
    COMM_LEN,
    exit::VictimExitRecord,
    header::{RecordHeader, RecordKind},
    oom::{MEMCG_LEVELS, MemcgLevel, OomKillRecord, memcg_chain, victim_field},
    reclaim::ReclaimStallRecord,
};

fn comm(s: &str) -> [u8; COMM_LEN] {
    let mut c = [0; COMM_LEN];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = std::env::args().nth(1).expect("usage: seeds CORPUS_DIR");
    let root = Path::new(&root);

    let decode = root.join("decode");
    // The victim's memcg (no limit of its own) under a parent at its 64 MiB
    // limit, then two unlimited ancestors, as a v1 host reads them.
    let mut memcgs = [MemcgLevel::default(); MEMCG_LEVELS];
    let unlimited = i64::MAX as u64 / 4096;
    memcgs[0] = MemcgLevel { cgroup_id: 7777, usage_pages: 16_300, max_pages: unlimited, failcnt: 0, oom_events: 0 };
    memcgs[1] = MemcgLevel { cgroup_id: 7770, usage_pages: 16_384, max_pages: 16_384, failcnt: 412, oom_events: 1 };
    memcgs[2] = MemcgLevel { cgroup_id: 77, usage_pages: 90_000, max_pages: unlimited, failcnt: 0, oom_events: 0 };
    memcgs[3] = MemcgLevel { cgroup_id: 7, usage_pages: 400_000, max_pages: unlimited, failcnt: 0, oom_events: 0 };
    let oom = OomKillRecord {
        header: RecordHeader::new(RecordKind::OomKill, 1_234_567_890),
        present: victim_field::PID
            | victim_field::COMM
            | victim_field::ANON_RSS
            | victim_field::TASK
            | victim_field::OOM_CONTROL
            | victim_field::MEMCG_CHAIN,
        memcg_chain: memcg_chain::COMPLETE | memcg_chain::FAILCNT | memcg_chain::OOM_EVENTS,
        memcg_levels: 4,
        memcgs,
        victim_pid: 4242,
        victim_tgid: 4242,
        oom_score_adj: 1000,
        total_vm_kb: 1 << 21,
        anon_rss_kb: 1 << 20,
        victim_comm: comm("memhog"),
        victim_memcg_id: 7777,
        victim_cgroup_id: 8888,
        trigger_pid: 4243,
        trigger_tgid: 4242,
        trigger_comm: comm("memhog-worker"),
        oc_totalpages: 262_144,
        oc_points: 1999,
        oc_gfp_mask: 0xcc0,
        ..Default::default()
    };
    write(&decode, "oom_kill", bytemuck::bytes_of(&oom));
    // The ring buffer rounds records up to 8 bytes; trailing bytes are allowed.
    let mut padded = bytemuck::bytes_of(&oom).to_vec();
    padded.extend_from_slice(&[0xAA; 8]);
    write(&decode, "oom_kill_padded", &padded);
    // A chain count past the array: read as the array, never beyond.
    let overflow = OomKillRecord { memcg_levels: u32::MAX, ..oom };
    write(&decode, "oom_kill_chain_count_overflow", bytemuck::bytes_of(&overflow));
    let exit = VictimExitRecord {
        header: RecordHeader::new(RecordKind::VictimExit, 1_237_000_000),
        pid: 4242,
        tgid: 4242,
        marked_ktime_ns: 1_234_567_890,
        memcg_id: 7777,
        cgroup_id: 8888,
        comm: comm("memhog"),
    };
    write(&decode, "victim_exit", bytemuck::bytes_of(&exit));
    let stall = ReclaimStallRecord {
        header: RecordHeader::new(RecordKind::ReclaimStall, 1_240_000_000),
        pid: 99,
        tgid: 98,
        comm: comm("postgres"),
        memcg_id: 7777,
        cgroup_id: 8888,
        duration_ns: 150_000_000,
        nr_reclaimed: 32,
        reclaim_kind: 1,
        order: 0,
        suppressed: 3,
        _pad: 0,
    };
    write(&decode, "reclaim_stall", bytemuck::bytes_of(&stall));

    let json = root.join("event_json");
    let event = |body, ktime_ns| Event {
        body,
        time: "2026-11-22T05:46:54.250123Z".into(),
        cgroup: "/kubepods/burstable/pod1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b/3c4d".into(),
        ktime_ns,
        seq: 17,
    };
    let events = [
        (
            "oom_kill",
            event(
                EventBody::OomKill(Box::new(OomKill {
                    victim: Victim {
                        pid: 4242,
                        tgid: Some(4242),
                        comm: Some("memhog".into()),
                        uid: Some(0),
                        oom_score_adj: Some(1000),
                        total_vm_bytes: Some(2 << 30),
                        anon_rss_bytes: Some(1 << 30),
                        file_rss_bytes: Some(4096),
                        shmem_rss_bytes: Some(0),
                        pgtables_bytes: Some(2 << 20),
                    },
                    trigger: Trigger { pid: 4242, tid: 4243, comm: "memhog-worker".into(), cgroup: Some("/a".into()) },
                    attribution: Attribution::Exact,
                    constraint: Constraint::Memcg,
                    limit_cgroup: Some("/kubepods/burstable".into()),
                    limit_cgroup_usage_bytes: Some(1 << 30),
                    limit_bytes: Some(1 << 30),
                    workload: Workload {
                        unit: None,
                        container_id: Some("3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809".into()),
                        runtime: None,
                        pod_uid: Some("1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b".into()),
                        qos: Some("burstable".into()),
                        ..Default::default()
                    },
                    main_process: None,
                    history: Some(Ramp {
                        seconds_ago: vec![2, 1, 0],
                        usage_bytes: vec![1 << 29, 3 << 28, 1 << 30],
                        working_set_bytes: vec![1 << 29, 3 << 28, 1 << 30],
                        pressure_some_avg10: vec![0.5, 12.25, 40.0],
                        limit_bytes: None,
                    }),
                    oom_control: Some(OomControl {
                        memcg: Some("/kubepods/burstable".into()),
                        totalpages: 262_144,
                        points: 1999,
                        constraint: Some("memcg".into()),
                        gfp_mask: "0xcc0".into(),
                        order: 0,
                    }),
                    unavailable: vec!["oom_control".into()],
                    cgroup_id: Some(7777),
                    cgroup_from: None,
                    exit_latency_ms: Some(2.8),
                    why: None,
                    kernel_report: None,
                    incident: None,
                    throttled_for_s: None,
                    top_consumers: Vec::new(),
                    limit_history: None,
                    composition: None,
                })),
                Some(1_234_567_890),
            ),
        ),
        (
            "victim_exit",
            event(EventBody::VictimExit(VictimExit { pid: 4242, comm: "memhog".into(), exit_latency_ms: 2.8 }), Some(1_237_000_000)),
        ),
        (
            "pressure",
            event(
                EventBody::Pressure(PressureEvent {
                    trigger: "some 150000 1000000".into(),
                    some_avg10: Some(12.5),
                    full_avg10: Some(3.0),
                    some_total_us: Some(83_613_831),
                    full_total_us: Some(57_410_938),
                }),
                None,
            ),
        ),
        (
            "alert",
            event(
                EventBody::Alert(AlertEvent {
                    alert: AlertName::OomForecast,
                    severity: Severity::Critical,
                    state: AlertState::Firing,
                    value: Some(12.0),
                    summary: "working set reaches the limit in 12s".into(),
                    firing_since: Some("2026-11-22T05:46:50Z".into()),
                    workload: None,
                }),
                None,
            ),
        ),
        (
            "unobserved_kills",
            event(EventBody::UnobservedKills(UnobservedKills { count: 1, kernel_total: 5, observed_total: 4 }), None),
        ),
        (
            "reclaim_stall",
            event(
                EventBody::ReclaimStall(ReclaimStall {
                    pid: 98,
                    tid: 99,
                    comm: "postgres".into(),
                    duration_ms: 150.5,
                    reclaim_kind: ReclaimKindName::Memcg,
                    nr_reclaimed: Some(32),
                    order: Some(0),
                    suppressed: 3,
                }),
                Some(1_240_000_000),
            ),
        ),
        ("lagged", event(EventBody::Lagged { dropped: 3 }, None)),
    ];
    for (name, e) in events {
        write(&json, &format!("event-{name}.json"), serde_json::to_string(&e).unwrap().as_bytes());
    }
    for (name, r) in [
        ("request-tail", Request { op: RequestOp::Tail, since_secs: Some(600.0), ..Request::default() }),
        ("request-tail-filtered", Request { op: RequestOp::Tail, since_seq: Some(7), kinds: vec!["oom_kill".into(), "no_such_kind".into()], cgroup: Some("/kubepods/*[".into()), ..Request::default() }),
        ("request-status", Request { op: RequestOp::Status, ..Request::default() }),
        ("request-alerts", Request { op: RequestOp::Alerts, ..Request::default() }),
    ] {
        write(&json, &format!("{name}.json"), serde_json::to_string(&r).unwrap().as_bytes());
    }
    let status = r#"{"time":"2026-11-22T05:46:54Z","cgroups":{"tracked":2,"removed_in_grace":1,"excluded_filter":0,"excluded_cap":0},"kills_total":3,"rows":[{"cgroup":"/a","usage_bytes":1073741824,"working_set_bytes":1000000000,"limit_bytes":1073741824,"headroom_percent":6.9,"oom_eta_seconds":12.5,"pressure_some_avg10":40.0,"kills":3,"unit":"a.service"}],"top_stallers":[{"pid":98,"comm":"postgres","cgroup":"/a","count":4,"total_ms":600.5,"max_ms":150.5,"memstall_ms":700.0}]}"#;
    let status: StatusReport = serde_json::from_str(status).unwrap();
    write(&json, "status.json", serde_json::to_string(&status).unwrap().as_bytes());
    let key = AlertKey { alert: AlertName::MemoryPressure, severity: Severity::Warning, cgroup: "/".into() };
    let alerts = AlertsReport {
        time: "2026-11-22T05:46:54Z".into(),
        active: vec![ActiveAlert {
            key: key.clone(),
            state: AlertState::Pending,
            since: "2026-11-22T05:46:53Z".into(),
            value: Some(11.5),
            summary: "host PSI some avg10 11.5%".into(),
        }],
        history: vec![Transition {
            key,
            state: AlertState::Resolved,
            value: None,
            summary: "recovered".into(),
            at: "2026-11-22T05:40:00Z".into(),
            firing_since: Some("2026-11-22T05:30:00Z".into()),
            workload: None,
            description: None,
        }],
    };
    write(&json, "alerts.json", serde_json::to_string(&alerts).unwrap().as_bytes());
}
