//! tracefs: find or mount it, and parse tracepoint `format` files so the
//! kernel programs read fields at the offsets this kernel uses.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use oomwatch_common::{
    oom::MarkVictimLayout,
    tracepoint::{TpField, comm_encoding},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {source}; mount it with `mount -t tracefs tracefs {path}` or run oomwatch as root"
    )]
    Mount { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

pub const DEFAULT_TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

fn looks_mounted(root: &Path) -> bool {
    root.join("events").is_dir()
}

/// Where tracefs is, without mounting anything. Only the default location
/// falls back to debugfs's `tracing` directory: a path the operator named
/// (`--tracefs`) is the one they want used.
pub fn find_tracefs(preferred: &Path) -> Option<PathBuf> {
    if looks_mounted(preferred) {
        return Some(preferred.to_path_buf());
    }
    let debugfs = Path::new(DEBUGFS_TRACING);
    (preferred == Path::new(DEFAULT_TRACEFS) && looks_mounted(debugfs)).then(|| debugfs.to_path_buf())
}

/// Returns the tracefs root, mounting tracefs at `preferred` when no tracefs
/// is mounted (it is not at boot on some hosts). Must run before any
/// tracepoint is attached: aya looks tracefs up once and caches the answer.
pub fn ensure_tracefs(preferred: &Path) -> Result<(PathBuf, bool), TracefsError> {
    if let Some(found) = find_tracefs(preferred) {
        return Ok((found, false));
    }
    let mount_err = |source| TracefsError::Mount { path: preferred.to_path_buf(), source };
    let target = CString::new(preferred.as_os_str().as_encoded_bytes())
        .map_err(|_| mount_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 {
        return Err(mount_err(io::Error::last_os_error()));
    }
    if !looks_mounted(preferred) {
        return Err(mount_err(io::Error::other("mounted, but it has no events directory")));
    }
    Ok((preferred.to_path_buf(), true))
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    /// The C declaration without the name, e.g. `unsigned long`, `char[16]`.
    pub decl: String,
    pub offset: u16,
    pub size: u16,
    pub signed: bool,
    /// `__data_loc` fields hold a u32 (offset | len << 16) pointing into the record.
    pub data_loc: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<FormatField>,
}

impl TracepointFormat {
    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses the text of `events/<category>/<name>/format`.
pub fn parse_format(text: &str) -> Result<TracepointFormat, String> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            id = rest.trim().parse().ok();
        } else if line.starts_with("field:") {
            fields.push(parse_field_line(line)?);
        }
    }
    let name = name.ok_or("no `name:` line")?;
    if fields.is_empty() {
        return Err("no `field:` lines".to_owned());
    }
    Ok(TracepointFormat { name, id, fields })
}

fn parse_field_line(line: &str) -> Result<FormatField, String> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("field:") {
            decl = Some(v.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse::<u16>().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse::<u16>().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let bad = |what: &str| format!("{what} in `{line}`");
    let decl = decl.filter(|d| !d.is_empty()).ok_or_else(|| bad("no declaration"))?;
    let offset = offset.ok_or_else(|| bad("missing or invalid offset"))?;
    let size = size.ok_or_else(|| bad("missing or invalid size"))?;
    let (data_loc, decl) = match decl.strip_prefix("__data_loc ") {
        Some(rest) => (true, rest.trim()),
        None => (false, decl),
    };
    // The name is the last identifier: `int pid`, `char comm[16]` (array
    // suffix after the name), `__data_loc char[] comm` (brackets on the type).
    let (head, array) = match decl.strip_suffix(']').and_then(|d| d.rfind('[')) {
        Some(i) => (&decl[..i], &decl[i..]),
        None => (decl, ""),
    };
    let head = head.trim_end();
    // Past the whole character: a non-ASCII one before the name is several bytes.
    let split = head
        .char_indices()
        .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let name = &head[split..];
    if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return Err(bad("no field name"));
    }
    let ty = format!("{}{array}", head[..split].trim());
    Ok(FormatField { name: name.to_owned(), decl: ty, offset, size, signed, data_loc })
}

pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read { path: path.clone(), source })?;
    parse_format(&text).map_err(|reason| TracefsError::Format { path, reason })
}

pub fn tracepoint_exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs.join("events").join(category).join(name).join("format").exists()
}

fn tp_field(f: &FormatField) -> TpField {
    TpField { offset: f.offset, size: f.size }
}

/// Offsets for the `oom/mark_victim` program. Only `pid` is required (6.1
/// kernels carry nothing else); every other field is absent unless the
/// format lists it with a size the program can read.
pub fn mark_victim_layout(format: &TracepointFormat) -> Result<MarkVictimLayout, String> {
    let pid = format.field("pid").ok_or("the record has no `pid` field")?;
    if !matches!(pid.size, 4 | 8) {
        return Err(format!("`pid` has size {}, expected 4", pid.size));
    }
    let scalar = |name: &str| -> TpField {
        format
            .field(name)
            .filter(|f| !f.data_loc && matches!(f.size, 1 | 2 | 4 | 8))
            .map(tp_field)
            .unwrap_or(TpField::ABSENT)
    };
    let (comm, encoding) = match format.field("comm") {
        Some(f) if f.data_loc && f.size == 4 => (tp_field(f), comm_encoding::DATA_LOC),
        Some(f) if !f.data_loc && f.size == 16 => (tp_field(f), comm_encoding::INLINE),
        _ => (TpField::ABSENT, comm_encoding::ABSENT),
    };
    Ok(MarkVictimLayout {
        pid: tp_field(pid),
        comm,
        comm_encoding: encoding,
        total_vm: scalar("total_vm"),
        anon_rss: scalar("anon_rss"),
        file_rss: scalar("file_rss"),
        shmem_rss: scalar("shmem_rss"),
        uid: scalar("uid"),
        pgtables: scalar("pgtables"),
        oom_score_adj: scalar("oom_score_adj"),
    })
}

/// Offsets for the reclaim programs: `order` of a `*_reclaim_begin` record
/// and `nr_reclaimed` of a `*_reclaim_end` one; absent when a format is
/// missing or gives a size the program cannot read.
pub fn reclaim_fields(begin: Option<&TracepointFormat>, end: Option<&TracepointFormat>) -> (TpField, TpField) {
    let order = begin
        .and_then(|f| f.field("order"))
        .filter(|f| !f.data_loc && f.size == 4)
        .map(tp_field)
        .unwrap_or(TpField::ABSENT);
    let nr_reclaimed = end
        .and_then(|f| f.field("nr_reclaimed"))
        .filter(|f| !f.data_loc && matches!(f.size, 4 | 8))
        .map(tp_field)
        .unwrap_or(TpField::ABSENT);
    (order, nr_reclaimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MARK_VICTIM_6_18: &str = include_str!("../../testdata/tracefs/mark_victim-6.18.format");
    pub(crate) const MARK_VICTIM_6_1: &str = include_str!("../../testdata/tracefs/mark_victim-6.1.format");
    const SCHED_EXIT: &str = include_str!("../../testdata/tracefs/sched_process_exit-6.18.format");

    #[test]
    fn parses_6_18_mark_victim() {
        let f = parse_format(MARK_VICTIM_6_18).unwrap();
        assert_eq!(f.name, "mark_victim");
        assert_eq!(f.id, Some(609));
        let comm = f.field("comm").unwrap();
        assert!(comm.data_loc);
        assert_eq!((comm.offset, comm.size), (12, 4));
        let layout = mark_victim_layout(&f).unwrap();
        assert_eq!(layout.pid, TpField { offset: 8, size: 4 });
        assert_eq!(layout.comm_encoding, comm_encoding::DATA_LOC);
        assert_eq!(layout.total_vm, TpField { offset: 16, size: 8 });
        assert_eq!(layout.shmem_rss, TpField { offset: 40, size: 8 });
        assert_eq!(layout.uid, TpField { offset: 48, size: 4 });
        assert_eq!(layout.pgtables, TpField { offset: 56, size: 8 });
        assert_eq!(layout.oom_score_adj, TpField { offset: 64, size: 2 });
        assert!(f.field("oom_score_adj").unwrap().signed);
    }

    #[test]
    fn parses_6_1_mark_victim_with_pid_only() {
        let f = parse_format(MARK_VICTIM_6_1).unwrap();
        let layout = mark_victim_layout(&f).unwrap();
        assert_eq!(layout.pid, TpField { offset: 8, size: 4 });
        assert_eq!(layout.comm_encoding, comm_encoding::ABSENT);
        for absent in [layout.total_vm, layout.anon_rss, layout.uid, layout.oom_score_adj, layout.comm] {
            assert!(!absent.is_present());
        }
    }

    #[test]
    fn parses_inline_char_array() {
        let f = parse_format(SCHED_EXIT).unwrap();
        let comm = f.field("comm").unwrap();
        assert_eq!((comm.offset, comm.size, comm.data_loc), (8, 16, false));
        assert_eq!(comm.decl, "char[16]");
        assert_eq!(parse_format(MARK_VICTIM_6_18).unwrap().field("comm").unwrap().decl, "char[]");
        assert_eq!(f.field("pid").unwrap().offset, 24);
        assert_eq!(f.field("group_dead").unwrap().decl, "bool");
    }

    #[test]
    fn inline_comm_is_usable_for_mark_victim() {
        let text = "name: mark_victim\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n";
        let layout = mark_victim_layout(&parse_format(text).unwrap()).unwrap();
        assert_eq!(layout.comm_encoding, comm_encoding::INLINE);
        assert_eq!(layout.comm, TpField { offset: 12, size: 16 });
    }

    #[test]
    fn reclaim_fields_from_6_18_formats() {
        let begin = parse_format(include_str!("../../testdata/tracefs/mm_vmscan_memcg_reclaim_begin-6.18.format")).unwrap();
        let end = parse_format(include_str!("../../testdata/tracefs/mm_vmscan_memcg_reclaim_end-6.18.format")).unwrap();
        assert_eq!(
            reclaim_fields(Some(&begin), Some(&end)),
            (TpField { offset: 8, size: 4 }, TpField { offset: 8, size: 8 })
        );
        assert_eq!(reclaim_fields(None, Some(&begin)), (TpField::ABSENT, TpField::ABSENT));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for text in [
            "",
            "name: x",
            "name: x\nfield:;offset:;size:;",
            "name: x\n\tfield:int pid;\toffset:99999999;\tsize:4;",
            "name: x\n\tfield:int;\toffset:8;\tsize:4;",
            "name: x\n\tfield:int 9;\toffset:8;\tsize:4;",
            "\u{0}\u{1}field:\u{ff}",
            "name: mark_victim\n\tfield:int pid[;\toffset:8;\tsize:4;",
        ] {
            let _ = parse_format(text).map(|f| mark_victim_layout(&f));
        }
        assert!(parse_format("").is_err());
        let no_pid = "name: mark_victim\n\tfield:int tid;\toffset:8;\tsize:4;\tsigned:1;";
        assert!(mark_victim_layout(&parse_format(no_pid).unwrap()).is_err());
        let odd_pid = "name: mark_victim\n\tfield:char pid;\toffset:8;\tsize:1;\tsigned:1;";
        assert!(mark_victim_layout(&parse_format(odd_pid).unwrap()).is_err());
    }

    #[test]
    fn non_ascii_before_the_name_is_not_cut_inside_a_character() {
        // Found by the `tracefs` fuzz target: the split index landed inside a
        // two-byte character and slicing panicked.
        assert!(parse_format("name: x\nfield:\u{61c};\toffset:4;\tsize:4;").is_err());
        let f = parse_format("name: x\nfield:unsigned\u{e9} pid;\toffset:8;\tsize:4;").unwrap();
        assert_eq!((f.fields[0].name.as_str(), f.fields[0].decl.as_str()), ("pid", "unsigned\u{e9}"));
        let f = parse_format("name: x\nfield:int \u{e9}pid;\toffset:8;\tsize:4;").unwrap();
        assert_eq!((f.fields[0].name.as_str(), f.fields[0].decl.as_str()), ("pid", "int \u{e9}"));
    }
}
