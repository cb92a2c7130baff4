//! The header every ring-buffer record starts with.

use bytemuck::{Pod, Zeroable};

/// Bumped whenever a record layout changes.
pub const RECORD_VERSION: u16 = 2;

/// What a record is. Carried as `u32` in [`RecordHeader::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RecordKind {
    OomKill = 1,
    VictimExit = 2,
    ReclaimStall = 3,
}

impl TryFrom<u32> for RecordKind {
    type Error = u32;
    fn try_from(value: u32) -> Result<Self, u32> {
        match value {
            1 => Ok(Self::OomKill),
            2 => Ok(Self::VictimExit),
            3 => Ok(Self::ReclaimStall),
            other => Err(other),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u32,
    pub version: u16,
    pub _pad: u16,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the kernel saw the event.
    pub ktime_ns: u64,
}
const _: () = assert!(size_of::<RecordHeader>() == 16);

impl RecordHeader {
    pub const fn new(kind: RecordKind, ktime_ns: u64) -> Self {
        Self { kind: kind as u32, version: RECORD_VERSION, _pad: 0, ktime_ns }
    }
}
