//! Kernel struct offsets from BTF (`/sys/kernel/btf/vmlinux`), computed once
//! at start and handed to the kernel programs as globals. rustc cannot emit
//! CO-RE relocations, so this is how the programs stay portable.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
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
}

pub fn load(path: &Path) -> Result<KernelBtfInfo, BtfError> {
    let btf = Btf::from_file(path).map_err(|e| BtfError::Load { path: path.to_path_buf(), reason: e.to_string() })?;
    let finder = Finder { btf: &btf, path };
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
        _pad: 0,
    };
    let oom_control = finder.oom_control().unwrap_or_default();
    let memcg = finder.memcg().map_err(|e| e.to_string());
    let oom_constraints = finder.enum_values("oom_constraint", "CONSTRAINT_");
    Ok(KernelBtfInfo { offsets, mark_victim_has_task: finder.mark_victim_has_task(), oom_control, memcg, oom_constraints })
}

struct Finder<'a> {
    btf: &'a Btf,
    path: &'a Path,
}

impl Finder<'_> {
    fn missing(&self, what: String) -> BtfError {
        BtfError::Missing { path: self.path.to_path_buf(), what }
    }

    fn named_struct(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| self.missing(format!("struct {name}")))
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions (randstruct and `union { ... }` blocks hide members).
    fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let s = self.named_struct(name)?;
        self.find_in(&s, member, 0, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| self.missing(format!("{name}.{member}")))
    }

    fn find_in(&self, s: &btf_rs::Struct, member: &str, base_bits: u32, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let at = base_bits + m.bit_offset();
            if name == member {
                return Some(at);
            }
            if name.is_empty()
                && let Some(inner) = self.anonymous_aggregate(m)
                && let Some(found) = self.find_in(&inner, member, at, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }

    fn anonymous_aggregate(&self, m: &btf_rs::Member) -> Option<btf_rs::Struct> {
        let mut ty = self.btf.resolve_chained_type(m).ok()?;
        for _ in 0..8 {
            match ty {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(ref t) => ty = self.btf.resolve_chained_type(t).ok()?,
                Type::Const(ref t) | Type::Volatile(ref t) => ty = self.btf.resolve_chained_type(t).ok()?,
                _ => return None,
            }
        }
        None
    }

    fn oom_control(&self) -> Result<OomControlOffsets, BtfError> {
        let m = |s: &str, f: &str| self.member_offset(s, f);
        let optional = |f: &str| self.member_offset("oom_control", f).unwrap_or(OFFSET_ABSENT);
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
            Ok(memory) => self.member_offset("page_counter", f).map(|o| memory + o).unwrap_or(OFFSET_ABSENT),
            Err(_) => OFFSET_ABSENT,
        };
        let oom_events_local = match (m("mem_cgroup", "memory_events_local"), self.enum_value("memcg_memory_event", "MEMCG_OOM")) {
            // atomic_long_t[]: 8 bytes each on the 64-bit kernels BPF runs on.
            (Ok(events), Ok(oom)) => events + 8 * oom,
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
        let mut out = Vec::new();
        for t in self.btf.resolve_types_by_name(enum_name).unwrap_or_default() {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if let Ok(n) = self.btf.resolve_name(m) {
                        out.push((m.val(), n.trim_start_matches(prefix).to_ascii_lowercase()));
                    }
                }
            }
        }
        out
    }

    fn enum_value(&self, enum_name: &str, variant: &str) -> Result<u32, BtfError> {
        for t in self.btf.resolve_types_by_name(enum_name).unwrap_or_default() {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if self.btf.resolve_name(m).is_ok_and(|n| n == variant) {
                        return Ok(m.val());
                    }
                }
            }
        }
        Err(self.missing(format!("enum {enum_name}::{variant}")))
    }

    /// Whether `btf_trace_mark_victim` (the raw tracepoint's prototype) takes
    /// a `struct task_struct *` after the context argument.
    fn mark_victim_has_task(&self) -> bool {
        let Some(proto) = self.typedef_proto("btf_trace_mark_victim") else { return false };
        let Some(param) = proto.parameters.get(1) else { return false };
        let Ok(Type::Ptr(ptr)) = self.btf.resolve_chained_type(param) else { return false };
        match self.btf.resolve_chained_type(&ptr) {
            Ok(Type::Struct(s)) => self.btf.resolve_name(&s).is_ok_and(|n| n == "task_struct"),
            _ => false,
        }
    }

    fn typedef_proto(&self, name: &str) -> Option<btf_rs::FuncProto> {
        let types = self.btf.resolve_types_by_name(name).ok()?;
        let Some(Type::Typedef(td)) = types.into_iter().find(|t| matches!(t, Type::Typedef(_))) else {
            return None;
        };
        let Ok(Type::Ptr(ptr)) = self.btf.resolve_chained_type(&td) else { return None };
        match self.btf.resolve_chained_type(&ptr) {
            Ok(Type::FuncProto(p)) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/vmlinux")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    }

    /// The running kernel's BTF, where there is one (this machine's 6.18;
    /// the VM test covers Debian's 6.1 through the daemon).
    #[test]
    fn memcg_offsets_from_this_kernel() {
        let info = load(Path::new(DEFAULT_VMLINUX_BTF)).unwrap();
        let m = info.memcg.unwrap();
        assert_eq!(m.valid, 1);
        // css comes first in struct mem_cgroup on every kernel so far, and
        // usage is the first member of struct page_counter.
        assert_eq!(m.memcg_css, 0);
        assert!(m.memory_max > m.memory_usage && m.memory_max != OFFSET_ABSENT, "{m:?}");
        assert_ne!(m.memory_failcnt, OFFSET_ABSENT);
        assert_ne!(m.oom_events_local, OFFSET_ABSENT);
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("oomwatch-btf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmlinux");
        std::fs::write(&path, b"\x9f\xeb\x01\x00garbage").unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
