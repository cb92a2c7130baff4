//! Loads the embedded programs with this kernel's offsets and attaches them
//! from a table. Required probes fail the start with one clear line; optional
//! ones are skipped, and the report says what that costs the user.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use oomwatch_common::{KernelOffsets, MarkVictimLayout, Settings, oom_part};

use super::{
    EBPF_OBJECT,
    btf::{self, KernelBtfInfo},
    privileges, tracefs,
};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub tracefs: PathBuf,
    pub btf: PathBuf,
    pub stall_threshold_ns: u64,
    pub stall_min_interval_ns: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            tracefs: PathBuf::from(tracefs::DEFAULT_TRACEFS),
            btf: PathBuf::from(btf::DEFAULT_VMLINUX_BTF),
            stall_threshold_ns: 100_000_000,
            stall_min_interval_ns: 1_000_000_000,
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
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TracePoint { category, name } => write!(f, "tracepoint {category}/{name}"),
            Self::RawTracePoint { name } => write!(f, "raw tracepoint {name}"),
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
        program: "mark_victim",
        hook: Hook::TracePoint { category: "oom", name: "mark_victim" },
        required: true,
        cost: "no OOM kills can be reported",
    },
    ProbeSpec {
        name: "oom_victim_task",
        program: "mark_victim_task",
        hook: Hook::RawTracePoint { name: "mark_victim" },
        required: false,
        cost: "the victim's memory cgroup is looked up in /proc (approximate attribution)",
    },
    ProbeSpec {
        name: "victim_exit",
        program: "sched_process_exit",
        hook: Hook::TracePoint { category: "sched", name: "sched_process_exit" },
        required: false,
        cost: "victim exits are not confirmed and exit latency is unknown",
    },
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
}

/// What the loader found out about the kernel, for `check` and the logs.
#[derive(Debug)]
pub struct KernelFacts {
    pub tracefs: PathBuf,
    pub mounted_tracefs: bool,
    pub btf: Result<KernelBtfInfo, String>,
    pub mark_victim_layout: MarkVictimLayout,
}

/// The loaded programs. Dropping this detaches everything.
pub struct KernelProbes {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeReport>,
    pub facts: KernelFacts,
}

impl KernelProbes {
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        RingBuf::try_from(self.ebpf.take_map("EVENTS")?).ok()
    }

    pub fn take_counters(&mut self) -> Option<PerCpuArray<MapData, u64>> {
        PerCpuArray::try_from(self.ebpf.take_map("COUNTERS")?).ok()
    }

    pub fn attached(&self, probe: &str) -> bool {
        self.probes.iter().any(|p| p.spec.name == probe && p.attached())
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

    let btf = btf::load(&opts.btf).map_err(|e| e.to_string());
    let offsets = match &btf {
        Ok(info) => info.offsets,
        Err(e) => {
            log::warn!("{e}; OOM kills will be attributed approximately (from /proc/PID/cgroup), not read from the kernel");
            KernelOffsets::default()
        }
    };

    let mut ebpf = EbpfLoader::new()
        .override_global("MARK_VICTIM_LAYOUT", &layout, true)
        .override_global("KERNEL_OFFSETS", &offsets, true)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)?;

    let mut probes = Vec::with_capacity(PROBES.len());
    for spec in PROBES {
        let gate = gate(spec, &btf, &tracefs_root);
        let state = match gate {
            Some(reason) => ProbeState::Skipped(reason),
            None => match attach(&mut ebpf, spec) {
                Ok(()) => ProbeState::Attached,
                Err(reason) => ProbeState::Skipped(reason),
            },
        };
        if let ProbeState::Skipped(reason) = &state {
            if spec.required {
                return Err(LoadError::Required { probe: spec.name, target: spec.hook.to_string(), reason: reason.clone() });
            }
            log::warn!("probe {} ({}) skipped: {reason}; cost: {}", spec.name, spec.hook, spec.cost);
        } else {
            log::debug!("probe {} attached to {}", spec.name, spec.hook);
        }
        probes.push(ProbeReport { spec: *spec, state });
    }

    let mut kp = KernelProbes {
        ebpf,
        probes,
        facts: KernelFacts { tracefs: tracefs_root, mounted_tracefs: mounted, btf, mark_victim_layout: layout },
    };
    write_settings(&mut kp, opts);
    Ok(kp)
}

/// Reasons known before trying, so the report says why, not just EINVAL.
fn gate(spec: &ProbeSpec, btf: &Result<KernelBtfInfo, String>, tracefs_root: &Path) -> Option<String> {
    match spec.hook {
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
        _ => None,
    }
}

fn attach(ebpf: &mut Ebpf, spec: &ProbeSpec) -> Result<(), String> {
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
    }
    Ok(())
}

fn write_settings(kp: &mut KernelProbes, opts: &LoadOptions) {
    let mut parts = oom_part::TRACEPOINT;
    if kp.attached("oom_victim_task") {
        parts |= oom_part::VICTIM_TASK;
    }
    let settings = Settings {
        oom_parts_expected: parts,
        _pad: 0,
        stall_threshold_ns: opts.stall_threshold_ns,
        stall_min_interval_ns: opts.stall_min_interval_ns,
    };
    let result = kp
        .ebpf
        .map_mut("SETTINGS")
        .ok_or_else(|| "SETTINGS map missing".to_owned())
        .and_then(|m| Array::<_, Settings>::try_from(m).map_err(|e| e.to_string()))
        .and_then(|mut a| a.set(0, settings, 0).map_err(|e| e.to_string()));
    if let Err(e) = result {
        log::warn!("could not write program settings: {e}; OOM records will carry tracepoint fields only");
    }
}
