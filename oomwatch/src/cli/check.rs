//! `oomwatch check`: what this kernel offers, probe by probe, and whether the
//! daemon can run here (non-zero exit with the reason when it cannot).

use std::{path::Path, process::ExitCode};

use serde::Serialize;

use super::CheckArgs;
use crate::{
    kernel::{
        btf,
        loader::{self, Hook, PROBES},
        privileges, tracefs,
    },
    outputs::journal::{JournalError, JournalFacts, JournalReader},
    readers::mountinfo as layout,
};

/// Whether this process could create files in `dir`, or in the nearest
/// existing parent when `dir` is missing (the daemon creates it).
fn dir_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Some(existing) = dir.ancestors().find(|d| d.exists()) else { return false };
    let Ok(c) = std::ffi::CString::new(existing.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}


#[derive(Serialize)]
struct Item {
    name: String,
    ok: bool,
    /// Missing this stops the daemon (otherwise it degrades).
    required: bool,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    can_run: bool,
    items: Vec<Item>,
    /// What the journal holds, when there is one to read.
    #[serde(skip_serializing_if = "Option::is_none")]
    journal: Option<JournalFacts>,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The kernel writes "Killed process ..." (KERN_ERR, level 3) to every
/// console whose level lets it through; a serial console does so with
/// interrupts off, delaying whatever was woken on that CPU (oomwatch's
/// reader among them) by milliseconds per kill.
fn console_note(consoles: &str, printk: &str) -> String {
    let level: u32 = printk.split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let serial: Vec<&str> = consoles
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("ttyS") || name.starts_with("ttyAMA"))
        .collect();
    if serial.is_empty() {
        return "no serial console".into();
    }
    if level <= 3 {
        return format!("{}: OOM kill lines stay off it (console level {level})", serial.join(", "));
    }
    format!(
        "{} prints every OOM kill line (kernel.printk console level {level}): about 2 ms with interrupts off per kill on a VM's emulated UART, which delays event delivery; `sysctl kernel.printk=\"3 4 1 7\"` keeps them in dmesg only",
        serial.join(", ")
    )
}

pub fn main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.print_defaults {
        print!("{}", crate::config::defaults_toml());
        return Ok(ExitCode::SUCCESS);
    }
    if args.print_ranges {
        print!("{}", crate::config::ranges::table());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &args.config {
        return validate_config(path, args.json);
    }
    let mut checks = Checks::default();
    let caps = privileges::effective_caps();
    let may_load = checks.privileges(caps);
    let btf_info = checks.btf(&args.btf);
    let tracefs_root = checks.tracefs(&args.tracefs, caps);
    let to_attach = checks.probes(tracefs_root.as_deref(), btf_info.as_ref());
    checks.mark_victim_fields(tracefs_root.as_deref());
    checks.host();
    checks.journal(&args.state_dir);
    let function_ids =
        btf_info.as_ref().map(|b| b.function_ids.as_slice()).map_err(|e| format!("needs BTF ({e})"));
    let memory_root = layout::detect(Path::new("/proc")).ok().map(|l| l.memory_root);
    checks.attach_trial(&to_attach, may_load, function_ids, memory_root.as_deref());
    checks.report(args.json)
}

/// `check --config FILE`: only the file.
fn validate_config(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::load(path)?;
    // The daemon refuses a bad web config at start; say so here first.
    if let Some(web) = &config.daemon.web_config {
        crate::outputs::web_config::WebConfig::load(web)?;
    }
    if json {
        println!("{}", serde_json::json!({"config": path, "valid": true, "sinks": {
            "alertmanager": config.sinks.alertmanager.len(),
            "webhook": config.sinks.webhook.len(),
            "exec": config.sinks.exec.len(),
            "journald": config.sinks.journald.enabled,
            "otlp": config.sinks.otlp.len(),
            "file": config.sinks.file.len(),
        }}));
    } else {
        println!("{}: valid", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The findings so far, in the order they are printed.
#[derive(Default)]
struct Checks {
    items: Vec<Item>,
    journal: Option<JournalFacts>,
}

impl Checks {
    fn push(&mut self, name: &str, ok: bool, required: bool, detail: String) {
        self.items.push(Item { name: name.to_owned(), ok, required, detail });
    }

    /// Whether the programs can be loaded at all.
    fn privileges(&mut self, caps: u64) -> bool {
        let missing = privileges::missing_for_bpf(caps);
        let detail = if missing.is_empty() {
            "can load eBPF programs (CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN)".into()
        } else {
            let names: Vec<_> = missing.iter().map(|&c| privileges::cap_name(c)).collect();
            format!("missing {}: run as root", names.join(" and "))
        };
        self.push("privileges", missing.is_empty(), true, detail);
        missing.is_empty()
    }

    fn btf(&mut self, path: &Path) -> Result<btf::KernelBtfInfo, btf::BtfError> {
        let info = btf::load(path, &loader::btf_functions());
        let detail = match &info {
            Ok(_) => format!("{}: struct offsets found; exact memory-cgroup attribution", path.display()),
            Err(e) => format!("{e}; attribution falls back to /proc (approximate)"),
        };
        self.push("btf", info.is_ok(), false, detail);
        info
    }

    /// Where tracefs is, mounting it as the daemon would.
    fn tracefs(&mut self, wanted: &Path, caps: u64) -> Option<std::path::PathBuf> {
        if let Some(root) = tracefs::find_tracefs(wanted) {
            self.push("tracefs", true, true, format!("mounted at {}", root.display()));
            return Some(root);
        }
        if !privileges::has(caps, privileges::CAP_SYS_ADMIN) {
            self.push("tracefs", false, true, format!("not mounted at {} and mounting needs CAP_SYS_ADMIN", wanted.display()));
            return None;
        }
        match tracefs::ensure_tracefs(wanted) {
            Ok((root, _)) => {
                self.push("tracefs", true, true, format!("was not mounted; mounted it at {} (the daemon does the same)", root.display()));
                Some(root)
            }
            Err(e) => {
                self.push("tracefs", false, true, e.to_string());
                None
            }
        }
    }

    /// One line per probe; the ones only an attach attempt can decide
    /// (kprobes, fentry, the cgroup iterator) are returned for
    /// [`Checks::attach_trial`].
    fn probes(&mut self, tracefs_root: Option<&Path>, btf_info: Result<&btf::KernelBtfInfo, &btf::BtfError>) -> Vec<&'static loader::ProbeSpec> {
        let mut to_attach = Vec::new();
        for spec in PROBES {
            let (ok, detail) = match (spec.hook, tracefs_root) {
                (Hook::TracePoint { category, name }, Some(root)) => {
                    if tracefs::tracepoint_exists(root, category, name) {
                        (true, format!("{} available", spec.hook))
                    } else {
                        (false, format!("{} missing; cost: {}", spec.hook, spec.cost))
                    }
                }
                (Hook::TracePoint { .. }, None) => (false, "unknown without tracefs".to_owned()),
                (Hook::RawTracePoint { .. }, _) => match btf_info {
                    Ok(info) if info.mark_victim_has_task => (true, format!("{} passes the victim task", spec.hook)),
                    Ok(_) => (false, format!("{} passes only a pid (needs 6.8+); cost: {}", spec.hook, spec.cost)),
                    Err(_) => (false, format!("needs BTF; cost: {}", spec.cost)),
                },
                (Hook::KProbe { .. } | Hook::FEntry { .. } | Hook::CgroupIter, _) => {
                    to_attach.push(spec);
                    (false, String::new())
                }
            };
            self.push(&format!("probe {}", spec.name), ok, spec.required, detail);
        }
        to_attach
    }

    fn mark_victim_fields(&mut self, tracefs_root: Option<&Path>) {
        if let Some(root) = tracefs_root
            && let Ok(format) = tracefs::read_format(root, "oom", "mark_victim")
        {
            let fields: Vec<_> = format.fields.iter().filter(|f| !f.name.starts_with("common_")).map(|f| f.name.as_str()).collect();
            self.push("mark_victim fields", true, false, fields.join(", "));
        }
    }

    /// Kprobes, cgroups, PSI and the console: what the host offers.
    fn host(&mut self) {
        let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
        let detail = if kprobes { "available".into() } else { "not available (no kprobe PMU): kprobe-based detail is skipped".into() };
        self.push("kprobes", kprobes, false, detail);
        match layout::detect(Path::new("/proc")) {
            Ok(l) => {
                let unified = l.unified_root.as_ref().map(|u| format!(", unified at {}", u.display())).unwrap_or_default();
                self.push("cgroups", true, false, format!("{}: memory controller at {}{unified}", l.mode, l.memory_root.display()));
            }
            Err(e) => self.push("cgroups", false, false, format!("{e}; kills carry no cgroup")),
        }
        let psi = std::fs::read_to_string("/proc/pressure/memory").is_ok();
        let detail = if psi { "/proc/pressure/memory readable".into() } else { "no PSI (boot with psi=1): no pressure signals".into() };
        self.push("psi", psi, false, detail);
        self.kernel_log();
        let consoles = std::fs::read_to_string("/proc/consoles").unwrap_or_default();
        let printk = std::fs::read_to_string("/proc/sys/kernel/printk").unwrap_or_default();
        self.push("console", true, false, console_note(&consoles, &printk));
    }

    /// The kernel's OOM reports come from its log: opened as the daemon
    /// opens it (the probe `kmsg` of /metrics).
    fn kernel_log(&mut self) {
        let path = Path::new(crate::sources::kernel_report::KMSG);
        match crate::sources::kernel_report::open(path) {
            Ok(_) => self.push("probe kmsg", true, false, format!("{} readable: kills carry the kernel's OOM report (kernel_report, why)", path.display())),
            Err(e) => self.push(
                "probe kmsg",
                false,
                false,
                format!("{e}; cost: kills come without the kernel's report (needs CAP_SYSLOG where kernel.dmesg_restrict=1; under systemd ProtectKernelLogs=no)"),
            ),
        }
    }

    /// Kprobes and fentry are only known by trying (the kernel decides).
    fn attach_trial(
        &mut self,
        specs: &[&'static loader::ProbeSpec],
        may_load: bool,
        function_ids: Result<&[(String, u32)], String>,
        usage_walk_root: Option<&Path>,
    ) {
        if specs.is_empty() {
            return;
        }
        let results = if may_load { loader::try_attach(specs, function_ids, usage_walk_root) } else { specs.iter().map(|_| Err("unknown without privileges".to_owned())).collect() };
        for (spec, result) in specs.iter().zip(results) {
            let Some(item) = self.items.iter_mut().find(|i| i.name == format!("probe {}", spec.name)) else { continue };
            (item.ok, item.detail) = match result {
                Ok(()) => (true, format!("{} attaches", spec.hook)),
                Err(reason) => (false, format!("{}: {reason}; cost: {}", spec.hook, spec.cost)),
            };
        }
    }

    /// Prints the report; non-zero when a required item failed.
    /// The journal: where, how large, the oldest event, and whether the
    /// daemon could write there (without it, nothing survives a restart;
    /// the daemon still runs).
    fn journal(&mut self, state_dir: &Path) {
        let writable = dir_writable(state_dir);
        let (ok, detail) = match JournalReader::open(state_dir) {
            Ok(r) => match r.facts() {
                Ok(f) => {
                    let oldest = f.oldest_event_age.map_or("no events yet".to_owned(), |age| {
                        format!("oldest event {} ago", humantime::format_duration(std::time::Duration::from_secs(age.as_secs())))
                    });
                    let access = if f.writable { "writable" } else { "NOT writable: the daemon runs without a journal" };
                    let line = format!("{}: {} in {} events, {oldest}; {access}", f.path.display(), crate::wire::format_bytes(f.size_bytes), f.events);
                    let ok = f.writable;
                    self.journal = Some(f);
                    (ok, line)
                }
                Err(e) => (false, format!("{e}; the daemon moves a damaged journal aside and starts a new one")),
            },
            Err(JournalError::Missing { path }) if writable => (true, format!("{}: none yet; the daemon creates it (directory writable)", path.display())),
            Err(e) => (writable, e.to_string()),
        };
        let detail = if ok || writable { detail } else { format!("{detail}; {} is not writable: the daemon runs without a journal, and nothing survives a restart", state_dir.display()) };
        self.push("journal", ok, false, detail);
    }

    fn report(self, json: bool) -> anyhow::Result<ExitCode> {
        let can_run = self.items.iter().all(|i| i.ok || !i.required);
        let report = Report { kernel: kernel_release(), can_run, items: self.items, journal: self.journal };
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("kernel {}", report.kernel);
            for i in &report.items {
                let mark = if i.ok { "ok  " } else if i.required { "FAIL" } else { "skip" };
                println!("  [{mark}] {:<28} {}", i.name, i.detail);
            }
            if can_run {
                println!("oomwatch can run here.");
            }
        }
        if !can_run {
            let reasons: Vec<_> = report.items.iter().filter(|i| i.required && !i.ok).map(|i| format!("{}: {}", i.name, i.detail)).collect();
            eprintln!("oomwatch: the daemon cannot run here: {}", reasons.join("; "));
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::console_note;

    #[test]
    fn says_when_a_serial_console_prints_kills() {
        let consoles = "ttyS0                -W- (EC  p a)    4:64\n";
        assert!(console_note(consoles, "4\t4\t1\t7\n").contains("ttyS0 prints every OOM kill line (kernel.printk console level 4)"));
        assert!(console_note(consoles, "3\t4\t1\t7\n").contains("stay off it"));
        assert_eq!(console_note("tty0                 -WU (EC  p  )    4:1\n", "7 4 1 7"), "no serial console");
        assert_eq!(console_note("", ""), "no serial console");
    }
}
