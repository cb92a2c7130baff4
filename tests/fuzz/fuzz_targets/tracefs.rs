//! tracefs `format` files (`parse_format`, `mark_victim_layout`,
//! `reclaim_fields`): never panic; every field parsed has an identifier for
//! a name; the offsets handed to the kernel programs are the ones the
//! format gives, with sizes the programs can read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::kernel::tracefs::{mark_victim_layout, parse_format, reclaim_fields};
use oomwatch_common::tracepoint::{TpField, comm_encoding};

/// Real format files are about 1 KiB.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    // The daemon reads format files with read_to_string: non-UTF-8 never gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let format = match parse_format(text) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    assert!(!format.fields.is_empty());
    for f in &format.fields {
        assert!(!f.name.is_empty());
        assert!(f.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{:?}", f.name);
        assert!(!f.name.as_bytes()[0].is_ascii_digit());
    }

    let same = |tp: TpField, name: &str| {
        let f = format.field(name).expect("a present field comes from the format");
        assert_eq!((tp.offset, tp.size), (f.offset, f.size), "{name}");
        f
    };
    if let Ok(layout) = mark_victim_layout(&format) {
        let pid = same(layout.pid, "pid");
        assert!(matches!(pid.size, 4 | 8));
        for (tp, name) in [
            (layout.total_vm, "total_vm"),
            (layout.anon_rss, "anon_rss"),
            (layout.file_rss, "file_rss"),
            (layout.shmem_rss, "shmem_rss"),
            (layout.uid, "uid"),
            (layout.pgtables, "pgtables"),
            (layout.oom_score_adj, "oom_score_adj"),
        ] {
            if tp.is_present() {
                let f = same(tp, name);
                assert!(!f.data_loc && matches!(f.size, 1 | 2 | 4 | 8), "{name}");
            } else {
                assert_eq!(tp, TpField::ABSENT);
            }
        }
        match layout.comm_encoding {
            comm_encoding::ABSENT => assert_eq!(layout.comm, TpField::ABSENT),
            comm_encoding::INLINE => assert_eq!(same(layout.comm, "comm").size, 16),
            comm_encoding::DATA_LOC => assert!(same(layout.comm, "comm").data_loc),
            other => panic!("unknown comm encoding {other}"),
        }
    }
    let (order, nr_reclaimed) = reclaim_fields(Some(&format), Some(&format));
    if order.is_present() {
        assert_eq!(same(order, "order").size, 4);
    }
    if nr_reclaimed.is_present() {
        assert!(matches!(same(nr_reclaimed, "nr_reclaimed").size, 4 | 8));
    }
});
