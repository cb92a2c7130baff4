//! What reading the kernel's OOM report costs: /dev/kmsg record parsing
//! (`readers::kmsg::parse_record_into`) plus the report assembler
//! (`readers::oom_report::OomAssembler`), per report, on the real reports
//! in tests/fixtures/kmsg/ (6.18 with cgroup v1: ~80 records a report;
//! 6.1 with cgroup v2: ~36). No I/O in the timed loop. Prints one JSON
//! object on stdout:
//!
//!   cargo bench -p oomwatch --bench kmsg_parse -- [--iters N]

use std::{path::PathBuf, time::Instant};

use oomwatch::readers::{
    kmsg::{KmsgRecord, parse_record_into, split_records},
    oom_report::{OomAssembler, OomOutput},
};

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figure {
    us_per_report: f64,
    us_per_record: f64,
    records_per_report: f64,
}

/// Feeds the fixture `iters` times (sequence numbers shifted each round so
/// the assembler sees one unbroken log) and times the whole.
fn time(name: &str, iters: u32) -> Figure {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kmsg").join(format!("{name}.kmsg"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let raws: Vec<&[u8]> = split_records(&text).collect();
    let mut rec = KmsgRecord::default();
    let mut a = OomAssembler::new(4096);
    let mut reports = 0u64;
    let mut seq_base = 0u64;
    let first_seq = {
        parse_record_into(raws[0], &mut rec).expect("fixture");
        rec.seq
    };
    let run = |a: &mut OomAssembler, rec: &mut KmsgRecord, seq_base: u64, reports: &mut u64| {
        for raw in &raws {
            parse_record_into(raw, rec).expect("fixture");
            rec.seq = rec.seq - first_seq + seq_base;
            if let Some(OomOutput::Kill(k)) = a.push(rec)
                && k.report.is_some()
            {
                *reports += 1;
            }
        }
    };
    // Warm up, then measure.
    run(&mut a, &mut rec, seq_base, &mut reports);
    seq_base += raws.len() as u64;
    reports = 0;
    let started = Instant::now();
    for _ in 0..iters {
        run(&mut a, &mut rec, seq_base, &mut reports);
        seq_base += raws.len() as u64;
    }
    let us = started.elapsed().as_secs_f64() * 1e6;
    assert!(reports > 0, "{name}: no report was assembled");
    assert_eq!(a.stats().gaps, 0);
    let records = raws.len() as f64 * f64::from(iters);
    Figure { us_per_report: us / reports as f64, us_per_record: us / records, records_per_report: records / reports as f64 }
}

fn json(f: &Figure) -> serde_json::Value {
    serde_json::json!({
        "us_per_report": (f.us_per_report * 100.0).round() / 100.0,
        "us_per_record": (f.us_per_record * 1000.0).round() / 1000.0,
        "records_per_report": f.records_per_report,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters = arg(&args, "--iters", 2000).max(1);
    let v1_618 = time("6.18/plain", iters);
    let v2_61 = time("6.1/plain", iters);
    let group = time("6.1/group", iters);
    let storm = time("6.18/storm", iters / 10 + 1);
    let out = serde_json::json!({
        "bench": "kmsg_parse",
        "iters": iters,
        "report_6_18_v1": json(&v1_618),
        "report_6_1_v2": json(&v2_61),
        "group_kill_6_1": json(&group),
        "storm_6_18": json(&storm),
    });
    println!("{out}");
}
