//! What shipping an event costs, per output: building the [`Record`]
//! (JSON and human line, once per event for every output), encoding it for
//! journald, for OTLP (one event, and a batch of 100, protobuf and JSON),
//! appending it to the rotated file, and sending it to a real
//! systemd-journald (a private instance, as root; `null` with the reason
//! otherwise). Prints one JSON object on stdout:
//!
//!   cargo bench -p oomwatch --bench shipping -- [--iters N] [--journald-entries N] [--drain-events N]
//!
//! `backlog_drain`: N kills waiting in a journal (a receiver was down),
//! then the daemon's own delivery workers (outputs::shipping) with a file
//! sink and an OTLP sink (to a local HTTP server that takes everything),
//! each timed until its cursor reaches the last seq: events per second.
//!
//! The event is a realistic kill (victim, trigger, workload, 60 s of
//! history: about 2 KiB of JSON).

use std::{hint::black_box, time::Instant};

use oomwatch::{
    wire::{Attribution, Constraint, Event, EventBody, OomKill, Ramp, Trigger, Victim, Workload},
    outputs::{
        delivery::{HostIdentity, Record},
        file::{FileConfig, Fsync, RotatingFile},
        journald::{self, Journald, JournaldConfig},
        otlp::{Encoding, OtlpConfig, OtlpExporter},
    },
};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn kill(seq: u64) -> Event {
    Event {
        body: EventBody::OomKill(Box::new(OomKill {
            victim: Victim {
                pid: 19282,
                tgid: Some(19282),
                comm: Some("python3".into()),
                uid: Some(1000),
                oom_score_adj: Some(984),
                total_vm_bytes: Some(1 << 30),
                anon_rss_bytes: Some(70 << 20),
                file_rss_bytes: Some(2 << 20),
                shmem_rss_bytes: Some(0),
                pgtables_bytes: Some(300 << 10),
            },
            trigger: Trigger { pid: 19282, tid: 19290, comm: "python3".into(), cgroup: None },
            attribution: Attribution::Exact,
            constraint: Constraint::Memcg,
            limit_cgroup: Some("/kubepods/burstable/pod1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b".into()),
            limit_cgroup_usage_bytes: Some(72 << 20),
            limit_bytes: Some(72 << 20),
            workload: Workload {
                unit: None,
                container_id: Some("3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809".into()),
                runtime: Some("containerd".into()),
                pod_uid: Some("1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b".into()),
                qos: Some("burstable".into()),
                ..Default::default()
            },
            main_process: None,
            history: Some(Ramp {
                seconds_ago: (0..60).rev().collect(),
                usage_bytes: (0..60u64).map(|i| (10 + i) << 20).collect(),
                working_set_bytes: (0..60u64).map(|i| (9 + i) << 20).collect(),
                pressure_some_avg10: Vec::new(),
                limit_bytes: None,
            }),
            oom_control: None,
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
        time: "2026-11-22T05:46:54.250123Z".into(),
        cgroup: "/kubepods/burstable/pod1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b/3f1b2c4d5e6f".into(),
        ktime_ns: Some(1_234_567_890),
        seq,
    }
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Microseconds per call, after one warm-up call: this thread's CPU time
/// (what the work costs; on a machine shared with other jobs the wall time
/// also counts waiting for a core) and the wall time.
fn micros(iters: u64, mut f: impl FnMut()) -> serde_json::Value {
    f();
    let (wall, cpu) = (Instant::now(), thread_cpu_seconds());
    for _ in 0..iters {
        f();
    }
    let per = |s: f64| s * 1e6 / iters as f64;
    serde_json::json!({ "cpu_us": per(thread_cpu_seconds() - cpu), "wall_us": per(wall.elapsed().as_secs_f64()) })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters = arg(&args, "--iters", 20_000).max(1);
    let journald_entries = arg(&args, "--journald-entries", 2_000).max(1);
    let host = HostIdentity::read();
    let event = kill(1);
    let record = Record::from_event(&event, &host);
    let records_100: Vec<Record> = (0..100).map(|s| Record::from_event(&kill(s), &host)).collect();
    let now = std::time::SystemTime::now();

    let record_us = micros(iters, || {
        black_box(Record::from_event(black_box(&event), &host));
    });
    let journald_us = micros(iters, || {
        black_box(journald::encode(black_box(&record)));
    });
    let exporter = |encoding| {
        let mut c = OtlpConfig::new("http://127.0.0.1:4318");
        c.encoding = encoding;
        OtlpExporter::new(&c, &host, oomwatch::outputs::http_client::HttpClient::default()).expect("exporter")
    };
    let (pb, js) = (exporter(Encoding::Protobuf), exporter(Encoding::Json));
    let one = std::slice::from_ref(&record);
    let otlp_pb_us = micros(iters, || {
        black_box(pb.encode(black_box(one), now));
    });
    let otlp_json_us = micros(iters / 4, || {
        black_box(js.encode(black_box(one), now));
    });
    let otlp_pb_100_us = micros(iters / 100, || {
        black_box(pb.encode(black_box(&records_100), now));
    });
    let otlp_json_100_us = micros(iters / 400 + 1, || {
        black_box(js.encode(black_box(&records_100), now));
    });
    let sizes = (journald::encode(&record).len(), pb.encode(&records_100, now).len(), js.encode(&records_100, now).len());

    let dir = std::env::temp_dir().join(format!("oomwatch-bench-shipping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file_us = |fsync| {
        let mut f = RotatingFile::open(FileConfig { path: dir.join("events.json"), max_bytes: 10 << 20, backups: 2, fsync }).expect("open");
        let n = if fsync == Fsync::Batch { iters / 20 } else { iters };
        micros(n.max(1), || {
            black_box(f.write_batch(black_box(one)));
        })
    };
    let (file_never_us, file_batch_us) = (file_us(Fsync::Never), file_us(Fsync::Batch));
    let _ = std::fs::remove_dir_all(&dir);

    let journald_send = journald_send(&record, journald_entries);
    let drain = drain(arg(&args, "--drain-events", 20_000).max(1));
    let out = serde_json::json!({
        "bench": "shipping",
        "iters": iters,
        "event_json_bytes": record.line.len(),
        "record_build_us": record_us,
        "journald_encode_us": journald_us,
        "journald_entry_bytes": sizes.0,
        "otlp_protobuf_encode_1_us": otlp_pb_us,
        "otlp_json_encode_1_us": otlp_json_us,
        "otlp_protobuf_encode_100_us": otlp_pb_100_us,
        "otlp_json_encode_100_us": otlp_json_100_us,
        "otlp_protobuf_100_bytes": sizes.1,
        "otlp_json_100_bytes": sizes.2,
        "file_append_us": file_never_us,
        "file_append_fdatasync_us": file_batch_us,
        "file_dir": std::env::temp_dir(),
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "journald_send": journald_send,
        "backlog_drain": drain,
    });
    println!("{out}");
}

/// Sends `n` entries to a private systemd-journald and waits until all are
/// stored: the send cost per entry, and the rate journald stores them at.
fn journald_send(record: &Record, n: u64) -> serde_json::Value {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return serde_json::json!({ "skipped": "needs root (journald in a private mount namespace)" });
    }
    let jd = oomwatch_tests::journald::Journald::start();
    let out = Journald::new(&JournaldConfig { socket: jd.socket().to_path_buf(), timeout: std::time::Duration::from_secs(5) }).expect("socket");
    let entry = journald::encode(record);
    let (start, cpu) = (Instant::now(), thread_cpu_seconds());
    for _ in 0..n {
        out.send_entry(&entry).expect("journald takes the entry");
    }
    let (send_s, send_cpu_s) = (start.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu);
    let stored = jd.wait_for(&[("SYSLOG_IDENTIFIER", "oomwatch")], n as usize, std::time::Duration::from_secs(120)).len();
    let total_s = start.elapsed().as_secs_f64();
    serde_json::json!({
        "entries": n,
        "stored": stored,
        "send_us_per_entry": send_s * 1e6 / n as f64,
        "send_cpu_us_per_entry": send_cpu_s * 1e6 / n as f64,
        // Until journalctl finds them all (it is polled every 50 ms).
        "all_stored_after_s": total_s,
    })
}

/// An HTTP/1.1 server on loopback that reads each request and answers 200
/// with an empty body (an empty ExportLogsServiceResponse): the receiver
/// costs next to nothing, so the rate is oomwatch's.
fn accept_everything() -> u16 {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if writer.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn drain(n: u64) -> serde_json::Value {
    use std::{sync::Arc, time::Duration};

    use oomwatch::outputs::{
        journal::{Journal, JournalConfig},
        shipping,
    };
    let dir = std::env::temp_dir().join(format!("oomwatch-bench-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut jc = JournalConfig::new(dir.join("state"));
    jc.queue_capacity = (n as usize).max(jc.queue_capacity);
    let journal = Arc::new(Journal::open(jc).expect("journal"));
    for _ in 0..n {
        journal.append_event(&mut kill(0));
    }
    assert!(journal.flush(Duration::from_secs(120)), "journal flush");
    let last = journal.last_seq();
    let port = accept_everything();
    let toml = format!(
        "[sinks.journald]\nenabled = false\n[[sinks.otlp]]\nendpoint = \"http://127.0.0.1:{port}\"\nstart_at = \"beginning\"\n[[sinks.file]]\npath = \"{}\"\nstart_at = \"beginning\"\nmax_size_mib = 64\n",
        dir.join("events.json").display()
    );
    let config = oomwatch::config::Config::parse(&toml, "bench").expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut out = serde_json::Map::new();
    for sink in shipping::build(&config.sinks, &journal, runtime.handle()) {
        let (name, stats) = (sink.name().to_owned(), sink.stats.clone());
        let start = Instant::now();
        std::thread::spawn(move || sink.run());
        while stats.cursor.load(std::sync::atomic::Ordering::Relaxed) < last {
            assert!(start.elapsed() < Duration::from_secs(300), "{name} did not drain");
            std::thread::sleep(Duration::from_millis(5));
        }
        let s = start.elapsed().as_secs_f64();
        out.insert(name, serde_json::json!({ "events": last, "seconds": s, "events_per_s": last as f64 / s }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::Value::Object(out)
}
