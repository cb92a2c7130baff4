//! Indexes of the per-CPU `COUNTERS` array: what the programs could not do
//! (records lost, inserts refused, reads that failed), and what they saw.
//! The daemon sums each over CPUs at scrape time.

use crate::names::{Program, program};

/// Ring buffer full: an OOM record could not be reserved.
pub const RINGBUF_FULL_OOM: u32 = 0;
pub const RINGBUF_FULL_EXIT: u32 = 1;
pub const RINGBUF_FULL_STALL: u32 = 2;
/// The pending-victims map refused an insert (exit confirmation lost).
pub const PENDING_VICTIMS_FULL: u32 = 3;
/// The per-thread ledger (`RECLAIM_THREADS`) refused a new thread's entry:
/// that stall or memstall section is not counted.
pub const RECLAIM_STARTS_FULL: u32 = 4;
/// OOM kills seen by the kernel programs (for reconciliation).
pub const OOM_SEEN: u32 = 5;
/// First of one counter per program ([`program::ALL`]): kernel reads that
/// failed in that program (a helper returned an error, a pointer the kernel
/// always sets was NULL). What the program could still do, it did: a kill
/// is reported with the fields that were read.
pub const PROGRAM_ERRORS: u32 = 6;
pub const COUNT: u32 = PROGRAM_ERRORS + program::ALL.len() as u32;

/// The error counter of `program`.
pub const fn program_errors(program: Program) -> u32 {
    PROGRAM_ERRORS + program.index
}
