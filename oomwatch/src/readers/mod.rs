//! Pure parsers of kernel and runtime files: they take a root path or
//! bytes, and import nothing of the crate but `wire`.

pub mod runtime;
