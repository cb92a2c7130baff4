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
pub mod readers;
pub mod reconcile;
pub mod stall;

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
