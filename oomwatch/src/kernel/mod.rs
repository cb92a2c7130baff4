//! The kernel side, from the daemon's point of view: load the embedded
//! programs, feed them this kernel's offsets (tracefs formats, BTF), attach
//! what the kernel offers, read the ring buffer and the maps, and decode
//! records with length checks. Also the kernel's clock.
//!
//! May depend on: `readers`, `wire`.

pub mod btf;
pub mod btf_reader;
pub mod clock;
pub mod decode;
pub mod loader;
pub mod privileges;
pub mod ring;
pub mod sched;
pub mod thread_map;
pub mod tracefs;
pub mod usage_walk;

/// The kernel programs, built by build.rs (aya-build) and embedded.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomwatch"));
