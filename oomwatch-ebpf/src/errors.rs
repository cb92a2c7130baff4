//! What a kernel read can come back with, and the per-program count of the
//! reads that failed (`COUNTERS[counters::program_errors(program)]`, the
//! daemon's `oomwatch_kernel_program_errors_total{program}`).

use oomwatch_common::{counters, names::Program};

use crate::maps::count;

/// Why a read gave nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// Nothing to read on this kernel: no BTF offsets, a field its
    /// tracepoint or struct lacks. Expected, not counted.
    Unknown,
    /// The read was attempted and failed (a helper returned an error, a
    /// pointer the kernel always sets was NULL). Counted.
    Failed,
}

pub type Read<T> = Result<T, Absent>;

/// The error counter of one program.
#[derive(Clone, Copy)]
pub struct Errors(u32);

impl Errors {
    pub const fn of(program: Program) -> Self {
        Self(counters::program_errors(program))
    }

    #[inline(always)]
    pub fn note(self) {
        count(self.0);
    }

    /// The value; a failed read is counted, an unknown one is not.
    #[inline(always)]
    pub fn check<T>(self, read: Read<T>) -> Option<T> {
        match read {
            Ok(v) => Some(v),
            Err(Absent::Failed) => {
                self.note();
                None
            }
            Err(Absent::Unknown) => None,
        }
    }

    /// A helper's result: any error is a failed read.
    #[inline(always)]
    pub fn helper<T, E>(self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(_) => {
                self.note();
                None
            }
        }
    }
}
