//! What the systemd guest printed (tests/vm/systemd/driver.sh), and what must
//! hold: the package installs offline and starts, every probe that attaches
//! in the busybox guest attaches under the unit, a real kill is seen, reload
//! applies a good file and refuses a broken one, restart, upgrade, stop
//! within 5 s, remove keeps the state, purge deletes it.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use super::report::{Results, Verdict, table};

/// The checks in the driver's order: each starts from the state the previous
/// left. The driver's CHECKS must list the same.
pub const CHECK_NAMES: &[&str] =
    &["boot", "install", "active", "probes", "oom_kill", "reload", "reload_broken", "restart", "upgrade", "security", "stop", "remove", "purge"];

/// The test slice's cgroup: `oomwatch-test.slice` is a child of `oomwatch.slice`.
const SLICE: &str = "/oomwatch.slice/oomwatch-test.slice";
/// `systemctl stop` must end the daemon within this (the unit allows 10 s
/// before SIGKILL).
const STOP_LIMIT_S: f64 = 5.0;
/// The capabilities the daemon must have dropped after loading (bit numbers
/// from linux/capability.h): CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
const DROPPED_CAPS: &[(u32, &str)] = &[(21, "CAP_SYS_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF")];

pub struct Timings {
    pub image_s: f64,
    pub image_cold: bool,
    pub prepared_s: f64,
    pub vm_s: f64,
}

fn num(r: &Results, check: &str, key: &str) -> Option<f64> {
    r.str(check, key).and_then(|s| s.trim().parse().ok())
}

fn lines<'a>(r: &'a Results, check: &'a str, key: &'a str) -> Vec<&'a str> {
    r.all(check, key).filter_map(Value::as_str).collect()
}

/// The "Overall exposure level for oomwatch.service: 5.2 MEDIUM" figure.
pub fn exposure(lines: &[&str]) -> Option<(f64, String)> {
    let line = lines.iter().find(|l| l.contains("Overall exposure level"))?;
    let rest = line.split_once(": ")?.1;
    let mut words = rest.split_whitespace();
    let score = words.next()?.parse().ok()?;
    Some((score, words.next().unwrap_or_default().to_owned()))
}

/// The checks common to every real kill in a scope: the event, its exit, the
/// counter. Returns the oom_kill event.
fn expect_kill<'a>(v: &mut Verdict, r: &'a Results, check: &'a str) -> Option<&'a Value> {
    let cgroup = r.str(check, "cgroup").unwrap_or("?");
    let pid = r.get(check, "hog_pid").and_then(Value::as_u64);
    let status = r.get(check, "hog_status").and_then(Value::as_u64);
    v.expect(status == Some(128 + 9), format!("{check}: memhog in {cgroup} was SIGKILLed (wait status {status:?})"));
    let oom = pid.and_then(|p| r.oom_kill_of(check, p));
    v.expect(oom.is_some(), format!("{check}: an oom_kill event for the hog (pid {pid:?}) in `oomwatch tail --json`"));
    if let Some(e) = oom {
        v.expect(e["cgroup"] == cgroup && e["attribution"] == "exact", format!("{check}: the event names {cgroup}, attribution exact (got {} / {})", e["cgroup"], e["attribution"]));
        v.expect(e["limit_cgroup"] == cgroup && e["constraint"] == "memcg", format!("{check}: limit cgroup {cgroup}, constraint memcg (got {} / {})", e["limit_cgroup"], e["constraint"]));
        if let Some(uid) = e["victim"].get("uid") {
            v.expect(uid == 65534, format!("{check}: victim uid is nobody's, 65534 (got {uid})"));
        }
    }
    v.expect(r.get(check, "victim_exit_seen") == Some(&Value::Bool(true)), format!("{check}: a victim_exit event for the hog"));
    let series = format!("oomwatch_oom_kills_total{{cgroup=\"{cgroup}\",constraint=\"memcg\",namespace=\"\",pod=\"\",container=\"\",main_process=\"\"}}");
    let kills = r.metric(check, &series);
    v.expect(kills == Some(1.0), format!("{check}: /metrics has {series} 1 (got {kills:?})"));
    oom
}

/// oom_kill alerts (active or in the history) for a cgroup.
fn kill_alerts(alerts: Option<&Value>, cgroup: &str) -> usize {
    let Some(a) = alerts else { return 0 };
    let is = |x: &Value| x["key"]["alert"] == "oom_kill" && x["key"]["cgroup"] == cgroup;
    ["active", "history"].iter().filter_map(|k| a[*k].as_array()).flatten().filter(|x| is(x)).count()
}

pub fn check(r: &Results, console: &str, reference: Option<&BTreeMap<String, f64>>, reference_file: &Path, version: &str, t: &Timings) -> Verdict {
    let mut v = Verdict::of_run(r);
    for c in CHECK_NAMES {
        v.expect(r.get(c, "finished").is_some(), format!("check {c} ran"));
    }
    check_boot(r, &mut v);
    check_install(r, version, &mut v);
    check_active(r, &mut v);
    check_probes(r, reference, reference_file, &mut v);
    let first_kill_cgroup = check_oom_kill(r, &mut v);
    check_reload(r, &first_kill_cgroup, &mut v);
    check_reload_broken(r, &mut v);
    check_restart_and_upgrade(r, &mut v);
    let security = check_security(r, &mut v);
    check_stop(r, &mut v);
    check_remove_and_purge(r, &mut v);
    time_table(r, console, t, &mut v);
    security.report(&mut v);
    v
}

fn check_boot(r: &Results, v: &mut Verdict) {
    let release = r.str("boot", "kernel").unwrap_or("?");
    v.expect(release.starts_with("6.1."), format!("boot: the guest runs a 6.1 kernel (uname -r: {release})"));
    let failed = lines(r, "boot", "failed_unit");
    v.expect(failed.is_empty(), format!("boot: no failed units ({})", if failed.is_empty() { "none".into() } else { failed.join("; ") }));
    v.expect(r.str("boot", "cgroup_controllers").is_some_and(|c| c.split_whitespace().any(|x| x == "memory")), "boot: pure cgroup v2 with the memory controller");
}

/// What the package must install.
const PACKAGE_FILES: &[&str] = &[
    "/usr/sbin/oomwatch",
    "/lib/systemd/system/oomwatch.service",
    "/etc/oomwatch/oomwatch.toml",
    "/usr/share/man/man8/oomwatch.8.gz",
    "/usr/share/man/man8/oomwatch-daemon.8.gz",
    "/usr/share/bash-completion/completions/oomwatch",
    "/usr/share/zsh/vendor-completions/_oomwatch",
    "/usr/share/fish/vendor_completions.d/oomwatch.fish",
    "/usr/share/doc/oomwatch/copyright",
    "/usr/share/doc/oomwatch/changelog.gz",
];

fn check_install(r: &Results, version: &str, v: &mut Verdict) {
    v.expect(r.get("install", "apt_status") == Some(&Value::from(0)), format!("install: `apt-get install ./{}` exits 0 offline", r.str("install", "deb").unwrap_or("?")));
    let dpkg = r.str("install", "dpkg_status").unwrap_or("");
    v.expect(dpkg == format!("install ok installed {version}"), format!("install: dpkg says installed, version {version} (got {dpkg:?})"));
    let files = lines(r, "install", "file");
    for want in PACKAGE_FILES {
        v.expect(files.contains(want), format!("install: the package has {want}"));
    }
    v.expect(r.str("install", "conffiles").is_some_and(|c| c.contains("/etc/oomwatch/oomwatch.toml")), "install: /etc/oomwatch/oomwatch.toml is a conffile");
    v.expect(r.get("install", "conffile_is_defaults") == Some(&Value::Bool(true)), "install: the conffile is `oomwatch check --print-defaults`");
    v.expect(r.str("install", "is_enabled") == Some("enabled"), format!("install: the unit is enabled (got {:?})", r.str("install", "is_enabled")));
    v.expect(r.str("install", "binary") == Some("/usr/sbin/oomwatch"), format!("install: `oomwatch` is /usr/sbin/oomwatch (got {:?})", r.str("install", "binary")));
}

fn check_active(r: &Results, v: &mut Verdict) {
    let ready = r.str("active", "ready_after_s");
    v.expect(ready.is_some() && r.str("active", "is_active") == Some("active"), format!("active: started by postinst, `systemctl is-active` active, /healthz answered ({} s after install)", ready.unwrap_or("-")));
    v.expect(r.str("active", "oom_score_adj") == Some("-1000"), format!("active: the daemon's oom_score_adj is -1000 (got {:?})", r.str("active", "oom_score_adj")));
    let cap_eff = lines(r, "active", "caps").into_iter().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).unwrap_or("?").to_owned();
    let eff = u64::from_str_radix(&cap_eff, 16).ok();
    let kept: Vec<&str> = DROPPED_CAPS.iter().filter(|(bit, _)| eff.is_none_or(|e| e & (1 << bit) != 0)).map(|(_, n)| *n).collect();
    v.expect(kept.is_empty(), format!("active: the daemon dropped the loading capabilities (CapEff {cap_eff}; still held: {kept:?})"));
    v.expect(r.str("active", "state_dir") == Some("directory 750 root"), format!("active: StateDirectory /var/lib/oomwatch exists, 0750 root (got {:?})", r.str("active", "state_dir")));
    v.expect(r.str("active", "socket").is_some_and(|s| s.starts_with("socket")), format!("active: the event socket is in /run/oomwatch (got {:?})", r.str("active", "socket")));
    let journal = lines(r, "active", "journal");
    v.expect(journal.iter().any(|l| l.contains("dropped capabilities after loading")), format!("active: `journalctl -u oomwatch` has the daemon's log ({} lines)", journal.len()));
}

/// Against the busybox guest on the same kernel; then the PSI triggers.
fn check_probes(r: &Results, reference: Option<&BTreeMap<String, f64>>, reference_file: &Path, v: &mut Verdict) {
    let here = r.probes_attached();
    v.expect(!here.is_empty(), "probes: /metrics has oomwatch_probe_attached under the unit");
    match reference {
        None => v.failures.push(format!(
            "probes: no busybox guest result to compare with ({} is missing): run `cargo xtask vm-test` without --guest",
            reference_file.display()
        )),
        Some(busybox) => {
            let missing: Vec<&str> =
                busybox.iter().filter(|(p, val)| **val == 1.0 && here.get(*p) != Some(&1.0)).map(|(p, _)| p.as_str()).collect();
            let attached = busybox.values().filter(|v| **v == 1.0).count();
            v.expect(missing.is_empty(), format!("probes: all {attached} probes that attach in the busybox guest attach under the unit (missing: {missing:?})"));
            let mut rows = vec![vec!["probe".to_owned(), "busybox guest".into(), "systemd unit".into()]];
            for p in busybox.keys().chain(here.keys().filter(|p| !busybox.contains_key(*p))) {
                let show = |m: Option<&f64>| m.map_or("-".into(), |x| x.to_string());
                rows.push(vec![p.clone(), show(busybox.get(p)), show(here.get(p))]);
            }
            v.table.push("==== oomwatch_probe_attached, same kernel ====".into());
            v.table.extend(table(&rows));
        }
    }

    let psi_active = r.metric("probes", "oomwatch_psi_triggers_active");
    let psi_refused = r.metric("probes", "oomwatch_psi_triggers_refused");
    let psi_warnings = lines(r, "probes", "psi_warning");
    v.expect(
        psi_active.is_some_and(|n| n > 1.0) && psi_refused == Some(0.0) && psi_warnings.is_empty(),
        format!(
            "probes: PSI triggers placed on cgroups from inside the sandbox (active {psi_active:?}, refused {psi_refused:?}{})",
            psi_warnings.first().map_or(String::new(), |w| format!("; {w}"))
        ),
    );
}

/// Returns the hog's cgroup, whose alert the reload check still expects.
fn check_oom_kill(r: &Results, v: &mut Verdict) -> String {
    expect_kill(v, r, "oom_kill");
    let hog1 = r.str("oom_kill", "cgroup").unwrap_or("?").to_owned();
    v.expect(hog1.starts_with(SLICE), format!("oom_kill: the hog ran in a scope under {SLICE} ({hog1})"));
    let slice_kills = r.get("oom_kill", "slice_memory_events").and_then(|e| e["oom_kill"].as_u64());
    v.expect(slice_kills == Some(1), format!("oom_kill: the kernel counts 1 oom_kill under {SLICE} (got {slice_kills:?})"));
    let logged = lines(r, "oom_kill", "journal");
    v.expect(logged.iter().any(|l| l.contains("ALERT oom_kill")), format!("oom_kill: `journalctl -u oomwatch` has the kill's alert ({})", logged.first().unwrap_or(&"none")));
    v.expect(kill_alerts(r.get("oom_kill", "alerts"), &hog1) > 0, "oom_kill: `oomwatch alerts` has an oom_kill alert for the hog's cgroup");
    let hog_pid = r.get("oom_kill", "hog_pid").and_then(Value::as_u64);
    let entry = r.get("oom_kill", "journal_entry").filter(|e| !e.is_null());
    let shipped = entry.is_some_and(|e| {
        e["OOMWATCH_KIND"] == "oom_kill"
            && e["OOMWATCH_VICTIM_PID"].as_str().and_then(|p| p.parse::<u64>().ok()) == hog_pid
            && e["OOMWATCH_RECORD_UID"].is_string()
            && e["OOMWATCH_JSON"].as_str().is_some_and(|j| j.contains("\"kind\":\"oom_kill\""))
    });
    v.expect(
        shipped,
        format!(
            "oom_kill: `journalctl -o json MESSAGE_ID=...` has the kill from the journald sink (OOMWATCH_KIND, OOMWATCH_VICTIM_PID {hog_pid:?}, OOMWATCH_RECORD_UID, OOMWATCH_JSON; got {})",
            entry.map_or("no entry".to_owned(), |e| e.to_string().chars().take(300).collect())
        ),
    );
    hog1
}

fn check_reload(r: &Results, hog1: &str, v: &mut Verdict) {
    v.expect(r.get("reload", "reload_status") == Some(&Value::from(0)), "reload: `systemctl reload` exits 0");
    v.expect(r.get("reload", "logged") == Some(&Value::Bool(true)), "reload: the daemon logged `SIGHUP: reloaded`");
    v.expect(r.str("reload", "same_pid") == Some("yes"), "reload: same process (no restart)");
    expect_kill(v, r, "reload");
    let hog2 = r.str("reload", "cgroup").unwrap_or("?").to_owned();
    let alerts2 = kill_alerts(r.get("reload", "alerts"), &hog2);
    v.expect(
        alerts2 == 0 && kill_alerts(r.get("reload", "alerts"), hog1) > 0,
        format!("reload: with [alerts.oom_kill] enabled = false the second kill raised no alert ({alerts2} for {hog2}), the first's is still listed"),
    );
}

fn check_reload_broken(r: &Results, v: &mut Verdict) {
    let said = r.str("reload_broken", "check_config").unwrap_or("");
    v.expect(said.contains("critical_eta") && !said.contains('\n'), format!("reload_broken: `oomwatch check --config` names the key ({said})"));
    v.expect(r.get("reload_broken", "reload_status").and_then(Value::as_i64).is_some_and(|s| s != 0), "reload_broken: `systemctl reload` fails on the broken file");
    v.expect(r.get("reload_broken", "daemon_refused") == Some(&Value::Bool(true)), "reload_broken: sent SIGHUP anyway, the daemon keeps the running configuration (logged)");
    v.expect(
        r.str("reload_broken", "is_active") == Some("active") && r.str("reload_broken", "same_pid") == Some("yes") && r.get("reload_broken", "healthz") == Some(&Value::Bool(true)),
        "reload_broken: the daemon keeps running (same pid, /healthz ok)",
    );
}

fn check_restart_and_upgrade(r: &Results, v: &mut Verdict) {
    v.expect(
        r.get("restart", "status") == Some(&Value::from(0)) && r.str("restart", "new_pid") == Some("yes") && r.str("restart", "ready_after_s").is_some(),
        format!("restart: `systemctl restart` gives a new daemon that answers ({} s, ready {} s later)", r.str("restart", "restart_s").unwrap_or("-"), r.str("restart", "ready_after_s").unwrap_or("-")),
    );
    v.expect(r.get("upgrade", "dpkg_status") == Some(&Value::from(0)), "upgrade: `dpkg -i` over the installed package exits 0");
    v.expect(r.str("upgrade", "new_pid") == Some("yes") && r.str("upgrade", "ready_after_s").is_some(), "upgrade: postinst restarted the daemon, and it answers");
    v.expect(r.str("upgrade", "is_enabled") == Some("enabled"), "upgrade: still enabled");
    v.expect(r.get("upgrade", "conffile_kept") == Some(&Value::Bool(true)), "upgrade: the edited conffile is kept");
}

/// `systemd-analyze security oomwatch`, reported after the timings.
struct Security<'a> {
    lines: Vec<&'a str>,
    score: Option<(f64, String)>,
}

impl Security<'_> {
    fn report(self, v: &mut Verdict) {
        v.table.push(String::new());
        v.table.push(format!(
            "==== systemd-analyze security oomwatch: {} ====",
            self.score.map_or("no score".into(), |(s, l)| format!("{s} {l}"))
        ));
        v.table.extend(self.lines.iter().filter(|l| l.starts_with('✗') || l.contains("Overall")).map(|l| format!("  {l}")));
    }
}

fn check_security<'a>(r: &'a Results, v: &mut Verdict) -> Security<'a> {
    let output = lines(r, "security", "line");
    let score = exposure(&output);
    v.expect(score.is_some(), format!("security: `systemd-analyze security oomwatch` gives an exposure level ({})", score.as_ref().map_or("none".into(), |(s, l)| format!("{s} {l}"))));
    Security { lines: output, score }
}

fn check_stop(r: &Results, v: &mut Verdict) {
    let stop_s = num(r, "stop", "stop_s");
    v.expect(stop_s.is_some_and(|s| s < STOP_LIMIT_S), format!("stop: `systemctl stop` returns within {STOP_LIMIT_S} s (took {stop_s:?} s)"));
    v.expect(r.str("stop", "is_active") == Some("inactive"), format!("stop: inactive afterwards (got {:?})", r.str("stop", "is_active")));
    v.expect(r.str("stop", "result") == Some("success 0"), format!("stop: the daemon exited 0 on SIGTERM (Result, status: {:?})", r.str("stop", "result")));
    v.expect(r.str("stop", "started_again_after_s").is_some(), "stop: `systemctl start` brings it back");
}

fn check_remove_and_purge(r: &Results, v: &mut Verdict) {
    v.expect(r.get("remove", "apt_status") == Some(&Value::from(0)), "remove: `apt-get remove oomwatch` exits 0");
    v.expect(r.str("remove", "is_active") == Some("inactive"), format!("remove: prerm stopped the daemon (got {:?})", r.str("remove", "is_active")));
    v.expect(r.str("remove", "load_state") == Some("not-found"), format!("remove: systemd forgot the unit (LoadState {:?})", r.str("remove", "load_state")));
    v.expect(r.str("remove", "dpkg_status") == Some("deinstall ok config-files"), format!("remove: dpkg keeps the config files (got {:?})", r.str("remove", "dpkg_status")));
    v.expect(r.str("remove", "binary").is_some_and(|s| s.contains("No such file")), "remove: /usr/sbin/oomwatch is gone");
    // The state directory survives `apt remove` with what it held: our
    // marker and the daemon's journal.
    let kept: Vec<&str> = r.str("remove", "state_dir").unwrap_or("").split_whitespace().collect();
    v.expect(
        kept.contains(&"vm-test-marker") && kept.contains(&"journal.db"),
        format!("remove: /var/lib/oomwatch is kept with the journal (got {kept:?})"),
    );
    v.expect(r.str("remove", "conffile") == Some("/etc/oomwatch/oomwatch.toml"), "remove: the conffile is kept");

    v.expect(r.get("purge", "apt_status") == Some(&Value::from(0)), "purge: `apt-get purge oomwatch` exits 0");
    v.expect(r.str("purge", "dpkg_status").is_some_and(|s| s.contains("no packages found") || s.contains("not-installed")), format!("purge: dpkg forgot the package (got {:?})", r.str("purge", "dpkg_status")));
    v.expect(r.str("purge", "state_dir").is_some_and(|s| s.contains("No such file")), "purge: /var/lib/oomwatch is deleted");
    v.expect(r.str("purge", "etc_dir").is_some_and(|s| s.contains("No such file")), "purge: /etc/oomwatch is deleted");
    v.expect(
        r.str("purge", "enablement").is_some_and(|s| s.matches("No such file").count() == 2),
        format!("purge: no enablement symlink or deb-systemd-helper state left ({:?})", r.str("purge", "enablement")),
    );
}

/// Where the time goes: host steps, the guest's boot, each check.
fn time_table(r: &Results, console: &str, t: &Timings, v: &mut Verdict) {
    let root_mounted = console.lines().find_map(|l| l.split("vm-initramfs: root mounted, ").nth(1)?.split(' ').next()?.parse::<f64>().ok());
    let userspace = num(r, "boot", "userspace_started_us").map(|us| us / 1e6);
    let driver = num(r, "boot", "driver_started_s");
    let mut rows = vec![vec!["step".to_owned(), "seconds".into(), "".into()]];
    rows.push(vec!["base image".into(), format!("{:.1}", t.image_s), if t.image_cold { "debootstrap + mkfs.ext4 -d (cold)".into() } else { "cached".into() }]);
    rows.push(vec!["package + initramfs".into(), format!("{:.1}", t.prepared_s - t.image_s), "".into()]);
    let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
    rows.push(vec!["boot: kernel + initramfs (root mounted)".into(), fmt(root_mounted), "guest uptime".into()]);
    rows.push(vec!["boot: systemd started".into(), fmt(userspace), "guest uptime".into()]);
    for t in ["sysinit", "basic", "multi-user"] {
        rows.push(vec![format!("boot: {t}.target reached"), fmt(num(r, "boot", &format!("{t}_reached_us")).map(|us| us / 1e6)), "guest uptime".into()]);
    }
    rows.push(vec!["boot: driver unit started".into(), fmt(driver), "guest uptime".into()]);
    for c in CHECK_NAMES {
        let d = num(r, c, "finished").zip(num(r, c, "started")).map(|(f, s)| f - s);
        rows.push(vec![format!("check {c}"), fmt(d), "".into()]);
    }
    rows.push(vec!["the VM, qemu start to exit".into(), format!("{:.1}", t.vm_s), "host wall clock".into()]);
    v.table.push(String::new());
    v.table.push("==== systemd guest: where the time goes ====".into());
    v.table.extend(table(&rows));
}

/// `--hardening-matrix`: each candidate directive on its own; the first is
/// the unit as shipped, which must work.
pub fn hardening_matrix(r: &Results, candidates: &[&str]) -> Verdict {
    let mut v = Verdict::default();
    v.expect(r.get("vm", "end") == Some(&Value::Bool(true)), "the guest driver ran to the end");
    let mut rows = vec![vec!["directive".to_owned(), "starts".into(), "probes".into(), "kill seen, exact".into(), "PSI triggers active / refused".into(), "warnings and errors in the log".into()]];
    let mut baseline: Option<BTreeMap<String, f64>> = None;
    for (i, name) in candidates.iter().enumerate() {
        let c = format!("hardening_{}", i + 1);
        let c = c.as_str();
        let started = r.str(c, "ready_after_s").is_some();
        let probes = r.probes_attached_in(c);
        let pid = r.get(c, "hog_pid").and_then(Value::as_u64);
        let cgroup = r.str(c, "cgroup").unwrap_or("?");
        let kill = pid.and_then(|p| r.oom_kill_of(c, p));
        let kill_ok = kill.is_some_and(|e| e["attribution"] == "exact" && e["cgroup"] == cgroup);
        let probes_col = match &baseline {
            None => format!("{} attached", probes.values().filter(|x| **x == 1.0).count()),
            Some(b) => {
                let lost: Vec<&str> = b.iter().filter(|(p, x)| **x == 1.0 && probes.get(*p) != Some(&1.0)).map(|(p, _)| p.as_str()).collect();
                if lost.is_empty() { "same".into() } else { format!("lost {}", lost.join(" ")) }
            }
        };
        let warnings = lines(r, c, "journal");
        let psi = |k: &str| r.metric(c, &format!("oomwatch_psi_triggers_{k}")).map_or("-".into(), |x| x.to_string());
        let psi_col = format!("{} / {}", psi("active"), psi("refused"));
        if i == 0 {
            v.expect(started && kill_ok, "hardening matrix baseline: the shipped unit starts and sees a kill");
            baseline = Some(probes.clone());
        }
        rows.push(vec![
            name.to_string(),
            if started { "yes".into() } else { "NO".into() },
            probes_col,
            if kill_ok { "yes".into() } else { "NO".into() },
            psi_col,
            warnings.iter().take(2).map(|w| w.chars().take(110).collect::<String>()).collect::<Vec<_>>().join(" | "),
        ]);
    }
    v.table.push("==== hardening matrix (each directive added on its own to the shipped unit) ====".into());
    v.table.extend(table(&rows));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposure_level_is_read_from_systemd_analyze() {
        let out = ["  NAME   DESCRIPTION   EXPOSURE", "✗ PrivateNetwork= Service has access to the host's network 0.5", "→ Overall exposure level for oomwatch.service: 4.9 OK 🙂"];
        assert_eq!(exposure(&out), Some((4.9, "OK".to_owned())));
        assert_eq!(exposure(&["nothing"]), None);
    }

    #[test]
    fn kill_alerts_count_active_and_past_ones_of_one_cgroup() {
        let a: Value = serde_json::json!({
            "active": [{"key": {"alert": "oom_kill", "severity": "critical", "cgroup": "/a"}}],
            "history": [{"key": {"alert": "oom_kill", "severity": "critical", "cgroup": "/a"}}, {"key": {"alert": "oom_forecast", "cgroup": "/b"}}],
        });
        assert_eq!(kill_alerts(Some(&a), "/a"), 2);
        assert_eq!(kill_alerts(Some(&a), "/b"), 0);
        assert_eq!(kill_alerts(None, "/a"), 0);
    }
}
