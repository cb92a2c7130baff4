//! Event-driven PSI triggers (Documentation/accounting/psi.rst, "Monitoring
//! for pressure thresholds"): write "<some|full> <stall us> <window us>" to an
//! opened pressure file, then poll it for POLLPRI. The trigger lives exactly as
//! long as that file descriptor.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::readers::{PsiKind, SpecError, TriggerSpec};

/// Errors from registering or waiting on a trigger. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("PSI trigger \"{spec}\" for {}: {source}", path.display())]
    InvalidSpec {
        path: PathBuf,
        spec: TriggerSpec,
        source: SpecError,
    },
    #[error("opening {} for a PSI trigger: {source}; {}", path.display(), open_hint(source))]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "PSI trigger \"{spec}\"{} refused by the kernel on {}: {source}; {}",
        fallback_note(requested),
        path.display(),
        refused_hint(source, spec)
    )]
    Refused {
        path: PathBuf,
        /// The trigger string that was refused.
        spec: TriggerSpec,
        /// Set when `spec` was the 2 s fallback for this refused request.
        requested: Option<TriggerSpec>,
        source: io::Error,
    },
    #[error("registering PSI trigger on {} with the tokio reactor: {source}", path.display())]
    Register { path: PathBuf, source: io::Error },
    #[error("waiting for PSI trigger on {}: {source}", path.display())]
    Wait { path: PathBuf, source: io::Error },
    /// The pressure file went away, normally because its cgroup was removed.
    /// The trigger is dead; drop it.
    #[error("{} went away (its cgroup was removed); PSI trigger closed", path.display())]
    Gone { path: PathBuf },
}

fn fallback_note(requested: &Option<TriggerSpec>) -> String {
    match requested {
        Some(r) => format!(" (the 2 s fallback for refused \"{r}\")"),
        None => String::new(),
    }
}

impl TriggerError {
    /// True when the file or its cgroup no longer exists, which a daemon
    /// watching short-lived cgroups treats as normal rather than as a failure.
    pub fn is_gone(&self) -> bool {
        match self {
            TriggerError::Gone { .. } => true,
            TriggerError::Open { source, .. } => crate::readers::psi::is_vanished(source),
            _ => false,
        }
    }
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => {
            "the cgroup was removed, or this kernel has no PSI (needs CONFIG_PSI and psi=1 on the kernel command line)"
        }
        Some(libc::EPERM) => {
            "kernels before 6.5 allow PSI triggers only with CAP_SYS_RESOURCE: run as root with CAP_SYS_RESOURCE (e.g. under systemd)"
        }
        Some(libc::EACCES) => "PSI triggers need write access to the pressure file: run as root",
        Some(libc::EOPNOTSUPP) => "PSI is disabled: boot with psi=1",
        _ => "see Documentation/accounting/psi.rst",
    }
}

fn refused_hint(e: &io::Error, spec: &TriggerSpec) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EINVAL) if !spec.window_is_unprivileged() => {
            "windows that are not a multiple of 2 s need CAP_SYS_RESOURCE: use a 2 s multiple or run with CAP_SYS_RESOURCE"
        }
        Some(libc::EINVAL) => {
            "the kernel takes stall thresholds from 1 µs up to the window and windows from 500 ms to 10 s; PSI triggers need Linux 5.2+, and without CAP_SYS_RESOURCE Linux 6.5+"
        }
        Some(libc::EPERM) => {
            "kernels before 6.5 allow PSI triggers only with CAP_SYS_RESOURCE: run as root with CAP_SYS_RESOURCE (e.g. under systemd)"
        }
        Some(libc::EBUSY) => {
            "this file descriptor already carries a trigger: open the file again for another one"
        }
        Some(libc::EOPNOTSUPP) => "PSI is disabled: boot with psi=1",
        _ => "see Documentation/accounting/psi.rst",
    }
}

/// A trigger fired: the stall threshold was exceeded within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerFired {
    /// When the event was picked up (the kernel checks unprivileged triggers
    /// every 2 s, so this lags the stall by up to that much).
    pub at: Instant,
    /// The spec that fired, as registered with the kernel.
    pub spec: TriggerSpec,
}

enum State {
    /// Written to the kernel, not yet registered with tokio: registration needs
    /// a runtime, and deferring it to the first `wait` lets `register` (and
    /// probing) run anywhere.
    Armed(File),
    Polling(AsyncFd<File>),
    Gone,
}

/// A registered PSI trigger. Dropping it closes the file, which removes the
/// trigger from the kernel.
pub struct PsiTrigger {
    path: PathBuf,
    requested: TriggerSpec,
    effective: TriggerSpec,
    state: State,
}

impl fmt::Debug for PsiTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PsiTrigger")
            .field("path", &self.path)
            .field("requested", &format_args!("{}", self.requested))
            .field("effective", &format_args!("{}", self.effective))
            .field(
                "state",
                &match self.state {
                    State::Armed(_) => "armed",
                    State::Polling(_) => "polling",
                    State::Gone => "gone",
                },
            )
            .finish()
    }
}

impl PsiTrigger {
    /// Opens `path` (a `/proc/pressure/*` file or a cgroup v2 `*.pressure`
    /// file) and registers `spec` on it.
    ///
    /// If the kernel refuses a window that is not a multiple of 2 s with
    /// EINVAL (it does so without CAP_SYS_RESOURCE), registers the
    /// [`TriggerSpec::unprivileged_fallback`] instead; see [`Self::fell_back`].
    pub fn register(path: &Path, spec: TriggerSpec) -> Result<PsiTrigger, TriggerError> {
        spec.validate()
            .map_err(|source| TriggerError::InvalidSpec {
                path: path.to_path_buf(),
                spec,
                source,
            })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| TriggerError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let refused = |spec: TriggerSpec, requested, source: io::Error| {
            if source.raw_os_error() == Some(libc::ENODEV) {
                // kernfs: the cgroup was removed between open and write.
                return TriggerError::Gone {
                    path: path.to_path_buf(),
                };
            }
            TriggerError::Refused {
                path: path.to_path_buf(),
                spec,
                requested,
                source,
            }
        };
        let effective = match write_trigger(&mut file, &spec) {
            Ok(()) => spec,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let Some(fallback) = spec.unprivileged_fallback() else {
                    return Err(refused(spec, None, e));
                };
                // A refused write leaves no trigger on the descriptor, so the
                // same one can take the fallback.
                write_trigger(&mut file, &fallback)
                    .map_err(|e2| refused(fallback, Some(spec), e2))?;
                log::debug!(
                    "{}: PSI trigger \"{spec}\" refused ({e}); using \"{fallback}\" (windows that are not a multiple of 2 s need CAP_SYS_RESOURCE)",
                    path.display()
                );
                fallback
            }
            Err(e) => return Err(refused(spec, None, e)),
        };
        Ok(PsiTrigger {
            path: path.to_path_buf(),
            requested: spec,
            effective,
            state: State::Armed(file),
        })
    }

    /// The file this trigger watches.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spec asked for.
    pub fn requested(&self) -> TriggerSpec {
        self.requested
    }

    /// The spec the kernel accepted: the requested one, or its 2 s fallback.
    pub fn effective(&self) -> TriggerSpec {
        self.effective
    }

    /// Whether the kernel refused the requested window and the 2 s fallback
    /// is in use. `register` logs this only at debug level: the caller owns
    /// the collection of triggers and should say it once.
    pub fn fell_back(&self) -> bool {
        self.effective != self.requested
    }

    /// Waits until the kernel signals the trigger (POLLPRI).
    ///
    /// Returns [`TriggerError::Gone`] once the file went away (POLLERR or
    /// POLLHUP, e.g. the cgroup was removed); the descriptor is closed then and
    /// every later call returns `Gone` again. Cancel safe: an event that
    /// arrives while no `wait` is pending is reported by the next one.
    ///
    /// Must be called within a tokio runtime with I/O enabled.
    pub async fn wait(&mut self) -> Result<TriggerFired, TriggerError> {
        loop {
            let afd = polling(&mut self.state, &self.path)?;
            let mut guard = afd
                .ready_mut(Interest::PRIORITY | Interest::ERROR)
                .await
                .map_err(|source| TriggerError::Wait {
                    path: self.path.clone(),
                    source,
                })?;
            let ready = guard.ready();
            // The kernel's poll handler (psi_trigger_poll) hands out each event
            // once, atomically, when epoll asks; tokio registers edge-triggered.
            // So clearing here never loses an event: a newer one produces a new
            // edge, and tokio's tick check keeps readiness that arrived after
            // this guard was taken.
            guard.clear_ready();
            if ready.is_error() || ready.is_read_closed() {
                // The kernel reports POLLERR|POLLPRI forever after removal;
                // drop the descriptor so that nothing wakes us again.
                self.state = State::Gone;
                return Err(TriggerError::Gone {
                    path: self.path.clone(),
                });
            }
            if ready.is_priority() {
                return Ok(TriggerFired {
                    at: Instant::now(),
                    spec: self.effective,
                });
            }
            // Spurious wakeup with no relevant readiness: wait again.
        }
    }
}

/// The tokio registration, made on first use. A free function so that it
/// borrows only the state, leaving the path free for error messages.
fn polling<'a>(state: &'a mut State, path: &Path) -> Result<&'a mut AsyncFd<File>, TriggerError> {
    *state = match std::mem::replace(state, State::Gone) {
        // Interest::PRIORITY alone would do for firing: the file is always
        // readable and writable (DEFAULT_POLLMASK), so those interests would
        // be noise. Interest::ERROR is what lets POLLERR reach us; tokio also
        // asks epoll for EPOLLIN to carry it, which, edge-triggered, wakes
        // only on the kernel's own notifications and is filtered out.
        //
        // SAFETY: the File owns its descriptor, and it stays inside the
        // AsyncFd, unreplaced, until the AsyncFd is dropped.
        State::Armed(file) => match unsafe {
            AsyncFd::register_with_interest(file, Interest::PRIORITY | Interest::ERROR)
        } {
            Ok(afd) => State::Polling(afd),
            Err(e) => {
                let (file, source) = e.into_parts();
                *state = State::Armed(file);
                return Err(TriggerError::Register {
                    path: path.to_path_buf(),
                    source,
                });
            }
        },
        other => other,
    };
    match state {
        State::Polling(afd) => Ok(afd),
        // Armed cannot remain after the registration above.
        State::Armed(_) | State::Gone => Err(TriggerError::Gone {
            path: path.to_path_buf(),
        }),
    }
}

/// Writes the trigger string in one write(2), NUL-terminated: the procfs
/// handler (psi_write) overwrites the last byte written with a NUL, so without
/// the terminator "some 150000 1000000" would arrive as "some 150000 100000".
fn write_trigger(file: &mut File, spec: &TriggerSpec) -> io::Result<()> {
    // "full " + two u64s + separators + NUL fits easily.
    let mut buf = [0u8; 64];
    let mut cursor = io::Cursor::new(&mut buf[..]);
    write!(cursor, "{spec}\0")?;
    let len = usize::try_from(cursor.position()).unwrap_or(buf.len());
    let n = file.write(&buf[..len])?;
    if n != len {
        // The kernel consumes trigger writes whole; a short write means
        // something else answered.
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write of PSI trigger ({n} of {len} bytes)"),
        ));
    }
    Ok(())
}

/// Whether PSI triggers can be registered on `path` by this process at all,
/// with a spec every PSI-trigger kernel accepts ("some 1000000 2000000"). The
/// probe trigger is removed again before returning.
pub fn trigger_supported(path: &Path) -> Result<(), TriggerError> {
    let spec = TriggerSpec {
        kind: PsiKind::Some,
        stall: Duration::from_secs(1),
        window: TriggerSpec::UNPRIVILEGED_WINDOW_STEP,
    };
    PsiTrigger::register(path, spec).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: PsiKind, stall_ms: u64, window_ms: u64) -> TriggerSpec {
        TriggerSpec {
            kind,
            stall: Duration::from_millis(stall_ms),
            window: Duration::from_millis(window_ms),
        }
    }

    #[test]
    fn displays_in_kernel_format() {
        assert_eq!(
            spec(PsiKind::Some, 150, 1000).to_string(),
            "some 150000 1000000"
        );
        assert_eq!(
            spec(PsiKind::Full, 50, 2000).to_string(),
            "full 50000 2000000"
        );
        let sub_us = TriggerSpec {
            kind: PsiKind::Some,
            stall: Duration::from_nanos(1_500),
            window: Duration::from_secs(2),
        };
        assert_eq!(sub_us.to_string(), "some 1 2000000");
    }

    #[test]
    fn validates_kernel_limits() {
        assert!(spec(PsiKind::Some, 150, 1000).validate().is_ok());
        assert!(spec(PsiKind::Some, 500, 500).validate().is_ok());
        assert!(spec(PsiKind::Full, 1, 10_000).validate().is_ok());
        assert_eq!(
            spec(PsiKind::Some, 100, 499).validate(),
            Err(SpecError::WindowTooShort {
                window: Duration::from_millis(499)
            })
        );
        assert_eq!(
            spec(PsiKind::Some, 100, 10_001).validate(),
            Err(SpecError::WindowTooLong {
                window: Duration::from_millis(10_001)
            })
        );
        assert!(matches!(
            spec(PsiKind::Some, 0, 1000).validate(),
            Err(SpecError::ZeroStall { .. })
        ));
        // Below the kernel's microsecond resolution counts as zero.
        let tiny = TriggerSpec {
            stall: Duration::from_nanos(999),
            ..spec(PsiKind::Some, 0, 1000)
        };
        assert!(matches!(tiny.validate(), Err(SpecError::ZeroStall { .. })));
        assert!(matches!(
            spec(PsiKind::Some, 1001, 1000).validate(),
            Err(SpecError::StallExceedsWindow { .. })
        ));
        assert!(
            TriggerSpec::new(
                PsiKind::Some,
                Duration::from_secs(3),
                Duration::from_secs(2)
            )
            .is_err()
        );
    }

    #[test]
    fn spec_errors_say_what_is_wrong() {
        let msg = spec(PsiKind::Some, 100, 200)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("200ms") && msg.contains("500ms"), "{msg}");
        let msg = spec(PsiKind::Some, 3000, 2000)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("3s") && msg.contains("2s"), "{msg}");
    }

    #[test]
    fn fallback_rounds_window_up_and_keeps_ratio() {
        assert_eq!(
            spec(PsiKind::Some, 150, 1000).unprivileged_fallback(),
            Some(spec(PsiKind::Some, 300, 2000))
        );
        assert_eq!(
            spec(PsiKind::Full, 100, 500).unprivileged_fallback(),
            Some(spec(PsiKind::Full, 400, 2000))
        );
        assert_eq!(
            spec(PsiKind::Some, 300, 3000).unprivileged_fallback(),
            Some(spec(PsiKind::Some, 400, 4000))
        );
        // 9.5 s rounds to the 10 s maximum, not past it.
        assert_eq!(
            spec(PsiKind::Some, 9500, 9500).unprivileged_fallback(),
            Some(spec(PsiKind::Some, 10_000, 10_000))
        );
        // A 1 µs threshold stays at least 1 µs.
        let tiny = TriggerSpec {
            stall: Duration::from_micros(1),
            ..spec(PsiKind::Some, 0, 1999)
        };
        let fb = tiny.unprivileged_fallback().unwrap();
        assert_eq!(fb.stall, Duration::from_micros(1));
        assert!(fb.validate().is_ok());
    }

    #[test]
    fn no_fallback_for_2s_multiples_or_invalid_specs() {
        assert_eq!(
            spec(PsiKind::Some, 150, 2000).unprivileged_fallback(),
            None
        );
        assert_eq!(
            spec(PsiKind::Some, 150, 10_000).unprivileged_fallback(),
            None
        );
        assert_eq!(spec(PsiKind::Some, 0, 1000).unprivileged_fallback(), None);
    }

    #[test]
    fn fallback_of_every_valid_window_is_valid_and_unprivileged() {
        for window_ms in (500..=10_000).step_by(37) {
            for stall_ms in [1, window_ms / 3, window_ms] {
                let s = spec(PsiKind::Some, stall_ms, window_ms);
                if let Some(fb) = s.unprivileged_fallback() {
                    assert!(fb.validate().is_ok(), "{s} -> {fb}");
                    assert!(fb.window_is_unprivileged(), "{s} -> {fb}");
                    assert!(fb.window >= s.window && fb.window - s.window < Duration::from_secs(2));
                }
            }
        }
    }

    #[test]
    fn register_rejects_invalid_spec_before_touching_the_file() {
        let err = PsiTrigger::register(
            Path::new("/nonexistent/memory.pressure"),
            spec(PsiKind::Some, 0, 1000),
        )
        .unwrap_err();
        assert!(matches!(err, TriggerError::InvalidSpec { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/memory.pressure"),
            "{err}"
        );
    }

    #[test]
    fn register_on_missing_file_is_gone_and_names_path() {
        let path = Path::new("/sys/fs/cgroup/unified/oomwatch-test-does-not-exist/memory.pressure");
        let err = PsiTrigger::register(path, spec(PsiKind::Some, 100, 2000)).unwrap_err();
        assert!(err.is_gone(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(path.to_str().unwrap()) && !msg.contains('\n'),
            "{msg}"
        );
    }

    #[test]
    fn refused_error_is_one_line_with_file_trigger_cause_and_advice() {
        let err = TriggerError::Refused {
            path: PathBuf::from("/proc/pressure/memory"),
            spec: spec(PsiKind::Some, 150, 1000),
            requested: None,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        let msg = err.to_string();
        for part in [
            "/proc/pressure/memory",
            "\"some 150000 1000000\"",
            "Invalid argument",
            "CAP_SYS_RESOURCE",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
        assert!(!msg.contains('\n'), "{msg}");
    }
}
