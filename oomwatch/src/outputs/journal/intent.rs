//! The kill intent file: a kill's line, appended with one write(2) by the
//! thread that publishes it, before any client is given the kill. A write
//! the daemon made survives the daemon's death (it is in the kernel's page
//! cache), so a client can be handed the kill at once instead of after the
//! journal's writer thread has been woken and has committed it. The next
//! start puts every line the database lacks into it (by seq, so nothing
//! twice); the writer empties the file once the database holds every kill
//! in it. A power loss is covered by the commit and its fsync, a moment
//! later, as before.
//!
//! Bounded: past [`INTENT_MAX_BYTES`] of kills not yet committed (the disk
//! is failing), kills wait for their commit again.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
};

/// The file's name in the state directory.
pub const INTENT_FILE: &str = "kills.intent";
/// Kill lines held before kills go back to waiting for their commit.
pub const INTENT_MAX_BYTES: u64 = 1 << 20;

pub struct IntentLog {
    path: PathBuf,
    /// None when it could not be opened or written: kills wait for commits.
    file: Option<File>,
    /// Seqs written since the file was last emptied.
    seqs: Vec<u64>,
    bytes: u64,
}

impl IntentLog {
    /// Opens (creates) the file in `dir` for appending. A failure only
    /// costs latency: kills wait for their commit, as without it.
    pub fn open(dir: &Path) -> Self {
        let path = dir.join(INTENT_FILE);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| log::warn!("journal: {}: {e}; a kill reaches tail clients after its commit instead", path.display()))
            .ok();
        Self { path, file, seqs: Vec::new(), bytes: 0 }
    }

    /// Appends the kill `seq`'s `json` line; true once written (it then
    /// survives the daemon's death).
    pub fn write(&mut self, seq: u64, json: &str) -> bool {
        let Some(file) = self.file.as_mut() else { return false };
        let len = json.len() as u64 + 1;
        if self.bytes + len > INTENT_MAX_BYTES {
            return false;
        }
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        match file.write_all(&line) {
            Ok(()) => {
                self.seqs.push(seq);
                self.bytes += len;
                true
            }
            Err(e) => {
                log::warn!("journal: {}: {e}; kills reach tail clients after their commit from now on", self.path.display());
                self.file = None;
                false
            }
        }
    }

    /// Empties the file once the database holds every kill written to it.
    pub fn settle(&mut self, is_durable: impl Fn(u64) -> bool) {
        if self.seqs.is_empty() || !self.seqs.iter().all(|s| is_durable(*s)) {
            return;
        }
        let Some(file) = self.file.as_ref() else { return };
        match file.set_len(0) {
            Ok(()) => {
                self.seqs.clear();
                self.bytes = 0;
            }
            Err(e) => {
                log::warn!("journal: {}: {e}; kills reach tail clients after their commit from now on", self.path.display());
                self.file = None;
            }
        }
    }
}

/// The kill lines a previous run left in `dir` (complete lines only: a
/// write cut short by the daemon's death ends without a newline).
pub fn left_over(dir: &Path) -> io::Result<Vec<String>> {
    let file = match File::open(dir.join(INTENT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    let mut reader = BufReader::new(file.take(INTENT_MAX_BYTES * 2));
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            return Ok(lines);
        }
        lines.push(line.trim_end().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_until_every_kill_in_them_is_committed() {
        let dir = std::env::temp_dir().join(format!("oomwatch-intent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = IntentLog::open(&dir);
        assert!(log.write(7, r#"{"kind":"oom_kill","seq":7}"#));
        assert!(log.write(9, r#"{"kind":"oom_kill","seq":9}"#));
        // A line cut short by a crash is not read back.
        std::fs::OpenOptions::new().append(true).open(dir.join(INTENT_FILE)).unwrap().write_all(b"{\"kind\":\"oom").unwrap();
        assert_eq!(left_over(&dir).unwrap(), vec![r#"{"kind":"oom_kill","seq":7}"#, r#"{"kind":"oom_kill","seq":9}"#]);
        log.settle(|s| s == 7);
        assert_eq!(left_over(&dir).unwrap().len(), 2, "9 is not committed yet");
        log.settle(|_| true);
        assert!(left_over(&dir).unwrap().is_empty());
        assert!(log.write(10, r#"{"seq":10}"#), "appends again after emptying");
        assert_eq!(left_over(&dir).unwrap(), vec![r#"{"seq":10}"#]);
        // Bounded.
        let big = "x".repeat(INTENT_MAX_BYTES as usize);
        assert!(!log.write(11, &big), "past the bound kills wait for their commit");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
