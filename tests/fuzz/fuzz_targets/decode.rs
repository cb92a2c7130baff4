//! Ring-buffer records (`oomwatch::kernel::decode::decode`): whatever the bytes,
//! decode returns a value, never panics; a record it accepts re-encodes to
//! exactly the bytes it came from; a well-formed header of a known kind with
//! enough bytes always decodes; a kill's memory cgroup chain
//! (`memcg_chain`) stays within the record whatever its count says, and its
//! bytes never overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::kernel::decode::{DecodeError, Record, comm_str, decode, memcg_chain};
use oomwatch_common::{
    exit::VictimExitRecord,
    header::{RECORD_VERSION, RecordHeader, RecordKind},
    oom::{MEMCG_LEVELS, OomKillRecord, victim_field},
    reclaim::ReclaimStallRecord,
};

/// Ring-buffer records are at most a few hundred bytes; the buffer itself
/// hands over at most its size.
const MAX_INPUT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    check(data);

    // The same bytes behind a valid header of the kind the first byte picks.
    if let Some((&pick, rest)) = data.split_first() {
        let kind = [RecordKind::OomKill, RecordKind::VictimExit, RecordKind::ReclaimStall][usize::from(pick) % 3];
        let mut bytes = rest.to_vec();
        if bytes.len() >= size_of::<RecordHeader>() {
            bytes[0..4].copy_from_slice(&(kind as u32).to_ne_bytes());
            bytes[4..6].copy_from_slice(&RECORD_VERSION.to_ne_bytes());
            let need = size_of_kind(kind);
            match decode(&bytes) {
                Ok(_) => assert!(bytes.len() >= need),
                Err(e) => assert_eq!(e, DecodeError::TooShort { len: bytes.len(), need }),
            }
            check(&bytes);
        }
    }
});

fn size_of_kind(kind: RecordKind) -> usize {
    match kind {
        RecordKind::OomKill => size_of::<OomKillRecord>(),
        RecordKind::VictimExit => size_of::<VictimExitRecord>(),
        RecordKind::ReclaimStall => size_of::<ReclaimStallRecord>(),
    }
}

fn check(data: &[u8]) {
    match decode(data) {
        Ok(record) => {
            let (bytes, header, kind, comms): (&[u8], RecordHeader, RecordKind, Vec<&[u8]>) = match &record {
                Record::OomKill(r) => (
                    bytemuck::bytes_of(&**r),
                    r.header,
                    RecordKind::OomKill,
                    vec![&r.victim_comm[..], &r.trigger_comm[..]],
                ),
                Record::VictimExit(r) => (bytemuck::bytes_of(r), r.header, RecordKind::VictimExit, vec![&r.comm[..]]),
                Record::ReclaimStall(r) => (bytemuck::bytes_of(r), r.header, RecordKind::ReclaimStall, vec![&r.comm[..]]),
            };
            if let Record::OomKill(r) = &record {
                check_chain(r);
            }
            // Decoding is a copy: the record re-encodes to the bytes it was read from.
            assert_eq!(bytes, &data[..bytes.len()]);
            assert_eq!(bytes.len(), size_of_kind(kind));
            assert_eq!(header.kind, kind as u32);
            assert_eq!(header.version, RECORD_VERSION);
            for comm in comms {
                let s = comm_str(comm);
                assert!(!s.contains('\0'));
                // Each byte becomes at most one U+FFFD (3 bytes).
                assert!(s.len() <= 3 * comm.len());
            }
        }
        Err(e) => {
            assert_eq!(e.to_string().lines().count(), 1);
            match e {
                DecodeError::TooShort { len, need } => {
                    assert_eq!(len, data.len());
                    assert!(len < need);
                }
                DecodeError::UnknownKind(k) => {
                    assert_eq!(k.to_ne_bytes(), data[0..4]);
                    assert!(RecordKind::try_from(k).is_err());
                }
                DecodeError::Version { got } => {
                    assert_eq!(got.to_ne_bytes(), data[4..6]);
                    assert_ne!(got, RECORD_VERSION);
                }
            }
        }
    }
}

fn check_chain(r: &OomKillRecord) {
    assert!(r.memcg_levels().len() <= MEMCG_LEVELS);
    for page_size in [4096, 65536] {
        match memcg_chain(r, page_size) {
            None => assert_eq!(r.present & victim_field::MEMCG_CHAIN, 0),
            Some(chain) => {
                assert_eq!(chain.levels.len(), (r.memcg_levels as usize).min(MEMCG_LEVELS));
                for (level, raw) in chain.levels.iter().zip(r.memcg_levels()) {
                    assert_eq!(level.cgroup_id, raw.cgroup_id);
                    // Saturating, never wrapping.
                    assert!(level.usage_bytes >= raw.usage_pages);
                    assert!(level.limit_bytes.is_none_or(|l| l >= raw.max_pages));
                }
            }
        }
    }
}
