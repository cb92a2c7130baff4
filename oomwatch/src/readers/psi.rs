//! Parsing and reading PSI pressure files (`/proc/pressure/*`, cgroup v2
//! `*.pressure`).
//!
//! The format (Documentation/accounting/psi.rst) is:
//!
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! The daemon reads these files for every watched cgroup on every scrape, so
//! parsing works on borrowed bytes and allocates nothing, and reading uses a
//! stack buffer.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::fmt;

/// One line of a pressure file: stall averages in percent over 10 s, 60 s and
/// 300 s, and the total stall time in microseconds since boot (or cgroup
/// creation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// The content of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    pub some: PsiLine,
    /// Absent for `cpu.pressure` on kernels before 5.13; where present for cpu
    /// at system level it is all zeros, which is kept as reported.
    pub full: Option<PsiLine>,
}

/// Which line of a pressure file: "some" (at least one task stalled) or
/// "full" (all non-idle tasks stalled at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PsiKind {
    Some,
    Full,
}

impl PsiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PsiKind::Some => "some",
            PsiKind::Full => "full",
        }
    }
}

impl std::fmt::Display for PsiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why pressure file content could not be parsed. Holds no data from the
/// input so that it is `Copy` and parsing never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PsiParseError {
    #[error("no \"some\" line")]
    MissingSome,
    #[error("the \"{0}\" line appears twice")]
    DuplicateLine(PsiKind),
    #[error("the \"{line}\" line has no {field}= field")]
    MissingField { line: PsiKind, field: &'static str },
    #[error("the \"{line}\" line has {field}= twice")]
    DuplicateField { line: PsiKind, field: &'static str },
    #[error("the \"{line}\" line has an invalid {field}= value")]
    BadValue { line: PsiKind, field: &'static str },
}

/// Parses the content of a PSI pressure file.
///
/// Lenient where kernels may legitimately differ (unknown lines and unknown
/// `key=value` fields are ignored, keys may come in any order, `full` may be
/// missing), strict where the data would be wrong (missing, duplicated or
/// malformed known fields, non-finite or negative averages).
pub fn parse_pressure(content: &[u8]) -> Result<Pressure, PsiParseError> {
    let mut some = None;
    let mut full = None;
    for line in content.split(|&b| b == b'\n') {
        let mut words = line
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty());
        let (kind, slot) = match words.next() {
            Some(b"some") => (PsiKind::Some, &mut some),
            Some(b"full") => (PsiKind::Full, &mut full),
            // Blank lines and lines a future kernel might add.
            _ => continue,
        };
        if slot.is_some() {
            return Err(PsiParseError::DuplicateLine(kind));
        }
        *slot = Some(parse_line(kind, words)?);
    }
    Ok(Pressure {
        some: some.ok_or(PsiParseError::MissingSome)?,
        full,
    })
}

fn parse_line<'a>(
    line: PsiKind,
    words: impl Iterator<Item = &'a [u8]>,
) -> Result<PsiLine, PsiParseError> {
    let mut avg = [None::<f64>; 3];
    let mut total = None::<u64>;
    for word in words {
        let Some(eq) = word.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        let field = match key {
            b"avg10" => "avg10",
            b"avg60" => "avg60",
            b"avg300" => "avg300",
            b"total" => "total",
            _ => continue,
        };
        let bad = PsiParseError::BadValue { line, field };
        let dup = PsiParseError::DuplicateField { line, field };
        let text = std::str::from_utf8(value).map_err(|_| bad)?;
        if field == "total" {
            if total.is_some() {
                return Err(dup);
            }
            // u64::from_str accepts a leading '+'; the kernel never writes one,
            // but it is harmless.
            total = Some(text.parse().map_err(|_| bad)?);
            continue;
        }
        let index = match field {
            "avg10" => 0,
            "avg60" => 1,
            _ => 2,
        };
        if avg[index].is_some() {
            return Err(dup);
        }
        // f64::from_str accepts "inf" and "NaN", which the kernel never
        // writes; treat them as garbage rather than letting them reach metrics.
        let v: f64 = text.parse().map_err(|_| bad)?;
        if !v.is_finite() || v < 0.0 {
            return Err(bad);
        }
        avg[index] = Some(v);
    }
    let need = |v: Option<f64>, field| v.ok_or(PsiParseError::MissingField { line, field });
    Ok(PsiLine {
        avg10: need(avg[0], "avg10")?,
        avg60: need(avg[1], "avg60")?,
        avg300: need(avg[2], "avg300")?,
        total_us: total.ok_or(PsiParseError::MissingField {
            line,
            field: "total",
        })?,
    })
}

/// Errors from reading a pressure file. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PressureError {
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("parsing {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: PsiParseError,
    },
    #[error("reading {}: more than {limit} bytes, not a PSI pressure file", path.display())]
    TooLarge { path: PathBuf, limit: usize },
}

/// Real pressure files are about 100 bytes; this leaves room for fields a
/// future kernel might add while keeping the buffer on the stack.
const READ_BUF: usize = 4096;

/// Reads and parses one pressure file.
///
/// Returns `Ok(None)` when the file does not exist or its cgroup was removed
/// while reading, which is normal for short-lived cgroups.
pub fn read_pressure(path: &Path) -> Result<Option<Pressure>, PressureError> {
    let io_err = |source| PressureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if is_vanished(&e) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let mut buf = [0u8; READ_BUF];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(PressureError::TooLarge {
                path: path.to_path_buf(),
                limit: READ_BUF,
            });
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_vanished(&e) => return Ok(None),
            Err(e) => return Err(io_err(e)),
        }
    }
    parse_pressure(&buf[..len])
        .map(Some)
        .map_err(|source| PressureError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// A pressure file kept open and re-read from offset 0 each time: opening
/// is what costs on cgroupfs, and the sampler reads every tracked cgroup's
/// file every interval.
#[derive(Debug)]
pub struct PressurePoller {
    path: PathBuf,
    file: File,
}

impl PressurePoller {
    /// `Ok(None)` when the file does not exist (no PSI there, or the cgroup
    /// is gone).
    pub fn open(path: &Path) -> Result<Option<Self>, PressureError> {
        match File::open(path) {
            Ok(file) => Ok(Some(Self { path: path.to_path_buf(), file })),
            Err(e) if is_vanished(&e) => Ok(None),
            Err(source) => Err(PressureError::Io { path: path.to_path_buf(), source }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)` once the cgroup is gone.
    pub fn read(&self) -> Result<Option<Pressure>, PressureError> {
        use std::os::unix::fs::FileExt as _;
        let mut buf = [0u8; 512];
        let n = match self.file.read_at(&mut buf, 0) {
            Ok(n) => n,
            Err(e) if is_vanished(&e) => return Ok(None),
            Err(source) => return Err(PressureError::Io { path: self.path.clone(), source }),
        };
        if n == buf.len() {
            return Err(PressureError::TooLarge { path: self.path.clone(), limit: buf.len() });
        }
        parse_pressure(&buf[..n]).map(Some).map_err(|source| PressureError::Parse { path: self.path.clone(), source })
    }
}

/// ENOENT: the cgroup directory was already gone at open. ENODEV: kernfs
/// returns it for reads on an open file whose cgroup was removed since.
pub(crate) fn is_vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV))
}

/// A PSI trigger: fire when tasks stalled for at least `stall` within any
/// `window`. The kernel works in whole microseconds; sub-microsecond parts are
/// dropped, in validation as in the string written to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TriggerSpec {
    pub kind: PsiKind,
    pub stall: Duration,
    pub window: Duration,
}

/// Why a [`TriggerSpec`] is not acceptable to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("PSI trigger window {window:?} is shorter than the kernel's minimum of 500ms")]
    WindowTooShort { window: Duration },
    #[error("PSI trigger window {window:?} is longer than the kernel's maximum of 10s")]
    WindowTooLong { window: Duration },
    #[error("PSI trigger stall threshold must be at least 1µs, got {stall:?}")]
    ZeroStall { stall: Duration },
    #[error("PSI trigger stall threshold {stall:?} is longer than its window {window:?}")]
    StallExceedsWindow { stall: Duration, window: Duration },
}

impl TriggerSpec {
    /// Shortest window the kernel accepts (WINDOW_MIN_US in kernel/sched/psi.c).
    pub const MIN_WINDOW: Duration = Duration::from_millis(500);
    /// Longest window the kernel accepts (WINDOW_MAX_US).
    pub const MAX_WINDOW: Duration = Duration::from_secs(10);
    /// Without CAP_SYS_RESOURCE, kernels since 6.5 accept only windows that are
    /// multiples of this, because such triggers ride on the 2 s averaging work
    /// instead of needing a real-time polling thread.
    pub const UNPRIVILEGED_WINDOW_STEP: Duration = Duration::from_secs(2);

    /// A validated spec.
    pub fn new(kind: PsiKind, stall: Duration, window: Duration) -> Result<Self, SpecError> {
        let spec = TriggerSpec {
            kind,
            stall,
            window,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the limits the kernel applies in psi_trigger_create(), so that a
    /// mistake gets a precise message instead of a bare EINVAL.
    pub fn validate(&self) -> Result<(), SpecError> {
        let (stall_us, window_us) = (self.stall.as_micros(), self.window.as_micros());
        if window_us < Self::MIN_WINDOW.as_micros() {
            return Err(SpecError::WindowTooShort {
                window: self.window,
            });
        }
        if window_us > Self::MAX_WINDOW.as_micros() {
            return Err(SpecError::WindowTooLong {
                window: self.window,
            });
        }
        if stall_us == 0 {
            return Err(SpecError::ZeroStall { stall: self.stall });
        }
        if stall_us > window_us {
            return Err(SpecError::StallExceedsWindow {
                stall: self.stall,
                window: self.window,
            });
        }
        Ok(())
    }

    /// Whether an unprivileged process may register this window.
    pub fn window_is_unprivileged(&self) -> bool {
        self.window
            .as_micros()
            .is_multiple_of(Self::UNPRIVILEGED_WINDOW_STEP.as_micros())
    }

    /// The spec to use when the kernel refuses this window for lack of
    /// CAP_SYS_RESOURCE: the window rounded up to the next multiple of 2 s, and
    /// the stall threshold scaled by the same factor so that the trigger still
    /// means the same share of stalled time. `None` if the window already is a
    /// 2 s multiple (the refusal then has another cause) or the spec is invalid.
    pub fn unprivileged_fallback(&self) -> Option<TriggerSpec> {
        self.validate().ok()?;
        if self.window_is_unprivileged() {
            return None;
        }
        let step = Self::UNPRIVILEGED_WINDOW_STEP.as_micros();
        let (stall_us, window_us) = (self.stall.as_micros(), self.window.as_micros());
        // The window is at most 10 s, so rounding up stays within the maximum.
        let new_window = window_us.div_ceil(step) * step;
        let new_stall = (stall_us * new_window + window_us / 2) / window_us;
        let spec = TriggerSpec {
            kind: self.kind,
            stall: micros(new_stall.clamp(1, new_window)),
            window: micros(new_window),
        };
        debug_assert!(spec.validate().is_ok());
        Some(spec)
    }
}

fn micros(us: u128) -> Duration {
    // Callers pass values bounded by MAX_WINDOW.
    Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

/// The kernel's format: "some 150000 1000000" (stall and window in µs).
impl fmt::Display for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.kind,
            self.stall.as_micros(),
            self.window.as_micros()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &[u8] = b"some avg10=1.25 avg60=0.50 avg300=0.07 total=123456\n\
                          full avg10=0.00 avg60=0.01 avg300=0.00 total=789\n";

    #[test]
    fn parses_real_content() {
        let p = parse_pressure(REAL).expect("valid content");
        assert_eq!(
            p.some,
            PsiLine {
                avg10: 1.25,
                avg60: 0.5,
                avg300: 0.07,
                total_us: 123456
            }
        );
        let full = p.full.expect("full line present");
        assert_eq!(full.avg60, 0.01);
        assert_eq!(full.total_us, 789);
    }

    #[test]
    fn full_line_is_optional() {
        let p = parse_pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert!(p.full.is_none());
        assert_eq!(p.some.total_us, 0);
    }

    #[test]
    fn keeps_all_zero_full_line() {
        let p = parse_pressure(
            b"some avg10=0.10 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(p.full.map(|f| f.total_us), Some(0));
    }

    #[test]
    fn accepts_reordered_keys_extra_fields_and_unknown_lines() {
        let input = b"\nfull total=5 avg300=0.3 avg10=0.1 avg60=0.2 future=7\n\
                      some   avg60=2.0\tavg10=1.0 total=9 avg300=3.0 flag\n\
                      partial avg10=x\n";
        let p = parse_pressure(input).unwrap();
        assert_eq!(p.some.avg10, 1.0);
        assert_eq!(p.some.avg60, 2.0);
        assert_eq!(p.some.avg300, 3.0);
        assert_eq!(p.some.total_us, 9);
        assert_eq!(p.full.unwrap().total_us, 5);
    }

    #[test]
    fn accepts_missing_trailing_newline_and_crlf() {
        let p = parse_pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=42\r\n").unwrap();
        assert_eq!(p.some.total_us, 42);
        let p = parse_pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=43").unwrap();
        assert_eq!(p.some.total_us, 43);
    }

    #[test]
    fn rejects_empty_and_missing_some() {
        assert_eq!(parse_pressure(b""), Err(PsiParseError::MissingSome));
        assert_eq!(parse_pressure(b"\n\n"), Err(PsiParseError::MissingSome));
        assert_eq!(
            parse_pressure(b"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            Err(PsiParseError::MissingSome)
        );
    }

    #[test]
    fn rejects_truncated_content() {
        // Any prefix that stops before the "some" line's total has a digit
        // lacks a field and must fail. Longer prefixes that only cut a number
        // short are indistinguishable from valid content and may parse, but
        // must not panic.
        let first_total_digit = REAL
            .windows(6)
            .position(|w| w == b"total=")
            .expect("REAL has a total")
            + 6;
        for end in 0..REAL.len() {
            let result = parse_pressure(&REAL[..end]);
            if end <= first_total_digit {
                assert!(result.is_err(), "prefix of {end} bytes parsed: {result:?}");
            }
        }
        assert_eq!(
            parse_pressure(b"some avg10=1.25 avg60=0.50 avg3"),
            Err(PsiParseError::MissingField {
                line: PsiKind::Some,
                field: "avg300"
            })
        );
        assert_eq!(
            parse_pressure(b"some avg10=1.25 avg60=0.50 avg300=0.07 total="),
            Err(PsiParseError::BadValue {
                line: PsiKind::Some,
                field: "total"
            })
        );
        assert_eq!(
            parse_pressure(&REAL[..REAL.len() - 20]),
            Err(PsiParseError::MissingField {
                line: PsiKind::Full,
                field: "avg300"
            })
        );
    }

    #[test]
    fn rejects_bad_values() {
        for (input, field) in [
            (&b"some avg10=abc avg60=0 avg300=0 total=0"[..], "avg10"),
            (b"some avg10=0 avg60=-1.0 avg300=0 total=0", "avg60"),
            (b"some avg10=0 avg60=0 avg300=NaN total=0", "avg300"),
            (b"some avg10=0 avg60=0 avg300=inf total=0", "avg300"),
            (b"some avg10=0 avg60=0 avg300=0 total=-5", "total"),
            (b"some avg10=0 avg60=0 avg300=0 total=1.5", "total"),
            (
                b"some avg10=0 avg60=0 avg300=0 total=99999999999999999999999",
                "total",
            ),
            (b"some avg10=\xff\xfe avg60=0 avg300=0 total=0", "avg10"),
        ] {
            assert_eq!(
                parse_pressure(input),
                Err(PsiParseError::BadValue {
                    line: PsiKind::Some,
                    field
                }),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(
            parse_pressure(
                b"some avg10=0 avg60=0 avg300=0 total=0\nsome avg10=0 avg60=0 avg300=0 total=0"
            ),
            Err(PsiParseError::DuplicateLine(PsiKind::Some))
        );
        assert_eq!(
            parse_pressure(b"some avg10=0 avg10=1 avg60=0 avg300=0 total=0"),
            Err(PsiParseError::DuplicateField {
                line: PsiKind::Some,
                field: "avg10"
            })
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        // A fixed pseudo-random stream (xorshift) biased toward the bytes the
        // parser cares about, so that many inputs get deep into the parser.
        let alphabet = b"somefulavgtl0123456789.=\n \t-+\xffxNaif";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut buf = [0u8; 160];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % buf.len() as u64) as usize;
            for b in buf.iter_mut().take(len) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = alphabet[(state % alphabet.len() as u64) as usize];
            }
            let _ = parse_pressure(&buf[..len]);
        }
        let _ = parse_pressure(&[0u8; 64]);
        let _ = parse_pressure(b"some =========");
        let _ = parse_pressure(b"some avg10");
    }

    #[test]
    fn read_missing_file_is_none() {
        let path = Path::new("/sys/fs/cgroup/unified/oomwatch-test-does-not-exist/memory.pressure");
        assert!(matches!(read_pressure(path), Ok(None)));
    }

    #[test]
    fn read_errors_name_the_path() {
        // A directory opens but fails to read with EISDIR.
        let err =
            read_pressure(Path::new("/proc")).expect_err("a directory is not a pressure file");
        assert!(err.to_string().contains("/proc"), "{err}");
    }

    #[test]
    fn reads_system_memory_pressure_when_available() {
        let path = Path::new("/proc/pressure/memory");
        match read_pressure(path) {
            Ok(Some(p)) => assert!(p.full.is_some(), "memory always has a full line"),
            // Kernels without PSI, or booted with psi=0, have no such file.
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
