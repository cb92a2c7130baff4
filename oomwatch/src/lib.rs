//! oomwatch: traces OOM kills and memory pressure with eBPF and explains them.
//!
//! Data flows one way, and so do the imports between the top-level modules
//! (checked by `cargo xtask layers`):
//!
//! ```text
//! kernel  ─► sources ─► model ─► outputs ─► (users: /metrics, the event socket, sinks)
//! readers ─┘                      cli ─► wire
//! ```
//!
//! - [`wire`]: the types users rely on (event JSON, requests, reports).
//! - [`readers`]: pure parsers of kernel files.
//! - [`config`]: the user's configuration, parsed and validated.
//! - [`kernel`]: the eBPF programs: load, attach, ring buffer, decode.
//! - [`model`]: the only owner of per-cgroup and per-host state, and the
//!   event stream.
//! - [`sources`]: the loops that feed the model (kills, sampler, PSI
//!   triggers, reclaim, reconciliation).
//! - [`outputs`]: metrics, HTTP, the event socket, alerts and sinks.
//! - [`cli`]: the commands; [`daemon`]: the composition root.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod kernel;
pub mod model;
pub mod outputs;
pub mod readers;
pub mod sources;
pub mod wire;

#[cfg(test)]
mod golden_tests;

/// The command line: parse, run one command, turn its error into one line
/// and a non-zero exit.
pub fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Daemon(args) => daemon::main(args),
        command => {
            // `oomwatch status | head -2`: a closed pipe ends the command
            // quietly, as it does cat or ls (Rust ignores SIGPIPE, which
            // turned the next write into a panic). The daemon keeps
            // ignoring it: a client going away is not its death.
            // SAFETY: sets a signal disposition before any thread exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            cli::run(command)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Not `{e:#}`: a thiserror variant that quotes its `source`
            // (`{path}: {source}`) would print the cause twice.
            eprintln!("oomwatch: {}", error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its sources on one line: hyper says only "client error
/// (Connect)" and aya keeps the errno in a source; the cause is what a
/// person needs. Sources already quoted by their parent are not repeated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// glibc keeps freed heap unless asked to give it back: after parsing
/// kernel BTF at start (tens of MB, once) and after cgroup churn.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_names_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(inner);
        // io::Error::other displays its source itself: not repeated.
        assert_eq!(super::error_chain(&outer), "Connection refused");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrap(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"));
        assert_eq!(super::error_chain(&e), "client error (Connect): Connection refused");
    }
}
