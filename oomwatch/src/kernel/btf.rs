//! Kernel struct offsets from BTF (`/sys/kernel/btf/vmlinux`), computed once
//! at start and handed to the kernel programs as globals. rustc cannot emit
//! CO-RE relocations, so this is how the programs stay portable.

use std::path::{Path, PathBuf};

use super::btf_reader::{Btf, Kind, Type};
use oomwatch_common::offsets::{KernelOffsets, MemcgOffsets, OFFSET_ABSENT, OomControlOffsets};

pub const DEFAULT_VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("{path}: cannot read BTF: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{path}: {what} not found in BTF")]
    Missing { path: PathBuf, what: String },
}

/// What the daemon learned from BTF.
#[derive(Clone, Debug)]
pub struct KernelBtfInfo {
    pub offsets: KernelOffsets,
    /// The raw `mark_victim` tracepoint passes `struct task_struct *` (6.8+,
    /// and backported to some stable kernels), so the victim's memory cgroup
    /// can be read exactly.
    pub mark_victim_has_task: bool,
    /// For the kprobe on oom_kill_process; `valid == 0` when the kernel's
    /// struct oom_control is not as expected.
    pub oom_control: OomControlOffsets,
    /// For the walk up the victim's memory cgroups at a kill (usage and
    /// limit of each, read in the kernel); `Err` says what this kernel's
    /// BTF lacks, and the daemon then reads those from cgroup files.
    pub memcg: Result<MemcgOffsets, String>,
    /// `enum oom_constraint` values and names ("memcg", "cpuset", ...).
    pub oom_constraints: Vec<(u32, String)>,
    /// BTF type ids of the functions asked for (fentry attach points).
    pub function_ids: Vec<(String, u32)>,
}

/// Reads `path` and what the daemon needs from it, plus the BTF ids of the
/// kernel `functions` an fentry program will attach to (absent ones are
/// left out). The file's bytes and a 4-byte index per type are all that
/// is held, and only until this returns.
pub fn load(path: &Path, functions: &[&str]) -> Result<KernelBtfInfo, BtfError> {
    let load_error = |reason: String| BtfError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| load_error(e.to_string()))?;
    let btf = Btf::parse(data).map_err(|e| load_error(e.to_string()))?;
    from_btf(&btf, path, functions)
}

/// What [`load`] reads, from BTF bytes (the fuzz target's entry point).
pub fn from_bytes(data: Vec<u8>, functions: &[&str]) -> Result<KernelBtfInfo, BtfError> {
    let path = Path::new("<bytes>");
    let btf = Btf::parse(data).map_err(|e| BtfError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    from_btf(&btf, path, functions)
}

fn from_btf(btf: &Btf, path: &Path, functions: &[&str]) -> Result<KernelBtfInfo, BtfError> {
    let finder = Finder { btf, path };
    let member = |s: &str, m: &str| finder.member_offset(s, m);
    let offsets = KernelOffsets {
        valid: 1,
        memory_cgrp_id: finder.enum_value("cgroup_subsys_id", "memory_cgrp_id")?,
        task_cgroups: member("task_struct", "cgroups")?,
        task_pid: member("task_struct", "pid")?,
        task_tgid: member("task_struct", "tgid")?,
        task_comm: member("task_struct", "comm")?,
        css_set_subsys: member("css_set", "subsys")?,
        css_set_dfl_cgrp: member("css_set", "dfl_cgrp")?,
        css_cgroup: member("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: member("cgroup", "kn")?,
        kernfs_node_id: member("kernfs_node", "id")?,
        // Only the usage walk needs it: its absence costs the walk alone.
        cgroup_subsys: member("cgroup", "subsys").unwrap_or(OFFSET_ABSENT),
    };
    let oom_control = finder.oom_control().unwrap_or_default();
    let memcg = finder.memcg().map_err(|e| e.to_string());
    let oom_constraints = finder.enum_values("oom_constraint", "CONSTRAINT_");
    let function_ids = functions
        .iter()
        .filter_map(|f| Some(((*f).to_owned(), btf.named(f, Kind::Func).next()?.id)))
        .collect();
    Ok(KernelBtfInfo {
        offsets,
        mark_victim_has_task: finder.mark_victim_has_task(),
        oom_control,
        memcg,
        oom_constraints,
        function_ids,
    })
}

/// The smallest BTF aya accepts for `FEntry::load`: aya only looks the
/// function up by name and kind to get its kernel type id, so a BTF whose
/// type `id` is that function, and every id before it a placeholder
/// pointer, gives it the kernel's ids without the kernel's types (aya's
/// own parse of vmlinux costs about 20 MiB at start; this about 5).
pub fn aya_btf_for_functions(function_ids: &[(String, u32)]) -> Result<aya::Btf, String> {
    let Some(last) = function_ids.iter().map(|(_, id)| *id).max() else {
        return Err("no fentry function in the kernel's BTF".to_owned());
    };
    let mut strings = vec![0u8];
    let mut named = std::collections::HashMap::new();
    for (name, id) in function_ids {
        named.insert(*id, strings.len() as u32);
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    const PTR: u32 = 2 << 24;
    const FUNC: u32 = 12 << 24;
    let mut types = Vec::with_capacity(last as usize * 12);
    for id in 1..=last {
        let (name_off, info) = match named.get(&id) {
            Some(off) => (*off, FUNC),
            None => (0, PTR),
        };
        for w in [name_off, info, 0] {
            types.extend_from_slice(&w.to_ne_bytes());
        }
    }
    let mut blob = Vec::with_capacity(24 + types.len() + strings.len());
    let type_len = types.len() as u32;
    for w in [
        0xeb9f | (1 << 16),
        24,
        0,
        type_len,
        type_len,
        strings.len() as u32,
    ] {
        blob.extend_from_slice(&w.to_ne_bytes());
    }
    blob.extend_from_slice(&types);
    drop(types);
    blob.extend_from_slice(&strings);
    aya::Btf::parse(&blob, aya::Endianness::default())
        .map_err(|e| format!("placeholder BTF for fentry: {e}"))
}

/// Members a lookup may visit (task_struct has about 250, nested ones included).
const MEMBER_VISITS: u32 = 20_000;

struct Finder<'a> {
    btf: &'a Btf,
    path: &'a Path,
}

/// A struct or union: its members as (name, type, bit offset).
type Members<'a> = Vec<(&'a str, u32, u32)>;

impl<'a> Finder<'a> {
    fn missing(&self, what: String) -> BtfError {
        BtfError::Missing {
            path: self.path.to_path_buf(),
            what,
        }
    }

    fn members(&self, t: &Type<'a>) -> Members<'a> {
        t.entries()
            .map(|e| {
                (
                    self.btf.name(e.name_off).unwrap_or_default(),
                    e.value,
                    e.bit_offset,
                )
            })
            .collect()
    }

    fn named_struct(&self, name: &str) -> Result<Members<'a>, BtfError> {
        self.btf
            .named(name, Kind::Struct)
            .find(|t| t.vlen > 0)
            .map(|t| self.members(&t))
            .ok_or_else(|| self.missing(format!("struct {name}")))
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions (randstruct and `union { ... }` blocks hide members).
    fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let s = self.named_struct(name)?;
        let mut budget = MEMBER_VISITS;
        self.find_in(&s, member, 0, 0, &mut budget)
            .map(|bits| bits / 8)
            .ok_or_else(|| self.missing(format!("{name}.{member}")))
    }

    /// `budget` bounds the members visited: anonymous members that point
    /// back at their own struct would otherwise make the walk exponential.
    fn find_in(
        &self,
        members: &Members<'a>,
        member: &str,
        base_bits: u32,
        depth: u32,
        budget: &mut u32,
    ) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for &(name, ty, bits) in members {
            *budget = budget.checked_sub(1)?;
            let at = base_bits.checked_add(bits)?;
            if name == member {
                return Some(at);
            }
            if name.is_empty()
                && let Some(inner) = self
                    .btf
                    .resolve(ty)
                    .filter(|t| matches!(t.kind, Kind::Struct | Kind::Union))
                && let Some(found) =
                    self.find_in(&self.members(&inner), member, at, depth + 1, budget)
            {
                return Some(found);
            }
        }
        None
    }

    fn oom_control(&self) -> Result<OomControlOffsets, BtfError> {
        let m = |s: &str, f: &str| self.member_offset(s, f);
        let optional = |f: &str| {
            self.member_offset("oom_control", f)
                .unwrap_or(OFFSET_ABSENT)
        };
        Ok(OomControlOffsets {
            valid: 1,
            memcg: m("oom_control", "memcg")?,
            totalpages: m("oom_control", "totalpages")?,
            chosen: m("oom_control", "chosen")?,
            chosen_points: optional("chosen_points"),
            constraint: optional("constraint"),
            gfp_mask: m("oom_control", "gfp_mask")?,
            order: m("oom_control", "order")?,
        })
    }

    /// `struct mem_cgroup`'s `memory` page counter and the css links up
    /// the hierarchy. The same on v1 and v2: v1 `memory.limit_in_bytes` and
    /// v2 `memory.max` both set `memory.max`; v1 `memory.memsw.*` is the
    /// other counter, not read.
    fn memcg(&self) -> Result<MemcgOffsets, BtfError> {
        let m = |s: &str, f: &str| self.member_offset(s, f);
        // The css links are what `valid` stands for (the oom_control kprobe
        // needs them too); without the page counter, no chain is read.
        let memory = m("mem_cgroup", "memory");
        let in_memory = |f: &str| match &memory {
            Ok(memory) => self
                .member_offset("page_counter", f)
                .ok()
                .and_then(|o| memory.checked_add(o))
                .unwrap_or(OFFSET_ABSENT),
            Err(_) => OFFSET_ABSENT,
        };
        let oom_events_local = match (
            m("mem_cgroup", "memory_events_local"),
            self.enum_value("memcg_memory_event", "MEMCG_OOM"),
        ) {
            // atomic_long_t[]: 8 bytes each on the 64-bit kernels BPF runs on.
            // Checked: the enum value and offset come from the file.
            (Ok(events), Ok(oom)) => oom
                .checked_mul(8)
                .and_then(|o| events.checked_add(o))
                .unwrap_or(OFFSET_ABSENT),
            _ => OFFSET_ABSENT,
        };
        Ok(MemcgOffsets {
            valid: 1,
            memcg_css: m("mem_cgroup", "css")?,
            css_parent: m("cgroup_subsys_state", "parent")?,
            memory_usage: in_memory("usage"),
            memory_max: in_memory("max"),
            memory_failcnt: in_memory("failcnt"),
            memory_track_failcnt: in_memory("track_failcnt"),
            oom_events_local,
        })
    }

    /// All values of an enum, names lowercased without `prefix`.
    fn enum_values(&self, enum_name: &str, prefix: &str) -> Vec<(u32, String)> {
        self.enum_entries(enum_name)
            .into_iter()
            .map(|(n, v)| (v, n.trim_start_matches(prefix).to_ascii_lowercase()))
            .collect()
    }

    fn enum_value(&self, enum_name: &str, variant: &str) -> Result<u32, BtfError> {
        self.enum_entries(enum_name)
            .into_iter()
            .find_map(|(n, v)| (n == variant).then_some(v))
            .ok_or_else(|| self.missing(format!("enum {enum_name}::{variant}")))
    }

    fn enum_entries(&self, enum_name: &str) -> Vec<(&'a str, u32)> {
        let btf = self.btf;
        btf.named(enum_name, Kind::Enum)
            .chain(btf.named(enum_name, Kind::Enum64))
            .flat_map(|t| {
                t.entries()
                    .filter_map(|e| Some((btf.name(e.name_off)?, e.value)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether `btf_trace_mark_victim` (the raw tracepoint's prototype) takes
    /// a `struct task_struct *` after the context argument.
    fn mark_victim_has_task(&self) -> bool {
        let btf = self.btf;
        let Some(td) = btf.named("btf_trace_mark_victim", Kind::Typedef).next() else {
            return false;
        };
        let Some(ptr) = btf.resolve(td.size_or_type).filter(|t| t.kind == Kind::Ptr) else {
            return false;
        };
        let Some(proto) = btf
            .resolve(ptr.size_or_type)
            .filter(|t| t.kind == Kind::FuncProto)
        else {
            return false;
        };
        let Some(param) = proto.entries().nth(1) else {
            return false;
        };
        let Some(arg) = btf.resolve(param.value).filter(|t| t.kind == Kind::Ptr) else {
            return false;
        };
        btf.resolve(arg.size_or_type)
            .is_some_and(|t| t.kind == Kind::Struct && btf.name(t.name_off) == Some("task_struct"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/vmlinux"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    }

    /// The running kernel's BTF, where there is one (this machine's 6.18;
    /// the VM test covers Debian's 6.1 through the daemon).
    #[test]
    fn memcg_offsets_from_this_kernel() {
        let info = load(Path::new(DEFAULT_VMLINUX_BTF), &[]).unwrap();
        let m = info.memcg.unwrap();
        assert_eq!(m.valid, 1);
        // css comes first in struct mem_cgroup on every kernel so far, and
        // usage is the first member of struct page_counter.
        assert_eq!(m.memcg_css, 0);
        assert!(
            m.memory_max > m.memory_usage && m.memory_max != OFFSET_ABSENT,
            "{m:?}"
        );
        assert_ne!(m.memory_failcnt, OFFSET_ABSENT);
        assert_ne!(m.oom_events_local, OFFSET_ABSENT);
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("oomwatch-btf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmlinux");
        std::fs::write(&path, b"\x9f\xeb\x01\x00garbage").unwrap();
        assert!(load(&path, &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The ids the placeholder BTF hands aya are the kernel's: the same as
    /// aya's own parse of the whole file finds.
    #[test]
    fn fentry_ids_match_a_full_parse() {
        let names = [
            "psi_memstall_enter",
            "psi_memstall_leave",
            "no_such_function_here",
        ];
        let info = load(Path::new(DEFAULT_VMLINUX_BTF), &names).unwrap();
        assert_eq!(info.function_ids.len(), 2, "{:?}", info.function_ids);
        let full = aya::Btf::parse_file(DEFAULT_VMLINUX_BTF, aya::Endianness::default()).unwrap();
        let small = aya_btf_for_functions(&info.function_ids).unwrap();
        for (name, id) in &info.function_ids {
            let kind = aya_obj::btf::BtfKind::Func;
            assert_eq!(
                full.id_by_type_name_kind(name, kind).unwrap(),
                *id,
                "{name}"
            );
            assert_eq!(
                small.id_by_type_name_kind(name, kind).unwrap(),
                *id,
                "{name}"
            );
        }
        assert!(aya_btf_for_functions(&[]).is_err());
    }

    /// Offsets of members every kernel has, against the layout's own rules.
    #[test]
    fn task_offsets_from_this_kernel() {
        let o = load(Path::new(DEFAULT_VMLINUX_BTF), &[]).unwrap().offsets;
        assert_eq!(o.task_tgid, o.task_pid + 4, "{o:?}");
        assert!(o.task_comm > o.task_tgid && o.task_cgroups > 0, "{o:?}");
        assert!(o.cgroup_subsys != OFFSET_ABSENT && o.cgroup_subsys > o.cgroup_kn, "{o:?}");
        assert_eq!(
            o.css_cgroup, 0,
            "struct cgroup_subsys_state starts with its cgroup: {o:?}"
        );
    }

    /// The fuzz seed (a hand-made subset of a kernel's BTF, pid and tgid
    /// behind an anonymous union as randstruct kernels have them) reads
    /// as the kernel it copies.
    #[test]
    fn fuzz_seed_reads_like_the_kernel() {
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fuzz/corpus/btf/kernel-subset"
        ))
        .unwrap();
        let info = from_bytes(seed, &["psi_memstall_enter", "psi_memstall_leave"]).unwrap();
        assert_eq!(
            (
                info.offsets.task_pid,
                info.offsets.task_tgid,
                info.offsets.task_comm
            ),
            (1264, 1268, 1752)
        );
        assert_eq!(info.offsets.memory_cgrp_id, 4);
        assert_eq!(info.offsets.cgroup_subsys, OFFSET_ABSENT, "the seed has no struct cgroup: no usage walk, the rest stands");
        let m = info.memcg.unwrap();
        assert_eq!(
            (
                m.memory_usage,
                m.memory_max,
                m.memory_track_failcnt,
                m.oom_events_local
            ),
            (256, 416, 385, 1128)
        );
        assert!(info.mark_victim_has_task);
        assert_eq!(info.function_ids.len(), 1);
        assert_eq!(
            info.oom_constraints,
            [(0, "none".to_owned()), (3, "memcg".to_owned())]
        );
    }
}
