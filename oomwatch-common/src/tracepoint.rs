//! Tracepoint fields as the kernel's tracefs `format` files describe them.
//! The loader parses the format files at start and hands the programs the
//! offsets: nothing about a tracepoint's record is hard-coded.

use bytemuck::{Pod, Zeroable};

/// A tracepoint field. `size == 0` means the kernel's record has no such field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct TpField {
    pub offset: u16,
    pub size: u16,
}
const _: () = assert!(size_of::<TpField>() == 4);

impl TpField {
    pub const ABSENT: Self = Self { offset: 0, size: 0 };
    pub const fn is_present(self) -> bool {
        self.size != 0
    }
}

/// How the `comm` field of a tracepoint record is stored.
pub mod comm_encoding {
    pub const ABSENT: u32 = 0;
    /// `char comm[16]` inline at the field offset.
    pub const INLINE: u32 = 1;
    /// `__data_loc char[] comm`: a u32 with the offset (low 16 bits) and
    /// length (high 16 bits) of the string within the record.
    pub const DATA_LOC: u32 = 2;
}
