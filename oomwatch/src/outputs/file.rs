//! Events appended to a file, one JSON object per line (what `oomwatch tail
//! --json` prints), rotated by size as Tetragon's export file is: when the
//! next line would take the file past `max_bytes`, `events.json` becomes
//! `events.json.1`, `.1` becomes `.2`, ..., the oldest beyond `backups` is
//! removed, and a new `events.json` is started. A line is never split
//! between two files; a line longer than `max_bytes` gets a file to itself.
//! Log shippers that follow rotated files by name (Filebeat, Fluent Bit,
//! Vector, the OpenTelemetry Collector's filelog receiver) read it as is.
//!
//! Durability ([`Fsync`]): by default each batch is flushed to disk
//! (`fdatasync`) before it is reported delivered, the file being rotated
//! away is synced before it is renamed, and the directory is synced after
//! the renames, so a crash or power loss never loses a line reported
//! delivered, nor a whole rotated file. A write that fails part-way
//! (disk full) is cut back to the last whole line and retried later.
//!
//! New files are created with mode 0640 (owner writes, the group of log
//! readers reads): events name processes and containers. Every error names
//! the path.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::delivery::{Outcome, Record};

pub const FILE_MODE: u32 = 0o640;

/// When written lines are forced to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// After each batch, before the batch is reported delivered.
    #[default]
    Batch,
    /// Never explicitly: the kernel writes back within about 30 s; a power
    /// loss can lose what was reported delivered in that time (a daemon
    /// crash cannot: the lines are in the page cache).
    Never,
}

#[derive(Clone, Debug)]
pub struct FileConfig {
    pub path: PathBuf,
    /// The current file never grows past this, unless one line alone is longer.
    pub max_bytes: u64,
    /// Rotated files kept: `path.1` (newest) to `path.<backups>`. 0 keeps none.
    pub backups: u32,
    pub fsync: Fsync,
}

impl FileConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), max_bytes: 10 << 20, backups: 5, fsync: Fsync::Batch }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: io::Error,
}

fn at<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError { path: path.to_path_buf(), action, source }
}

pub struct RotatingFile {
    config: FileConfig,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens the file for appending (creating it, and not its directory);
    /// an existing file is continued, not truncated.
    pub fn open(config: FileConfig) -> Result<Self, FileError> {
        let (file, size) = open_append(&config.path)?;
        Ok(Self { config, file, size })
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Bytes in the current file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `path.<n>`: 1 is the newest rotated file.
    pub fn backup_path(&self, n: u32) -> PathBuf {
        backup_path(&self.config.path, n)
    }

    /// Appends each record's line. One outcome per record, in order: after
    /// the first failure the rest are `Retry` too (without being tried), so
    /// the file never has a gap.
    pub fn write_batch(&mut self, records: &[Record]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut failed: Option<String> = None;
        let mut line = Vec::new();
        for record in records {
            if failed.is_none() {
                line.clear();
                line.extend_from_slice(record.line.as_bytes());
                line.push(b'\n');
                if let Err(e) = self.append(&line) {
                    failed = Some(e.to_string());
                }
            }
            outcomes.push(match &failed {
                Some(reason) => Outcome::retry(reason.clone()),
                None => Outcome::Delivered,
            });
        }
        if self.config.fsync == Fsync::Batch
            && outcomes.iter().any(Outcome::is_delivered)
            && let Err(e) = self.file.sync_data().map_err(at(&self.config.path, "fsync"))
        {
            // Nothing of this batch is known to be on disk: all of it again.
            // The lines stay in the file, so a retry may write some twice;
            // every line carries its record uid for readers that care.
            let reason = e.to_string();
            outcomes.iter_mut().for_each(|o| *o = Outcome::retry(reason.clone()));
        }
        outcomes
    }

    fn append(&mut self, line: &[u8]) -> Result<(), FileError> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate()?;
        }
        if let Err(source) = self.file.write_all(line) {
            // A torn line would glue itself to the next one: cut it off.
            let _ = self.file.set_len(self.size);
            return Err(FileError { path: self.config.path.clone(), action: "write", source });
        }
        self.size += len;
        Ok(())
    }

    /// Renames `path.<n>` to `path.<n+1>` from the oldest down, `path` to
    /// `path.1`, and starts an empty `path`.
    pub fn rotate(&mut self) -> Result<(), FileError> {
        let path = self.config.path.clone();
        if self.config.fsync == Fsync::Batch {
            self.file.sync_data().map_err(at(&path, "fsync before rotating"))?;
        }
        if self.config.backups == 0 {
            fs::remove_file(&path).or_else(ignore_missing).map_err(at(&path, "remove for rotation"))?;
        } else {
            let oldest = backup_path(&path, self.config.backups);
            fs::remove_file(&oldest).or_else(ignore_missing).map_err(at(&oldest, "remove the oldest rotated file"))?;
            for n in (1..self.config.backups).rev() {
                let from = backup_path(&path, n);
                fs::rename(&from, backup_path(&path, n + 1)).or_else(ignore_missing).map_err(at(&from, "rotate"))?;
            }
            fs::rename(&path, backup_path(&path, 1)).map_err(at(&path, "rotate"))?;
        }
        let (file, size) = open_append(&path)?;
        if self.config.fsync == Fsync::Batch
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir, "fsync the directory after rotating"))?;
        }
        self.file = file;
        self.size = size;
        Ok(())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> Result<(File, u64), FileError> {
    let created = !path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(at(path, "open for appending"))?;
    if created {
        // The umask may have taken bits off 0640 (or 0640 may be looser
        // than a umask of 077 wanted: the mode is the documented one).
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(at(path, "chmod 0640"))?;
    }
    let size = file.metadata().map_err(at(path, "stat"))?.len();
    Ok((file, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::delivery::HostIdentity;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("oomwatch-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Lines of the same length for any seq below 10^pad.
    fn record(seq: u64, pad: usize) -> Record {
        let comm = "x".repeat(pad.saturating_sub(seq.to_string().len()));
        let json = serde_json::json!({"kind": "victim_exit", "time": "t", "cgroup": "/", "seq": seq, "pid": 1, "comm": comm, "exit_latency_ms": 1.0});
        Record::from_json(json, &HostIdentity::default()).unwrap()
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path).map(|s| s.lines().map(str::to_owned).collect()).unwrap_or_default()
    }

    fn seqs(path: &Path) -> Vec<u64> {
        lines(path).iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap()).collect()
    }

    #[test]
    fn rotates_at_the_limit_without_losing_duplicating_or_splitting_lines() {
        let d = dir("rotate");
        let path = d.0.join("events.json");
        let line_len = record(0, 100).line.len() as u64 + 1;
        let mut f = RotatingFile::open(FileConfig { path: path.clone(), max_bytes: line_len * 10, backups: 3, fsync: Fsync::Batch }).unwrap();
        // 35 lines of the same length: files of 10, 10, 10, 5; the first 5 rotate away.
        for chunk in (0..35u64).collect::<Vec<_>>().chunks(7) {
            let batch: Vec<Record> = chunk.iter().map(|&s| record(s, 100)).collect();
            assert!(f.write_batch(&batch).iter().all(Outcome::is_delivered));
        }
        assert_eq!(seqs(&path), (30..35).collect::<Vec<_>>());
        assert_eq!(seqs(&f.backup_path(1)), (20..30).collect::<Vec<_>>());
        assert_eq!(seqs(&f.backup_path(2)), (10..20).collect::<Vec<_>>());
        assert_eq!(seqs(&f.backup_path(3)), (0..10).collect::<Vec<_>>());
        assert!(!f.backup_path(4).exists());
        for p in [path.clone(), f.backup_path(1), f.backup_path(2), f.backup_path(3)] {
            let size = fs::metadata(&p).unwrap().len();
            assert!(size <= line_len * 10 && size % line_len == 0, "{}: {size}", p.display());
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, FILE_MODE, "{}", p.display());
        }

        // One more file's worth: the oldest (0..10) goes, nothing else.
        let batch: Vec<Record> = (35..45).map(|s| record(s, 100)).collect();
        assert!(f.write_batch(&batch).iter().all(Outcome::is_delivered));
        let mut all: Vec<u64> = Vec::new();
        for p in [f.backup_path(3), f.backup_path(2), f.backup_path(1), path.clone()] {
            all.extend(seqs(&p));
        }
        assert_eq!(all, (10..45).collect::<Vec<_>>(), "in order, each once");
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_a_file_to_itself() {
        let d = dir("long");
        let path = d.0.join("events.json");
        let mut f = RotatingFile::open(FileConfig { path: path.clone(), max_bytes: 300, backups: 2, fsync: Fsync::Never }).unwrap();
        let out = f.write_batch(&[record(1, 10), record(2, 1000), record(3, 10)]);
        assert!(out.iter().all(Outcome::is_delivered));
        assert_eq!(seqs(&f.backup_path(2)), vec![1]);
        assert_eq!(seqs(&f.backup_path(1)), vec![2]);
        assert_eq!(seqs(&path), vec![3]);
    }

    #[test]
    fn reopening_appends_and_the_line_is_what_tail_json_prints() {
        let d = dir("reopen");
        let path = d.0.join("events.json");
        let first = record(1, 3);
        {
            let mut f = RotatingFile::open(FileConfig::new(&path)).unwrap();
            assert_eq!(f.write_batch(std::slice::from_ref(&first)), vec![Outcome::Delivered]);
        }
        let mut f = RotatingFile::open(FileConfig::new(&path)).unwrap();
        assert_eq!(f.size(), first.line.len() as u64 + 1);
        f.write_batch(&[record(2, 3)]);
        assert_eq!(lines(&path), vec![first.line.clone(), record(2, 3).line]);
    }

    #[test]
    fn with_no_backups_rotation_starts_over() {
        let d = dir("nobackups");
        let path = d.0.join("events.json");
        let mut f = RotatingFile::open(FileConfig { path: path.clone(), max_bytes: 200, backups: 0, fsync: Fsync::Batch }).unwrap();
        f.write_batch(&(0..10).map(|s| record(s, 20)).collect::<Vec<_>>());
        let kept = seqs(&path);
        assert!(!kept.is_empty() && *kept.last().unwrap() == 9, "{kept:?}");
        assert!(!f.backup_path(1).exists());
    }

    #[test]
    fn errors_name_the_path_and_a_failed_write_leaves_no_torn_line() {
        let d = dir("errors");
        let missing = d.0.join("no/such/dir/events.json");
        let e = RotatingFile::open(FileConfig::new(&missing)).err().unwrap().to_string();
        assert!(e.starts_with(&missing.display().to_string()) && !e.contains('\n'), "{e}");

        // /dev/full fails every write with ENOSPC: every record is retried,
        // the reason names the path.
        let mut f = RotatingFile::open(FileConfig { path: PathBuf::from("/dev/full"), max_bytes: u64::MAX, backups: 0, fsync: Fsync::Never }).unwrap();
        let out = f.write_batch(&[record(1, 1), record(2, 1)]);
        assert_eq!(out.len(), 2);
        for o in &out {
            match o {
                Outcome::Retry { reason, .. } => assert!(reason.starts_with("/dev/full: write"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
