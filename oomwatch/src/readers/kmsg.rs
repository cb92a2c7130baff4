//! /dev/kmsg: the kernel log, one record per read(2).
//!
//! A record is `PRIO,SEQ,TS_USEC,FLAGS[,FIELD...];MESSAGE\n`, followed by
//! zero or more dictionary lines ` KEY=value\n` (devices' SUBSYSTEM= and
//! DEVICE=). The kernel escapes every byte of the message below 0x20, from
//! 0x7f up, and the backslash itself as `\xNN`, so a record is printable
//! ASCII and one line; [`parse_record`] undoes that. A message can therefore
//! hold a newline (a comm or a cgroup name with one, or a kernel message
//! printed with several lines in one printk, like 6.1's memory.stat dump).
//!
//! PRIO is `facility << 3 | level`. The kernel's own messages have facility
//! 0; whatever userspace writes to /dev/kmsg gets facility 1 (LOG_USER) or
//! the one it asks for, but never 0 (devkmsg_write). Only facility 0 can be
//! trusted to come from the kernel.
//!
//! [`parse_record`] is pure. [`KmsgReader`] is the only I/O here: it opens
//! the device, starts at its end, and hands out one record per read.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// The longest record this reader accepts, as read. Kernels format a
/// record into at most 8 KiB (CONSOLE_EXT_LOG_MAX on 6.1) or 2 KiB
/// (PRINTK_MESSAGE_MAX in 6.12), escapes included.
pub const MAX_RECORD_BYTES: usize = 8192;
/// Dictionary lines kept per record (the kernel sends at most two).
pub const MAX_DICT_ENTRIES: usize = 4;
/// The header before `;` is five short fields; anything longer is not kmsg.
const MAX_HEADER_BYTES: usize = 128;

/// One parsed /dev/kmsg record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmsgRecord {
    /// 0 for the kernel's own messages, never 0 for userspace writes.
    pub facility: u32,
    /// 0 (emerg) to 7 (debug).
    pub level: u8,
    pub seq: u64,
    /// The printk timestamp: local_clock() at the time of the printk, in
    /// microseconds (not CLOCK_MONOTONIC; see the module docs of oom_report).
    pub ts_usec: u64,
    /// The `c` flag: the kernel could not append this continuation
    /// (pr_cont) to the record before it, so it came as a record of its own.
    pub continuation: bool,
    /// The message with the kernel's `\xNN` escapes undone: raw bytes, not
    /// necessarily UTF-8.
    pub message: Vec<u8>,
    /// `KEY=value` lines after the message, escapes undone.
    pub dict: Vec<(Vec<u8>, Vec<u8>)>,
}

impl KmsgRecord {
    /// The kernel printed this (facility 0); userspace writes never are.
    pub fn is_kernel(&self) -> bool {
        self.facility == 0
    }
}

/// Why a record was not kmsg. One line, no input echoed (it may be huge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("kmsg record longer than {MAX_RECORD_BYTES} bytes")]
    TooLong,
    #[error("kmsg record without ';' after its header")]
    NoMessage,
    #[error("kmsg record header: bad {0} field")]
    BadField(&'static str),
}

/// Parses one record as read(2) from /dev/kmsg. Never panics.
pub fn parse_record(raw: &[u8]) -> Result<KmsgRecord, RecordError> {
    let mut rec = KmsgRecord::default();
    parse_record_into(raw, &mut rec)?;
    Ok(rec)
}

/// [`parse_record`] into an existing record, reusing its buffers (a reader
/// that parses thousands of records a second allocates nothing per record).
/// On error `rec` holds no meaningful data.
pub fn parse_record_into(raw: &[u8], rec: &mut KmsgRecord) -> Result<(), RecordError> {
    if raw.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong);
    }
    let semi = raw[..raw.len().min(MAX_HEADER_BYTES)].iter().position(|&b| b == b';').ok_or(RecordError::NoMessage)?;
    let mut fields = raw[..semi].split(|&b| b == b',');
    let prio = fields.next().and_then(parse_u64).filter(|&p| p <= u64::from(u32::MAX)).ok_or(RecordError::BadField("priority"))?;
    rec.seq = fields.next().and_then(parse_u64).ok_or(RecordError::BadField("sequence"))?;
    rec.ts_usec = fields.next().and_then(parse_u64).ok_or(RecordError::BadField("timestamp"))?;
    let flags = fields.next().filter(|f| !f.is_empty()).ok_or(RecordError::BadField("flags"))?;
    // Later fields (caller=T123 with CONFIG_PRINTK_CALLER) are optional.
    rec.facility = (prio >> 3) as u32;
    rec.level = (prio & 7) as u8;
    rec.continuation = flags.contains(&b'c');

    let body = &raw[semi + 1..];
    let (message, mut dict) = match memchr::memchr(b'\n', body) {
        Some(nl) => (&body[..nl], &body[nl + 1..]),
        None => (body, &b""[..]),
    };
    rec.message.clear();
    unescape_into(message, &mut rec.message);
    rec.dict.clear();
    while !dict.is_empty() {
        let (line, rest) = match memchr::memchr(b'\n', dict) {
            Some(nl) => (&dict[..nl], &dict[nl + 1..]),
            None => (dict, &b""[..]),
        };
        dict = rest;
        let Some(entry) = line.strip_prefix(b" ") else { continue };
        if rec.dict.len() == MAX_DICT_ENTRIES {
            break;
        }
        let (key, value) = match entry.iter().position(|&b| b == b'=') {
            Some(eq) => (&entry[..eq], &entry[eq + 1..]),
            None => (entry, &b""[..]),
        };
        let (mut k, mut v) = (Vec::new(), Vec::new());
        unescape_into(key, &mut k);
        unescape_into(value, &mut v);
        rec.dict.push((k, v));
    }
    Ok(())
}

/// Splits records read one after another and stored together (a capture
/// file, `cat /dev/kmsg`): each record is its line plus the dictionary lines
/// (starting with a space) after it.
pub fn split_records(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match rest[end..].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    end += nl + 1;
                    if rest.get(end) != Some(&b' ') {
                        break;
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let (record, tail) = rest.split_at(end);
        rest = tail;
        Some(record)
    })
}

/// Undoes the kernel's `\xNN` escapes. A backslash that does not start a
/// valid escape is kept as it is (the kernel never writes one).
pub fn unescape_into(escaped: &[u8], out: &mut Vec<u8>) {
    out.reserve(escaped.len());
    let mut rest = escaped;
    while let Some(at) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        if rest.get(1) == Some(&b'x')
            && let (Some(hi), Some(lo)) = (rest.get(2).and_then(|&c| hex(c)), rest.get(3).and_then(|&c| hex(c)))
        {
            out.push(hi << 4 | lo);
            rest = &rest[4..];
        } else {
            out.push(b'\\');
            rest = &rest[1..];
        }
    }
    out.extend_from_slice(rest);
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// An unsigned decimal with nothing else around it.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

// ------------------------------------------------------------------ reader

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After the last record: only what the kernel prints from now on.
    End,
    /// The oldest record still in the ring buffer.
    Oldest,
}

/// The reader's own bookkeeping, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Records handed out.
    pub records: u64,
    /// Times the kernel overwrote records before they were read (EPIPE).
    pub overwritten: u64,
    /// Records never read, from the gaps in sequence numbers.
    pub lost_records: u64,
    /// Records that did not parse as kmsg (skipped).
    pub malformed: u64,
    /// Records longer than the read buffer (EINVAL; the kernel skips them).
    pub too_long: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("{path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: io::Error },
}

/// Reads /dev/kmsg (or a file like it) one record per read(2).
///
/// Blocking by default: [`KmsgReader::next`] waits for the next record. With
/// [`KmsgReader::open_nonblocking`] it returns `Ok(None)` when nothing is
/// ready, for a caller that polls the fd ([`AsFd`]; readable means a record
/// is there) from tokio's `AsyncFd` or a poll loop.
pub struct KmsgReader {
    file: File,
    path: PathBuf,
    buf: Box<[u8]>,
    last_seq: Option<u64>,
    stats: ReaderStats,
    record: KmsgRecord,
    raw_len: usize,
}

impl KmsgReader {
    /// A blocking reader at the end of the log. A record the kernel is
    /// still extending when the reader opens (a pr_cont line, or a write to
    /// /dev/kmsg, without its newline yet) is not "in" the log: it comes
    /// first, once the next printk finishes it.
    pub fn open(path: &Path) -> Result<Self, KmsgError> {
        Self::open_with(path, Start::End, false)
    }

    /// A non-blocking reader at the end of the log.
    pub fn open_nonblocking(path: &Path) -> Result<Self, KmsgError> {
        Self::open_with(path, Start::End, true)
    }

    pub fn open_with(path: &Path, start: Start, nonblocking: bool) -> Result<Self, KmsgError> {
        let io_err = |what, source| KmsgError::Io { path: path.to_owned(), what, source };
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).custom_flags(libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 });
        let file = opts.open(path).map_err(|e| io_err("open", e))?;
        let whence = match start {
            Start::End => libc::SEEK_END,
            Start::Oldest => libc::SEEK_SET,
        };
        // SAFETY: lseek on an fd we own. /dev/kmsg takes only offset 0.
        if unsafe { libc::lseek(file.as_raw_fd(), 0, whence) } < 0 {
            return Err(io_err("seek", io::Error::last_os_error()));
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            // One byte more than the longest record: a read that fills the
            // buffer is one this reader must not trust to be whole.
            buf: vec![0u8; MAX_RECORD_BYTES + 1].into_boxed_slice(),
            last_seq: None,
            stats: ReaderStats::default(),
            record: KmsgRecord::default(),
            raw_len: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The next record's raw bytes (one read(2)). `Ok(None)` only when the
    /// reader is non-blocking and nothing is ready, or at the end of a
    /// regular file. Overwritten records (EPIPE) are counted and skipped:
    /// the kernel moves the reader to the oldest record it still has.
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>, KmsgError> {
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::read(self.file.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n > 0 {
                let n = n as usize;
                if n > MAX_RECORD_BYTES {
                    self.stats.too_long += 1;
                    continue;
                }
                return Ok(Some(&self.buf[..n]));
            }
            if n == 0 {
                return Ok(None);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EPIPE) => self.stats.overwritten += 1,
                // The record did not fit the buffer; the kernel moved past it.
                Some(libc::EINVAL) => self.stats.too_long += 1,
                _ => return Err(KmsgError::Io { path: self.path.clone(), what: "read", source: err }),
            }
        }
    }

    /// The next record, parsed. Records that are not kmsg are counted and
    /// skipped. `Ok(None)` as for [`KmsgReader::next_raw`]. The record is
    /// the reader's own buffer, valid until the next call.
    #[allow(clippy::should_implement_trait)] // None means "nothing yet", not the end: not an Iterator
    pub fn next(&mut self) -> Result<Option<&KmsgRecord>, KmsgError> {
        loop {
            let Some(raw) = self.next_raw()? else { return Ok(None) };
            // next_raw borrows self.buf; parse into the separate record.
            self.raw_len = raw.len();
            let parsed = parse_record_into(&self.buf[..self.raw_len], &mut self.record);
            if parsed.is_err() {
                self.stats.malformed += 1;
                continue;
            }
            if let Some(last) = self.last_seq
                && self.record.seq > last + 1
            {
                self.stats.lost_records += self.record.seq - last - 1;
            }
            self.last_seq = Some(self.record.seq);
            self.stats.records += 1;
            return Ok(Some(&self.record));
        }
    }
}

impl KmsgReader {
    /// The bytes of the record [`KmsgReader::next`] returned last, as read.
    pub fn last_raw(&self) -> &[u8] {
        &self.buf[..self.raw_len]
    }
}

impl AsFd for KmsgReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for KmsgReader {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_record() {
        let r = parse_record(b"3,584,953058749,-;Memory cgroup out of memory: Killed process 30835 (memhog)\n").unwrap();
        assert_eq!((r.facility, r.level, r.seq, r.ts_usec, r.continuation), (0, 3, 584, 953058749, false));
        assert!(r.is_kernel());
        assert_eq!(r.message, b"Memory cgroup out of memory: Killed process 30835 (memhog)");
        assert!(r.dict.is_empty());
    }

    #[test]
    fn userspace_records_have_a_facility() {
        // What `echo x > /dev/kmsg` gives: LOG_USER (1), level 4 by default.
        let r = parse_record(b"12,9,100,-;Killed process 1 (x) total-vm:0kB\n").unwrap();
        assert_eq!((r.facility, r.level), (1, 4));
        assert!(!r.is_kernel());
        let r = parse_record(b"30,9,100,-;systemd[1]: x\n").unwrap();
        assert_eq!((r.facility, r.level), (3, 6));
    }

    #[test]
    fn unescapes_and_keeps_non_utf8() {
        let r = parse_record(b"6,1,2,-;a,pid=2\\x0a(\\xff)= \\x5c \\xzz \\x4\n").unwrap();
        assert_eq!(r.message, b"a,pid=2\n(\xff)= \\ \\xzz \\x4");
    }

    #[test]
    fn continuation_flag_caller_field_and_dict() {
        let r = parse_record(b"6,10,20,c,caller=T42;tail\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n").unwrap();
        assert!(r.continuation);
        assert_eq!(r.message, b"tail");
        assert_eq!(r.dict, vec![(b"SUBSYSTEM".to_vec(), b"pci".to_vec()), (b"DEVICE".to_vec(), b"+pci:0000:00:01.0".to_vec())]);
    }

    #[test]
    fn splits_stored_records_with_their_dictionaries() {
        let buf = b"6,1,2,-;a\n SUBSYSTEM=pci\n6,2,3,-;b\n6,3,4,-;c";
        let recs: Vec<&[u8]> = split_records(buf).collect();
        assert_eq!(recs, vec![&b"6,1,2,-;a\n SUBSYSTEM=pci\n"[..], b"6,2,3,-;b\n", b"6,3,4,-;c"]);
        assert_eq!(split_records(b"").count(), 0);
    }

    #[test]
    fn refuses_what_is_not_kmsg() {
        assert_eq!(parse_record(b"no header here\n"), Err(RecordError::NoMessage));
        assert_eq!(parse_record(b"x,1,2,-;m\n"), Err(RecordError::BadField("priority")));
        assert_eq!(parse_record(b"6,,2,-;m\n"), Err(RecordError::BadField("sequence")));
        assert_eq!(parse_record(b"6,1,99999999999999999999999,-;m\n"), Err(RecordError::BadField("timestamp")));
        assert_eq!(parse_record(b"6,1,2;m\n"), Err(RecordError::BadField("flags")));
        assert_eq!(parse_record(b"99999999999,1,2,-;m\n"), Err(RecordError::BadField("priority")));
        assert_eq!(parse_record(&vec![b'6'; MAX_RECORD_BYTES + 1]), Err(RecordError::TooLong));
        // A ';' past the header limit is not a header.
        let mut long = vec![b'1'; MAX_HEADER_BYTES];
        long.extend_from_slice(b";m");
        assert_eq!(parse_record(&long), Err(RecordError::NoMessage));
    }

    #[test]
    fn reads_records_from_a_file_and_counts_the_gaps() {
        let dir = std::env::temp_dir().join(format!("oomwatch-kmsg-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kmsg");
        // A regular file returns everything in one read; the reader's record
        // boundary is the kernel's read(2), so here the whole file is one
        // record whose message is the first line.
        std::fs::write(&path, b"6,5,1,-;one\n").unwrap();
        let mut r = KmsgReader::open_with(&path, Start::Oldest, false).unwrap();
        assert_eq!(r.next().unwrap().map(|r| r.message.clone()), Some(b"one".to_vec()));
        assert_eq!(r.next().unwrap(), None);
        assert_eq!(r.stats().records, 1);
        let err = KmsgReader::open(&dir.join("missing")).err().unwrap().to_string();
        assert!(err.contains("missing: open: "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
