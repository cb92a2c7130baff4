//! A writer for the kernel's initramfs format (cpio "newc"). Written here
//! rather than calling cpio(1) so the image is byte-for-byte reproducible
//! (fixed owner and mtime, sorted entries) and can hold /dev/console without
//! mknod rights on the host.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An archive under construction, keyed by path without a leading '/'.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds an entry and every missing parent directory. A later entry for
    /// the same path replaces the earlier one.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/').to_owned();
        let mut parent = String::new();
        for part in path.split('/').take(path.split('/').count().saturating_sub(1)) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.entries.insert(path, entry);
    }

    /// The archive bytes. The BTreeMap order puts every directory before
    /// what it contains, which the kernel's unpacker needs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Dir => (S_IFDIR | 0o755, &[]),
                Entry::File { mode, data } => (S_IFREG | (mode & 0o7777), data),
                Entry::Symlink(target) => (S_IFLNK | 0o777, target.as_bytes()),
                Entry::CharDev { .. } => (S_IFCHR | 0o600, &[]),
            };
            let (rmajor, rminor) = match entry {
                Entry::CharDev { major, minor } => (*major, *minor),
                _ => (0, 0),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_record(&mut out, ino as u32 + 1, mode, nlink, rmajor, rminor, path, data);
        }
        write_record(&mut out, 0, 0, 1, 0, 0, "TRAILER!!!", &[]);
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn write_record(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, rmajor: u32, rminor: u32, name: &str, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: fixed, for a reproducible image
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rmajor,
        rminor,
        name.len() as u32 + 1,
        0, // check (only for the "crc" variant)
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, rdev, data) of a record, read back per the format.
    type Record = (String, u32, (u32, u32), Vec<u8>);

    fn parse(mut bytes: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        let mut at = 0usize;
        loop {
            assert_eq!(&bytes[..6], b"070701", "magic at offset {at}");
            let field = |i: usize| u32::from_str_radix(std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap();
            let (mode, size, rdev, namesize) = (field(1), field(6) as usize, (field(9), field(10)), field(11) as usize);
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1]).unwrap().to_owned();
            assert_eq!(bytes[110 + namesize - 1], 0, "name NUL-terminated");
            let data_start = (110 + namesize).next_multiple_of(4);
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (data_start + size).next_multiple_of(4);
            at += next;
            bytes = &bytes[next..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn round_trips_with_parents_first_and_alignment() {
        let mut a = Archive::default();
        a.add("/usr/bin/wget", Entry::Symlink("/bin/busybox".into()));
        a.add("init", Entry::File { mode: 0o755, data: b"#!/bin/sh\n".to_vec() });
        a.add("dev/console", Entry::CharDev { major: 5, minor: 1 });
        a.add("bin/x", Entry::File { mode: 0o644, data: vec![1, 2, 3] });
        let bytes = a.to_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let recs = parse(&bytes);
        let names: Vec<&str> = recs.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/x", "dev", "dev/console", "init", "usr", "usr/bin", "usr/bin/wget"]);
        assert_eq!(recs[1].1, S_IFREG | 0o644);
        assert_eq!(recs[1].3, [1, 2, 3]);
        assert_eq!(recs[3].1 & 0o170000, S_IFCHR);
        assert_eq!(recs[3].2, (5, 1));
        assert_eq!(recs[7].1 & 0o170000, S_IFLNK);
        assert_eq!(recs[7].3, b"/bin/busybox");
        assert_eq!(recs[0].1, S_IFDIR | 0o755);
    }

    #[test]
    fn same_input_same_bytes() {
        let build = || {
            let mut a = Archive::default();
            a.add("b", Entry::Dir);
            a.add("a/f", Entry::File { mode: 0o600, data: b"x".to_vec() });
            a.to_bytes()
        };
        assert_eq!(build(), build());
    }
}
