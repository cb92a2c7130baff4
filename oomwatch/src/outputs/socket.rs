//! The event socket: NDJSON over a Unix socket (mode 0660). A client sends one
//! request line, gets the buffered events it asked for, then live ones. A
//! client that cannot keep up is told how many events it lost; it never
//! slows the daemon or other clients.

use std::{
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, broadcast::error::RecvError},
};

use crate::{
    kernel::clock::monotonic_ns,
    model::{
        Model,
        bus::{EventBus, lagged_event},
        counters::DaemonCounters,
    },
    outputs::alerts::Alerts,
    wire::{Request, RequestOp, StatusReport, rfc3339},
};

/// What the socket serves from.
pub struct Sources {
    pub bus: Arc<EventBus>,
    pub model: Arc<Model>,
    pub counters: Arc<DaemonCounters>,
    pub alerts: Arc<Alerts>,
}
const MAX_CLIENTS: usize = 128;
const MAX_REQUEST_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: another oomwatch daemon is serving this socket; stop it or choose another --socket")]
    InUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; remove it or choose another --socket")]
    NotASocket { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Removes the socket file on drop, if it is still the one we created.
pub struct SocketGuard {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn bind(path: &Path) -> Result<(std::os::unix::net::UnixListener, SocketGuard), SocketError> {
    let io_err = |source| SocketError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| SocketError::Io { path: parent.to_path_buf(), source })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(SocketError::NotASocket { path: path.to_path_buf() }),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            // Someone answers: never unlink a live daemon's socket.
            Ok(_) => return Err(SocketError::InUse { path: path.to_path_buf() }),
            Err(_) => std::fs::remove_file(path).map_err(io_err)?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    let ino = std::fs::metadata(path).map_err(io_err)?.ino();
    Ok((listener, SocketGuard { path: path.to_path_buf(), ino }))
}

pub async fn serve(listener: std::os::unix::net::UnixListener, sources: Arc<Sources>) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("event socket: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("event socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            if let Err(e) = client(stream, sources).await {
                log::debug!("event client ended: {e}");
            }
            drop(permit);
        });
    }
}

async fn refuse(mut stream: UnixStream) {
    let line = format!(
        "{{\"kind\":\"error\",\"time\":\"{}\",\"cgroup\":\"/\",\"error\":\"too many clients ({MAX_CLIENTS})\"}}\n",
        rfc3339(std::time::SystemTime::now())
    );
    let _ = stream.write_all(line.as_bytes()).await;
}

async fn read_request(reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Request {
    let mut line = String::new();
    let mut limited = (&mut *reader).take(MAX_REQUEST_BYTES);
    match tokio::time::timeout(Duration::from_secs(2), limited.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            log::debug!("bad request line {line:?}: {e}; serving a plain tail");
            Request::default()
        }),
        _ => Request::default(),
    }
}

async fn client(stream: UnixStream, sources: Arc<Sources>) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let request = read_request(&mut reader).await;
    let mut out = BufWriter::new(write);
    let Sources { bus, model, counters, alerts } = &*sources;
    match request.op {
        RequestOp::Alerts => {
            let line = serde_json::to_string(&alerts.report()).unwrap_or_default();
            out.write_all(line.as_bytes()).await?;
            out.write_all(b"\n").await?;
            out.flush().await
        }
        RequestOp::Status => {
            let report = StatusReport {
                time: rfc3339(std::time::SystemTime::now()),
                cgroups: model.counts(),
                kills_total: model.total_kills(),
                rows: model.status(),
                top_stallers: model.top_stallers(),
            };
            let line = serde_json::to_string(&report).unwrap_or_default();
            out.write_all(line.as_bytes()).await?;
            out.write_all(b"\n").await?;
            out.flush().await
        }
        RequestOp::Tail => {
            let since_ns = request
                .since_secs
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| monotonic_ns().saturating_sub((s * 1e9) as u64));
            let (past, mut rx) = bus.subscribe(|e| match since_ns {
                Some(since) => e.ktime_ns.is_some_and(|k| k >= since),
                None => false,
            });
            for p in past {
                out.write_all(p.json.as_bytes()).await?;
                out.write_all(b"\n").await?;
            }
            out.flush().await?;
            loop {
                match rx.recv().await {
                    Ok(p) => {
                        out.write_all(p.json.as_bytes()).await?;
                        out.write_all(b"\n").await?;
                        // Batch what is already queued, then flush once.
                        if rx.is_empty() {
                            out.flush().await?;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        counters.stream_events_dropped.inc_by(n);
                        let lag = lagged_event(n, rfc3339(std::time::SystemTime::now()));
                        let line = serde_json::to_string(&lag).unwrap_or_default();
                        out.write_all(line.as_bytes()).await?;
                        out.write_all(b"\n").await?;
                        out.flush().await?;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_sock(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oomwatch-sock-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.sock")
    }

    #[tokio::test]
    async fn refuses_to_steal_a_live_socket_and_replaces_a_stale_one() {
        let path = tmp_sock("live");
        let (_listener, guard) = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        assert!(matches!(bind(&path), Err(SocketError::InUse { .. })));
        drop(_listener);
        drop(guard);
        assert!(!path.exists(), "guard removes its own socket");

        // A stale socket (nobody listening) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let (_l, _g) = bind(&path).unwrap();
    }

    #[tokio::test]
    async fn refuses_a_path_that_is_not_a_socket() {
        let path = tmp_sock("file");
        std::fs::write(&path, b"x").unwrap();
        let err = bind(&path).err().unwrap().to_string();
        assert!(err.contains("not a socket"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
