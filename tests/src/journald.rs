//! A real systemd-journald for tests, private to the test: started in its
//! own mount namespace with `/run` and `/var/log` bound to a temporary
//! directory, stopped and removed when the guard drops.
//!
//! It runs as a journal namespace (`systemd-journald oomwatch-test`), the
//! way `systemd-journald@.service` runs one: the same native protocol and
//! storage, but it neither reads the kernel log nor, unlike the default
//! instance of systemd 252, sends the kernel an audit-enable request when
//! it starts (a host-wide change no test may make). Its socket is
//! `<dir>/run/systemd/journal.oomwatch-test/socket` as seen from the test.
//!
//! ```no_run
//! let journald = oomwatch_tests::journald::Journald::start();
//! // send entries to journald.socket() ...
//! let entries = journald.wait_for(&[("OOMWATCH_KIND", "oom_kill")], 1, std::time::Duration::from_secs(10));
//! assert_eq!(entries[0].text("PRIORITY").as_deref(), Some("3"));
//! ```

use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::TempDir;

pub const NAMESPACE: &str = "oomwatch-test";

pub struct Journald {
    child: Option<Child>,
    dir: TempDir,
    socket: PathBuf,
}

/// One journal entry as `journalctl -o json --all` gives it: every field's
/// values as bytes (a field may repeat; binary values come as byte arrays).
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub fields: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Entry {
    /// The field's first value, exactly as stored.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name).and_then(|v| v.first()).map(Vec::as_slice)
    }

    /// The field's first value as text (None when absent or not UTF-8).
    pub fn text(&self, name: &str) -> Option<String> {
        self.bytes(name).and_then(|b| String::from_utf8(b.to_vec()).ok())
    }

    fn from_json(v: &Value) -> Option<Self> {
        let mut fields = BTreeMap::new();
        for (name, value) in v.as_object()? {
            let values = match value {
                // Several values of one field: an array of strings or byte arrays.
                Value::Array(items) if items.first().is_some_and(|i| !i.is_number()) => items.iter().filter_map(value_bytes).collect(),
                other => value_bytes(other).into_iter().collect(),
            };
            fields.insert(name.clone(), values);
        }
        Some(Self { fields })
    }
}

/// journalctl writes printable UTF-8 as a string, anything else (control
/// characters, invalid UTF-8) as an array of byte values.
fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Array(bytes) => bytes.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect(),
        _ => None,
    }
}

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Journald {
    /// Starts journald and waits for its socket. Needs root (mount
    /// namespaces); call [`crate::require_root`] first.
    pub fn start() -> Self {
        let journald = find_binary(&["/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"])
            .expect("systemd-journald not found: apt-get install systemd (cargo xtask test installs it)");
        let dir = crate::temp_dir("journald");
        fs::create_dir_all(dir.0.join("run")).unwrap();
        fs::create_dir_all(dir.0.join("log/journal")).unwrap();
        let log = fs::File::create(dir.0.join("journald.log")).unwrap();
        let script = r#"set -e
mount --bind "$1/run" /run
mount --bind "$1/log" /var/log
exec "$2" "$3""#;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"])
            .arg(&dir.0)
            .arg(&journald)
            .arg(NAMESPACE)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. journald goes when the test
        // process goes, even if it is killed before the guard drops.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {} with unshare: {e}", journald.display()));
        let socket = dir.0.join(format!("run/systemd/journal.{NAMESPACE}/socket"));
        let mut this = Self { child: Some(child), dir, socket };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !this.socket.exists() {
            if let Some(status) = this.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("systemd-journald exited ({status}) before creating its socket: {}", this.log());
            }
            assert!(Instant::now() < deadline, "systemd-journald made no socket within 15 s: {}", this.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        this
    }

    /// journald's native protocol socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What journald printed (its start-up complaints, if any).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.0.join("journald.log")).unwrap_or_default()
    }

    /// The directory journalctl reads (`journalctl -D`).
    pub fn journal_dir(&self) -> Option<PathBuf> {
        fs::read_dir(self.dir.0.join("log/journal")).ok()?.flatten().map(|e| e.path()).find(|p| p.is_dir())
    }

    /// Entries matching every `FIELD=value` (all entries for none), oldest first.
    pub fn query(&self, matches: &[(&str, &str)]) -> Vec<Entry> {
        let Some(dir) = self.journal_dir() else { return Vec::new() };
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(&dir)
            .args(["-o", "json", "--all", "--no-pager"])
            .args(matches.iter().map(|(k, v)| format!("{k}={v}")))
            .output()
            .expect("journalctl (apt-get install systemd)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Entry::from_json(&v))
            .collect()
    }

    /// Waits until at least `count` entries match; returns them. Panics
    /// after `timeout` saying how many came.
    pub fn wait_for(&self, matches: &[(&str, &str)], count: usize, timeout: Duration) -> Vec<Entry> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.query(matches);
            if entries.len() >= count {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "journald has {} of {count} entries matching {matches:?} after {timeout:?}; journald said: {}",
                entries.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops journald (SIGTERM, then SIGKILL after 5 s) and waits for it;
    /// the directory goes with the guard.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signalling the child we started, by its pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        self.stop();
    }
}
