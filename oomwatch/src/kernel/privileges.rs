//! Which capabilities the process holds, so that a missing one is named in
//! one line instead of surfacing as EPERM from deep inside the loader.

use std::fs;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_SYS_RESOURCE => "CAP_SYS_RESOURCE",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "CAP_?",
    }
}

/// The effective capability set, from /proc/self/status.
pub fn effective_caps() -> u64 {
    parse_cap_eff(&fs::read_to_string("/proc/self/status").unwrap_or_default()).unwrap_or(0)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Capabilities the daemon lacks for loading and attaching its programs.
/// CAP_SYS_ADMIN covers both CAP_BPF and CAP_PERFMON (kernels before 5.8
/// only know it).
pub fn missing_for_bpf(caps: u64) -> Vec<u32> {
    if has(caps, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [CAP_BPF, CAP_PERFMON].into_iter().filter(|&c| !has(caps, c)).collect()
}

pub const CAP_DAC_READ_SEARCH: u32 = 2;

/// Why each capability stays after start; everything else goes.
pub const KEPT_AFTER_START: &[(caps::Capability, &str)] = &[
    (caps::Capability::CAP_DAC_READ_SEARCH, "open_by_handle_at: cgroup id to path for every kill"),
    (caps::Capability::CAP_SYS_RESOURCE, "PSI triggers with windows under 2 s on cgroups found later"),
];

/// Drops every capability but [`KEPT_AFTER_START`] from this thread's
/// effective, permitted, inheritable and bounding sets. Must run before any
/// other thread exists: capabilities are per thread, and threads started
/// later inherit the reduced set. Returns the names kept.
pub fn drop_after_start() -> Result<Vec<&'static str>, String> {
    use caps::{CapSet, Capability};
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    let keep: caps::CapsHashSet = KEPT_AFTER_START.iter().map(|(c, _)| *c).filter(|c| permitted.contains(c)).collect();
    // The bounding set first: shrinking it needs CAP_SETPCAP, about to go.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                let _ = caps::drop(None, CapSet::Bounding, cap);
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| e.to_string())?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| e.to_string())?;
    Ok(KEPT_AFTER_START.iter().filter(|(c, _)| keep.contains(c)).map(|(c, _)| c.to_string().leak() as &'static str).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(has(caps, CAP_BPF) && has(caps, CAP_PERFMON) && has(caps, CAP_SYS_ADMIN));
        assert!(!has(caps, CAP_SYS_RESOURCE));
        assert!(missing_for_bpf(caps).is_empty());
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing_for_bpf(0), vec![CAP_BPF, CAP_PERFMON]);
        assert_eq!(missing_for_bpf(1 << CAP_BPF), vec![CAP_PERFMON]);
        assert!(missing_for_bpf(1 << CAP_SYS_ADMIN).is_empty());
        assert_eq!(parse_cap_eff("garbage"), None);
    }
}
