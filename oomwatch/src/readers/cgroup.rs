//! Readers for the memory files of one cgroup directory.
//!
//! Every reader takes the cgroup directory, so tests point them at temp dirs.
//!
//! Return convention, the same for every reader:
//! - `Ok(Some(..))`: the sample. Fields are `Option` where a file or key is
//!   missing on older kernels or other configurations (no swap accounting,
//!   pre-5.17 kernels without `oom_group_kill`, ...).
//! - `Ok(None)`: the cgroup went away (removed before or during the read).
//!   That is normal for a daemon watching a host where containers come and
//!   go, so it is not an error; callers drop the cgroup from their model.
//! - `Err(..)`: anything else, with the path of the file.
//!
//! Cost: the daemon polls up to 1,000 cgroups every second within 0.5% of a
//! core, about 5 µs per cgroup. Measured on this machine (release build,
//! `cargo xtask bench --only read-cost`, which runs `benches/cgroup_read.rs`):
//! opening a cgroup file costs far more than reading it (kernfs path walk
//! and seq_file setup), so
//! - [`CgroupPoller`] keeps the usage and event files open and re-reads them
//!   with `pread` at offset 0, which makes kernfs render them afresh: about
//!   0.5 µs per file. This is the per-second path.
//! - [`read_usage`] (one file, about 7 µs) and [`read_events`] (one or two
//!   files) answer the same without holding file descriptors, for
//!   occasional use.
//! - only [`read_memory`] reads `memory.stat` (about 55 µs for all files):
//!   for when something moved, or on a slower period.
//!
//! Each call keeps one read buffer and one path buffer and parses in place
//! without building maps.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use super::{CgroupError, CgroupVersion};

/// One reading of a memory cgroup's state, v1 and v2 mapped to one shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// Memory charged to the cgroup and its descendants (v2 `memory.current`,
    /// v1 `memory.usage_in_bytes`), page cache included.
    pub usage_bytes: u64,
    /// Hard limit (v2 `memory.max`, v1 `memory.limit_in_bytes`); `None` when
    /// unlimited.
    pub limit_bytes: Option<u64>,
    /// v2 `memory.high` (throttling threshold); `None` when unlimited or on v1.
    pub high_bytes: Option<u64>,
    /// v2 `memory.low` (best-effort protection); `None` when absent or on v1.
    pub low_bytes: Option<u64>,
    /// Swap in use: v2 `memory.swap.current`; on v1
    /// `memory.memsw.usage_in_bytes - memory.usage_in_bytes` (saturating).
    /// `None` without swap accounting.
    pub swap_usage_bytes: Option<u64>,
    /// Swap limit: v2 `memory.swap.max`; on v1 `memsw.limit - limit`
    /// (memsw limits memory plus swap). `None` when unlimited or without
    /// swap accounting.
    pub swap_limit_bytes: Option<u64>,
    /// From `memory.stat`; on v1 the hierarchical `total_*` keys, which
    /// include descendants like v2's keys do, and the local keys only when
    /// the `total_*` ones are missing.
    pub inactive_file_bytes: Option<u64>,
    pub active_file_bytes: Option<u64>,
    /// Anonymous memory: v2 `anon`, v1 `total_rss`/`rss`.
    pub anon_bytes: Option<u64>,
    /// tmpfs and shared memory: counted as page cache, but not reclaimable
    /// without swap. v2 `shmem`, v1 `total_shmem`/`shmem`.
    pub shmem_bytes: Option<u64>,
    /// Page cache, shmem included: v2 `file`, v1 `total_cache`/`cache`.
    pub file_bytes: Option<u64>,
    /// `usage - inactive_file`, saturating at 0: the number cAdvisor and the
    /// kubelet call the working set and evict on. Equal to usage when
    /// `memory.stat` lacks inactive_file.
    pub working_set_bytes: u64,
    /// Hierarchical event counters (v2 `memory.events`). On v1 they come from
    /// `memory.oom_control` and `memory.failcnt` and count this cgroup only,
    /// because v1 never propagates them; see [`MemoryEvents`].
    pub events: MemoryEvents,
    /// Counters for this cgroup alone: v2 `memory.events.local` (`None` before
    /// Linux 5.2); on v1 the same values as `events`.
    pub events_local: Option<MemoryEvents>,
    /// v1 `memory.oom_control` `oom_kill_disable`; `None` on v2.
    pub oom_kill_disabled: Option<bool>,
    /// v1 `memory.oom_control` `under_oom`; `None` on v2.
    pub under_oom: Option<bool>,
    /// v1 `memory.failcnt`: how often a charge hit the limit; `None` on v2
    /// (where `events.max` counts the same thing).
    pub failcnt: Option<u64>,
}

impl MemorySample {
    /// Page cache the kernel can reclaim without swap: file minus shmem.
    pub fn reclaimable_file_bytes(&self) -> Option<u64> {
        Some(self.file_bytes?.saturating_sub(self.shmem_bytes.unwrap_or(0)))
    }
}

/// Memory event counters, named after the v2 `memory.events` keys. A key the
/// kernel does not write is `None`.
///
/// v1 mapping (v1 has no `memory.events`):
/// - `oom_kill` <- `memory.oom_control` `oom_kill` (Linux 4.13+);
/// - `max` <- `memory.failcnt`: both count charges that ran into the hard
///   limit and had to reclaim (v2 "usage was about to go over max", v1
///   "failed to charge against the limit"), so a rising `max` means the same
///   on both;
/// - `low`, `high`, `oom`, `oom_group_kill`: `None`, v1 does not count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub oom: Option<u64>,
    pub oom_kill: Option<u64>,
    pub oom_group_kill: Option<u64>,
}

/// A limit file's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Bytes(u64),
}

impl Limit {
    /// The limit in bytes, `None` when unlimited.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::Bytes(b) => Some(b),
        }
    }
}

/// v1 writes "unlimited" as PAGE_COUNTER_MAX pages in bytes, which depends on
/// the page size: 9223372036854771712 with 4 KiB pages, ...710272 with 64 KiB
/// pages; older kernels wrote still larger values, up to u64::MAX. Anything
/// from here up (8 EiB less 1 MiB) is no limit in practice, whatever the
/// page size.
pub const V1_UNLIMITED_THRESHOLD: u64 = 0x7FFF_FFFF_FFF0_0000;

/// Parses a limit file: "max" (v2) or a decimal number, where v1's huge
/// "unlimited" numbers become [`Limit::Unlimited`]. Surrounding whitespace is
/// ignored. `None` for anything else; never panics.
pub fn parse_limit(content: &[u8]) -> Option<Limit> {
    let t = content.trim_ascii();
    if t == b"max" {
        return Some(Limit::Unlimited);
    }
    let v = parse_u64(t)?;
    Some(if v >= V1_UNLIMITED_THRESHOLD {
        Limit::Unlimited
    } else {
        Limit::Bytes(v)
    })
}

/// Parses a single unsigned decimal, ignoring surrounding whitespace. `None`
/// on empty input, signs, other characters or overflow; never panics.
pub fn parse_u64(content: &[u8]) -> Option<u64> {
    let t = content.trim_ascii();
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Scans a flat keyed file ("key value" per line: `memory.stat`,
/// `memory.events`, `memory.oom_control`) once and returns the values of the
/// wanted keys, in the order of `keys`, without allocating. A key that is
/// missing, or whose value is not an unsigned decimal, is `None` (the
/// kernel may add keys or change one's format; we keep what we can). When a
/// key repeats, the first occurrence wins. Never panics.
pub fn parse_flat_keyed<const N: usize>(content: &[u8], keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    let mut left = N;
    for line in content.split(|&c| c == b'\n') {
        if left == 0 {
            break;
        }
        let mut parts = line
            .split(|c| c.is_ascii_whitespace())
            .filter(|p| !p.is_empty());
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let Some(i) = keys.iter().position(|k| k.as_bytes() == key)
            && out[i].is_none()
            && let Some(v) = parse_u64(value)
        {
            out[i] = Some(v);
            left -= 1;
        }
    }
    out
}

/// The v2 `memory.events` keys, in [`MemoryEvents`] field order.
/// Keys read from v2 `memory.events`, in the order of [`MemoryEvents`].
pub const V2_EVENT_KEYS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
/// Keys read from v2 `memory.stat`.
pub const V2_STAT_KEYS: [&str; 5] = ["inactive_file", "active_file", "anon", "file", "shmem"];
/// Keys read from v1 `memory.oom_control`, in the order of [`OomControl`].
pub const V1_OOM_CONTROL_KEYS: [&str; 3] = ["oom_kill_disable", "under_oom", "oom_kill"];
/// Keys read from v1 `memory.stat`: hierarchical totals and the cgroup's own.
pub const V1_STAT_KEYS: [&str; 10] = [
    "total_inactive_file",
    "inactive_file",
    "total_active_file",
    "active_file",
    "total_rss",
    "rss",
    "total_cache",
    "cache",
    "total_shmem",
    "shmem",
];

fn v2_events(content: &[u8]) -> MemoryEvents {
    let [low, high, max, oom, oom_kill, oom_group_kill] = parse_flat_keyed(content, V2_EVENT_KEYS);
    MemoryEvents {
        low,
        high,
        max,
        oom,
        oom_kill,
        oom_group_kill,
    }
}

/// Reads the memory files of the cgroup directory `dir`, `Ok(None)` when the
/// cgroup is gone (see the module docs).
///
/// The v2 root cgroup has no `memory.current`: it is reported as
/// [`CgroupError::NotMemoryCgroup`]; use /proc/meminfo for the whole host.
pub fn read_memory(
    dir: &Path,
    version: CgroupVersion,
) -> Result<Option<MemorySample>, CgroupError> {
    let mut r = DirReader::new(dir, 4096);
    let sample = match version {
        CgroupVersion::V2 => read_memory_v2(&mut r)?,
        CgroupVersion::V1 => read_memory_v1(&mut r)?,
    };
    r.finish(sample)
}

/// Only the current usage: one small file opened and read. For polling many
/// cgroups every second, [`CgroupPoller::usage`] is ten times cheaper.
pub fn read_usage(dir: &Path, version: CgroupVersion) -> Result<Option<u64>, CgroupError> {
    let mut r = DirReader::new(dir, 32);
    let usage = r.required_u64(usage_file(version))?;
    r.finish(usage)
}

/// The hard limit alone (v2 `memory.max`, v1 `memory.limit_in_bytes`):
/// `None` when unlimited, unreadable or gone. For the kill path, where one
/// small file is all that is needed.
pub fn read_limit(dir: &Path, version: CgroupVersion) -> Option<u64> {
    let file = match version {
        CgroupVersion::V2 => "memory.max",
        CgroupVersion::V1 => "memory.limit_in_bytes",
    };
    std::fs::read(dir.join(file)).ok().and_then(|b| parse_limit(&b)).and_then(Limit::bytes)
}

/// The lowest hard limit on this cgroup and its ancestors, as far as the
/// kernel shows it in one file: v1 `memory.stat` `hierarchical_memory_limit`
/// (ancestors outside a cgroup namespace included); v2 has no such key, so
/// the cgroup's own `memory.max` (its ancestors are the caller's to walk).
/// `None` when unlimited, unreadable or gone.
pub fn read_limit_above(dir: &Path, version: CgroupVersion) -> Option<u64> {
    match version {
        CgroupVersion::V1 => {
            let stat = std::fs::read(dir.join("memory.stat")).ok()?;
            let [limit] = parse_flat_keyed(&stat, ["hierarchical_memory_limit"]);
            limit.filter(|&l| l < V1_UNLIMITED_THRESHOLD)
        }
        CgroupVersion::V2 => read_limit(dir, version),
    }
}

/// The local limit-hit counter alone (v2 `memory.events.local` oom, v1
/// `memory.failcnt`), read now.
pub fn read_limit_hits(dir: &Path, version: CgroupVersion) -> Option<u64> {
    match version {
        CgroupVersion::V2 => read_events_local(dir, CgroupVersion::V2).ok().flatten().and_then(|e| e.oom),
        CgroupVersion::V1 => read_events(dir, CgroupVersion::V1).ok().flatten().and_then(|e| e.max),
    }
}

/// Only the event counters: v2 `memory.events`; v1 `memory.oom_control` and
/// `memory.failcnt`, without `memory.stat`. When `oom_kill` or `max` moves,
/// read the rest with [`read_memory`]. [`CgroupPoller::events`] does the same
/// on files kept open.
pub fn read_events(
    dir: &Path,
    version: CgroupVersion,
) -> Result<Option<MemoryEvents>, CgroupError> {
    let mut r = DirReader::new(dir, 256);
    let events = match version {
        CgroupVersion::V2 => r.required_keyed("memory.events", v2_events)?,
        CgroupVersion::V1 => r.v1_oom_control()?.map(|oc| oc.events(r.failcnt)),
    };
    r.finish(events)
}

/// The kernel's count of OOM kills of this cgroup's own tasks (v1
/// `memory.oom_control`, local already; v2 `memory.events.local`).
pub fn read_own_oom_kills(dir: &Path, version: CgroupVersion) -> Option<u64> {
    read_events_local(dir, version).ok().flatten().and_then(|e| e.oom_kill)
}

/// The event counters of this cgroup alone, without descendants:
/// v2 `memory.events.local`; on v1 the same as [`read_events`], whose
/// counters are local already. `Ok(None)` when the cgroup is gone, and also
/// on v2 kernels before 5.2 that lack the file.
pub fn read_events_local(
    dir: &Path,
    version: CgroupVersion,
) -> Result<Option<MemoryEvents>, CgroupError> {
    match version {
        CgroupVersion::V1 => read_events(dir, version),
        CgroupVersion::V2 => {
            let mut r = DirReader::new(dir, 256);
            let events = r.optional("memory.events.local", v2_events)?;
            r.finish(events)
        }
    }
}

fn usage_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V2 => "memory.current",
        CgroupVersion::V1 => "memory.usage_in_bytes",
    }
}

fn events_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V2 => "memory.events",
        CgroupVersion::V1 => "memory.oom_control",
    }
}

/// The per-second poll of one cgroup: its usage file, kept open, and its
/// event files, opened the first time they are polled and kept from then.
///
/// Holds 1 file descriptor until the events are first polled, then 2 on v2
/// and 3 on v1 (`memory.usage_in_bytes`, `memory.oom_control`,
/// `memory.failcnt`). The sampler polls events only for v1 cgroups near
/// their limit, so a host of 10,000 idle cgroups costs 10,000 descriptors,
/// not 30,000 (an open-file hard limit of 20,000 used to leave a third of
/// them untracked). A daemon should still raise its `RLIMIT_NOFILE` soft
/// limit to the hard limit at start (allowed without privileges).
///
/// An open file does not keep the cgroup alive: after rmdir the kernel
/// answers reads with ENODEV, which the methods report as `Ok(None)`; the
/// caller then drops the poller, and reopens by path if a cgroup of the same
/// name appears again (it is a new cgroup).
#[derive(Debug)]
pub struct CgroupPoller {
    dir: PathBuf,
    version: CgroupVersion,
    usage: File,
    events: std::cell::OnceCell<EventFiles>,
}

#[derive(Debug)]
struct EventFiles {
    /// v2 `memory.events`, v1 `memory.oom_control`.
    events: File,
    /// v1 `memory.failcnt`; `None` on v2 (and if a v1 kernel lacks it).
    failcnt: Option<File>,
}

/// Opens `name` in the cgroup `dir`: `Ok(None)` when the cgroup is gone (or,
/// for a file not `required`, when the file does not exist);
/// [`CgroupError::NotMemoryCgroup`] when a required file is missing from a
/// directory that exists.
fn open_in(dir: &Path, name: &'static str, required: bool) -> Result<Option<File>, CgroupError> {
    match File::open(dir.join(name)) {
        Ok(f) => Ok(Some(f)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            if required && dir_exists(dir)? {
                Err(CgroupError::NotMemoryCgroup { path: dir.to_path_buf(), file: name })
            } else {
                Ok(None)
            }
        }
        Err(source) => Err(CgroupError::Io { path: dir.join(name), source }),
    }
}

/// Whether the required file `name` is in the cgroup `dir`, as [`open_in`]
/// would find it, without holding a descriptor.
fn file_present(dir: &Path, name: &'static str) -> Result<bool, CgroupError> {
    match std::fs::metadata(dir.join(name)) {
        Ok(_) => Ok(true),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            if dir_exists(dir)? {
                Err(CgroupError::NotMemoryCgroup { path: dir.to_path_buf(), file: name })
            } else {
                Ok(false)
            }
        }
        Err(source) => Err(CgroupError::Io { path: dir.join(name), source }),
    }
}

impl CgroupPoller {
    /// Opens the usage file of the memory cgroup `dir` (and checks that its
    /// event file is there). `Ok(None)` when the cgroup is gone;
    /// [`CgroupError::NotMemoryCgroup`] when `dir` exists but lacks them.
    pub fn open(dir: &Path, version: CgroupVersion) -> Result<Option<Self>, CgroupError> {
        let Some(usage) = open_in(dir, usage_file(version), true)? else {
            return Ok(None);
        };
        if !file_present(dir, events_file(version))? {
            return Ok(None);
        }
        Ok(Some(CgroupPoller {
            dir: dir.to_path_buf(),
            version,
            usage,
            events: std::cell::OnceCell::new(),
        }))
    }

    /// The event files, opened on first use. `Ok(None)` when the cgroup is gone.
    fn event_files(&self) -> Result<Option<&EventFiles>, CgroupError> {
        if let Some(files) = self.events.get() {
            return Ok(Some(files));
        }
        let Some(events) = open_in(&self.dir, events_file(self.version), true)? else {
            return Ok(None);
        };
        let failcnt = match self.version {
            CgroupVersion::V1 => open_in(&self.dir, "memory.failcnt", false)?,
            CgroupVersion::V2 => None,
        };
        Ok(Some(self.events.get_or_init(|| EventFiles { events, failcnt })))
    }

    /// The cgroup directory this poller reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Current usage, as [`read_usage`] reads it; `Ok(None)` once the cgroup
    /// is gone.
    pub fn usage(&self) -> Result<Option<u64>, CgroupError> {
        let mut buf = [0u8; 32];
        self.pread_u64(&self.usage, usage_file(self.version), &mut buf)
    }

    /// Event counters, as [`read_events`] reads them; `Ok(None)` once the
    /// cgroup is gone.
    pub fn events(&self) -> Result<Option<MemoryEvents>, CgroupError> {
        let Some(files) = self.event_files()? else {
            return Ok(None);
        };
        let mut buf = [0u8; 512];
        let name = events_file(self.version);
        let Some(c) = self.pread(&files.events, name, &mut buf)? else {
            return Ok(None);
        };
        match self.version {
            CgroupVersion::V2 => Ok(Some(v2_events(c))),
            CgroupVersion::V1 => {
                let [oom_kill] = parse_flat_keyed(c, ["oom_kill"]);
                let failcnt = match &files.failcnt {
                    Some(f) => {
                        let mut buf = [0u8; 32];
                        let Some(n) = self.pread_u64(f, "memory.failcnt", &mut buf)? else {
                            return Ok(None);
                        };
                        Some(n)
                    }
                    None => None,
                };
                Ok(Some(MemoryEvents {
                    max: failcnt,
                    oom_kill,
                    ..MemoryEvents::default()
                }))
            }
        }
    }

    /// A full sample by path, as [`read_memory`] reads it.
    pub fn sample(&self) -> Result<Option<MemorySample>, CgroupError> {
        read_memory(&self.dir, self.version)
    }

    fn pread_u64(
        &self,
        file: &File,
        name: &'static str,
        buf: &mut [u8],
    ) -> Result<Option<u64>, CgroupError> {
        let Some(c) = self.pread(file, name, buf)? else {
            return Ok(None);
        };
        parse_u64(c)
            .map(Some)
            .ok_or_else(|| CgroupError::parse(self.dir.join(name), c, "expected a number"))
    }

    /// Re-reads a kept file from offset 0 into `buf`. `Ok(None)` when the
    /// cgroup is gone. Content that fills the buffer is refused rather than
    /// parsed short: a cut "oom_kill 12" would read as 1.
    fn pread<'b>(
        &self,
        file: &File,
        name: &'static str,
        buf: &'b mut [u8],
    ) -> Result<Option<&'b [u8]>, CgroupError> {
        use std::os::unix::fs::FileExt;
        let mut filled = 0;
        loop {
            let n = match file.read_at(&mut buf[filled..], filled as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_gone(&e) => return Ok(None),
                Err(source) => {
                    return Err(CgroupError::Io {
                        path: self.dir.join(name),
                        source,
                    });
                }
            };
            filled += n;
            if n == 0 || (filled < buf.len() && buf[filled - 1] == b'\n') {
                return Ok(Some(&buf[..filled]));
            }
            if filled == buf.len() {
                return Err(CgroupError::parse(
                    self.dir.join(name),
                    buf,
                    "larger than this reader expects",
                ));
            }
        }
    }
}

/// Errors that mean the cgroup was removed under us: kernfs answers ENODEV
/// for files of a removed cgroup, some older kernels ESRCH.
fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ESRCH))
}

/// Results of the reads, before the vanish check. `None` only when a
/// required file was missing, which [`DirReader::finish`] turns into either
/// "vanished" or an error.
type Partial<T> = Result<Option<T>, CgroupError>;

fn read_memory_v2(r: &mut DirReader<'_>) -> Partial<MemorySample> {
    let Some(usage) = r.required_u64("memory.current")? else {
        return Ok(None);
    };
    let limit = r.optional_limit("memory.max")?.flatten();
    let high = r.optional_limit("memory.high")?.flatten();
    let low = r.optional_limit("memory.low")?.flatten();
    let swap_usage = r.optional_u64("memory.swap.current")?;
    let swap_limit = r.optional_limit("memory.swap.max")?.flatten();
    let Some(events) = r.required_keyed("memory.events", v2_events)? else {
        return Ok(None);
    };
    let events_local = r.optional("memory.events.local", v2_events)?;
    let stat = r
        .optional("memory.stat", |c| {
            parse_flat_keyed(c, V2_STAT_KEYS)
        })?
        .unwrap_or_default();
    let [inactive_file, active_file, anon, file, shmem] = stat;
    Ok(Some(MemorySample {
        usage_bytes: usage,
        limit_bytes: limit,
        high_bytes: high,
        low_bytes: low,
        swap_usage_bytes: swap_usage,
        swap_limit_bytes: swap_limit,
        inactive_file_bytes: inactive_file,
        active_file_bytes: active_file,
        anon_bytes: anon,
        file_bytes: file,
        shmem_bytes: shmem,
        working_set_bytes: usage.saturating_sub(inactive_file.unwrap_or(0)),
        events,
        events_local,
        oom_kill_disabled: None,
        under_oom: None,
        failcnt: None,
    }))
}

fn read_memory_v1(r: &mut DirReader<'_>) -> Partial<MemorySample> {
    let Some(usage) = r.required_u64("memory.usage_in_bytes")? else {
        return Ok(None);
    };
    let limit = r.optional_limit_raw("memory.limit_in_bytes")?;
    // memsw files exist only with swap accounting (CONFIG_MEMCG_SWAP and
    // swapaccount=1).
    let memsw_usage = r.optional_u64("memory.memsw.usage_in_bytes")?;
    let memsw_limit = r.optional_limit_raw("memory.memsw.limit_in_bytes")?;
    let stat = r
        .optional("memory.stat", |c| {
            parse_flat_keyed(c, V1_STAT_KEYS)
        })?
        .unwrap_or_default();
    // total_* include descendants, which is what usage_in_bytes counts too
    // (with use_hierarchy=1, the only mode since 5.16).
    let [
        t_inactive,
        inactive,
        t_active,
        active,
        t_rss,
        rss,
        t_cache,
        cache,
        t_shmem,
        shmem,
    ] = stat;
    let inactive_file = t_inactive.or(inactive);
    let Some(oc) = r.v1_oom_control()? else {
        return Ok(None);
    };
    let events = oc.events(r.failcnt);
    let limit_bytes = limit.and_then(Limit::bytes);
    Ok(Some(MemorySample {
        usage_bytes: usage,
        limit_bytes,
        high_bytes: None,
        low_bytes: None,
        swap_usage_bytes: memsw_usage.map(|m| m.saturating_sub(usage)),
        swap_limit_bytes: match (memsw_limit, limit) {
            (Some(Limit::Bytes(memsw)), Some(Limit::Bytes(mem))) => Some(memsw.saturating_sub(mem)),
            // memsw limited but memory not: the kernel refuses that setting,
            // so memsw is the best bound on swap we have.
            (Some(Limit::Bytes(memsw)), _) => Some(memsw),
            _ => None,
        },
        inactive_file_bytes: inactive_file,
        active_file_bytes: t_active.or(active),
        anon_bytes: t_rss.or(rss),
        file_bytes: t_cache.or(cache),
        shmem_bytes: t_shmem.or(shmem),
        working_set_bytes: usage.saturating_sub(inactive_file.unwrap_or(0)),
        events,
        events_local: Some(events),
        oom_kill_disabled: oc.oom_kill_disable.map(|v| v != 0),
        under_oom: oc.under_oom.map(|v| v != 0),
        failcnt: r.failcnt,
    }))
}

/// v1 `memory.oom_control`.
struct OomControl {
    oom_kill_disable: Option<u64>,
    under_oom: Option<u64>,
    oom_kill: Option<u64>,
}

impl OomControl {
    fn events(&self, failcnt: Option<u64>) -> MemoryEvents {
        MemoryEvents {
            max: failcnt,
            oom_kill: self.oom_kill,
            ..MemoryEvents::default()
        }
    }
}

/// Reads files of one cgroup directory with one path buffer and one read
/// buffer, and remembers whether a file was missing so that [`finish`] can
/// tell "this kernel lacks the file" from "the cgroup went away".
///
/// [`finish`]: DirReader::finish
struct DirReader<'a> {
    dir: &'a Path,
    path: PathBuf,
    buf: Vec<u8>,
    /// Some file was not found: the cgroup may have been removed meanwhile.
    saw_enoent: bool,
    /// Set when an error says the cgroup is gone for sure (ENODEV).
    vanished: bool,
    /// A required file was missing; the name is for the error message.
    missing_required: Option<&'static str>,
    /// v1 memory.failcnt, read along with memory.oom_control.
    failcnt: Option<u64>,
}

impl<'a> DirReader<'a> {
    fn new(dir: &'a Path, capacity: usize) -> Self {
        DirReader {
            dir,
            path: dir.to_path_buf(),
            buf: vec![0; capacity],
            saw_enoent: false,
            vanished: false,
            missing_required: None,
            failcnt: None,
        }
    }

    /// Reads `name` into the buffer and calls `f` on the content. `Ok(None)`
    /// when the file is missing or the cgroup vanished (recorded for
    /// `finish`).
    fn with_file<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&[u8], &Path) -> Result<T, CgroupError>,
    ) -> Result<Option<T>, CgroupError> {
        if self.vanished {
            return Ok(None);
        }
        self.path.push(name);
        let res = match read_into(&self.path, &mut self.buf) {
            Ok(n) => f(&self.buf[..n], &self.path).map(Some),
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    self.saw_enoent = true;
                    Ok(None)
                }
                _ if is_gone(&e) => {
                    self.vanished = true;
                    Ok(None)
                }
                _ => Err(CgroupError::Io {
                    path: self.path.clone(),
                    source: e,
                }),
            },
        };
        self.path.pop();
        res
    }

    fn optional<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, CgroupError> {
        self.with_file(name, |c, _| Ok(f(c)))
    }

    fn required_keyed<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, CgroupError> {
        let v = self.optional(name, f)?;
        if v.is_none() {
            self.missing_required.get_or_insert(name);
        }
        Ok(v)
    }

    fn optional_u64(&mut self, name: &str) -> Result<Option<u64>, CgroupError> {
        self.with_file(name, |c, path| {
            parse_u64(c).ok_or_else(|| CgroupError::parse(path.to_owned(), c, "expected a number"))
        })
    }

    fn required_u64(&mut self, name: &'static str) -> Result<Option<u64>, CgroupError> {
        let v = self.optional_u64(name)?;
        if v.is_none() {
            self.missing_required.get_or_insert(name);
        }
        Ok(v)
    }

    /// `Ok(Some(None))` is a present file that says "unlimited".
    fn optional_limit(&mut self, name: &str) -> Result<Option<Option<u64>>, CgroupError> {
        Ok(self.optional_limit_raw(name)?.map(Limit::bytes))
    }

    fn optional_limit_raw(&mut self, name: &str) -> Result<Option<Limit>, CgroupError> {
        self.with_file(name, |c, path| {
            parse_limit(c).ok_or_else(|| {
                CgroupError::parse(path.to_owned(), c, "expected a number or \"max\"")
            })
        })
    }

    /// v1 `memory.oom_control` (required: every v1 memory cgroup has it) and
    /// `memory.failcnt` (kept in `self.failcnt`).
    fn v1_oom_control(&mut self) -> Result<Option<OomControl>, CgroupError> {
        let oc = self.required_keyed("memory.oom_control", |c| {
            let [oom_kill_disable, under_oom, oom_kill] =
                parse_flat_keyed(c, V1_OOM_CONTROL_KEYS);
            OomControl {
                oom_kill_disable,
                under_oom,
                oom_kill,
            }
        })?;
        self.failcnt = self.optional_u64("memory.failcnt")?;
        Ok(oc)
    }

    /// Turns the reads into the reader's answer: `Ok(None)` when the cgroup
    /// is gone, the value otherwise, or an error when a required file is
    /// missing from a directory that is still there.
    fn finish<T>(self, value: Option<T>) -> Result<Option<T>, CgroupError> {
        if self.vanished {
            return Ok(None);
        }
        // Only a missing file costs the extra stat: that keeps the common
        // path at one open/read/close per file.
        if self.saw_enoent && !dir_exists(self.dir)? {
            return Ok(None);
        }
        match (value, self.missing_required) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(file)) => Err(CgroupError::NotMemoryCgroup {
                path: self.dir.to_path_buf(),
                file,
            }),
            // Only optional reads, all missing (read_events_local on a
            // kernel without the file).
            (None, None) => Ok(None),
        }
    }
}

/// Whether the cgroup directory is still there; races with rmdir are
/// answered "gone".
fn dir_exists(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENODEV | libc::ENOTDIR)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(CgroupError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Reads the whole file into `buf` and returns its length. `buf.len()` is the
/// scratch space (zero-filled once, doubled when a file does not fit), so the
/// same buffer serves every file of a call without clearing it again.
///
/// cgroup files are kernfs seq files that produce their whole content in the
/// first read when the buffer is large enough, so a short read that ends in
/// a newline is taken as the end and saves the second read() that std's
/// `read_to_end` spends to see EOF. That is one syscall of three for the
/// single-value files the daemon polls most.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut file = File::open(path)?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize((buf.len() * 2).max(64), 0);
        }
        let room = buf.len() - filled;
        let n = match file.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        if n == 0 || (n < room && buf[filled - 1] == b'\n') {
            return Ok(filled);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Fake cgroup trees in temp dirs, removed on drop.

    use std::{
        fs,
        path::{Path, PathBuf},
        sync::atomic::{AtomicU32, Ordering},
    };

    pub(crate) struct TempTree(PathBuf);

    impl TempTree {
        pub(crate) fn new(name: &str) -> Self {
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "oomwatch-test-{name}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempTree(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `content` to `rel`, creating parent directories.
        pub(crate) fn write(&self, rel: &str, content: &str) {
            let p = self.0.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("create parent");
            }
            fs::write(&p, content).expect("write fake file");
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::TempTree;
    use super::*;
    use crate::readers::{detect, own_memory_cgroup};

    const V2_STAT: &str = "\
anon 1048576
file 4194304
kernel 262144
shmem 0
file_mapped 0
active_anon 0
inactive_anon 1048576
active_file 3145728
inactive_file 1048576
unevictable 0
pgfault 1234
";

    const V1_STAT: &str = "\
cache 100
rss 200
inactive_file 10
active_file 20
hierarchical_memory_limit 9223372036854771712
total_cache 4194304
total_rss 1048576
total_inactive_file 1048576
total_active_file 3145728
";

    fn v2_tree() -> TempTree {
        let t = TempTree::new("readers-v2");
        t.write("cg/memory.current", "8388608\n");
        t.write("cg/memory.max", "16777216\n");
        t.write("cg/memory.high", "max\n");
        t.write("cg/memory.low", "0\n");
        t.write("cg/memory.swap.current", "4096\n");
        t.write("cg/memory.swap.max", "max\n");
        t.write(
            "cg/memory.events",
            "low 0\nhigh 3\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        t.write(
            "cg/memory.events.local",
            "low 0\nhigh 1\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        t.write("cg/memory.stat", V2_STAT);
        t
    }

    fn v1_tree() -> TempTree {
        let t = TempTree::new("readers-v1");
        t.write("cg/memory.usage_in_bytes", "8388608\n");
        t.write("cg/memory.limit_in_bytes", "67108864\n");
        t.write("cg/memory.memsw.usage_in_bytes", "8392704\n");
        t.write("cg/memory.memsw.limit_in_bytes", "134217728\n");
        t.write("cg/memory.stat", V1_STAT);
        t.write(
            "cg/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 1\noom_kill 4\n",
        );
        t.write("cg/memory.failcnt", "12\n");
        t
    }

    #[test]
    fn v2_full_sample() {
        let t = v2_tree();
        let s = read_memory(&t.path().join("cg"), CgroupVersion::V2)
            .expect("reads")
            .expect("present");
        assert_eq!(s.usage_bytes, 8388608);
        assert_eq!(s.limit_bytes, Some(16777216));
        assert_eq!(s.high_bytes, None);
        assert_eq!(s.low_bytes, Some(0));
        assert_eq!(s.swap_usage_bytes, Some(4096));
        assert_eq!(s.swap_limit_bytes, None);
        assert_eq!(s.inactive_file_bytes, Some(1048576));
        assert_eq!(s.active_file_bytes, Some(3145728));
        assert_eq!(s.anon_bytes, Some(1048576));
        assert_eq!(s.file_bytes, Some(4194304));
        assert_eq!(s.working_set_bytes, 8388608 - 1048576);
        assert_eq!(
            s.events,
            MemoryEvents {
                low: Some(0),
                high: Some(3),
                max: Some(17),
                oom: Some(2),
                oom_kill: Some(1),
                oom_group_kill: Some(0)
            }
        );
        assert_eq!(s.events_local.map(|e| e.max), Some(Some(5)));
        assert_eq!(
            (s.oom_kill_disabled, s.under_oom, s.failcnt),
            (None, None, None)
        );
    }

    #[test]
    fn v2_old_kernel_without_optional_files_and_keys() {
        // No swap accounting, no memory.events.local (pre-5.2), no
        // oom_group_kill (pre-5.17), no memory.stat at all.
        let t = TempTree::new("readers-v2-old");
        t.write("cg/memory.current", "100\n");
        t.write("cg/memory.max", "max\n");
        t.write(
            "cg/memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
        let dir = t.path().join("cg");
        let s = read_memory(&dir, CgroupVersion::V2)
            .expect("reads")
            .expect("present");
        assert_eq!(s.limit_bytes, None);
        assert_eq!(s.swap_usage_bytes, None);
        assert_eq!(s.events_local, None);
        assert_eq!(s.events.oom_kill, Some(0));
        assert_eq!(s.events.oom_group_kill, None);
        assert_eq!(s.inactive_file_bytes, None);
        assert_eq!(s.working_set_bytes, 100);
        assert_eq!(
            read_events_local(&dir, CgroupVersion::V2).expect("reads"),
            None
        );
    }

    #[test]
    fn v1_full_sample() {
        let t = v1_tree();
        let s = read_memory(&t.path().join("cg"), CgroupVersion::V1)
            .expect("reads")
            .expect("present");
        assert_eq!(s.usage_bytes, 8388608);
        assert_eq!(s.limit_bytes, Some(67108864));
        assert_eq!(s.swap_usage_bytes, Some(4096));
        assert_eq!(s.swap_limit_bytes, Some(134217728 - 67108864));
        // Hierarchical keys win over local ones.
        assert_eq!(s.inactive_file_bytes, Some(1048576));
        assert_eq!(s.active_file_bytes, Some(3145728));
        assert_eq!(s.anon_bytes, Some(1048576));
        assert_eq!(s.file_bytes, Some(4194304));
        assert_eq!(s.working_set_bytes, 8388608 - 1048576);
        assert_eq!(s.oom_kill_disabled, Some(false));
        assert_eq!(s.under_oom, Some(true));
        assert_eq!(s.failcnt, Some(12));
        assert_eq!(
            s.events,
            MemoryEvents {
                max: Some(12),
                oom_kill: Some(4),
                ..MemoryEvents::default()
            }
        );
        assert_eq!(s.events_local, Some(s.events));
        assert_eq!(s.high_bytes, None);
    }

    #[test]
    fn v1_unlimited_no_swap_accounting_and_local_stat_keys() {
        let t = TempTree::new("readers-v1-min");
        t.write("cg/memory.usage_in_bytes", "5000\n");
        t.write("cg/memory.limit_in_bytes", "9223372036854771712\n");
        // Only local keys, and inactive_file larger than usage.
        t.write(
            "cg/memory.stat",
            "cache 1\nrss 2\ninactive_file 9000\nactive_file 3\n",
        );
        // Before 4.13 oom_control had no oom_kill line.
        t.write("cg/memory.oom_control", "oom_kill_disable 1\nunder_oom 0\n");
        let dir = t.path().join("cg");
        let s = read_memory(&dir, CgroupVersion::V1)
            .expect("reads")
            .expect("present");
        assert_eq!(s.limit_bytes, None);
        assert_eq!(s.swap_usage_bytes, None);
        assert_eq!(s.swap_limit_bytes, None);
        assert_eq!(s.anon_bytes, Some(2));
        assert_eq!(s.file_bytes, Some(1));
        assert_eq!(s.inactive_file_bytes, Some(9000));
        assert_eq!(s.working_set_bytes, 0, "saturates");
        assert_eq!(s.oom_kill_disabled, Some(true));
        assert_eq!(s.events.oom_kill, None);
        assert_eq!(s.failcnt, None);

        // memsw unlimited: no swap limit.
        t.write("cg/memory.memsw.usage_in_bytes", "4000\n");
        t.write("cg/memory.memsw.limit_in_bytes", "18446744073709551615\n");
        let s = read_memory(&dir, CgroupVersion::V1)
            .expect("reads")
            .expect("present");
        assert_eq!(s.swap_usage_bytes, Some(0), "saturates when memsw < usage");
        assert_eq!(s.swap_limit_bytes, None);
    }

    #[test]
    fn partial_readers() {
        let v2 = v2_tree();
        let dir = v2.path().join("cg");
        assert_eq!(
            read_usage(&dir, CgroupVersion::V2).expect("reads"),
            Some(8388608)
        );
        let ev = read_events(&dir, CgroupVersion::V2)
            .expect("reads")
            .expect("present");
        assert_eq!((ev.oom_kill, ev.max), (Some(1), Some(17)));
        let local = read_events_local(&dir, CgroupVersion::V2)
            .expect("reads")
            .expect("present");
        assert_eq!(local.high, Some(1));

        let v1 = v1_tree();
        let dir = v1.path().join("cg");
        assert_eq!(
            read_usage(&dir, CgroupVersion::V1).expect("reads"),
            Some(8388608)
        );
        let ev = read_events(&dir, CgroupVersion::V1)
            .expect("reads")
            .expect("present");
        assert_eq!(
            ev,
            MemoryEvents {
                max: Some(12),
                oom_kill: Some(4),
                ..Default::default()
            }
        );
        assert_eq!(
            read_events_local(&dir, CgroupVersion::V1).expect("reads"),
            Some(ev)
        );
    }

    #[test]
    fn poller_rereads_kept_files() {
        let v2 = v2_tree();
        let dir = v2.path().join("cg");
        let p = CgroupPoller::open(&dir, CgroupVersion::V2)
            .expect("opens")
            .expect("present");
        assert_eq!(p.usage().expect("reads"), Some(8388608));
        assert_eq!(
            p.events().expect("reads"),
            read_events(&dir, CgroupVersion::V2).expect("reads")
        );
        // Rewritten in place (same inode, as the kernel's files are): the
        // next poll sees the new value.
        std::fs::write(dir.join("memory.current"), "42\n").expect("rewrite");
        std::fs::write(dir.join("memory.events"), "max 1\noom_kill 7\n").expect("rewrite");
        assert_eq!(p.usage().expect("reads"), Some(42));
        assert_eq!(p.events().expect("reads").and_then(|e| e.oom_kill), Some(7));
        assert_eq!(p.sample().expect("reads").map(|s| s.usage_bytes), Some(42));
        assert_eq!(p.dir(), dir);

        let v1 = v1_tree();
        let dir = v1.path().join("cg");
        let p = CgroupPoller::open(&dir, CgroupVersion::V1)
            .expect("opens")
            .expect("present");
        assert_eq!(p.usage().expect("reads"), Some(8388608));
        assert!(p.events.get().is_none(), "one descriptor until events are polled");
        assert_eq!(
            p.events().expect("reads"),
            read_events(&dir, CgroupVersion::V1).expect("reads")
        );
        assert!(p.events.get().is_some_and(|f| f.failcnt.is_some()), "then kept: 3 on v1");
        // Kept, not reopened: a rewrite of the same file is seen.
        std::fs::write(dir.join("memory.failcnt"), "9\n").expect("rewrite");
        assert_eq!(p.events().expect("reads").and_then(|e| e.max), Some(9));
        // The event file missing from a cgroup that has usage: not a memory cgroup.
        let half = v1.path().join("half");
        std::fs::create_dir_all(&half).expect("mkdir");
        std::fs::write(half.join("memory.usage_in_bytes"), "1\n").expect("write");
        assert!(matches!(
            CgroupPoller::open(&half, CgroupVersion::V1),
            Err(CgroupError::NotMemoryCgroup { file: "memory.oom_control", .. })
        ));

        // Gone before opening, not a memory cgroup, oversized and bad content.
        assert!(matches!(
            CgroupPoller::open(&v1.path().join("gone"), CgroupVersion::V1),
            Ok(None)
        ));
        assert!(matches!(
            CgroupPoller::open(&dir, CgroupVersion::V2),
            Err(CgroupError::NotMemoryCgroup { .. })
        ));
        std::fs::write(dir.join("memory.usage_in_bytes"), "1".repeat(100)).expect("rewrite");
        assert!(matches!(p.usage(), Err(CgroupError::Parse { .. })));
        std::fs::write(dir.join("memory.usage_in_bytes"), "junk\n").expect("rewrite");
        assert!(matches!(p.usage(), Err(CgroupError::Parse { .. })));
    }

    #[test]
    fn vanished_cgroup_is_none_not_error() {
        let t = TempTree::new("readers-gone");
        let gone = t.path().join("removed-cgroup");
        for v in [CgroupVersion::V1, CgroupVersion::V2] {
            assert!(matches!(read_memory(&gone, v), Ok(None)));
            assert!(matches!(read_usage(&gone, v), Ok(None)));
            assert!(matches!(read_events(&gone, v), Ok(None)));
            assert!(matches!(read_events_local(&gone, v), Ok(None)));
        }
    }

    #[test]
    fn vanished_between_two_files_is_none() {
        // rmdir between reading memory.current and memory.events, made
        // deterministic: the "cgroup" is a symlink we remove between the two
        // reads, so the second open fails with ENOENT and the dir is gone.
        let t = TempTree::new("readers-race");
        t.write("real/memory.current", "1\n");
        let link = t.path().join("cg");
        std::os::unix::fs::symlink(t.path().join("real"), &link).expect("symlink");
        let mut r = DirReader::new(&link, 64);
        assert_eq!(r.required_u64("memory.current").expect("reads"), Some(1));
        std::fs::remove_file(&link).expect("remove link");
        assert_eq!(
            r.required_keyed("memory.events", v2_events)
                .expect("no error"),
            None
        );
        assert!(matches!(r.finish(Some(())), Ok(None)));
    }

    #[test]
    fn not_a_memory_cgroup_is_an_error_with_the_path() {
        let t = TempTree::new("readers-notmem");
        t.write("cg/cgroup.procs", "");
        let dir = t.path().join("cg");
        let err = read_memory(&dir, CgroupVersion::V2).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("memory.current") && msg.contains("/cg"),
            "{msg}"
        );
        assert!(read_usage(&dir, CgroupVersion::V1).is_err());
        assert!(read_events(&dir, CgroupVersion::V1).is_err());
    }

    #[test]
    fn garbage_file_is_a_parse_error_with_the_path() {
        let t = v2_tree();
        t.write("cg/memory.max", "lots\n");
        let err = read_memory(&t.path().join("cg"), CgroupVersion::V2).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CgroupError::Parse { .. }), "{msg}");
        assert!(msg.contains("memory.max") && msg.contains("lots"), "{msg}");

        // Garbage values inside keyed files only lose that key.
        let t = v2_tree();
        t.write("cg/memory.events", "max x\noom_kill 3\n\0\0\0\n");
        let ev = read_events(&t.path().join("cg"), CgroupVersion::V2)
            .expect("reads")
            .expect("present");
        assert_eq!((ev.max, ev.oom_kill), (None, Some(3)));
    }

    #[test]
    fn io_error_other_than_gone_is_reported() {
        // A directory where a file should be: EISDIR, not "vanished".
        let t = v2_tree();
        std::fs::remove_file(t.path().join("cg/memory.max")).expect("rm");
        std::fs::create_dir(t.path().join("cg/memory.max")).expect("mkdir");
        let err = read_memory(&t.path().join("cg"), CgroupVersion::V2).unwrap_err();
        assert!(matches!(err, CgroupError::Io { .. }), "{err}");
        assert!(err.to_string().contains("memory.max"), "{err}");
    }

    #[test]
    fn large_files_are_read_whole() {
        // memory.stat longer than the initial buffer, and without a final
        // newline, still yields keys from its end.
        let t = TempTree::new("readers-large");
        let mut stat = String::new();
        for i in 0..500 {
            stat.push_str(&format!("key_{i} {i}\n"));
        }
        stat.push_str("inactive_file 42");
        t.write("cg/memory.stat", &stat);
        let mut buf = vec![0; 16];
        let n = read_into(&t.path().join("cg/memory.stat"), &mut buf).expect("reads");
        assert_eq!(&buf[..n], stat.as_bytes());
        assert_eq!(
            parse_flat_keyed(&buf[..n], ["inactive_file", "key_7"]),
            [Some(42), Some(7)]
        );
        // Reusing the now larger buffer for a short file.
        t.write("cg/memory.current", "7\n");
        let n = read_into(&t.path().join("cg/memory.current"), &mut buf).expect("reads");
        assert_eq!(&buf[..n], b"7\n");
    }

    #[test]
    fn limit_and_number_parsing() {
        assert_eq!(parse_limit(b"max\n"), Some(Limit::Unlimited));
        assert_eq!(parse_limit(b"  123 \n"), Some(Limit::Bytes(123)));
        assert_eq!(parse_limit(b"0"), Some(Limit::Bytes(0)));
        for unlimited in [
            "9223372036854771712",  // 4 KiB pages
            "9223372036854759424",  // 16 KiB pages
            "9223372036854710272",  // 64 KiB pages
            "18446744073709551615", // before 3.19
        ] {
            assert_eq!(
                parse_limit(unlimited.as_bytes()),
                Some(Limit::Unlimited),
                "{unlimited}"
            );
        }
        assert_eq!(
            parse_limit(b"9223372036854771712").and_then(Limit::bytes),
            None
        );
        assert_eq!(
            parse_limit(b"4611686018427387904"),
            Some(Limit::Bytes(1 << 62))
        );
        for bad in [
            "",
            "\n",
            "-1",
            "+5",
            "1.5",
            "18446744073709551616",
            "MAX",
            "max max",
            "1 2",
        ] {
            assert_eq!(parse_limit(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
    }

    #[test]
    fn flat_keyed_parsing() {
        let [a, b, c, d] = parse_flat_keyed(
            b"a 1\nb   2\n  c\t3  \nd 4 extra\na 9\n",
            ["a", "b", "c", "d"],
        );
        assert_eq!((a, b, c), (Some(1), Some(2), Some(3)));
        assert_eq!(d, None, "a line with a third field is not key value");
        assert_eq!(
            parse_flat_keyed(b"ab 1\n", ["a"]),
            [None],
            "keys match whole"
        );
        assert_eq!(parse_flat_keyed(b"", ["a"]), [None]);
        assert_eq!(parse_flat_keyed(b"a 1", []), []);
    }

    /// Deterministic pseudo-random bytes (xorshift), so the test needs no
    /// dependency and a failure reproduces.
    fn garbage(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards the bytes the parsers look at.
                const ALPHABET: &[u8] = b"0123456789 \n\tmaxinactive_filek\xff\x00-";
                ALPHABET[(x % ALPHABET.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn parsers_never_panic_on_garbage_or_truncated_input() {
        let real = format!("{V2_STAT}{V1_STAT}oom_kill_disable 0\nunder_oom 0\n");
        let real = real.as_bytes();
        // Every truncation of a real file.
        for n in 0..=real.len() {
            let cut = &real[..n];
            let _ = parse_flat_keyed(cut, ["inactive_file", "total_rss", "under_oom"]);
            let _ = parse_limit(cut);
            let _ = parse_u64(cut);
            let _ = v2_events(cut);
        }
        for seed in 0..2000u64 {
            let g = garbage(seed, (seed % 97) as usize);
            let _ = parse_flat_keyed(&g, V2_EVENT_KEYS);
            let _ = parse_flat_keyed(&g, ["", "max", "inactive_file"]);
            let _ = parse_limit(&g);
            let _ = parse_u64(&g);
        }
        // Whole readers on garbage files: errors or values, no panic.
        let t = TempTree::new("readers-garbage");
        for seed in 0..50u64 {
            for (i, name) in [
                "memory.current",
                "memory.max",
                "memory.events",
                "memory.stat",
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "memory.oom_control",
                "memory.failcnt",
            ]
            .iter()
            .enumerate()
            {
                let g = garbage(seed * 31 + i as u64, 40);
                std::fs::create_dir_all(t.path().join("cg")).expect("mkdir");
                std::fs::write(t.path().join("cg").join(name), &g).expect("write");
            }
            let dir = t.path().join("cg");
            for v in [CgroupVersion::V1, CgroupVersion::V2] {
                let _ = read_memory(&dir, v);
                let _ = read_usage(&dir, v);
                let _ = read_events(&dir, v);
            }
        }
    }

    /// The real readers on this machine's own memory cgroup (v1 here; the
    /// same code covers v2 hosts). Reads only; never creates or writes a
    /// cgroup.
    #[test]
    fn own_memory_cgroup_on_this_machine() {
        let layout = detect(Path::new("/proc")).expect("detect layout");
        let proc_cgroup =
            std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let path = own_memory_cgroup(&proc_cgroup, &layout).expect("a memory cgroup line");
        let dir = layout.memory_dir(&path).expect("own cgroup is visible");
        let s = read_memory(&dir, layout.memory_version)
            .expect("read own memory cgroup")
            .expect("own cgroup exists");
        assert!(s.usage_bytes > 0, "{s:?}");
        assert!(s.working_set_bytes <= s.usage_bytes);
        assert!(s.events.oom_kill.is_some(), "6.18 reports oom_kill: {s:?}");
        let usage = read_usage(&dir, layout.memory_version)
            .expect("read usage")
            .expect("exists");
        assert!(usage > 0);
        read_events(&dir, layout.memory_version)
            .expect("read events")
            .expect("exists");
        let poller = CgroupPoller::open(&dir, layout.memory_version)
            .expect("open")
            .expect("exists");
        for _ in 0..3 {
            assert!(poller.usage().expect("poll usage").expect("exists") > 0);
            let ev = poller.events().expect("poll events").expect("exists");
            // Counters only grow; this cgroup has seen no kill meanwhile.
            assert!(ev.oom_kill >= s.events.oom_kill, "{ev:?} vs {:?}", s.events);
        }
    }
}
