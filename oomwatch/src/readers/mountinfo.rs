//! Which cgroup hierarchy carries the memory controller on this host.
//!
//! Three layouts are in use in the wild, and this machine runs the middle one:
//! - v2 (unified): one `cgroup2` mount, usually `/sys/fs/cgroup`, with the
//!   memory controller listed in its `cgroup.controllers`;
//! - hybrid: v1 controllers (memory among them) under `/sys/fs/cgroup/<ctrl>`
//!   plus a controller-less `cgroup2` mount (`/sys/fs/cgroup/unified`), which
//!   still matters because `bpf_get_current_cgroup_id()` returns ids from it;
//! - v1 (legacy): v1 controllers only.
//!
//! [`parse_mountinfo`] is pure so it can be tested on any text; [`detect`]
//! adds the one file read that pure v2 needs.

use std::{
    ffi::OsString,
    fmt, fs,
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
};

use super::CgroupError;

/// The cgroup layout of the host, as seen from the memory controller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupMode {
    /// Only cgroup2 is mounted, and it has the memory controller.
    V2,
    /// v1 controllers, including memory, plus a cgroup2 mount.
    Hybrid,
    /// v1 controllers only.
    V1,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::V1 => "v1",
        })
    }
}

/// The file interface a memory cgroup directory offers: the names of the
/// files differ completely between the two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// Where the memory controller lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    /// Mount point of the hierarchy that carries the memory controller: the
    /// v1 `memory` mount, or the cgroup2 mount in pure v2.
    pub memory_root: PathBuf,
    /// Which file interface the directories under `memory_root` have.
    pub memory_version: CgroupVersion,
    /// The hierarchy path that `memory_root` shows (mountinfo field 4).
    /// It is `/` on a host; inside a container without a cgroup namespace it
    /// is the container's own cgroup, and the paths in /proc/self/cgroup
    /// start with it. [`CgroupLayout::memory_dir`] strips it.
    pub memory_mount_root: String,
    /// The cgroup2 mount, if any (in pure v2 the same as `memory_root`).
    pub unified_root: Option<PathBuf>,
}

impl CgroupLayout {
    /// The directory of the memory cgroup with hierarchy path `cgroup_path`
    /// (as printed in `/proc/<pid>/cgroup`), e.g. `/system.slice/x.service`.
    ///
    /// Returns `None` when the path lies outside what the mount shows (a
    /// container whose mount root does not contain that cgroup), or when it
    /// tries to climb out with `..`.
    pub fn memory_dir(&self, cgroup_path: &str) -> Option<PathBuf> {
        let root = self.memory_mount_root.trim_end_matches('/');
        let rel = if root.is_empty() {
            cgroup_path
        } else {
            let rest = cgroup_path.strip_prefix(root)?;
            // "/docker/abc" must not match a mount root of "/docker/ab".
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        let mut dir = self.memory_root.clone();
        for seg in rel.split('/') {
            match seg {
                "" | "." => {}
                ".." => return None,
                s => dir.push(s),
            }
        }
        Some(dir)
    }
}

/// One cgroup-related line of mountinfo.
struct CgroupMount {
    mount_point: PathBuf,
    root: String,
    v2: bool,
    has_memory: bool,
}

/// Finds the memory hierarchy in the content of `/proc/<pid>/mountinfo`.
///
/// In pure v2 this cannot tell whether the memory controller is enabled (that
/// is in `<root>/cgroup.controllers`); [`detect`] checks it. Malformed lines
/// are skipped: mountinfo is kernel-written, and one line we do not
/// understand (a future field) should not hide the cgroup lines we do.
pub fn parse_mountinfo(content: &str) -> Result<CgroupLayout, CgroupError> {
    let lines: Vec<MountinfoLine<'_>> = content.lines().filter_map(MountinfoLine::parse).collect();

    // A mount made later on the same point as an earlier one hides it and
    // everything under it (e.g. a runtime that mounts a fresh tmpfs over
    // /sys/fs/cgroup). The covering mount has the covered one as its parent
    // and the same mount point; the textual order of mountinfo is not
    // reliable for this (a parent can be listed after its children).
    // `from` is the mount we walked up from: it sits on its parent, often at
    // the same point (cgroup2 on a tmpfs at /sys/fs/cgroup), and must not
    // count as covering the mount it is part of the path through.
    let covered = |id: &str, mount_point: &str, from: &str| {
        lines
            .iter()
            // A mount listed as its own parent (the initramfs rootfs) covers nothing.
            .any(|m| m.parent == id && m.mount_point == mount_point && m.id != from && m.id != id)
    };
    let hidden = |line: &MountinfoLine<'_>| {
        let mut cur = (line.id, line.mount_point, line.parent);
        let mut from = "";
        // Bounded walk up the parent chain: garbage input may hold cycles.
        for _ in 0..=lines.len() {
            let (id, mount_point, parent) = cur;
            if covered(id, mount_point, from) {
                return true;
            }
            let Some(p) = lines.iter().find(|m| m.id == parent && m.id != id) else {
                return false;
            };
            from = id;
            cur = (p.id, p.mount_point, p.parent);
        }
        false
    };

    let mut mounts: Vec<CgroupMount> = Vec::new();
    for line in &lines {
        let v2 = match line.fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        if hidden(line) {
            continue;
        }
        let has_memory = !v2 && line.super_options.split(',').any(|o| o == "memory");
        mounts.push(CgroupMount {
            mount_point: unescape_octal(line.mount_point),
            root: String::from_utf8_lossy(&unescape_octal_bytes(line.root)).into_owned(),
            v2,
            has_memory,
        });
    }

    // The same hierarchy can be bind-mounted several times; a mount of its
    // real root shows every cgroup, so it wins over a bind of a subtree.
    let pick = |want: &dyn Fn(&CgroupMount) -> bool| {
        mounts
            .iter()
            .filter(|m| want(m))
            .min_by_key(|m| m.root != "/")
    };
    let unified = pick(&|m| m.v2);
    let v1_memory = pick(&|m| m.has_memory);

    match (v1_memory, unified) {
        (Some(mem), unified) => Ok(CgroupLayout {
            mode: if unified.is_some() {
                CgroupMode::Hybrid
            } else {
                CgroupMode::V1
            },
            memory_root: mem.mount_point.clone(),
            memory_version: CgroupVersion::V1,
            memory_mount_root: mem.root.clone(),
            unified_root: unified.map(|u| u.mount_point.clone()),
        }),
        (None, Some(u)) => Ok(CgroupLayout {
            mode: CgroupMode::V2,
            memory_root: u.mount_point.clone(),
            memory_version: CgroupVersion::V2,
            memory_mount_root: u.root.clone(),
            unified_root: Some(u.mount_point.clone()),
        }),
        (None, None) => Err(CgroupError::NoMemoryController {
            detail: if mounts.is_empty() {
                "mountinfo lists no cgroup or cgroup2 mount".into()
            } else {
                "mountinfo lists v1 cgroup mounts, none with the memory controller, and no cgroup2 mount"
                    .into()
            },
        }),
    }
}

/// Reads `<proc_root>/self/mountinfo` and, in pure v2, checks that the
/// memory controller is enabled at the cgroup2 root. `proc_root` is `/proc`
/// in production and a fake tree in tests.
pub fn detect(proc_root: &Path) -> Result<CgroupLayout, CgroupError> {
    let path = proc_root.join("self").join("mountinfo");
    let content = fs::read_to_string(&path).map_err(|source| CgroupError::Io {
        path: path.clone(),
        source,
    })?;
    let layout = parse_mountinfo(&content)?;
    if layout.mode == CgroupMode::V2 {
        let path = layout.memory_root.join("cgroup.controllers");
        let controllers = fs::read_to_string(&path).map_err(|source| CgroupError::Io {
            path: path.clone(),
            source,
        })?;
        if !controllers.split_ascii_whitespace().any(|c| c == "memory") {
            return Err(CgroupError::NoMemoryController {
                detail: format!(
                    "cgroup2 is mounted at {} but {} does not list memory",
                    layout.memory_root.display(),
                    path.display()
                ),
            });
        }
    }
    Ok(layout)
}

/// The hierarchy path of the caller's memory cgroup, from the content of
/// `/proc/self/cgroup`: the line whose controller list has `memory` on v1 and
/// hybrid, the `0::` line on v2. Turn it into a directory with
/// [`CgroupLayout::memory_dir`].
pub fn own_memory_cgroup(proc_self_cgroup: &str, layout: &CgroupLayout) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let ours = match layout.memory_version {
            CgroupVersion::V2 => id == "0" && controllers.is_empty(),
            // Co-mounted controllers show up together, e.g. "memory,blkio".
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        ours.then(|| path.to_owned())
    })
}

/// The fields of a mountinfo line that we use.
struct MountinfoLine<'a> {
    id: &'a str,
    parent: &'a str,
    root: &'a str,
    mount_point: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> MountinfoLine<'a> {
    /// `id parent maj:min root mount_point options [optional...] - fstype source super_options`
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.split(' ');
        let id = fields.next()?;
        let parent = fields.next()?;
        let _dev = fields.next()?;
        let root = fields.next()?;
        let mount_point = fields.next()?;
        let _options = fields.next()?;
        // Optional fields ("shared:1", "master:2", ...) run up to the lone "-".
        fields.by_ref().find(|f| *f == "-")?;
        let fstype = fields.next()?;
        let _source = fields.next()?;
        let super_options = fields.next().unwrap_or("");
        Some(MountinfoLine {
            id,
            parent,
            root,
            mount_point,
            fstype,
            super_options,
        })
    }
}

/// The kernel writes space, tab, newline and backslash in mountinfo paths as
/// `\040`, `\011`, `\012`, `\134`; anything that is not a valid three-digit
/// octal escape is kept as it is.
fn unescape_octal_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(esc) = b.get(i + 1..i + 4)
            && esc.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = esc
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unescape_octal(s: &str) -> PathBuf {
    // Paths are bytes on Linux; going through OsString keeps non-UTF-8 names.
    PathBuf::from(OsString::from_vec(unescape_octal_bytes(s)))
}

/// Which hierarchy an id belongs to: the one carrying the memory controller
/// (v1 `memory` on hybrid hosts) or the unified (v2) one.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Hierarchy {
    Memory,
    Unified,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::cgroup::test_support::TempTree;

    /// This machine's mountinfo, as measured (see docs/environment.md).
    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PURE_V2: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const PURE_V1: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:10 master:3 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_layout_of_this_machine() {
        let l = parse_mountinfo(HYBRID).expect("hybrid parses");
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(l.memory_root, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(l.memory_version, CgroupVersion::V1);
        assert_eq!(
            l.unified_root.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(l.mode.to_string(), "hybrid");
    }

    #[test]
    fn pure_v2_layout() {
        let l = parse_mountinfo(PURE_V2).expect("v2 parses");
        assert_eq!(l.mode, CgroupMode::V2);
        assert_eq!(l.memory_root, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.memory_version, CgroupVersion::V2);
        assert_eq!(l.unified_root.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(l.mode.to_string(), "v2");
    }

    #[test]
    fn pure_v1_layout_with_optional_fields() {
        let l = parse_mountinfo(PURE_V1).expect("v1 parses");
        assert_eq!(l.mode, CgroupMode::V1);
        assert_eq!(l.memory_root, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(l.unified_root, None);
        assert_eq!(l.mode.to_string(), "v1");
    }

    #[test]
    fn memory_must_be_a_whole_option() {
        // "memory_recursiveprot" is a cgroup2 option, "nomemory" is made up:
        // neither makes a v1 hierarchy the memory one.
        let text = "\
1 0 0:1 / /cg/a rw - cgroup cgroup rw,nomemory
2 0 0:2 / /cg/b rw - cgroup cgroup rw,memory_recursiveprot
";
        assert!(matches!(
            parse_mountinfo(text),
            Err(CgroupError::NoMemoryController { .. })
        ));
    }

    #[test]
    fn octal_escapes_in_mount_points() {
        let text = "35 31 0:32 / /mnt/my\\040cgroups/mem\\134ory rw - cgroup cgroup rw,memory\n";
        let l = parse_mountinfo(text).expect("parses");
        assert_eq!(l.memory_root, Path::new("/mnt/my cgroups/mem\\ory"));
        // Broken escapes are kept literally, never a panic.
        assert_eq!(unescape_octal_bytes("a\\04"), b"a\\04");
        assert_eq!(unescape_octal_bytes("a\\777b"), b"a\\777b");
        assert_eq!(unescape_octal_bytes("\\"), b"\\");
        assert_eq!(unescape_octal_bytes("\\011x"), b"\tx");
    }

    #[test]
    fn no_cgroup_mounts_is_a_clear_error() {
        let err = parse_mountinfo("25 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap_err();
        assert!(err.to_string().contains("no cgroup"), "{err}");
        assert!(parse_mountinfo("").is_err());
    }

    #[test]
    fn garbage_mountinfo_never_panics() {
        for text in [
            "-",
            "1 2 3 4 5 6 -",
            "1 2 3 4 5 6 - cgroup",
            "1 2 3 4 /x 6 - cgroup src",
            "\u{0}\u{ff}\n\\\\\\ - - - -\n",
            "a b c d e f g h i j k - cgroup2",
        ] {
            let _ = parse_mountinfo(text);
        }
        // Truncated lines carry no super options: still a v1 mount, not memory.
        assert!(parse_mountinfo("1 2 3 / /x rw - cgroup src").is_err());
        // cgroup2 with no super options is still cgroup2.
        let l = parse_mountinfo("1 2 3 / /x rw - cgroup2 src").expect("cgroup2");
        assert_eq!(l.mode, CgroupMode::V2);
    }

    #[test]
    fn overmounted_hierarchy_is_ignored() {
        // A tmpfs mounted over /sys/fs/cgroup after the v1 mounts hides them;
        // the cgroup2 mount that follows is what is visible.
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
50 31 0:40 / /sys/fs/cgroup rw - tmpfs tmpfs rw
51 50 0:41 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        let l = parse_mountinfo(text).expect("parses");
        assert_eq!(l.mode, CgroupMode::V2);
        assert_eq!(l.memory_root, Path::new("/sys/fs/cgroup"));

        // The same memory mount, covered directly, next to a live one.
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 35 0:33 / /sys/fs/cgroup/memory rw - tmpfs tmpfs rw
37 31 0:32 / /elsewhere/memory rw - cgroup cgroup rw,memory
";
        let l = parse_mountinfo(text).expect("parses");
        assert_eq!(l.mode, CgroupMode::V1);
        assert_eq!(l.memory_root, Path::new("/elsewhere/memory"));

        // Cycles in garbage input end the walk.
        let text = "1 2 0:1 / /a rw - cgroup cgroup rw,memory\n2 1 0:2 / /b rw - tmpfs t rw\n";
        assert!(parse_mountinfo(text).is_ok());
    }

    #[test]
    fn bind_of_the_real_root_is_preferred() {
        let text = "\
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:32 / /host/memory rw - cgroup cgroup rw,memory
";
        let l = parse_mountinfo(text).expect("parses");
        assert_eq!(l.memory_root, Path::new("/host/memory"));
        assert_eq!(l.memory_mount_root, "/");
    }

    #[test]
    fn memory_dir_strips_the_mount_root() {
        let text = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let l = parse_mountinfo(text).expect("parses");
        assert_eq!(
            l.memory_dir("/docker/abc/child"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/child"))
        );
        assert_eq!(
            l.memory_dir("/docker/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(l.memory_dir("/docker/abcd"), None);
        assert_eq!(l.memory_dir("/other"), None);

        let host = parse_mountinfo(HYBRID).expect("parses");
        assert_eq!(
            host.memory_dir("/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
        assert_eq!(
            host.memory_dir("/"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(host.memory_dir("/a/../../etc"), None);
    }

    #[test]
    fn own_cgroup_from_proc_self_cgroup() {
        let proc_cgroup = "\
9:name=systemd:/
4:memory:/process_api/2bd2
3:cpuset:/
0::/
";
        let hybrid = parse_mountinfo(HYBRID).expect("parses");
        assert_eq!(
            own_memory_cgroup(proc_cgroup, &hybrid).as_deref(),
            Some("/process_api/2bd2")
        );

        let v2 = parse_mountinfo(PURE_V2).expect("parses");
        assert_eq!(
            own_memory_cgroup("0::/user.slice/user-0.slice/session-1.scope\n", &v2).as_deref(),
            Some("/user.slice/user-0.slice/session-1.scope")
        );
        assert_eq!(own_memory_cgroup("4:memory:/x\n", &v2), None);

        // Co-mounted controllers, and a path with a colon in it.
        assert_eq!(
            own_memory_cgroup("7:blkio,memory:/a:b\n", &hybrid).as_deref(),
            Some("/a:b")
        );
        assert_eq!(own_memory_cgroup("garbage\n\n::\n", &hybrid), None);
    }

    #[test]
    fn detect_on_fake_trees() {
        let tree = TempTree::new("layout-detect");
        let cg = tree.path().join("cg root");
        fs::create_dir_all(&cg).expect("mkdir");
        let escaped = cg.to_string_lossy().replace(' ', "\\040");
        tree.write(
            "proc/self/mountinfo",
            &format!("30 24 0:26 / {escaped} rw shared:4 - cgroup2 cgroup2 rw\n"),
        );

        // cgroup2 without the memory controller enabled: a clear error.
        tree.write("cg root/cgroup.controllers", "cpuset cpu io pids\n");
        let err = detect(&tree.path().join("proc")).unwrap_err();
        assert!(err.to_string().contains("does not list memory"), "{err}");

        tree.write("cg root/cgroup.controllers", "cpuset cpu io memory pids\n");
        let l = detect(&tree.path().join("proc")).expect("detects v2");
        assert_eq!(l.mode, CgroupMode::V2);
        assert_eq!(l.memory_root, cg);

        // Hybrid needs no controllers file.
        tree.write("proc/self/mountinfo", HYBRID);
        let l = detect(&tree.path().join("proc")).expect("detects hybrid");
        assert_eq!(l.mode, CgroupMode::Hybrid);

        // Missing mountinfo: the error names the file.
        let err = detect(&tree.path().join("nowhere")).unwrap_err();
        assert!(err.to_string().contains("nowhere/self/mountinfo"), "{err}");
    }

    #[test]
    fn detect_on_this_machine() {
        // Whatever the layout, this host must have a memory hierarchy.
        let l = detect(Path::new("/proc")).expect("this machine has a memory cgroup hierarchy");
        assert!(l.memory_root.is_dir(), "{}", l.memory_root.display());
    }

    #[test]
    fn rootfs_that_is_its_own_parent_hides_nothing() {
        // Booted straight from an initramfs: the root mount's parent is itself.
        let text = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                    20 1 0:19 / /proc rw - proc proc rw\n\
                    21 1 0:20 / /sys rw - sysfs sysfs rw\n\
                    25 21 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let layout = parse_mountinfo(text).unwrap();
        assert_eq!(layout.memory_root, PathBuf::from("/sys/fs/cgroup"));
    }
}
