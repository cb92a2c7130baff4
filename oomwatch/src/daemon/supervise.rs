//! No task dies in silence. Every long-running loop of the daemon (the
//! sampler thread, PSI triggers, the reclaim feed, reconciliation, alerts,
//! the HTTP server and the event socket) runs under [`Tasks`]: when one ends
//! or panics, the daemon logs which one and why and exits non-zero, so that
//! systemd (Restart=on-failure) or Kubernetes starts a whole daemon again,
//! rather than one that serves /healthz while blind. A panic anywhere else
//! (a client's connection) is logged and counted in
//! `oomwatch_panics_total` by the panic hook, and the daemon goes on.

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// How a supervised task ended.
pub struct Ended {
    pub task: &'static str,
    pub why: String,
}

pub struct Tasks {
    tx: mpsc::UnboundedSender<Ended>,
    rx: mpsc::UnboundedReceiver<Ended>,
}

impl Tasks {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { tx, rx }
    }

    /// Runs `fut` on the runtime; its end (it should never end) is reported.
    pub fn spawn(&self, task: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        let tx = self.tx.clone();
        let handle = tokio::spawn(fut);
        tokio::spawn(async move {
            let why = match handle.await {
                Ok(()) => "stopped".to_owned(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic().as_ref())),
                Err(e) => format!("was cancelled: {e}"),
            };
            let _ = tx.send(Ended { task, why });
        });
    }

    /// Runs `body` on a thread of its own; its end is reported.
    pub fn spawn_thread(&self, task: &'static str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let tx = self.tx.clone();
        std::thread::Builder::new().name(format!("oomwatch-{task}")).spawn(move || {
            let why = match catch_unwind(AssertUnwindSafe(body)) {
                Ok(()) => "stopped".to_owned(),
                Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
            };
            let _ = tx.send(Ended { task, why });
        })?;
        Ok(())
    }

    /// The first task to end.
    pub async fn first_ended(&mut self) -> Ended {
        match self.rx.recv().await {
            Some(ended) => ended,
            // Unreachable while `self.tx` lives; wait forever rather than
            // report a task that did not end.
            None => std::future::pending().await,
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Every panic, wherever it happens, is one error line in the log (with its
/// thread and place) and one more in `panics`, before the default report.
pub fn count_panics(panics: Counter) {
    let panics = Arc::new(panics);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        panics.inc();
        let thread = std::thread::current();
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        log::error!("panic in thread {}{place}: {}", thread.name().unwrap_or("?"), panic_message(info.payload()));
        default(info);
    }));
}
