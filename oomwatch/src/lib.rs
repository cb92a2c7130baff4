//! oomwatch: traces OOM kills and memory pressure with eBPF and explains them.
//!
//! Data flows one way: kernel (`bpf`) -> `pipeline` -> `model` and `bus` ->
//! outputs (`metrics`, `api`, `cli`).

pub mod alert;
pub mod api;
pub mod bpf;
pub mod bus;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod event;
pub mod metrics;
pub mod model;
pub mod node;
pub mod pipeline;
pub mod pressure;
pub mod reconcile;
pub mod stall;
