//! Ring-buffer bytes to typed records, with length and version checks.
//! Nothing here trusts the buffer: short, unknown or garbled input is an
//! error value, never a panic or an unchecked transmute.

use bytemuck::Pod;
use oomwatch_common::{
    exit::VictimExitRecord,
    header::{RECORD_VERSION, RecordHeader, RecordKind},
    oom::{OomKillRecord, memcg_chain},
    reclaim::ReclaimStallRecord,
};

use crate::readers::cgroup::V1_UNLIMITED_THRESHOLD;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Boxed: 520 bytes, and rare; the other records are small and many.
    OomKill(Box<OomKillRecord>),
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
        RecordKind::OomKill => Record::OomKill(Box::new(read(bytes)?)),
        RecordKind::VictimExit => Record::VictimExit(read(bytes)?),
        RecordKind::ReclaimStall => Record::ReclaimStall(read(bytes)?),
    })
}

/// One memory cgroup of a kill's chain, as the kernel read it at the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgAtKill {
    /// Inode id of the memory cgroup.
    pub cgroup_id: u64,
    pub usage_bytes: u64,
    /// `None`: unlimited.
    pub limit_bytes: Option<u64>,
    /// v1 `memory.failcnt`, where the kernel keeps it.
    pub failcnt: Option<u64>,
    /// v2 `memory.events.local` `oom`.
    pub oom_events: Option<u64>,
}

/// The victim's memory cgroup and its ancestors at the kill, nearest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgChain {
    pub levels: Vec<MemcgAtKill>,
    /// Every ancestor below the root is in `levels`; else the record had
    /// room for the nearest ones only (or a read failed on the way up).
    pub complete: bool,
}

/// The chain of a kill record, in bytes; `None` when the kernel did not
/// read one (no BTF offsets, no victim task).
pub fn memcg_chain(r: &OomKillRecord, page_size: u64) -> Option<MemcgChain> {
    if r.present & oomwatch_common::oom::victim_field::MEMCG_CHAIN == 0 {
        return None;
    }
    let has = |bit| r.memcg_chain & bit != 0;
    let levels = r
        .memcg_levels()
        .iter()
        .map(|l| {
            let limit = l.max_pages.saturating_mul(page_size);
            MemcgAtKill {
                cgroup_id: l.cgroup_id,
                usage_bytes: l.usage_pages.saturating_mul(page_size),
                // PAGE_COUNTER_MAX pages is "max"; v1 shows it as that many bytes.
                limit_bytes: (limit < V1_UNLIMITED_THRESHOLD).then_some(limit),
                failcnt: has(memcg_chain::FAILCNT).then_some(l.failcnt),
                oom_events: has(memcg_chain::OOM_EVENTS).then_some(l.oom_events),
            }
        })
        .collect();
    Some(MemcgChain { levels, complete: has(memcg_chain::COMPLETE) })
}

/// The kernel's page size, which page counters count in.
pub fn page_size() -> u64 {
    static PAGE_SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the running system; no pointers.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
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
        assert_eq!(decode(bytemuck::bytes_of(&oom)), Ok(Record::OomKill(Box::new(oom))));
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
    fn memcg_chain_in_bytes_bounded_whatever_the_record_says() {
        use oomwatch_common::oom::{MEMCG_LEVELS, MemcgLevel, victim_field};
        let mut r = oom_record();
        assert_eq!(memcg_chain(&r, 4096), None, "no chain bit, no chain");
        r.present |= victim_field::MEMCG_CHAIN;
        r.memcg_chain = memcg_chain::COMPLETE | memcg_chain::FAILCNT;
        r.memcg_levels = 2;
        r.memcgs[0] = MemcgLevel { cgroup_id: 7, usage_pages: 16384, max_pages: i64::MAX as u64 / 4096, failcnt: 3, oom_events: 1 };
        r.memcgs[1] = MemcgLevel { cgroup_id: 5, usage_pages: 16383, max_pages: 16384, failcnt: 9, oom_events: 2 };
        let c = memcg_chain(&r, 4096).unwrap();
        assert!(c.complete);
        assert_eq!(c.levels.len(), 2);
        assert_eq!(c.levels[0].limit_bytes, None, "PAGE_COUNTER_MAX is unlimited");
        assert_eq!(c.levels[0].usage_bytes, 64 << 20);
        assert_eq!(c.levels[1].limit_bytes, Some(64 << 20));
        assert_eq!(c.levels[1].failcnt, Some(9));
        assert_eq!(c.levels[1].oom_events, None, "not read: absent, not zero");
        r.memcg_levels = u32::MAX;
        assert_eq!(memcg_chain(&r, 4096).unwrap().levels.len(), MEMCG_LEVELS);
        r.memcgs[0].max_pages = u64::MAX;
        assert_eq!(memcg_chain(&r, 65536).unwrap().levels[0].limit_bytes, None, "no overflow");
    }

    #[test]
    fn comm_stops_at_nul_and_survives_invalid_utf8() {
        assert_eq!(comm_str(b"hog\0\0\0\0\0\0\0\0\0\0\0\0\0"), "hog");
        assert_eq!(comm_str(b"abcdefghijklmnop"), "abcdefghijklmnop");
        assert_eq!(comm_str(&[0xff, b'a', 0]), "\u{fffd}a");
    }
}
