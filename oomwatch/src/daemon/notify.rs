//! The service manager's readiness protocol (sd_notify(3)): `READY=1` once
//! every program is attached and every output serves, so that
//! `systemctl start`/`restart` (Type=notify) returns only when a kill that
//! happens next is seen. Without `$NOTIFY_SOCKET` (not under systemd) this
//! does nothing. A datagram, no library: the protocol is one sendto(2).

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells the service manager `state` (e.g. `READY=1`). Failures are logged,
/// never fatal: readiness is a courtesy to systemd, not the daemon's job.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&path, state) {
        log::warn!("NOTIFY_SOCKET {}: cannot tell the service manager {state}: {e}", path.to_string_lossy());
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::{linux::net::SocketAddrExt as _, unix::ffi::OsStrExt as _};
    let bytes = path.as_bytes();
    // '@' names a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("oomwatch-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("oomwatch-notify-test-{}", std::process::id());
        let abstract_listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn an_absent_socket_is_an_error_not_a_panic() {
        assert!(send(std::ffi::OsStr::new("/nonexistent/oomwatch/notify.sock"), "READY=1").is_err());
    }
}
