//! Loads the embedded programs with this kernel's offsets and attaches them
//! from a table. Required probes fail the start with one clear line; optional
//! ones are skipped, and the report says what that costs the user.

use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{FEntry, Iter, KProbe, RawTracePoint, TracePoint},
};
use oomwatch_common::{
    names::{global, map, program},
    offsets::{KernelOffsets, MemcgOffsets, OFFSET_ABSENT},
    oom::{MarkVictimLayout, Settings, oom_part},
    reclaim::{ReclaimLayout, StallSettings, ThreadStalls},
};

use super::{
    EBPF_OBJECT,
    btf::{self, KernelBtfInfo},
    privileges, tracefs,
    usage_walk::{self, UsageWalk},
};

/// What a kernel without the memcg walk costs.
const MEMCG_CHAIN_FALLBACK: &str = "usage and limits at a kill are not read in the kernel: they are read from cgroup files after the kill (slower, and racy with the victim's exit)";

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub tracefs: PathBuf,
    pub btf: PathBuf,
    pub stall_threshold_ns: u64,
    pub stall_min_interval_ns: u64,
    /// The memory hierarchy's root, for the usage walk; `None`: no walk.
    pub usage_walk_root: Option<PathBuf>,
    /// Cgroups the usage walk can hold (the cgroup cap).
    pub usage_walk_cgroups: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            tracefs: PathBuf::from(tracefs::DEFAULT_TRACEFS),
            btf: PathBuf::from(btf::DEFAULT_VMLINUX_BTF),
            stall_threshold_ns: 100_000_000,
            stall_min_interval_ns: 1_000_000_000,
            usage_walk_root: None,
            usage_walk_cgroups: oomwatch_common::usage::DEFAULT_SLOTS - 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("oomwatch daemon needs {missing} to load eBPF programs: run it as root (or grant the capabilities)")]
    Privileges { missing: String },
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("tracepoint {tracepoint} is missing from {tracefs}: this kernel cannot report OOM kills (it needs CONFIG_TRACEPOINTS and the oom events)")]
    MissingTracepoint { tracepoint: String, tracefs: PathBuf },
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("required probe {probe} ({target}) could not be attached: {reason}")]
    Required { probe: &'static str, target: String, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    TracePoint { category: &'static str, name: &'static str },
    RawTracePoint { name: &'static str },
    /// Entry of a kernel function, through the kprobe PMU.
    KProbe { function: &'static str },
    /// Entry of a kernel function, through BPF trampolines (needs BTF).
    FEntry { function: &'static str },
    /// A BPF iterator over the memory hierarchy's cgroups (needs BTF, 6.1+).
    CgroupIter,
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TracePoint { category, name } => write!(f, "tracepoint {category}/{name}"),
            Self::RawTracePoint { name } => write!(f, "raw tracepoint {name}"),
            Self::KProbe { function } => write!(f, "kprobe {function}"),
            Self::FEntry { function } => write!(f, "fentry {function}"),
            Self::CgroupIter => write!(f, "cgroup iterator"),
        }
    }
}

/// One row of the attach table.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// The `probe` label of `oomwatch_probe_attached`.
    pub name: &'static str,
    /// The program's function name in the eBPF object.
    pub program: &'static str,
    pub hook: Hook,
    pub required: bool,
    /// What the user loses when it is skipped.
    pub cost: &'static str,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "oom_mark_victim",
        program: program::MARK_VICTIM.name,
        hook: Hook::TracePoint { category: "oom", name: "mark_victim" },
        required: true,
        cost: "no OOM kills can be reported",
    },
    ProbeSpec {
        name: "oom_victim_task",
        program: program::MARK_VICTIM_TASK.name,
        hook: Hook::RawTracePoint { name: "mark_victim" },
        required: false,
        cost: "the victim's memory cgroup is looked up in /proc (approximate attribution); usage and limits at the kill are read from cgroup files",
    },
    ProbeSpec {
        name: "oom_kill_process",
        program: program::OOM_KILL_PROCESS.name,
        hook: Hook::KProbe { function: "oom_kill_process" },
        required: false,
        cost: "no oom_control detail on kills (limit memcg from the kernel, totalpages, badness points, constraint, gfp_mask, order); the limit cgroup is inferred from cgroup counters",
    },
    ProbeSpec {
        name: "victim_exit",
        program: program::SCHED_PROCESS_EXIT.name,
        hook: Hook::TracePoint { category: "sched", name: "sched_process_exit" },
        required: false,
        cost: "victim exits are not confirmed and exit latency is unknown",
    },
    ProbeSpec {
        name: "reclaim_direct_begin",
        program: program::DIRECT_RECLAIM_BEGIN.name,
        hook: Hook::TracePoint { category: "vmscan", name: "mm_vmscan_direct_reclaim_begin" },
        required: false,
        cost: "direct (global) reclaim stalls are not measured",
    },
    ProbeSpec {
        name: "reclaim_direct_end",
        program: program::DIRECT_RECLAIM_END.name,
        hook: Hook::TracePoint { category: "vmscan", name: "mm_vmscan_direct_reclaim_end" },
        required: false,
        cost: "direct (global) reclaim stalls are not measured",
    },
    ProbeSpec {
        name: "reclaim_memcg_begin",
        program: program::MEMCG_RECLAIM_BEGIN.name,
        hook: Hook::TracePoint { category: "vmscan", name: "mm_vmscan_memcg_reclaim_begin" },
        required: false,
        cost: "reclaim stalls at cgroup limits are not measured",
    },
    ProbeSpec {
        name: "reclaim_memcg_end",
        program: program::MEMCG_RECLAIM_END.name,
        hook: Hook::TracePoint { category: "vmscan", name: "mm_vmscan_memcg_reclaim_end" },
        required: false,
        cost: "reclaim stalls at cgroup limits are not measured",
    },
    ProbeSpec {
        name: "memstall_enter_fentry",
        program: program::MEMSTALL_ENTER_FENTRY.name,
        hook: Hook::FEntry { function: "psi_memstall_enter" },
        required: false,
        cost: MEMSTALL_FENTRY_COST,
    },
    ProbeSpec {
        name: "memstall_leave_fentry",
        program: program::MEMSTALL_LEAVE_FENTRY.name,
        hook: Hook::FEntry { function: "psi_memstall_leave" },
        required: false,
        cost: MEMSTALL_FENTRY_COST,
    },
    ProbeSpec {
        name: "memstall_enter_kprobe",
        program: program::MEMSTALL_ENTER_KPROBE.name,
        hook: Hook::KProbe { function: "psi_memstall_enter" },
        required: false,
        cost: MEMSTALL_COST,
    },
    ProbeSpec {
        name: "memstall_leave_kprobe",
        program: program::MEMSTALL_LEAVE_KPROBE.name,
        hook: Hook::KProbe { function: "psi_memstall_leave" },
        required: false,
        cost: MEMSTALL_COST,
    },
    ProbeSpec {
        name: "cgroup_usage_walk",
        program: program::CGROUP_USAGE.name,
        hook: Hook::CgroupIter,
        required: false,
        cost: "cgroup usage is read from one cgroupfs file per cgroup and tick (more CPU on hosts with many cgroups; idle cgroups are read less often)",
    },
];

/// The kernel function whose BTF id a cgroup iterator loads against.
const CGROUP_ITER_FUNCTION: &str = "bpf_iter_cgroup";

const MEMSTALL_COST: &str = "per-task memory stall time unavailable; reclaim stalls still measured from vmscan tracepoints";
const MEMSTALL_FENTRY_COST: &str =
    "per-task memory stall time needs the kprobe fallback; reclaim stalls still measured from vmscan tracepoints";

/// Rows that only make sense together (start and end of one measurement):
/// when one half is skipped, the other is detached too.
pub const PAIRS: &[(&str, &str)] = &[
    ("reclaim_direct_begin", "reclaim_direct_end"),
    ("reclaim_memcg_begin", "reclaim_memcg_end"),
    ("memstall_enter_fentry", "memstall_leave_fentry"),
    ("memstall_enter_kprobe", "memstall_leave_kprobe"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeState {
    Attached,
    Skipped(String),
}

#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub spec: ProbeSpec,
    pub state: ProbeState,
}

impl ProbeReport {
    pub fn attached(&self) -> bool {
        self.state == ProbeState::Attached
    }

    #[cfg(test)]
    pub(crate) fn attached_for_tests(spec: &ProbeSpec) -> Self {
        Self { spec: spec.clone(), state: ProbeState::Attached }
    }
}

/// What the loader found out about the kernel, for `check` and the logs.
#[derive(Debug)]
pub struct KernelFacts {
    pub tracefs: PathBuf,
    pub mounted_tracefs: bool,
    pub btf: Result<KernelBtfInfo, String>,
    pub mark_victim_layout: MarkVictimLayout,
}

/// The kernel's per-thread reclaim stall totals (`RECLAIM_THREADS`).
pub struct StallMaps {
    pub threads: HashMap<MapData, u32, ThreadStalls>,
}

/// The loaded programs. Dropping this detaches everything.
pub struct KernelProbes {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeReport>,
    pub facts: KernelFacts,
    /// The usage walk's iterator link, when `cgroup_usage_walk` attached.
    usage_link: Option<OwnedFd>,
}

impl KernelProbes {
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        RingBuf::try_from(self.ebpf.take_map(map::EVENTS)?).ok()
    }

    pub fn take_counters(&mut self) -> Option<PerCpuArray<MapData, u64>> {
        PerCpuArray::try_from(self.ebpf.take_map(map::COUNTERS)?).ok()
    }

    /// The reclaim probes are attached: their stall maps mean something.
    pub fn has_stall_maps(&self) -> bool {
        PROBES.iter().any(|p| p.name.starts_with("reclaim_") && self.attached(p.name))
    }

    pub fn take_stall_maps(&mut self) -> Option<StallMaps> {
        if !self.has_stall_maps() {
            return None;
        }
        let threads = HashMap::try_from(self.ebpf.take_map(map::RECLAIM_THREADS)?).ok()?;
        Some(StallMaps { threads })
    }

    pub fn attached(&self, probe: &str) -> bool {
        self.probes.iter().any(|p| p.spec.name == probe && p.attached())
    }

    /// The usage walk, for the sampler; `None` when its probe was skipped.
    pub fn take_usage_walk(&mut self) -> Option<Result<UsageWalk, String>> {
        let link = self.usage_link.take()?;
        let slots = self.ebpf.take_map(map::USAGE_SLOTS).ok_or(format!("{} map missing", map::USAGE_SLOTS));
        let usages = self.ebpf.take_map(map::USAGES).ok_or(format!("{} map missing", map::USAGES));
        Some((|| {
            let slots = HashMap::try_from(slots?).map_err(|e| format!("{}: {e}", map::USAGE_SLOTS))?;
            let usages = match usages? {
                aya::maps::Map::Array(data) => data,
                _ => return Err(format!("{} is not an array", map::USAGES)),
            };
            UsageWalk::new(link, slots, usages).map_err(|e| e.to_string())
        })())
    }
}

/// Kernels since 5.11 charge BPF memory to the memory cgroup; older ones
/// need RLIMIT_MEMLOCK raised. Try, and go on when refused (without
/// CAP_SYS_RESOURCE it is, and modern kernels do not care).
fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11", std::io::Error::last_os_error());
    }
}

pub fn load(opts: &LoadOptions) -> Result<KernelProbes, LoadError> {
    let missing = privileges::missing_for_bpf(privileges::effective_caps());
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|&c| privileges::cap_name(c)).collect();
        return Err(LoadError::Privileges { missing: names.join(" and ") });
    }
    raise_memlock();
    // Before any attach: aya finds tracefs once and caches the answer.
    let (tracefs_root, mounted) = tracefs::ensure_tracefs(&opts.tracefs)?;
    if mounted {
        log::info!("mounted tracefs at {}", tracefs_root.display());
    }
    if !tracefs::tracepoint_exists(&tracefs_root, "oom", "mark_victim") {
        return Err(LoadError::MissingTracepoint { tracepoint: "oom/mark_victim".into(), tracefs: tracefs_root });
    }
    let format = tracefs::read_format(&tracefs_root, "oom", "mark_victim")?;
    let layout = tracefs::mark_victim_layout(&format).map_err(|reason| LoadError::Layout {
        path: tracefs_root.join("events/oom/mark_victim/format"),
        reason,
    })?;

    let btf = btf::load(&opts.btf, &btf_functions()).map_err(|e| e.to_string());
    let offsets = match &btf {
        Ok(info) => info.offsets,
        Err(e) => {
            log::warn!("{e}; OOM kills will be attributed approximately (from /proc/PID/cgroup), not read from the kernel");
            KernelOffsets::default()
        }
    };

    let reclaim_layout = reclaim_layout(&tracefs_root);
    let oom_control_offsets = btf.as_ref().map(|b| b.oom_control).unwrap_or_default();
    let memcg_offsets = match btf.as_ref().map(|b| &b.memcg) {
        Ok(Ok(m)) if m.memory_usage != OFFSET_ABSENT && m.memory_max != OFFSET_ABSENT => *m,
        Ok(found) => {
            let why = match found {
                Err(e) => e.clone(),
                Ok(_) => format!("{}: struct page_counter has no usage or max", opts.btf.display()),
            };
            log::warn!("{why}; {MEMCG_CHAIN_FALLBACK}");
            found.clone().unwrap_or_default()
        }
        // No BTF at all: said above.
        Err(_) => MemcgOffsets::default(),
    };
    let stall_settings = StallSettings { threshold_ns: opts.stall_threshold_ns, min_interval_ns: opts.stall_min_interval_ns };
    // No kernel BTF for aya's loader: the object has no CO-RE relocations
    // (rustc emits none), and its default parses all of vmlinux BTF.
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global(global::MARK_VICTIM_LAYOUT, &layout, true)
        .override_global(global::KERNEL_OFFSETS, &offsets, true)
        .override_global(global::OOM_CONTROL_OFFSETS, &oom_control_offsets, true)
        .override_global(global::MEMCG_OFFSETS, &memcg_offsets, true)
        .override_global(global::RECLAIM_LAYOUT, &reclaim_layout, true)
        .override_global(global::STALL_SETTINGS, &stall_settings, true)
        .map_max_entries(map::USAGES, opts.usage_walk_cgroups.saturating_add(1))
        .map_max_entries(map::USAGE_SLOTS, opts.usage_walk_cgroups.max(1))
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)?;

    let (probes, usage_link) = attach_all(&mut ebpf, &btf, &tracefs_root, opts.usage_walk_root.as_deref())?;

    let mut kp = KernelProbes {
        ebpf,
        probes,
        facts: KernelFacts { tracefs: tracefs_root, mounted_tracefs: mounted, btf, mark_victim_layout: layout },
        usage_link,
    };
    // Only now: until the loader names the parts, the victim-task part does
    // nothing, so a kill while the rows attach one by one is sent whole by
    // the tracepoint part, never left half in the slot.
    write_settings(&mut kp);
    Ok(kp)
}

/// Attaches the table's rows in order; the required ones fail the load.
/// Returns each row's state, and the usage walk's link when it attached.
fn attach_all(
    ebpf: &mut Ebpf,
    btf: &Result<KernelBtfInfo, String>,
    tracefs_root: &Path,
    usage_walk_root: Option<&Path>,
) -> Result<(Vec<ProbeReport>, Option<OwnedFd>), LoadError> {
    let mut fentry_btf = LazyBtf::new(btf.as_ref().map(|b| b.function_ids.as_slice()).map_err(Clone::clone));
    let mut probes: Vec<ProbeReport> = Vec::with_capacity(PROBES.len());
    let mut usage_link = None;
    for spec in PROBES {
        let not_needed = not_needed(spec, &probes);
        let gate = not_needed.clone().or_else(|| gate(spec, btf, tracefs_root, usage_walk_root));
        let state = match gate {
            Some(reason) => ProbeState::Skipped(reason),
            None => match attach(ebpf, spec, &mut fentry_btf, usage_walk_root) {
                Ok(link) => {
                    usage_link = usage_link.or(link);
                    ProbeState::Attached
                }
                Err(reason) => {
                    // Loaded but not attached (a kprobe without the PMU): do
                    // not leave it loaded in the kernel.
                    let _ = detach(ebpf, spec);
                    ProbeState::Skipped(reason)
                }
            },
        };
        if let ProbeState::Skipped(reason) = &state {
            if spec.required {
                return Err(LoadError::Required { probe: spec.name, target: spec.hook.to_string(), reason: reason.clone() });
            }
            if not_needed.is_some() {
                log::debug!("probe {} ({}) skipped: {reason}", spec.name, spec.hook);
            } else {
                log::warn!("probe {} ({}) skipped: {reason}; cost: {}", spec.name, spec.hook, spec.cost);
            }
        } else {
            log::debug!("probe {} attached to {}", spec.name, spec.hook);
        }
        probes.push(ProbeReport { spec: *spec, state });
    }
    drop(fentry_btf);
    unpair(ebpf, &mut probes);
    Ok((probes, usage_link))
}

/// Field offsets of the reclaim tracepoints, from their format files;
/// fields of a missing or unreadable format stay absent.
fn reclaim_layout(tracefs_root: &Path) -> ReclaimLayout {
    let format = |name| tracefs::read_format(tracefs_root, "vmscan", name).ok();
    let (direct_order, direct_nr_reclaimed) = tracefs::reclaim_fields(
        format("mm_vmscan_direct_reclaim_begin").as_ref(),
        format("mm_vmscan_direct_reclaim_end").as_ref(),
    );
    let (memcg_order, memcg_nr_reclaimed) = tracefs::reclaim_fields(
        format("mm_vmscan_memcg_reclaim_begin").as_ref(),
        format("mm_vmscan_memcg_reclaim_end").as_ref(),
    );
    ReclaimLayout { direct_order, direct_nr_reclaimed, memcg_order, memcg_nr_reclaimed }
}

/// A kprobe row is redundant when the fentry pair for the same function
/// family is attached (same data, cheaper hook).
fn not_needed(spec: &ProbeSpec, done: &[ProbeReport]) -> Option<String> {
    let Hook::KProbe { .. } = spec.hook else { return None };
    let attached = |name: &str| done.iter().any(|p| p.spec.name == name && p.attached());
    (attached("memstall_enter_fentry") && attached("memstall_leave_fentry"))
        .then(|| "not needed: the fentry pair is attached".to_owned())
}

/// Detaches the attached half of a pair whose other half was skipped: a
/// begin without its end only costs time.
fn unpair(ebpf: &mut Ebpf, probes: &mut [ProbeReport]) {
    for (a, b) in PAIRS {
        let state = |probes: &[ProbeReport], name: &str| probes.iter().position(|p| p.spec.name == name);
        let (Some(ia), Some(ib)) = (state(probes, a), state(probes, b)) else { continue };
        let (lone, other) = match (probes[ia].attached(), probes[ib].attached()) {
            (true, false) => (ia, ib),
            (false, true) => (ib, ia),
            _ => continue,
        };
        let spec = probes[lone].spec;
        if let Err(e) = detach(ebpf, &spec) {
            log::warn!("probe {}: could not detach after its pair was skipped: {e}", spec.name);
            continue;
        }
        let reason = format!("{} was skipped and they only work together", probes[other].spec.name);
        log::warn!("probe {} ({}) skipped: {reason}; cost: {}", spec.name, spec.hook, spec.cost);
        probes[lone].state = ProbeState::Skipped(reason);
    }
}

fn detach(ebpf: &mut Ebpf, spec: &ProbeSpec) -> Result<(), String> {
    let program = ebpf.program_mut(spec.program).ok_or("program missing from the eBPF object")?;
    let result = match spec.hook {
        Hook::TracePoint { .. } => <&mut TracePoint>::try_from(program).map_err(|e| e.to_string())?.unload(),
        Hook::RawTracePoint { .. } => <&mut RawTracePoint>::try_from(program).map_err(|e| e.to_string())?.unload(),
        Hook::KProbe { .. } => <&mut KProbe>::try_from(program).map_err(|e| e.to_string())?.unload(),
        Hook::FEntry { .. } => <&mut FEntry>::try_from(program).map_err(|e| e.to_string())?.unload(),
        Hook::CgroupIter => <&mut Iter>::try_from(program).map_err(|e| e.to_string())?.unload(),
    };
    result.map_err(|e| e.to_string())
}

/// The kernel functions fentry and iterator rows load against (BTF ids).
pub fn btf_functions() -> Vec<&'static str> {
    PROBES
        .iter()
        .filter_map(|p| match p.hook {
            Hook::FEntry { function } => Some(function),
            Hook::CgroupIter => Some(CGROUP_ITER_FUNCTION),
            _ => None,
        })
        .collect()
}

/// The BTF aya needs for fentry and iterators (ids of those functions
/// only), built when such a row gets that far.
struct LazyBtf<'a> {
    function_ids: Result<&'a [(String, u32)], String>,
    btf: Option<Result<aya::Btf, String>>,
}

impl<'a> LazyBtf<'a> {
    fn new(function_ids: Result<&'a [(String, u32)], String>) -> Self {
        Self { function_ids, btf: None }
    }

    fn get(&mut self) -> Result<&aya::Btf, String> {
        let ids = &self.function_ids;
        self.btf.get_or_insert_with(|| btf::aya_btf_for_functions(ids.clone()?)).as_ref().map_err(Clone::clone)
    }
}

/// Loads the eBPF object once more and tries the given optional rows, then
/// drops everything: `oomwatch check` asks the kernel instead of guessing.
pub fn try_attach(specs: &[&ProbeSpec], function_ids: Result<&[(String, u32)], String>, usage_walk_root: Option<&Path>) -> Vec<Result<(), String>> {
    let mut ebpf = match EbpfLoader::new().btf(None).load(EBPF_OBJECT) {
        Ok(e) => e,
        Err(e) => return specs.iter().map(|_| Err(format!("loading the eBPF object: {e}"))).collect(),
    };
    let mut btf = LazyBtf::new(function_ids);
    specs.iter().map(|spec| attach(&mut ebpf, spec, &mut btf, usage_walk_root).map(drop)).collect()
}

/// Reasons known before trying, so the report says why, not just EINVAL.
fn gate(spec: &ProbeSpec, btf: &Result<KernelBtfInfo, String>, tracefs_root: &Path, usage_walk_root: Option<&Path>) -> Option<String> {
    match spec.hook {
        Hook::CgroupIter => match btf {
            Err(e) => Some(format!("no BTF ({e})")),
            Ok(info) if !info.function_ids.iter().any(|(f, _)| f == CGROUP_ITER_FUNCTION) => {
                Some("this kernel has no cgroup iterator (bpf_iter_cgroup, 6.1+)".into())
            }
            Ok(info) if !info.memcg.as_ref().is_ok_and(|m| m.memory_usage != OFFSET_ABSENT) => {
                Some("this kernel's BTF has no memory page counter offsets".into())
            }
            Ok(info) if info.offsets.cgroup_subsys == OFFSET_ABSENT => Some("this kernel's BTF has no struct cgroup.subsys".into()),
            Ok(_) => usage_walk_root.is_none().then(|| "no memory cgroup hierarchy found".to_owned()),
        },
        Hook::TracePoint { category, name } if !tracefs::tracepoint_exists(tracefs_root, category, name) => {
            Some(format!("this kernel has no {category}/{name} tracepoint"))
        }
        Hook::RawTracePoint { name: "mark_victim" } => match btf {
            Err(e) => Some(format!("no BTF ({e})")),
            Ok(info) if !info.mark_victim_has_task => {
                Some("this kernel's mark_victim tracepoint passes only a pid (task pointer since 6.8)".into())
            }
            Ok(_) => None,
        },
        Hook::FEntry { .. } => btf.as_ref().err().map(|e| format!("fentry needs BTF ({e})")),
        Hook::KProbe { function: "oom_kill_process" } => match btf {
            Err(e) => Some(format!("no BTF for struct oom_control ({e})")),
            Ok(info) if info.oom_control.valid == 0 => Some("struct oom_control is not as expected in this kernel's BTF".into()),
            Ok(_) => None,
        },
        _ => None,
    }
}

/// Attaches one row; a cgroup iterator row returns its link, which the
/// caller keeps (dropping it detaches).
fn attach(ebpf: &mut Ebpf, spec: &ProbeSpec, btf: &mut LazyBtf<'_>, usage_walk_root: Option<&Path>) -> Result<Option<OwnedFd>, String> {
    let program = ebpf.program_mut(spec.program).ok_or("program missing from the eBPF object")?;
    match spec.hook {
        Hook::TracePoint { category, name } => {
            let tp: &mut TracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("load: {e:#}"))?;
            tp.attach(category, name).map_err(|e| format!("attach: {e:#}"))?;
        }
        Hook::RawTracePoint { name } => {
            let tp: &mut RawTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("load: {e:#}"))?;
            tp.attach(name).map_err(|e| format!("attach: {e:#}"))?;
        }
        Hook::KProbe { function } => {
            let kp: &mut KProbe = program.try_into().map_err(|e| format!("{e}"))?;
            kp.load().map_err(|e| format!("load: {e:#}"))?;
            kp.attach(function, 0).map_err(|e| kprobe_error(&crate::error_chain(&e)))?;
        }
        Hook::FEntry { function } => {
            let btf = btf.get()?;
            let fe: &mut FEntry = program.try_into().map_err(|e| format!("{e}"))?;
            fe.load(function, btf).map_err(|e| fentry_error(&crate::error_chain(&e)))?;
            fe.attach().map_err(|e| fentry_error(&format!("attach: {}", crate::error_chain(&e))))?;
        }
        Hook::CgroupIter => {
            let root = usage_walk_root.ok_or("no memory cgroup hierarchy found")?;
            let btf = btf.get()?;
            let it: &mut Iter = program.try_into().map_err(|e| format!("{e}"))?;
            it.load("cgroup", btf).map_err(|e| format!("load: {}", crate::error_chain(&e)))?;
            let prog = it.fd().map_err(|e| format!("{e}"))?;
            let link = usage_walk::link(prog.as_fd(), root).map_err(|e| e.to_string())?;
            return Ok(Some(link));
        }
    }
    Ok(None)
}


/// Without the kprobe PMU, aya fails reading
/// `/sys/bus/event_source/devices/kprobe/type`: say what that means.
fn kprobe_error(e: &str) -> String {
    log::debug!("kprobe attach: {e}");
    if e.contains("kprobe/type") {
        "kprobes unavailable (no kprobe PMU in /sys/bus/event_source/devices)".to_owned()
    } else {
        format!("attach: {e}")
    }
}

fn fentry_error(e: &str) -> String {
    log::debug!("fentry: {e}");
    if e.contains("Operation not permitted") || e.contains("EPERM") || e.contains("os error 1)") {
        "fentry unavailable (the kernel refuses tracing programs here: EPERM)".to_owned()
    } else if e.contains("not supported") || e.contains("os error 524") {
        format!("fentry unavailable (no BPF trampoline support: {e})")
    } else {
        format!("load: {e}")
    }
}

fn write_settings(kp: &mut KernelProbes) {
    let mut parts = oom_part::TRACEPOINT;
    if kp.attached("oom_victim_task") {
        parts |= oom_part::VICTIM_TASK;
    }
    let settings = Settings { oom_parts_expected: parts, _pad: 0 };
    let result = kp
        .ebpf
        .map_mut(map::SETTINGS)
        .ok_or_else(|| format!("{} map missing", map::SETTINGS))
        .and_then(|m| Array::<_, Settings>::try_from(m).map_err(|e| e.to_string()))
        .and_then(|mut a| a.set(0, settings, 0).map_err(|e| e.to_string()));
    if let Err(e) = result {
        log::warn!("could not write program settings: {e}; OOM records will carry tracepoint fields only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_name_real_rows_of_the_same_hook_kind() {
        for (a, b) in PAIRS {
            let row = |n: &str| PROBES.iter().find(|p| p.name == n).unwrap_or_else(|| panic!("{n} not in PROBES"));
            let (a, b) = (row(a), row(b));
            assert_eq!(std::mem::discriminant(&a.hook), std::mem::discriminant(&b.hook), "{} / {}", a.name, b.name);
            assert!(!a.required && !b.required);
        }
        let names: std::collections::HashSet<_> = PROBES.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PROBES.len(), "probe names are unique (metric labels)");
    }

    #[test]
    fn every_program_in_the_object_has_one_row() {
        let rows: Vec<&str> = PROBES.iter().map(|p| p.program).collect();
        for p in program::ALL {
            assert_eq!(rows.iter().filter(|&&r| r == p.name).count(), 1, "{}", p.name);
        }
        assert_eq!(rows.len(), program::ALL.len());
    }

    #[test]
    fn kprobes_are_not_needed_when_the_fentry_pair_is_attached() {
        let row = |n: &str| *PROBES.iter().find(|p| p.name == n).unwrap();
        let report = |n: &str, state: ProbeState| ProbeReport { spec: row(n), state };
        let kp = row("memstall_enter_kprobe");
        let both = [report("memstall_enter_fentry", ProbeState::Attached), report("memstall_leave_fentry", ProbeState::Attached)];
        assert!(not_needed(&kp, &both).is_some());
        let half = [report("memstall_enter_fentry", ProbeState::Attached), report("memstall_leave_fentry", ProbeState::Skipped("x".into()))];
        assert_eq!(not_needed(&kp, &half), None);
        assert_eq!(not_needed(&row("reclaim_memcg_end"), &both), None);
    }

    #[test]
    fn attach_errors_say_what_is_missing() {
        let kp = kprobe_error("`/sys/bus/event_source/devices/kprobe/type`: No such file or directory (os error 2)");
        assert!(kp.starts_with("kprobes unavailable"), "{kp}");
        let fe = fentry_error("the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output: ");
        assert!(fe.starts_with("fentry unavailable") && fe.contains("EPERM"), "{fe}");
        assert!(fentry_error("something else").starts_with("load: something else"));
        for p in PROBES.iter().filter(|p| p.name.starts_with("memstall_")) {
            assert!(p.cost.contains("reclaim stalls still measured from vmscan tracepoints"), "{}", p.name);
        }
    }
}
