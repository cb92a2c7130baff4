//! What the guest printed, and what must hold on Debian's 6.1 today.
//!
//! Which victim fields a kill carries depends on the kernel's `oom/mark_victim`
//! layout, and Debian's 6.1 is not one thing: upstream 72ba14deb40a ("mm:
//! update mark_victim tracepoints fields", 6.9) went to the 6.1 stable series
//! in 2025, so 6.1.172 has comm, RSS, uid, ... and a raw tracepoint that
//! passes the victim's task, where earlier 6.1 releases pass only a pid. The
//! guest prints its tracepoint's format file and the expectations follow it:
//! every field the kernel gives must arrive, every field it does not give
//! must be absent (never zero).
//!
//! The guest prints `OOMWATCH-VM-RESULT {"scenario":S,"key":K,"value":V}`
//! lines (tests/vm/driver.sh). Every expectation is checked and reported,
//! not just the first that fails, and a table of what the kernel offered and
//! which event fields arrived is printed either way (it feeds the README's
//! kernel support matrix).

use std::collections::BTreeMap;

use serde_json::Value;

use super::image::Kernel;

pub(super) const MARK: &str = "OOMWATCH-VM-RESULT ";

/// Kill scenarios the driver runs, in its order.
pub const SCENARIO_NAMES: &[&str] = &["oom_kill", "nested_limit", "pressure", "group_kill", "throttle_kill"];

struct KillScenario {
    name: &'static str,
    /// The hog's own cgroup: where the victim lives, the event's `cgroup`.
    victim_cgroup: &'static str,
    /// The cgroup whose memory.max was hit.
    limit_cgroup: &'static str,
    /// The driver key holding the limit cgroup's memory.events.
    limit_events_key: &'static str,
}

const KILL_SCENARIOS: &[KillScenario] = &[
    KillScenario {
        name: "oom_kill",
        victim_cgroup: "/oomwatch-test-vm1",
        limit_cgroup: "/oomwatch-test-vm1",
        limit_events_key: "memory_events",
    },
    KillScenario {
        name: "nested_limit",
        victim_cgroup: "/oomwatch-test-vm2/hog",
        limit_cgroup: "/oomwatch-test-vm2",
        limit_events_key: "limit_memory_events",
    },
];

/// Tracepoint field -> the victim field of an oom_kill event it feeds.
const TRACEPOINT_FIELDS: &[(&str, &str)] = &[
    ("comm", "comm"),
    ("uid", "uid"),
    ("oom_score_adj", "oom_score_adj"),
    ("total_vm", "total_vm_bytes"),
    ("anon_rss", "anon_rss_bytes"),
    ("file_rss", "file_rss_bytes"),
    ("shmem_rss", "shmem_rss_bytes"),
    ("pgtables", "pgtables_bytes"),
];

const MIB: u64 = 1 << 20;

/// Fields shown in the summary table, as paths into an oom_kill event.
const EVENT_FIELDS: &[&str] = &[
    "cgroup",
    "limit_cgroup",
    "attribution",
    "cgroup_id",
    "ktime_ns",
    "exit_latency_ms",
    "victim.pid",
    "victim.tgid",
    "victim.comm",
    "victim.uid",
    "victim.oom_score_adj",
    "victim.total_vm_bytes",
    "victim.anon_rss_bytes",
    "victim.file_rss_bytes",
    "victim.shmem_rss_bytes",
    "victim.pgtables_bytes",
    "trigger.pid",
    "trigger.tid",
    "trigger.comm",
    "trigger.cgroup",
];

#[derive(Debug, Default)]
pub struct Results {
    facts: Vec<(String, String, Value)>,
    /// Result lines that were not valid JSON of the expected shape.
    pub unparsed: Vec<String>,
}

impl Results {
    pub fn parse(console: &str) -> Self {
        let mut r = Self::default();
        for line in console.lines() {
            let Some(at) = line.find(MARK) else { continue };
            let json = line[at + MARK.len()..].trim();
            match serde_json::from_str::<Value>(json) {
                Ok(mut v) => match (v["scenario"].as_str(), v["key"].as_str()) {
                    (Some(s), Some(k)) => {
                        let (s, k) = (s.to_owned(), k.to_owned());
                        r.facts.push((s, k, v["value"].take()));
                    }
                    _ => r.unparsed.push(line.to_owned()),
                },
                Err(_) => r.unparsed.push(line.to_owned()),
            }
        }
        r
    }

    pub(super) fn get(&self, scenario: &str, key: &str) -> Option<&Value> {
        self.facts.iter().find(|(s, k, _)| s == scenario && k == key).map(|(_, _, v)| v)
    }

    pub(super) fn all<'a>(&'a self, scenario: &'a str, key: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.facts.iter().filter(move |(s, k, _)| s == scenario && k == key).map(|(_, _, v)| v)
    }

    pub(super) fn str(&self, scenario: &str, key: &str) -> Option<&str> {
        self.get(scenario, key).and_then(Value::as_str)
    }

    pub(super) fn metric(&self, scenario: &str, series: &str) -> Option<f64> {
        self.all(scenario, "metric")
            .filter_map(Value::as_str)
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// `oomwatch_probe_attached` per probe, from every metric line the
    /// guest reported (the last value wins).
    pub(super) fn probes_attached(&self) -> BTreeMap<String, f64> {
        self.facts.iter().filter(|(_, k, _)| k == "metric").filter_map(|(_, _, v)| probe_attached(v)).collect()
    }

    /// `oomwatch_probe_attached` per probe, as one scenario saw it.
    pub(super) fn probes_attached_in(&self, scenario: &str) -> BTreeMap<String, f64> {
        self.all(scenario, "metric").filter_map(probe_attached).collect()
    }

    fn check_item(&self, name: &str) -> Option<&Value> {
        self.get("vm", "check")?["items"].as_array()?.iter().find(|i| i["name"] == name)
    }

    fn check_item_ok(&self, name: &str) -> Option<bool> {
        self.check_item(name).and_then(|i| i["ok"].as_bool())
    }

    fn check_item_detail(&self, name: &str) -> String {
        self.check_item(name).and_then(|i| i["detail"].as_str()).unwrap_or("").to_owned()
    }

    /// The oom_kill event `scenario` saw for victim `pid`.
    pub(super) fn oom_kill_of(&self, scenario: &str, pid: u64) -> Option<&Value> {
        self.facts
            .iter()
            .find(|(s, k, e)| s == scenario && k == "event" && e["kind"] == "oom_kill" && e["victim"]["pid"] == pid)
            .map(|(_, _, e)| e)
    }

    /// Field names of the guest's `oom/mark_victim` format file, without the
    /// `common_` header fields; None when the guest did not print it.
    fn mark_victim_fields(&self) -> Option<Vec<String>> {
        let fields: Vec<String> = self
            .all("vm", "mark_victim_format")
            .filter_map(Value::as_str)
            .filter_map(|l| l.trim().strip_prefix("field:")?.split(';').next())
            // "unsigned long total_vm", "char comm[16]", "__data_loc char[] comm"
            .filter_map(|decl| decl.split_whitespace().last())
            .map(|name| name.split('[').next().unwrap_or(name).to_owned())
            .filter(|name| !name.starts_with("common_"))
            .collect();
        (!fields.is_empty()).then_some(fields)
    }
}

/// `oomwatch_probe_attached{probe="P"} V` as (P, V).
fn probe_attached(metric: &Value) -> Option<(String, f64)> {
    let rest = metric.as_str()?.strip_prefix("oomwatch_probe_attached{probe=\"")?;
    let (probe, value) = rest.split_once("\"} ")?;
    Some((probe.to_owned(), value.trim().parse().ok()?))
}

#[derive(Default)]
pub struct Verdict {
    pub passed: Vec<String>,
    pub failures: Vec<String>,
    pub(super) table: Vec<String>,
}

impl Verdict {
    /// Every check starts here: unreadable result lines fail, and so does a
    /// driver that did not run to the end.
    pub(super) fn of_run(r: &Results) -> Self {
        let mut v = Self::default();
        for line in &r.unparsed {
            v.failures.push(format!("unreadable result line: {line}"));
        }
        v.expect(r.get("vm", "end") == Some(&Value::Bool(true)), "the guest driver ran to the end");
        v
    }

    pub(super) fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if ok { self.passed.push(what.into()) } else { self.failures.push(what.into()) }
    }

    pub fn print(&self) {
        for line in &self.table {
            println!("{line}");
        }
        println!();
        for p in &self.passed {
            println!("  ok    {p}");
        }
        for f in &self.failures {
            println!("  FAIL  {f}");
        }
    }
}

fn short(v: &Value, width: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > width { format!("{}…", s.chars().take(width - 1).collect::<String>()) } else { s }
}

fn field<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(event, |v, part| v.get(part))
}

pub(super) fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
            format!("  {}", cells.join("  ").trim_end())
        })
        .collect()
}

pub fn check(r: &Results, scenarios: &[&str], kernel: &Kernel) -> Verdict {
    let mut v = Verdict::of_run(r);
    let guest = check_guest(r, &mut v);
    let log = check_daemon(r, &mut v);
    let mut kills = KillTable::new(scenarios);
    for spec in KILL_SCENARIOS.iter().filter(|k| scenarios.contains(&k.name)) {
        let seen = check_kill(r, spec, &guest, &mut v);
        kills.add(spec, &seen);
    }
    if scenarios.contains(&"pressure") {
        check_pressure(r, &mut v);
    }
    if scenarios.contains(&"group_kill") {
        super::report_episodes::check_group_kill(r, &mut v);
    }
    if scenarios.contains(&"throttle_kill") {
        super::report_episodes::check_throttle_kill(r, &mut v);
    }
    summarize(r, scenarios, kernel, &guest, kills, &log, &mut v);
    v
}

/// The guest's kernel, as it describes itself.
struct Guest<'a> {
    release: &'a str,
    /// The fields of its `oom/mark_victim` format file.
    tp_fields: Vec<String>,
}

impl Guest<'_> {
    fn has_tp(&self, field: &str) -> bool {
        self.tp_fields.iter().any(|t| t == field)
    }

    /// Upstream changed the prototype (int pid) -> (struct task_struct *,
    /// uid_t) in the same commit that added uid and the other fields.
    fn task_arg(&self) -> bool {
        self.has_tp("uid")
    }

    fn layout(&self) -> &'static str {
        if self.task_arg() { "full (comm, RSS, uid, ...; task pointer)" } else { "pid only" }
    }
}

/// The kernel's own word on mark_victim, then `oomwatch check --json`.
fn check_guest<'a>(r: &'a Results, v: &mut Verdict) -> Guest<'a> {
    let release = r.str("vm", "kernel").unwrap_or("?");
    v.expect(release.starts_with("6.1."), format!("the guest runs a 6.1 kernel (uname -r: {release})"));
    let tp_fields = r.mark_victim_fields();
    v.expect(tp_fields.is_some(), "the guest printed its oom/mark_victim format file");
    let guest = Guest { release, tp_fields: tp_fields.unwrap_or_default() };

    let item_ok = |name: &str| r.check_item_ok(name);
    let item_detail = |name: &str| r.check_item_detail(name);
    v.expect(r.get("vm", "check").is_some(), "`oomwatch check --json` printed a report");
    v.expect(r.get("vm", "check_status") == Some(&Value::from(0)), "`oomwatch check` exits 0 (the daemon can run)");
    v.expect(item_ok("kprobes") == Some(true), format!("check: kprobes available ({})", item_detail("kprobes")));
    v.expect(item_ok("probe oom_mark_victim") == Some(true), "check: tracepoint oom/mark_victim available");
    v.expect(
        item_detail("mark_victim fields") == guest.tp_fields.join(", "),
        format!("check: mark_victim fields as the format file lists them ({})", item_detail("mark_victim fields")),
    );
    if guest.task_arg() {
        v.expect(
            item_ok("probe oom_victim_task") == Some(true),
            format!("check: raw-tracepoint victim-task probe available, mark_victim passes the task ({})", item_detail("probe oom_victim_task")),
        );
    } else {
        v.expect(
            item_ok("probe oom_victim_task") == Some(false) && item_detail("probe oom_victim_task").contains("only a pid"),
            format!("check: raw-tracepoint victim-task probe skipped, mark_victim passes only a pid ({})", item_detail("probe oom_victim_task")),
        );
    }
    // 6.1 brought the cgroup iterator: the sampler's usage walk runs there.
    v.expect(
        item_ok("probe cgroup_usage_walk") == Some(true),
        format!("check: the cgroup iterator of the usage walk attaches ({})", item_detail("probe cgroup_usage_walk")),
    );
    let cgroups = item_detail("cgroups");
    v.expect(
        item_ok("cgroups") == Some(true) && cgroups.starts_with("v2"),
        format!("check: pure cgroup v2 with the memory controller ({cgroups})"),
    );
    guest
}

/// Returns the daemon's log, for the summary.
fn check_daemon<'a>(r: &'a Results, v: &mut Verdict) -> Vec<&'a str> {
    let ready = r.str("daemon", "ready_after_s");
    v.expect(ready.is_some(), format!("the daemon started and answered /healthz (after {} s)", ready.unwrap_or("-")));
    if ready.is_some() {
        v.expect(
            r.get("daemon", "exit_status") == Some(&Value::from(0)),
            format!("the daemon exits 0 on SIGTERM (status {})", r.get("daemon", "exit_status").map_or("-".into(), |s| s.to_string())),
        );
    }
    r.all("daemon", "log").filter_map(Value::as_str).collect()
}

/// What one kill scenario left, for the summary table.
struct KillSeen<'a> {
    oom: Option<&'a Value>,
    exit: Option<&'a Value>,
    /// oom_kill in the limit cgroup's memory.events.
    kernel_kills: Option<u64>,
    /// oomwatch_oom_kills_total for the victim cgroup.
    kills: Option<f64>,
}

fn check_kill<'a>(r: &'a Results, spec: &KillScenario, guest: &Guest<'_>, v: &mut Verdict) -> KillSeen<'a> {
    let s = spec.name;
    v.expect(r.get(s, "finished").is_some(), format!("{s}: the scenario ran"));
    v.expect(r.str(s, "victim_cgroup") == Some(spec.victim_cgroup), format!("{s}: the driver used {}", spec.victim_cgroup));
    let pid = r.get(s, "hog_pid").and_then(Value::as_u64);
    let status = r.get(s, "hog_status").and_then(Value::as_u64);
    v.expect(
        status == Some(128 + 9) && r.get(s, "hog_watchdog") == Some(&Value::from(0)),
        format!("{s}: memhog was SIGKILLed by the kernel (wait status {status:?})"),
    );
    let kernel_kills = r.get(s, spec.limit_events_key).and_then(|e| e["oom_kill"].as_u64());
    v.expect(kernel_kills == Some(1), format!("{s}: the kernel counts 1 oom_kill in {} (memory.events: {kernel_kills:?})", spec.limit_cgroup));

    let oom = pid.and_then(|p| r.oom_kill_of(s, p));
    let exit = pid.and_then(|p| r.all(s, "event").find(|e| e["kind"] == "victim_exit" && e["pid"] == p));
    let pid_s = pid.map_or("?".into(), |p| p.to_string());
    v.expect(oom.is_some(), format!("{s}: an oom_kill event for the hog (pid {pid_s}) in `oomwatch tail --json`"));
    if let Some(e) = oom {
        check_oom_event(r, spec, e, pid, v);
        check_kill_path(r, spec, e, &pid_s, v);
        check_victim(s, &e["victim"], pid, guest, v);
    }
    v.expect(exit.is_some(), format!("{s}: a victim_exit event for pid {pid_s}"));
    if let Some(e) = exit {
        v.expect(e["cgroup"] == spec.victim_cgroup, format!("{s}: victim_exit cgroup is {} (got {})", spec.victim_cgroup, e["cgroup"]));
    }
    let kills = check_kill_metrics(r, spec, guest, v);
    KillSeen { oom, exit, kernel_kills, kills }
}

/// Where the kill happened and who caused it, as the event says.
fn check_oom_event(r: &Results, spec: &KillScenario, e: &Value, pid: Option<u64>, v: &mut Verdict) {
    let s = spec.name;
    v.expect(e["cgroup"] == spec.victim_cgroup, format!("{s}: oom_kill cgroup is {} (got {})", spec.victim_cgroup, e["cgroup"]));
    v.expect(pid.is_some_and(|p| e["trigger"]["pid"] == p), format!("{s}: trigger pid is the hog's own (got {})", e["trigger"]["pid"]));
    v.expect(e["attribution"] == "exact", format!("{s}: attribution exact (got {})", e["attribution"]));
    // Kprobes work on this kernel: the OOM killer's own view must be there.
    if r.check_item_ok("probe oom_kill_process") == Some(true) {
        let oc = &e["oom_control"];
        v.expect(
            oc["memcg"] == spec.limit_cgroup && oc["constraint"] == "memcg" && oc["totalpages"].as_u64().is_some_and(|p| p > 0),
            format!("{s}: oom_control from the kprobe names {} with constraint memcg (got {oc})", spec.limit_cgroup),
        );
    } else {
        v.expect(
            e["unavailable"].as_array().is_some_and(|u| u.iter().any(|x| x == "oom_control")),
            format!("{s}: without the kprobe the event lists oom_control as unavailable (got {})", e["unavailable"]),
        );
    }
    v.expect(
        e["limit_cgroup"] == spec.limit_cgroup && e["constraint"] == "memcg",
        format!("{s}: limit_cgroup {} with constraint memcg (got {} / {})", spec.limit_cgroup, e["limit_cgroup"], e["constraint"]),
    );
    v.expect(
        e["trigger"]["cgroup"] == spec.victim_cgroup,
        format!("{s}: trigger cgroup is {} (got {})", spec.victim_cgroup, e["trigger"]["cgroup"]),
    );
}

/// The limit cgroup's usage and limit come from the kill record (the
/// kernel's page counters at the kill), not from files.
fn check_kill_path(r: &Results, spec: &KillScenario, e: &Value, pid_s: &str, v: &mut Verdict) {
    let s = spec.name;
    let usage = e["limit_cgroup_usage_bytes"].as_u64().unwrap_or(0);
    v.expect(
        e["limit_bytes"] == 64 * MIB && usage > 48 * MIB && usage <= 64 * MIB,
        format!("{s}: limit_bytes 64 MiB, limit_cgroup_usage_bytes near it (got {} / {usage})", e["limit_bytes"]),
    );
    let needle = format!("kill of pid {pid_s}: explained in ");
    let log: Vec<&str> = r.all("daemon", "log").filter_map(Value::as_str).collect();
    let kill_path = log.iter().copied().find(|l| l.contains(&needle));
    v.expect(
        kill_path.is_some_and(|l| l.contains(" us, 0 cgroupfs/procfs files read; usage and limits from the kernel at the kill")),
        format!("{s}: no cgroupfs/procfs file read on the kill path (daemon: {})", kill_path.map_or("no kill-path line", |l| l)),
    );
}

/// The victim's fields follow the tracepoint: present when the kernel
/// gives them, absent (never zero) when it does not.
fn check_victim(s: &str, victim: &Value, pid: Option<u64>, guest: &Guest<'_>, v: &mut Verdict) {
    let wrong: Vec<String> = TRACEPOINT_FIELDS
        .iter()
        .filter(|(tp, ev)| guest.has_tp(tp) != victim.get(*ev).is_some())
        .map(|(tp, ev)| match victim.get(*ev) {
            Some(val) => format!("{ev}={val} (the kernel has no {tp})"),
            None => format!("{ev} missing"),
        })
        .collect();
    v.expect(
        wrong.is_empty(),
        format!(
            "{s}: victim fields match the tracepoint ({}): present when the kernel gives them, absent (not zero) when not{}",
            guest.layout(),
            if wrong.is_empty() { String::new() } else { format!(": {}", wrong.join(", ")) }
        ),
    );
    let task_arg = guest.task_arg();
    let tgid = victim.get("tgid");
    v.expect(
        if task_arg { tgid.is_some() && pid.is_some_and(|p| tgid == Some(&Value::from(p))) } else { tgid.is_none() },
        format!(
            "{s}: victim tgid {} (read from the victim task, got {})",
            if task_arg { "is the hog's pid" } else { "absent without the task probe" },
            tgid.map_or("none".into(), Value::to_string)
        ),
    );
    if guest.has_tp("comm") {
        v.expect(victim["comm"] == "memhog", format!("{s}: victim comm is memhog (got {})", victim["comm"]));
    }
    if guest.has_tp("anon_rss") {
        let anon = victim["anon_rss_bytes"].as_u64().unwrap_or(0);
        v.expect(
            anon > 32 * MIB && anon <= 64 * MIB,
            format!("{s}: victim anon RSS {:.1} MiB is near the 64 MiB limit", anon as f64 / MIB as f64),
        );
    }
}

/// Returns the kill counter of the victim cgroup.
fn check_kill_metrics(r: &Results, spec: &KillScenario, guest: &Guest<'_>, v: &mut Verdict) -> Option<f64> {
    let s = spec.name;
    let series = format!("oomwatch_oom_kills_total{{cgroup=\"{}\",constraint=\"memcg\",namespace=\"\",pod=\"\",container=\"\",main_process=\"\"}}", spec.victim_cgroup);
    let kills = r.metric(s, &series);
    v.expect(kills == Some(1.0), format!("{s}: /metrics has {series} 1 (got {kills:?})"));
    let decode_errors = r.metric(s, "oomwatch_decode_errors_total");
    v.expect(decode_errors == Some(0.0), format!("{s}: no decode errors (oomwatch_decode_errors_total {decode_errors:?})"));
    let program_errors: Vec<&str> =
        r.all(s, "metric").filter_map(Value::as_str).filter(|l| l.starts_with("oomwatch_kernel_program_errors_total{")).collect();
    v.expect(
        !program_errors.is_empty() && program_errors.iter().all(|l| l.ends_with(" 0")),
        format!("{s}: no failed kernel reads in any program (oomwatch_kernel_program_errors_total: {program_errors:?})"),
    );
    let lost = r.metric(s, "oomwatch_events_lost_total{kind=\"oom_kill\"}");
    v.expect(lost == Some(0.0), format!("{s}: no lost oom_kill records ({lost:?})"));
    for (probe, want) in [("oom_mark_victim", true), ("oom_victim_task", guest.task_arg()), ("victim_exit", true)] {
        let got = r.metric(s, &format!("oomwatch_probe_attached{{probe=\"{probe}\"}}"));
        v.expect(
            got == Some(if want { 1.0 } else { 0.0 }),
            format!("{s}: oomwatch_probe_attached{{probe=\"{probe}\"}} {} (got {got:?})", u8::from(want)),
        );
    }
    kills
}

fn check_pressure(r: &Results, v: &mut Verdict) {
    let s = "pressure";
    let cg = "/oomwatch-test-vm3";
    v.expect(r.get(s, "pressure_event_seen") == Some(&Value::from(true)), format!("{s}: a PSI trigger `pressure` event for {cg} in `oomwatch tail --json`"));
    let pressure = r.all(s, "event").find(|e| e["kind"] == "pressure" && e["cgroup"] == cg);
    v.expect(
        pressure.is_some_and(|e| e["some_total_us"].as_u64().is_some_and(|t| t > 0)),
        format!("{s}: the pressure event carries the cgroup's PSI totals (got {})", pressure.map_or("none".into(), |e| e.to_string())),
    );
    let waiting = r.metric(s, &format!("oomwatch_cgroup_memory_pressure_waiting_seconds_total{{cgroup=\"{cg}\"}}"));
    v.expect(waiting.is_some_and(|w| w > 0.0), format!("{s}: PSI waiting seconds for {cg} grew (got {waiting:?})"));
    let stalls = r.metric(s, &format!("oomwatch_cgroup_reclaim_stalls_total{{cgroup=\"{cg}\"}}"));
    v.expect(stalls.is_some_and(|n| n > 0.0), format!("{s}: memcg reclaim stalls traced for {cg} (got {stalls:?})"));
    v.expect(
        r.get(s, "memory_events").and_then(|e| e["oom_kill"].as_u64()) == Some(0),
        format!("{s}: nothing was killed (memory.events: {:?})", r.get(s, "memory_events")),
    );
    // memory.high far below what the hog holds: the hardest throttling
    // (2 s penalty sleeps), still one episode.
    let started = r.all(s, "event").filter(|e| e["kind"] == "throttled" && e["cgroup"] == cg && e["state"] == "started").count();
    v.expect(started == 1, format!("{s}: one `throttled` started event for {cg} (got {started})"));
    let memstall = r.metric(s, &format!("oomwatch_cgroup_memstall_seconds_total{{cgroup=\"{cg}\"}}"));
    v.table.push(format!(
        "  pressure scenario: PSI waiting {waiting:?} s, reclaim stalls {stalls:?}, memstall (fentry) {memstall:?} s; kernel: {}",
        r.str(s, "memory_pressure").unwrap_or("?")
    ));
}

/// The oom_kill event's fields, one column per kill scenario, then what
/// else each kill left.
struct KillTable {
    event_rows: Vec<Vec<String>>,
    extra_rows: Vec<Vec<String>>,
}

impl KillTable {
    fn new(scenarios: &[&str]) -> Self {
        let mut event_rows: Vec<Vec<String>> =
            vec![std::iter::once("oom_kill event".to_owned()).chain(scenarios.iter().map(|s| s.to_string())).collect()];
        for path in EVENT_FIELDS {
            event_rows.push(vec![path.to_string()]);
        }
        let extra_rows = vec![
            vec!["victim_exit event".into()],
            vec!["kernel oom_kill (limit cgroup)".into()],
            vec!["oomwatch_oom_kills_total".into()],
        ];
        Self { event_rows, extra_rows }
    }

    fn add(&mut self, spec: &KillScenario, seen: &KillSeen<'_>) {
        for (row, path) in self.event_rows[1..].iter_mut().zip(EVENT_FIELDS) {
            row.push(match seen.oom.map(|e| field(e, path)) {
                None => "(no event)".into(),
                Some(None) => "absent".into(),
                Some(Some(value)) => short(value, 26),
            });
        }
        self.extra_rows[0].push(seen.exit.map_or("not seen".into(), |e| format!("{} ms after", short(&e["exit_latency_ms"], 8))));
        self.extra_rows[1].push(seen.kernel_kills.map_or("?".into(), |k| format!("{k} in {}", spec.limit_cgroup)));
        self.extra_rows[2].push(seen.kills.map_or("absent".into(), |k| format!("{k} for {}", spec.victim_cgroup)));
    }

    fn rows(mut self) -> Vec<Vec<String>> {
        self.event_rows.extend(self.extra_rows);
        self.event_rows
    }
}

/// The table: probe by probe, then fields per scenario, then the daemon's log.
fn summarize(r: &Results, scenarios: &[&str], kernel: &Kernel, guest: &Guest<'_>, kills: KillTable, log: &[&str], v: &mut Verdict) {
    v.table.push(format!(
        "==== what the Debian 6.1 VM saw: kernel {} ({} {}) ====",
        guest.release, kernel.package, kernel.version
    ));
    v.table.push(format!("  oom/mark_victim layout: {}; fields: {}", guest.layout(), guest.tp_fields.join(", ")));
    v.table.extend(table(&check_item_rows(r, scenarios)));
    v.table.push(String::new());
    v.table.extend(table(&kills.rows()));
    if !log.is_empty() {
        v.table.push(String::new());
        v.table.push("  daemon log:".into());
        v.table.extend(log.iter().map(|l| format!("    {l}")));
    }
}

/// `oomwatch check` item by item, with whether each probe attached in the
/// first scenario.
fn check_item_rows(r: &Results, scenarios: &[&str]) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["check item".to_owned(), "state".into(), "attached".into(), "detail".into()]];
    let Some(items) = r.get("vm", "check").and_then(|c| c["items"].as_array()) else {
        rows.push(vec!["(no check report)".into()]);
        return rows;
    };
    for i in items {
        let name = i["name"].as_str().unwrap_or("?");
        let state = match (i["ok"].as_bool(), i["required"].as_bool()) {
            (Some(true), _) => "ok",
            (_, Some(true)) => "FAIL",
            _ => "skip",
        };
        let attached = name
            .strip_prefix("probe ")
            .and_then(|p| r.metric(scenarios.first().copied().unwrap_or_default(), &format!("oomwatch_probe_attached{{probe=\"{p}\"}}")))
            .map_or(String::new(), |a| a.to_string());
        rows.push(vec![name.to_owned(), state.into(), attached, short(&i["detail"], 90)]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Kernel {
        Kernel { package: "linux-image-6.1.0-1-amd64".into(), version: "6.1.1-1".into(), vmlinuz: "/x".into(), modules: "/x/modules".into() }
    }

    fn line(s: &str, k: &str, v: &str) -> String {
        format!("{MARK}{{\"scenario\":\"{s}\",\"key\":\"{k}\",\"value\":{v}}}\n")
    }

    fn text(s: &str, k: &str, t: &str) -> String {
        line(s, k, &serde_json::to_string(t).unwrap())
    }

    const PID_ONLY_FORMAT: &str = "name: mark_victim\nID: 464\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\nprint fmt: \"pid=%d\", REC->pid";
    const FULL_FORMAT: &str = "name: mark_victim\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;";

    /// A console as the driver prints it for a fully passing oom_kill run.
    fn console(format: &str, victim: &str) -> String {
        let full = format.contains(" uid;");
        let fields = if full { "pid, comm, anon_rss, uid" } else { "pid" };
        let task = if full {
            r#"{"name":"probe oom_victim_task","ok":true,"required":false,"detail":"raw tracepoint mark_victim passes the victim task"}"#
        } else {
            r#"{"name":"probe oom_victim_task","ok":false,"required":false,"detail":"raw tracepoint mark_victim passes only a pid (needs 6.8+); cost: x"}"#
        };
        let check = format!(
            r#"{{"kernel":"6.1.0-1-amd64","can_run":true,"items":[
            {{"name":"probe oom_mark_victim","ok":true,"required":true,"detail":"tracepoint oom/mark_victim available"}},
            {task},
            {{"name":"mark_victim fields","ok":true,"required":false,"detail":"{fields}"}},
            {{"name":"probe oom_kill_process","ok":true,"required":false,"detail":"kprobe oom_kill_process attaches"}},
            {{"name":"probe cgroup_usage_walk","ok":true,"required":false,"detail":"cgroup iterator attaches"}},
            {{"name":"kprobes","ok":true,"required":false,"detail":"available"}},
            {{"name":"cgroups","ok":true,"required":false,"detail":"v2: memory controller at /sys/fs/cgroup"}}]}}"#
        )
        .replace('\n', "");
        let cg = "/oomwatch-test-vm1";
        let mut c = String::from("[    0.000000] Linux version 6.1\r\nnoise\n");
        c += &text("vm", "kernel", "6.1.0-1-amd64");
        for l in format.lines() {
            c += &text("vm", "mark_victim_format", l);
        }
        c += &line("vm", "check_status", "0");
        c += &line("vm", "check", &check);
        c += &text("daemon", "ready_after_s", "3.0");
        c += &text("oom_kill", "victim_cgroup", cg);
        c += &line("oom_kill", "hog_pid", "77");
        c += &line("oom_kill", "hog_status", "137");
        c += &line("oom_kill", "hog_watchdog", "0");
        c += &line(
            "oom_kill",
            "event",
            &format!(r#"{{"kind":"oom_kill","victim":{victim},"trigger":{{"pid":77,"tid":77,"comm":"memhog","cgroup":"{cg}"}},"attribution":"exact","constraint":"memcg","limit_cgroup":"{cg}","limit_bytes":67108864,"limit_cgroup_usage_bytes":67104768,"oom_control":{{"memcg":"{cg}","constraint":"memcg","totalpages":16384,"points":16000,"gfp_mask":"0xcc0","order":0}},"time":"t","cgroup":"{cg}","seq":1}}"#),
        );
        c += &text("daemon", "log", "[INFO] kill of pid 77: explained in 41 us, 0 cgroupfs/procfs files read; usage and limits from the kernel at the kill");
        c += &line("oom_kill", "event", &format!(r#"{{"kind":"victim_exit","pid":77,"comm":"memhog","exit_latency_ms":1.5,"time":"t","cgroup":"{cg}","seq":2}}"#));
        for m in [
            format!("oomwatch_oom_kills_total{{cgroup=\"{cg}\",constraint=\"memcg\",namespace=\"\",pod=\"\",container=\"\",main_process=\"\"}} 1"),
            "oomwatch_decode_errors_total 0".into(),
            "oomwatch_kernel_program_errors_total{program=\"oom_mark_victim\"} 0".into(),
            "oomwatch_kernel_program_errors_total{program=\"oom_victim_task\"} 0".into(),
            "oomwatch_events_lost_total{kind=\"oom_kill\"} 0".into(),
            "oomwatch_probe_attached{probe=\"oom_mark_victim\"} 1".into(),
            format!("oomwatch_probe_attached{{probe=\"oom_victim_task\"}} {}", u8::from(full)),
            "oomwatch_probe_attached{probe=\"victim_exit\"} 1".into(),
        ] {
            c += &text("oom_kill", "metric", &m);
        }
        c += &line("oom_kill", "memory_events", r#"{"low":0,"oom":1,"oom_kill":1}"#);
        c += &text("oom_kill", "finished", "12.0");
        c += &line("daemon", "exit_status", "0");
        c += &line("vm", "end", "true");
        c
    }

    fn verdict(console: &str) -> Verdict {
        check(&Results::parse(console), &["oom_kill"], &kernel())
    }

    #[test]
    fn a_good_run_passes_on_either_layout() {
        let v = verdict(&console(PID_ONLY_FORMAT, r#"{"pid":77}"#));
        assert!(v.failures.is_empty(), "{:#?}", v.failures);
        assert!(v.table.iter().any(|l| l.contains("victim.comm") && l.contains("absent")), "{:#?}", v.table);
        let v = verdict(&console(FULL_FORMAT, r#"{"pid":77,"tgid":77,"comm":"memhog","anon_rss_bytes":66707456,"uid":0}"#));
        assert!(v.failures.is_empty(), "{:#?}", v.failures);
    }

    #[test]
    fn zero_instead_of_absent_fails() {
        let v = verdict(&console(PID_ONLY_FORMAT, r#"{"pid":77,"comm":"","anon_rss_bytes":0}"#));
        assert_eq!(v.failures.len(), 1, "{:#?}", v.failures);
        assert!(v.failures[0].contains("comm=\"\"") && v.failures[0].contains("anon_rss_bytes=0"), "{}", v.failures[0]);
    }

    #[test]
    fn a_field_the_kernel_gives_must_arrive() {
        let v = verdict(&console(FULL_FORMAT, r#"{"pid":77,"tgid":77,"comm":"memhog","anon_rss_bytes":66707456}"#));
        assert_eq!(v.failures.len(), 1, "{:#?}", v.failures);
        assert!(v.failures[0].contains("uid missing"), "{}", v.failures[0]);
    }

    #[test]
    fn format_fields_are_read_from_every_declaration_style() {
        let r = Results::parse(&console(FULL_FORMAT, "{}"));
        assert_eq!(r.mark_victim_fields().unwrap(), ["pid", "comm", "anon_rss", "uid"]);
    }

    #[test]
    fn a_driver_that_stopped_early_fails_and_says_what_is_missing() {
        let full = console(PID_ONLY_FORMAT, r#"{"pid":77}"#);
        let cut = &full[..full.find("\"event\"").unwrap()];
        let v = verdict(cut);
        assert!(v.failures.iter().any(|f| f.contains("driver ran to the end")));
        assert!(v.failures.iter().any(|f| f.contains("an oom_kill event for the hog (pid 77)")));
    }

    #[test]
    fn probes_attached_are_read_from_metric_lines() {
        let r = Results::parse(&console(FULL_FORMAT, "{}"));
        let p = r.probes_attached();
        assert_eq!(p.get("oom_mark_victim"), Some(&1.0));
        assert_eq!(p.get("oom_victim_task"), Some(&1.0));
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn garbled_result_lines_are_reported() {
        let r = Results::parse(&format!("{MARK}{{not json\n{MARK}{{\"key\":\"x\"}}\n"));
        assert_eq!(r.unparsed.len(), 2);
    }
}
