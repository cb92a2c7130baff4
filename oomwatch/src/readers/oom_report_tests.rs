use super::*;
use crate::readers::kmsg::{parse_record, split_records};

fn feed(text: &[u8]) -> (Vec<OomOutput>, AssemblerStats) {
    let mut a = OomAssembler::new(4096);
    let mut out = Vec::new();
    for raw in split_records(text) {
        let rec = parse_record(raw).expect("fixture records are kmsg");
        out.extend(a.push(&rec));
    }
    (out, *a.stats())
}

#[test]
fn dump_fixture() {
    let Ok(path) = std::env::var("KMSG_DUMP") else { return };
    let (out, stats) = feed(&std::fs::read(path).unwrap());
    for o in &out {
        match o {
            OomOutput::Kill(k) => {
                println!("KILL seq={} pid={} comm={:?} role={:?} missing={:?} victim={:?}", k.seq, k.victim.pid, k.victim.comm, k.role, k.missing, k.victim);
                if let Some(r) = &k.report {
                    println!("   trigger={:?} gfp={:#x} {:?} order={} memcg={:?}", r.trigger, r.gfp_mask, r.gfp_flags, r.order, r.memcg);
                    println!("   stats_cgroup={:?} stats={} tasks={:?}", r.stats_cgroup, r.stats.len(), r.tasks);
                    println!("   summary={:?} cut={:?}", r.summary, r.cut);
                }
            }
            other => println!("{other:?}"),
        }
    }
    println!("{}", serde_json::to_string_pretty(&stats).unwrap());
}
