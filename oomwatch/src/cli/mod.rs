//! Command-line interface: the daemon and the tools operators use with it.

mod check;
mod status;
mod tail;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    api::{http::DEFAULT_LISTEN, socket::DEFAULT_SOCKET},
    bpf::{btf::DEFAULT_VMLINUX_BTF, tracefs::DEFAULT_TRACEFS},
};

#[derive(Parser)]
#[command(
    name = "oomwatch",
    version,
    about = "Traces OOM kills and memory pressure with eBPF, per cgroup, and explains each kill",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon (as root): trace, keep per-cgroup state, serve /metrics and the event socket.
    Daemon(DaemonArgs),
    /// Follow events live from a running daemon.
    Tail(TailArgs),
    /// Per-cgroup memory, riskiest first, from a running daemon.
    Status(StatusArgs),
    /// Report what this kernel offers oomwatch and whether the daemon can run here.
    Check(CheckArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct StatusArgs {
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Show at most this many cgroups (0: all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
}

#[derive(clap::Args, Clone, Debug)]
pub struct DaemonArgs {
    /// Address for /metrics and /healthz.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Unix socket for the event stream (`oomwatch tail`).
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Where tracefs is (mounted there when missing).
    #[arg(long, default_value = DEFAULT_TRACEFS, value_name = "PATH", hide = true)]
    pub tracefs: PathBuf,
    /// Kernel BTF; without it attribution falls back to /proc (approximate).
    #[arg(long, default_value = DEFAULT_VMLINUX_BTF, value_name = "PATH", hide = true)]
    pub btf: PathBuf,
    /// Events kept for clients that ask for the recent past (`tail --since`).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub backlog: usize,
    /// Track (sample and export) at most this many memory cgroups; the
    /// shallowest are kept. Kills are counted for every cgroup regardless.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_cgroups: usize,
    /// Only track cgroups whose path matches one of these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never track cgroups whose path matches one of these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Reclaim stalls at least this long become `reclaim_stall` events, e.g.
    /// 100ms, 1s (0 turns the events off; stalls are still counted).
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stall_threshold: std::time::Duration,
    /// At most one `reclaim_stall` event per cgroup per this interval (the
    /// next one says how many were held back).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stall_min_interval: std::time::Duration,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
}

#[derive(clap::Args, Clone, Debug)]
pub struct TailArgs {
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// One JSON object per line (NDJSON) instead of text for people.
    #[arg(long)]
    pub json: bool,
    /// Only these kinds (comma-separated), e.g. oom_kill,victim_exit.
    #[arg(long, value_delimiter = ',', value_name = "K,...")]
    pub kind: Vec<String>,
    /// Only events whose cgroup path matches this glob, e.g. '/kubepods*'.
    #[arg(long, value_name = "GLOB")]
    pub cgroup: Option<String>,
    /// First replay buffered events from this long ago, e.g. 5m, 30s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Exit after this many events (after filtering).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = DEFAULT_TRACEFS, value_name = "PATH", hide = true)]
    pub tracefs: PathBuf,
    #[arg(long, default_value = DEFAULT_VMLINUX_BTF, value_name = "PATH", hide = true)]
    pub btf: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(args) => crate::daemon::main(args),
        Command::Tail(args) => tail::main(args),
        Command::Status(args) => status::main(args),
        Command::Check(args) => check::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oomwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}
