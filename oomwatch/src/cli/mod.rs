//! Command-line interface: the daemon's flags and the tools operators use
//! with it. The client commands (tail, status, alerts) speak `wire` over the
//! event socket and link nothing of the daemon.
//!
//! May depend on: everything below it (`outputs`, `sources`, `model`,
//! `kernel`, `config`, `readers`, `wire`); not on `daemon`.

mod alerts;
mod check;
mod docs;
mod history;
mod selftest;
mod status;
mod tail;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    kernel::{btf::DEFAULT_VMLINUX_BTF, tracefs::DEFAULT_TRACEFS},
    wire::DEFAULT_SOCKET,
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

// One value per process, parsed once: boxing the daemon's arguments would
// buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon (as root): trace, keep per-cgroup state, serve /metrics and the event socket.
    Daemon(DaemonArgs),
    /// Follow events live from a running daemon.
    Tail(TailArgs),
    /// Per-cgroup memory, riskiest first, from a running daemon.
    Status(StatusArgs),
    /// Alerts pending and firing now, and recent transitions.
    Alerts(AlertsArgs),
    /// What the journal kept: kills, alerts and other events, across restarts (no daemon needed).
    History(HistoryArgs),
    /// Report what this kernel offers oomwatch and whether the daemon can run here.
    Check(CheckArgs),
    /// Prove the whole chain on this host: a sandboxed leak, warned about, then killed.
    Selftest(SelftestArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout: oomwatch(8), or one subcommand's.
    Man(ManArgs),
}

#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "Install, e.g.:\n  oomwatch completions bash > /etc/bash_completion.d/oomwatch\n  oomwatch completions zsh > \"${fpath[1]}/_oomwatch\"\n  oomwatch completions fish > ~/.config/fish/completions/oomwatch.fish")]
pub struct CompletionsArgs {
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "Install, e.g.:\n  oomwatch man | gzip > /usr/local/share/man/man8/oomwatch.8.gz\n  oomwatch man daemon | gzip > /usr/local/share/man/man8/oomwatch-daemon.8.gz")]
pub struct ManArgs {
    /// A subcommand (e.g. daemon): its own page, oomwatch-SUBCOMMAND(8).
    #[arg(value_name = "SUBCOMMAND")]
    pub subcommand: Option<String>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SelftestArgs {
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Sandbox memory limit (capped at a quarter of the available memory).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub limit_mib: u64,
    /// How long the leak takes to reach the limit.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: std::time::Duration,
    /// Internal: run the leak (bytes per second) in the sandbox.
    #[arg(long, hide = true, value_name = "BYTES_PER_S")]
    pub leak_worker: Option<u64>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct AlertsArgs {
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Show at most this many past transitions (0: all kept).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub history: usize,
}

#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "Examples:\n  oomwatch history --kind oom_kill --since 7d\n  oomwatch history --summary --since 30d\n  oomwatch history --json --cgroup '/kubepods*' --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z")]
pub struct HistoryArgs {
    /// Only these kinds (comma-separated), e.g. oom_kill,alert.
    #[arg(long, value_delimiter = ',', value_name = "K,...")]
    pub kind: Vec<String>,
    /// Only events whose cgroup path matches this glob, e.g. '/kubepods*'.
    #[arg(long, value_name = "GLOB")]
    pub cgroup: Option<String>,
    /// From this long ago ("7d", "90m") or this time (RFC 3339).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Until this long ago or this time.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// At most this many events (the oldest first).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// OOM kills per workload per day, instead of the events.
    #[arg(long)]
    pub summary: bool,
    /// With --summary: per cgroup path instead of per workload.
    #[arg(long, requires = "summary")]
    pub by_cgroup: bool,
    /// One JSON object per line (the event as `tail --json` prints it).
    #[arg(long)]
    pub json: bool,
    /// The daemon's state directory (its --state-dir).
    #[arg(long, default_value = crate::config::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
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

/// Daemon flags. Each one overrides the same setting of `--config`; without
/// either, the embedded defaults apply (`oomwatch check --print-defaults`).
#[derive(clap::Args, Clone, Debug)]
pub struct DaemonArgs {
    /// TOML configuration (thresholds, sinks); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for /metrics and /healthz [default: 127.0.0.1:8967].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Unix socket for the event stream [default: /run/oomwatch/events.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Where the journal and the state restored after a restart are kept
    /// [default: /var/lib/oomwatch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// TLS and basic auth for /metrics (exporter-toolkit web config YAML).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
    /// Where tracefs is (mounted there when missing).
    #[arg(long, default_value = DEFAULT_TRACEFS, value_name = "PATH", hide = true)]
    pub tracefs: PathBuf,
    /// Kernel BTF; without it attribution falls back to /proc (approximate).
    #[arg(long, default_value = DEFAULT_VMLINUX_BTF, value_name = "PATH", hide = true)]
    pub btf: PathBuf,
    /// Events kept for clients that ask for the recent past [default: 1024].
    #[arg(long, value_name = "N")]
    pub backlog: Option<usize>,
    /// Track (sample and export) at most this many memory cgroups; the
    /// shallowest are kept, also when one is made later (it takes the place
    /// of a deeper one). Kills are counted for every cgroup regardless
    /// [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_cgroups: Option<usize>,
    /// Only track cgroups whose path matches one of these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never track cgroups whose path matches one of these globs (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// PSI trigger: a pressure event when tasks wait on memory this long...
    /// [default: 150ms]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub psi_stall: Option<std::time::Duration>,
    /// ... within this window (windows that are not a multiple of 2 s need
    /// CAP_SYS_RESOURCE; without it the nearest 2 s multiple is used)
    /// [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub psi_window: Option<std::time::Duration>,
    /// PSI triggers held at most (host included); cgroups with a memory
    /// limit get them first [default: 64].
    #[arg(long, value_name = "N")]
    pub max_psi_triggers: Option<usize>,
    /// Reclaim stalls at least this long become `reclaim_stall` events, e.g.
    /// 100ms, 1s (0 turns the events off; stalls are still counted)
    /// [default: 100ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stall_threshold: Option<std::time::Duration>,
    /// At most one `reclaim_stall` event per cgroup per this interval (the
    /// next one says how many were held back) [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stall_min_interval: Option<std::time::Duration>,
    /// Push mode, for hosts Prometheus cannot scrape: PUT /metrics to this
    /// Pushgateway (e.g. http://pushgateway:9091) every --push-interval, as
    /// job="oomwatch", instance=<hostname>; the group is deleted on a clean
    /// stop. Same as `push_gateway` in [daemon].
    #[arg(long, value_name = "URL", value_parser = parse_push_gateway)]
    pub push_gateway: Option<String>,
    /// How often to push (1s to 5m) [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_push_interval)]
    pub push_interval: Option<std::time::Duration>,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
    /// Test-only fault injection: drop the next N kill records as a full
    /// ring buffer would (proves the reconciliation).
    #[arg(long, hide = true, default_value_t = 0, value_name = "N")]
    pub inject_drop_kills: u64,
    /// Test-only fault injection: the victim's /proc/PID/cgroup is not
    /// read, as if the victim was reaped first (proves the fallbacks).
    #[arg(long, hide = true)]
    pub inject_victim_gone: bool,
    /// Test-only fault injection: the kill path does not wait for the
    /// kernel's report, as if it came after the kill path's wait (proves a
    /// late report places the kill).
    #[arg(long, hide = true)]
    pub inject_report_late: bool,
    /// Test-only fault injection: a supervised task named TASK panics a
    /// second after start (proves a panic is never silent).
    #[arg(long, hide = true, value_name = "TASK")]
    pub inject_panic: Option<String>,
}

fn parse_push_gateway(s: &str) -> Result<String, crate::config::InvalidValue> {
    crate::config::check_push_gateway(s)?;
    Ok(s.to_owned())
}

fn parse_push_interval(s: &str) -> Result<std::time::Duration, crate::config::InvalidValue> {
    let d = humantime::parse_duration(s).map_err(|e| crate::config::InvalidValue(format!("'{s}': {e}")))?;
    crate::config::check_push_interval(d)?;
    Ok(d)
}

impl DaemonArgs {
    /// The file (or the defaults), then the flags on top, validated.
    pub fn effective_config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply_flags(&mut c);
        c.validate().map_err(|e| anyhow::anyhow!("{} (after command-line flags): {}", e.key, e.reason))?;
        Ok(c)
    }

    pub fn apply_flags(&self, c: &mut Config) {
        if let Some(v) = self.listen {
            c.daemon.listen = v;
        }
        if let Some(v) = &self.socket {
            c.daemon.socket = v.clone();
        }
        if let Some(v) = &self.web_config {
            c.daemon.web_config = Some(v.clone());
        }
        if let Some(v) = &self.state_dir {
            c.daemon.state_dir = v.clone();
        }
        if let Some(v) = self.backlog {
            c.daemon.backlog = v;
        }
        if let Some(v) = self.max_cgroups {
            c.cgroups.max_cgroups = v;
        }
        if !self.include.is_empty() {
            c.cgroups.include = self.include.clone();
        }
        if !self.exclude.is_empty() {
            c.cgroups.exclude = self.exclude.clone();
        }
        if let Some(v) = self.psi_stall {
            c.pressure.trigger_stall = v;
        }
        if let Some(v) = self.psi_window {
            c.pressure.trigger_window = v;
        }
        if let Some(v) = self.max_psi_triggers {
            c.pressure.max_triggers = v;
        }
        if let Some(v) = self.stall_threshold {
            c.reclaim.stall_threshold = v;
        }
        if let Some(v) = self.stall_min_interval {
            c.reclaim.min_interval = v;
        }
        if let Some(v) = &self.push_gateway {
            c.daemon.push_gateway = Some(v.clone());
        }
        if let Some(v) = self.push_interval {
            c.daemon.push_interval = v;
        }
    }
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
    /// Only validate this configuration file and exit (non-zero when invalid).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the embedded default configuration as TOML and exit.
    #[arg(long)]
    pub print_defaults: bool,
    /// Print the allowed range and default of every numeric and duration setting (a Markdown table) and exit.
    #[arg(long)]
    pub print_ranges: bool,
    #[arg(long, default_value = DEFAULT_TRACEFS, value_name = "PATH", hide = true)]
    pub tracefs: PathBuf,
    #[arg(long, default_value = DEFAULT_VMLINUX_BTF, value_name = "PATH", hide = true)]
    pub btf: PathBuf,
    /// The daemon's state directory (its --state-dir): where the journal is,
    /// how large, how old, and whether it can be written.
    #[arg(long, default_value = crate::config::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
}

/// Runs every command but `daemon` (the crate root starts that one, as the
/// composition root sits above the commands).
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Daemon(_) => anyhow::bail!("the daemon is started by oomwatch::main"),
        Command::Tail(args) => tail::main(args),
        Command::Status(args) => status::main(args),
        Command::Alerts(args) => alerts::main(args),
        Command::History(args) => history::main(args),
        Command::Check(args) => check::main(args),
        Command::Selftest(args) => selftest::main(args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}
