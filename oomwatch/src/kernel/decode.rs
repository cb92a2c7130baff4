//! Ring-buffer bytes to typed records, with length and version checks.
//! Nothing here trusts the buffer: short, unknown or garbled input is an
//! error value, never a panic or an unchecked transmute.

use bytemuck::Pod;
use oomwatch_common::{
    exit::VictimExitRecord,
    header::{RECORD_VERSION, RecordHeader, RecordKind},
    oom::OomKillRecord,
    reclaim::ReclaimStallRecord,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    OomKill(OomKillRecord),
    VictimExit(VictimExitRecord),
    ReclaimStall(ReclaimStallRecord),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} bytes its kind needs")]
    TooShort { len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record version {got}, this daemon reads version {RECORD_VERSION}")]
    Version { got: u16 },
}

fn read<T: Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    let head = bytes.get(..need).ok_or(DecodeError::TooShort { len: bytes.len(), need })?;
    Ok(bytemuck::pod_read_unaligned(head))
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: RecordHeader = read(bytes)?;
    let kind = RecordKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
    if header.version != RECORD_VERSION {
        return Err(DecodeError::Version { got: header.version });
    }
    Ok(match kind {
        RecordKind::OomKill => Record::OomKill(read(bytes)?),
        RecordKind::VictimExit => Record::VictimExit(read(bytes)?),
        RecordKind::ReclaimStall => Record::ReclaimStall(read(bytes)?),
    })
}

/// A kernel `comm` (NUL-padded, not necessarily UTF-8) as a string.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::oom::victim_field;

    fn oom_record() -> OomKillRecord {
        let mut r = OomKillRecord {
            header: RecordHeader::new(RecordKind::OomKill, 42),
            present: victim_field::PID | victim_field::COMM,
            victim_pid: 1234,
            anon_rss_kb: 65536,
            ..Default::default()
        };
        r.victim_comm[..3].copy_from_slice(b"hog");
        r
    }

    #[test]
    fn round_trips_every_kind() {
        let oom = oom_record();
        assert_eq!(decode(bytemuck::bytes_of(&oom)), Ok(Record::OomKill(oom)));
        let exit = VictimExitRecord {
            header: RecordHeader::new(RecordKind::VictimExit, 50),
            pid: 1234,
            marked_ktime_ns: 42,
            ..Default::default()
        };
        assert_eq!(decode(bytemuck::bytes_of(&exit)), Ok(Record::VictimExit(exit)));
        let stall = ReclaimStallRecord {
            header: RecordHeader::new(RecordKind::ReclaimStall, 7),
            duration_ns: 150_000_000,
            ..Default::default()
        };
        assert_eq!(decode(bytemuck::bytes_of(&stall)), Ok(Record::ReclaimStall(stall)));
    }

    #[test]
    fn accepts_trailing_padding_from_the_ring_buffer() {
        let mut bytes = bytemuck::bytes_of(&oom_record()).to_vec();
        bytes.extend_from_slice(&[0xAA; 8]);
        assert!(matches!(decode(&bytes), Ok(Record::OomKill(_))));
    }

    #[test]
    fn rejects_truncated_records() {
        let oom = oom_record();
        let bytes = bytemuck::bytes_of(&oom);
        for len in [0, 1, 15, 16, 100, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..len]), Err(DecodeError::TooShort { .. })),
                "len {len} decoded"
            );
        }
    }

    #[test]
    fn rejects_unknown_kinds_and_versions() {
        let mut oom = oom_record();
        oom.header.kind = 99;
        assert_eq!(decode(bytemuck::bytes_of(&oom)), Err(DecodeError::UnknownKind(99)));
        let mut oom = oom_record();
        oom.header.version = RECORD_VERSION + 1;
        assert!(matches!(decode(bytemuck::bytes_of(&oom)), Err(DecodeError::Version { .. })));
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator: no dependency needed for this.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn comm_stops_at_nul_and_survives_invalid_utf8() {
        assert_eq!(comm_str(b"hog\0\0\0\0\0\0\0\0\0\0\0\0\0"), "hog");
        assert_eq!(comm_str(b"abcdefghijklmnop"), "abcdefghijklmnop");
        assert_eq!(comm_str(&[0xff, b'a', 0]), "\u{fffd}a");
    }
}
