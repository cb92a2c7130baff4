//! /dev/kmsg records and the kernel's OOM report
//! (`oomwatch::readers::kmsg::parse_record`, `split_records`,
//! `readers::oom_report::OomAssembler`): never panic; at most one output
//! per record; every bound holds; a report is only ever attached to the
//! kill whose pid (and comm) its summary names, or to a member of that
//! kill's memory.oom.group listed in its task table; the kernel's escapes
//! round-trip.
//!
//! An even first byte: the input is stored kmsg records (the seeds are real
//! captures). An odd one: the rest is one kernel message per line with
//! consecutive sequence numbers, so that the fuzzer reaches the
//! assembler's states without having to get record headers right.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::{
    kmsg::{KmsgRecord, MAX_RECORD_BYTES, parse_record, split_records, unescape_into},
    oom_report::{MAX_GFP_FLAGS, MAX_NAME_BYTES, MAX_STAT_KEYS, MAX_TASKS, OomAssembler, OomOutput, VictimRole},
};

/// The largest seed (a 6.18 storm of 15 kills) is 52 KiB.
const MAX_INPUT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT || data.is_empty() {
        return;
    }
    escapes_round_trip(&data[..data.len().min(MAX_RECORD_BYTES / 4 - 16)]);

    let mut assembler = OomAssembler::new(4096);
    let mut kills = 0u64;
    let mut check = |rec: &KmsgRecord, assembler: &mut OomAssembler| {
        // One record, at most one output (push returns an Option).
        let Some(out) = assembler.push(rec) else { return };
        if let OomOutput::Kill(k) = out {
            kills += 1;
            assert!(k.victim.comm.len() <= 3 * MAX_NAME_BYTES);
            assert_eq!(k.report.is_some(), k.missing.is_none(), "a report, or why not: {k:?}");
            let Some(r) = &k.report else { return };
            match &k.role {
                VictimRole::Chosen => {
                    assert_eq!(r.summary.pid, k.victim.pid, "a report for another pid: {k:?}");
                    assert_eq!(r.summary.task, k.victim.comm, "a report for another comm: {k:?}");
                    if let Some(uid) = k.victim.uid {
                        assert_eq!(r.summary.uid, uid);
                    }
                }
                VictimRole::GroupMember { .. } => {
                    assert!(r.tasks.iter().any(|t| t.pid == k.victim.pid), "a member the table does not list: {k:?}");
                }
            }
            assert!(r.tasks.len() <= MAX_TASKS && r.stats.len() <= MAX_STAT_KEYS && r.gfp_flags.len() <= MAX_GFP_FLAGS);
            assert!(r.tasks.iter().all(|t| t.name.len() <= 3 * MAX_NAME_BYTES));
            for name in [&r.summary.oom_memcg, &r.summary.task_memcg, &r.summary.cpuset, &r.stats_cgroup].into_iter().flatten() {
                assert!(name.len() <= 3 * MAX_NAME_BYTES);
            }
            if let (Some(oom), Some(task)) = (&r.summary.oom_memcg, &r.summary.task_memcg) {
                assert!(task == oom || oom == "/" || task.starts_with(&format!("{oom}/")), "task_memcg {task:?} outside oom_memcg {oom:?}");
            }
        }
    };

    if data[0] & 1 == 0 {
        for raw in split_records(data) {
            match parse_record(raw) {
                Ok(rec) => {
                    assert!(rec.message.len() <= raw.len());
                    assert!(rec.level <= 7);
                    check(&rec, &mut assembler);
                }
                Err(e) => assert_eq!(e.to_string().lines().count(), 1),
            }
        }
    } else {
        for (seq, line) in data[1..].split(|&b| b == b'\n').enumerate() {
            let mut message = Vec::new();
            unescape_into(line, &mut message);
            let rec = KmsgRecord { facility: 0, level: 6, seq: seq as u64, ts_usec: seq as u64 * 100, continuation: line.first() == Some(&b'\t'), message, dict: Vec::new() };
            check(&rec, &mut assembler);
        }
    }
    let stats = assembler.stats();
    assert_eq!(stats.kills, kills);
    assert_eq!(stats.kills, stats.kills_with_report + stats.kills_rate_limited + stats.kills_records_lost + stats.kills_before_first_header + stats.kills_not_this_victim + stats.group_members_unverified);
});

/// The kernel's escaping of a message, undone by parse_record, gives the
/// bytes back.
fn escapes_round_trip(message: &[u8]) {
    let mut raw = b"6,1,2,-;".to_vec();
    for &b in message {
        if b < b' ' || b >= 127 || b == b'\\' {
            raw.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            raw.push(b);
        }
    }
    raw.push(b'\n');
    let rec = parse_record(&raw).expect("a well-formed record");
    assert_eq!(rec.message, message);
}
