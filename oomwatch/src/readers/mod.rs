//! Pure parsers of what the kernel writes, fed bytes (or, for the one
//! reader that does I/O, a path). They import nothing else of the crate.

pub mod kmsg;
pub mod oom_report;
