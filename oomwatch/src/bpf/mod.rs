//! Kernel side, from the daemon's point of view: load the embedded programs,
//! feed them this kernel's offsets, attach what the kernel offers, read the
//! ring buffer and decode its records.

pub mod btf;
pub mod decode;
pub mod loader;
pub mod privileges;
pub mod reader;
pub mod tracefs;

/// The kernel programs, built by build.rs (aya-build) and embedded.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomwatch"));
