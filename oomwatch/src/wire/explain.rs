//! Why a process was killed: the kernel's own OOM report as structured
//! fields (`kernel_report` of a kill), and one sentence built from the kill
//! and that report (`why`). Every clause of the sentence comes from a field
//! of the event; a clause whose field is absent is left out.

use serde::{Deserialize, Serialize};

use super::{
    event::{Constraint, OomKill, Ramp},
    human::format_bytes,
};

/// What the kernel printed for one kill (dmesg), read from /dev/kmsg and
/// joined to the kill by victim pid, comm, cgroup and time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelReport {
    /// The kernel log's sequence number of the "Killed process" line.
    pub kmsg_seq: u64,
    /// Why the kernel printed only the kill line for this kill (then every
    /// field below but the victim's line is absent): `rate_limited` (the
    /// kernel prints at most 10 reports every 5 s), `records_lost`,
    /// `before_first_header`, `not_this_victim`, `group_member_not_in_table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// The failed allocation, as the kernel printed it: the mask in hex, its
    /// flag names, and the order (0 = one page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gfp_mask: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gfp_flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    /// The kernel's constraint (CONSTRAINT_MEMCG, CONSTRAINT_NONE, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// The memory cgroup whose limit was hit (`oom_memcg`), and the
    /// victim's (`task_memcg`), as the kernel names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_memcg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_memcg: Option<String>,
    /// The "memory: usage, limit, failcnt" line of the OOM memcg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcg: Option<KernelMemcg>,
    /// The OOM memcg's memory by kind, from the memory.stat it printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composition: Option<Composition>,
    /// The largest tasks of the report's task table by rss, largest first
    /// (at most [`TOP_TASKS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_tasks: Vec<ReportTask>,
    /// Rows of the task table (the tasks the OOM killer chose from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_in_table: Option<u32>,
}

/// Tasks of the report's table kept in `top_tasks`.
pub const TOP_TASKS: usize = 5;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelMemcg {
    pub usage_bytes: u64,
    pub limit_bytes: u64,
    pub failcnt: u64,
    /// cgroup v2: the swap counter's usage and limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_usage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_limit_bytes: Option<u64>,
}

/// Bytes by kind; a key the kernel did not print is absent.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Composition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// tmpfs and shared memory (charged to the cgroup, counted in `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shmem_bytes: Option<u64>,
    /// Kernel memory (slab, page tables, stacks, sockets...), v2 on 5.18+.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagetables_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sock_bytes: Option<u64>,
    /// Swapped out: v1 `total_swap`, v2 the swap counter's usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    /// Set when this is the daemon's last memory.stat reading of the
    /// cgroup, not the kernel's at the kill: how long before the kill it
    /// was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_seconds_ago: Option<u32>,
}

/// One holder of the limit cgroup's memory in `top_consumers`: a child
/// cgroup (`cgroup`, its usage at the daemon's last sample) or a task of
/// the kernel's report (`pid`, `comm`, its rss at the kill).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consumer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The name people know it by (see `Workload::display_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    pub bytes: u64,
    /// It is (or holds) the victim, the task that triggered the kill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub victim: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trigger: bool,
}

/// Child cgroups kept in `top_consumers` (tasks: [`TOP_TASKS`]).
pub const TOP_CHILDREN: usize = 5;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportTask {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
}

/// What the event names the limit file by (`memory.max` on cgroup v2,
/// `memory.limit_in_bytes` on v1), when the daemon knows the hierarchy.
pub type LimitFile = Option<&'static str>;

/// One sentence of why `kill` happened; `cgroup` is the victim's. None when
/// not even the victim is known. Each clause comes from the fields named
/// in its helper, and is left out when they are absent.
pub fn why(kill: &OomKill, limit_file: LimitFile) -> Option<String> {
    let v = &kill.victim;
    if v.pid == 0 {
        return None;
    }
    let name = v.comm.as_deref().unwrap_or("a process");
    let mut s = format!("{name} (pid {}) was killed because ", v.pid);
    let report = kill.kernel_report.as_deref();
    let counters = report.and_then(|r| r.memcg);
    let limit = counters.map(|m| m.limit_bytes).or(kill.limit_bytes);
    let usage = counters.map(|m| m.usage_bytes).or(kill.limit_cgroup_usage_bytes);
    s.push_str(&cause(kill, limit, limit_file));
    s.push_str(&allocating(kill));
    if kill.constraint == Constraint::Memcg
        && let (Some(u), Some(l)) = (usage, limit)
    {
        s.push_str(&format!("; it used {} of {}", size(u), size(l)));
        s.push_str(&growth(kill.limit_history.as_ref()));
    }
    if let Some(c) = kill.composition.or(report.and_then(|r| r.composition)).filter(|c| describes_usage(c, usage)) {
        s.push_str(&composition(&c));
        s.push_str(&dominant(&c, usage));
    }
    s.push_str(&holders(&kill.top_consumers));
    if let Some(top) = report.and_then(|r| r.top_tasks.first()) {
        if top.pid == v.pid {
            s.push_str(&format!("; the top consumer was itself ({} rss)", size(top.rss_bytes)));
        } else {
            s.push_str(&format!("; the top consumer was {} (pid {}, {} rss)", top.comm, top.pid, size(top.rss_bytes)));
        }
    }
    if let Some(missing) = report.and_then(|r| r.missing.as_deref()) {
        s.push_str(&format!("; its kernel report: {}", missing_reason(missing)));
    }
    if let Some(secs) = kill.throttled_for_s.filter(|&t| t >= 1.0) {
        s.push_str(&format!("; it was throttled at memory.high for {secs:.0} s before the kill"));
    }
    s.push('.');
    Some(s)
}

/// Why a kill has no kernel report, for people: the `missing` value of
/// `kernel_report` said as the kernel's behaviour behind it.
pub fn missing_reason(missing: &str) -> std::borrow::Cow<'_, str> {
    match missing {
        "rate_limited" => "suppressed by the kernel's rate limit".into(),
        "records_lost" => "lost (the kernel log wrapped before it was read)".into(),
        // The log is opened before the first program attaches, so a kill
        // the daemon traced had its report printed after: unless the kernel
        // was rate limiting a burst since before the daemon started.
        "before_first_header" => "suppressed by the kernel's rate limit in a burst under way when oomwatch started, or printed before it began reading the kernel log".into(),
        "not_this_victim" => "the kernel printed one that names another victim".into(),
        "group_member_not_in_table" => "the group kill's task table does not list it".into(),
        other => other.replace('_', " ").into(),
    }
}

/// The kernel log prints a cgroup path as one record of at most about 1
/// KiB (992 bytes on 6.1, 1021 on 6.18): a path that long may be cut.
const KMSG_PATH_SHOWN: usize = 992;

/// Whether a cgroup path from the kernel's report was printed whole: one
/// of [`KMSG_PATH_SHOWN`] bytes or more may have been cut there (a tenant
/// may nest cgroups that deep), and names no cgroup for sure.
pub fn printed_whole(path: &str) -> bool {
    path.len() < KMSG_PATH_SHOWN
}

/// What an event's `unavailable` says of a victim's cgroup path taken from
/// the kernel's report that was not [`printed_whole`].
pub const REPORT_PATH_CUT: &str = "victim cgroup path (longer than the kernel log prints: cut at about 1 KiB)";

/// Which limit was hit: `constraint`, `limit_cgroup` (else the report's
/// `oom_memcg` when printed whole), the limit and the file it is set in.
fn cause(kill: &OomKill, limit: Option<u64>, limit_file: LimitFile) -> String {
    let report = kill.kernel_report.as_deref();
    let limit_cgroup = kill.limit_cgroup.as_deref().or(report.and_then(|r| r.oom_memcg.as_deref()).filter(|p| printed_whole(p)));
    match (kill.constraint, limit_cgroup) {
        (Constraint::Memcg, Some(cg)) => {
            let mut s = cg.to_owned();
            match limit {
                Some(l) => s.push_str(&format!(" hit its {} limit", size(l))),
                None => s.push_str(" hit its memory limit"),
            }
            if let Some(file) = limit_file {
                s.push_str(&format!(" ({file})"));
            }
            s
        }
        (Constraint::Memcg, None) => "a memory cgroup hit its limit".to_owned(),
        (Constraint::Global, _) => "the host ran out of memory".to_owned(),
        (Constraint::Cpuset, _) => "its cpuset's memory nodes ran out of memory".to_owned(),
        (Constraint::MemoryPolicy, _) => "the nodes of its memory policy ran out of memory".to_owned(),
        (Constraint::Unknown, _) => "memory ran out (at a cgroup's limit or on the host: nothing the daemon could read said which)".to_owned(),
    }
}

/// ", growing 12 MiB/s for 50 s": the rise of `limit_history`'s usage that
/// ended at the kill (each sample above the one before: a plateau ends
/// it), when it lasted 2 s or more and added at least 1 MiB.
fn growth(history: Option<&Ramp>) -> String {
    let Some(r) = history else { return String::new() };
    let points: Vec<(u32, u64)> = r.seconds_ago.iter().copied().zip(r.usage_bytes.iter().copied()).collect();
    let Some(&(last_ago, last)) = points.last() else { return String::new() };
    let mut start = points.len() - 1;
    while start > 0 && points[start - 1].1 < points[start].1 {
        start -= 1;
    }
    let (from_ago, from) = points[start];
    let seconds = from_ago.saturating_sub(last_ago);
    let grew = last.saturating_sub(from);
    if seconds < 2 || grew < 1 << 20 {
        return String::new();
    }
    format!(", growing {}/s for {seconds} s", size(grew / u64::from(seconds)))
}

/// "; 40 MiB of it is tmpfs/shmem": kinds people do not expect to count
/// against a limit (`composition.shmem_bytes`, `pagetables_bytes`), named
/// when they hold a quarter of the usage or more.
fn dominant(c: &Composition, usage: Option<u64>) -> String {
    let total = usage.unwrap_or_else(|| c.anon_bytes.unwrap_or(0) + c.file_bytes.unwrap_or(0) + c.kernel_bytes.unwrap_or(0));
    [(c.shmem_bytes, "tmpfs/shmem"), (c.pagetables_bytes, "page tables")]
        .iter()
        .filter_map(|(bytes, what)| bytes.filter(|&b| total > 0 && b >= total / 4).map(|b| format!("; {} of it is {what}", size(b))))
        .collect()
}

/// "; /p/sidecar holds 700 MiB, /p/web 200 MiB (the victim's)": the two
/// largest child cgroups of `top_consumers`.
fn holders(consumers: &[Consumer]) -> String {
    let mut children = consumers.iter().filter(|c| c.cgroup.is_some());
    let Some(first) = children.next() else { return String::new() };
    let name = |c: &Consumer| c.workload.clone().or(c.cgroup.clone()).unwrap_or_default();
    let role = |c: &Consumer| match (c.victim, c.trigger) {
        (true, true) => " (the victim's and the trigger's)",
        (true, false) => " (the victim's)",
        (false, true) => " (the trigger's)",
        (false, false) => "",
    };
    let mut s = format!("; {} holds {}{}", name(first), size(first.bytes), role(first));
    if let Some(second) = children.next() {
        s.push_str(&format!(", {} {}{}", name(second), size(second.bytes), role(second)));
    }
    s
}

/// Amends `kill` with the kernel's report of it: the report itself, its
/// composition (the kernel's at the kill beats the daemon's last sample),
/// its largest tasks among `top_consumers`, and a `why` that uses them.
pub fn amend_with_report(kill: &mut OomKill, report: &KernelReport, limit_file: LimitFile) {
    if let Some(c) = report.composition {
        kill.composition = Some(c);
    }
    kill.top_consumers.retain(|c| c.pid.is_none());
    for t in &report.top_tasks {
        let victim = t.pid == kill.victim.pid;
        kill.top_consumers.push(Consumer {
            pid: Some(t.pid),
            comm: Some(t.comm.clone()),
            workload: if victim { kill.workload.display_name() } else { None },
            bytes: t.rss_bytes,
            victim,
            trigger: t.pid == kill.trigger.pid,
            ..Default::default()
        });
    }
    // Stable: a child cgroup stays before a task of the same size.
    kill.top_consumers.sort_by(|a, b| b.bytes.cmp(&a.bytes));
    kill.kernel_report = Some(Box::new(report.clone()));
    kill.why = why(kill, limit_file);
}

/// "while memhog allocated", naming the trigger when it is another process.
fn allocating(kill: &OomKill) -> String {
    let t = &kill.trigger;
    if t.pid == 0 || t.comm.is_empty() {
        return String::new();
    }
    if t.pid == kill.victim.pid {
        return format!(" while {} allocated", t.comm);
    }
    let place = t.cgroup.as_deref().map(|c| format!(" in {c}")).unwrap_or_default();
    format!(" while {} (pid {}){place} allocated", t.comm, t.pid)
}

/// A composition read by the daemon before the kill is said only when it
/// still accounts for at least half of the usage at the kill: a sample
/// taken while the cgroup was still filling would name the wrong kind (the
/// event keeps it, with its age, for whoever wants it).
fn describes_usage(c: &Composition, usage_at_kill: Option<u64>) -> bool {
    let (Some(_), Some(usage)) = (c.sampled_seconds_ago, usage_at_kill) else { return true };
    let accounted: u64 = [c.anon_bytes, c.file_bytes, c.shmem_bytes, c.kernel_bytes].iter().flatten().fold(0, |a, b| a.saturating_add(*b));
    accounted.saturating_mul(2) >= usage
}

fn composition(c: &Composition) -> String {
    let mut parts: Vec<String> = [("anon", c.anon_bytes), ("file", c.file_bytes), ("shmem/tmpfs", c.shmem_bytes), ("kernel", c.kernel_bytes), ("swap", c.swap_bytes.filter(|&b| b > 0))]
        .iter()
        .filter_map(|(name, b)| b.map(|b| format!("{} {name}", size(b))))
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    if let Some(ago) = c.sampled_seconds_ago {
        parts.push(format!("as sampled {ago} s before"));
    }
    format!(" ({})", parts.join(", "))
}

/// Sizes in the sentence: whole MiB from 1 MiB up (as limits are set),
/// otherwise [`format_bytes`].
fn size(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b >= MIB && b % MIB == 0 {
        format!("{} MiB", b / MIB)
    } else {
        format_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Trigger, Victim};

    fn kill() -> OomKill {
        let mut k = OomKill::of_pid(123);
        k.victim = Victim { pid: 123, comm: Some("memhog".into()), ..Default::default() };
        k.trigger = Trigger { pid: 123, tid: 123, comm: "memhog".into(), cgroup: Some("/oomwatch-test-x".into()) };
        k.limit_cgroup = Some("/oomwatch-test-x".into());
        k.limit_bytes = Some(64 << 20);
        k.limit_cgroup_usage_bytes = Some(63 << 20);
        k
    }

    #[test]
    fn from_the_record_alone() {
        assert_eq!(
            why(&kill(), Some("memory.max")).unwrap(),
            "memhog (pid 123) was killed because /oomwatch-test-x hit its 64 MiB limit (memory.max) while memhog allocated; it used 63 MiB of 64 MiB."
        );
    }

    #[test]
    fn with_the_kernel_report_and_another_trigger() {
        let mut k = kill();
        k.trigger = Trigger { pid: 9, tid: 10, comm: "web".into(), cgroup: Some("/pod/web".into()) };
        k.kernel_report = Some(Box::new(KernelReport {
            memcg: Some(KernelMemcg { usage_bytes: 64 << 20, limit_bytes: 64 << 20, failcnt: 3, ..Default::default() }),
            composition: Some(Composition { anon_bytes: Some(40 << 20), shmem_bytes: Some(20 << 20), ..Default::default() }),
            top_tasks: vec![ReportTask { pid: 9, comm: "web".into(), rss_bytes: 30 << 20 }],
            ..Default::default()
        }));
        assert_eq!(
            why(&k, None).unwrap(),
            "memhog (pid 123) was killed because /oomwatch-test-x hit its 64 MiB limit while web (pid 9) in /pod/web allocated; it used 64 MiB of 64 MiB (40 MiB anon, 20 MiB shmem/tmpfs); 20 MiB of it is tmpfs/shmem; the top consumer was web (pid 9, 30 MiB rss)."
        );
    }

    /// The limit cgroup was not named at the kill: the kernel report's
    /// `oom_memcg` names it, unless the kernel log cut that path.
    #[test]
    fn the_reports_limit_cgroup_only_when_printed_whole() {
        let mut k = kill();
        k.limit_cgroup = None;
        let with_oom_memcg = |mut k: OomKill, oom_memcg: String| {
            k.kernel_report = Some(Box::new(KernelReport { oom_memcg: Some(oom_memcg), ..Default::default() }));
            why(&k, None).unwrap()
        };
        let named = with_oom_memcg(k.clone(), "/tenant/job".into());
        assert!(named.starts_with("memhog (pid 123) was killed because /tenant/job hit its 64 MiB limit"), "{named}");
        let cut = with_oom_memcg(k, format!("/tenant/{}", "x".repeat(KMSG_PATH_SHOWN)));
        assert!(cut.starts_with("memhog (pid 123) was killed because a memory cgroup hit its limit"), "{cut}");
    }

    fn child(path: &str, mib: u64, victim: bool, trigger: bool) -> Consumer {
        Consumer { cgroup: Some(path.into()), bytes: mib << 20, victim, trigger, ..Default::default() }
    }

    /// Nested limits: the parent's limit was hit; the sentence names the
    /// children holding most, the growth of the parent, and tmpfs.
    #[test]
    fn holders_growth_and_tmpfs() {
        let mut k = kill();
        k.limit_cgroup = Some("/pod".into());
        k.top_consumers = vec![
            Consumer { workload: Some("shop/web/sidecar".into()), ..child("/pod/side", 40, false, false) },
            child("/pod/app", 20, true, true),
            child("/pod/idle", 1, false, false),
        ];
        k.limit_history = Some(Ramp {
            seconds_ago: vec![60, 50, 40, 30, 20, 10, 0],
            usage_bytes: [30u64, 20, 24, 36, 48, 60, 63].iter().map(|m| m << 20).collect(),
            working_set_bytes: vec![0; 7],
            ..Default::default()
        });
        k.composition = Some(Composition { anon_bytes: Some(45 << 20), file_bytes: Some(18 << 20), shmem_bytes: Some(17 << 20), sampled_seconds_ago: Some(2), ..Default::default() });
        assert_eq!(
            why(&k, None).unwrap(),
            "memhog (pid 123) was killed because /pod hit its 64 MiB limit while memhog allocated; it used 63 MiB of 64 MiB, growing 880.6KiB/s for 50 s (45 MiB anon, 18 MiB file, 17 MiB shmem/tmpfs, as sampled 2 s before); 17 MiB of it is tmpfs/shmem; shop/web/sidecar holds 40 MiB, /pod/app 20 MiB (the victim's and the trigger's)."
        );
    }

    #[test]
    fn no_clause_without_its_field() {
        let mut k = kill();
        // A flat history, small kinds, no children: nothing more to say.
        k.limit_history = Some(Ramp { seconds_ago: vec![2, 1, 0], usage_bytes: vec![63 << 20; 3], working_set_bytes: vec![0; 3], ..Default::default() });
        k.composition = Some(Composition { anon_bytes: Some(60 << 20), shmem_bytes: Some(1 << 20), pagetables_bytes: Some(2 << 20), ..Default::default() });
        let w = why(&k, None).unwrap();
        assert!(!w.contains("growing") && !w.contains("of it is") && !w.contains("holds"), "{w}");
        // A plateau ends the rise: only the last 4 s count.
        k.limit_history = Some(Ramp {
            seconds_ago: (0..8).rev().collect(),
            usage_bytes: [0u64, 40, 40, 40, 46, 52, 58, 64].iter().map(|m| m << 20).collect(),
            working_set_bytes: vec![0; 8],
            ..Default::default()
        });
        assert!(why(&k, None).unwrap().contains("; it used 63 MiB of 64 MiB, growing 6 MiB/s for 4 s (60 MiB anon"), "{:?}", why(&k, None));
        k.limit_history = None;
        k.composition = Some(Composition { anon_bytes: Some(40 << 20), pagetables_bytes: Some(20 << 20), ..Default::default() });
        assert!(why(&k, None).unwrap().ends_with("(40 MiB anon); 20 MiB of it is page tables."));
    }

    #[test]
    fn a_sample_taken_before_most_of_the_usage_is_not_said() {
        let mut k = kill();
        k.constraint = Constraint::Memcg;
        k.limit_cgroup_usage_bytes = Some(64 << 20);
        k.composition = Some(Composition { anon_bytes: Some(0), file_bytes: Some(2 << 20), sampled_seconds_ago: Some(6), ..Default::default() });
        let said = why(&k, None).unwrap();
        assert!(!said.contains("as sampled") && !said.contains("anon"), "{said}");
        k.composition = Some(Composition { anon_bytes: Some(40 << 20), sampled_seconds_ago: Some(1), ..Default::default() });
        assert!(why(&k, None).unwrap().contains("(40 MiB anon, as sampled 1 s before)"), "{:?}", why(&k, None));
        // The kernel's own report is of the moment: always said.
        k.composition = Some(Composition { anon_bytes: Some(1 << 20), ..Default::default() });
        assert!(why(&k, None).unwrap().contains("(1 MiB anon)"), "{:?}", why(&k, None));
    }

    /// The report amends: its tasks join the children largest first, its
    /// composition replaces the sample, and the victim's task is named.
    #[test]
    fn the_report_amends_consumers_and_composition() {
        let mut k = kill();
        k.workload.pod = Some("web".into());
        k.workload.namespace = Some("shop".into());
        k.top_consumers = vec![child("/x/a", 30, false, false)];
        k.composition = Some(Composition { anon_bytes: Some(1), sampled_seconds_ago: Some(9), ..Default::default() });
        let report = KernelReport {
            composition: Some(Composition { anon_bytes: Some(60 << 20), ..Default::default() }),
            top_tasks: vec![ReportTask { pid: 123, comm: "memhog".into(), rss_bytes: 50 << 20 }, ReportTask { pid: 5, comm: "sh".into(), rss_bytes: 1 << 20 }],
            ..Default::default()
        };
        amend_with_report(&mut k, &report, None);
        amend_with_report(&mut k, &report, None);
        let got: Vec<(Option<u32>, u64, bool, Option<&str>)> = k.top_consumers.iter().map(|c| (c.pid, c.bytes >> 20, c.victim, c.workload.as_deref())).collect();
        assert_eq!(got, vec![(Some(123), 50, true, Some("shop/web")), (None, 30, false, None), (Some(5), 1, false, None)], "tasks once, largest first");
        assert_eq!(k.composition, report.composition);
        assert!(k.why.as_deref().unwrap().contains("(60 MiB anon); /x/a holds 30 MiB; the top consumer was itself (50 MiB rss)."), "{:?}", k.why);
    }

    /// A daemon started in the middle of a kill storm reads no report
    /// header at all: the kernel is rate limiting since before the start.
    #[test]
    fn a_report_never_seen_since_the_start_names_the_rate_limit_first() {
        let said = missing_reason("before_first_header");
        assert!(said.starts_with("suppressed by the kernel's rate limit in a burst under way when oomwatch started"), "{said}");
        assert!(said.ends_with("or printed before it began reading the kernel log"), "{said}");
    }

    #[test]
    fn global_and_unknown() {
        let mut k = kill();
        k.constraint = Constraint::Global;
        k.kernel_report = Some(Box::new(KernelReport { missing: Some("rate_limited".into()), ..Default::default() }));
        assert_eq!(
            why(&k, Some("memory.max")).unwrap(),
            "memhog (pid 123) was killed because the host ran out of memory while memhog allocated; its kernel report: suppressed by the kernel's rate limit."
        );
        assert_eq!(why(&OomKill::of_pid(0), None), None);
        k.constraint = Constraint::Unknown;
        k.kernel_report = None;
        let said = why(&k, Some("memory.max")).unwrap();
        assert!(said.starts_with("memhog (pid 123) was killed because memory ran out (at a cgroup's limit or on the host: nothing the daemon could read said which)"), "{said}");
        assert!(!said.contains("host ran out"), "{said}");
    }
}

#[cfg(test)]
mod human_tests {
    use crate::wire::{Event, EventBody, KernelReport, KillExplained, OomKill, Victim, human};

    /// Names are the user's: the why line is escaped on its own, and the
    /// kill is two lines whatever the names hold.
    #[test]
    fn the_why_line_is_escaped_and_stays_one_line() {
        let mut k = OomKill::of_pid(7);
        k.victim = Victim { pid: 7, comm: Some("evil\nFAKE\u{1b}[2J".into()), ..Default::default() };
        k.limit_cgroup = Some("/x\u{202e}y".into());
        k.why = super::why(&k, Some("memory.max"));
        let e = Event::new(EventBody::OomKill(Box::new(k)), "2026-12-06T07:00:00.000000Z".into(), "/x".into(), None);
        let text = human(&e);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].trim_start().starts_with("why: evil\\nFAKE\\x1b[2J (pid 7) was killed because /x\\u{202e}y hit its memory limit (memory.max)"), "{text}");
        assert!(!text.chars().any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')), "{text:?}");

        let x = KillExplained {
            pid: 7,
            comm: "a\u{1b}b".into(),
            kill_seq: 3,
            why: Some("w\u{7}".into()),
            kernel_report: Box::new(KernelReport { gfp_mask: Some("0xcc0".into()), gfp_flags: vec!["GFP_KERNEL".into()], order: Some(0), ..Default::default() }),
        };
        let text = human(&Event::new(EventBody::KillExplained(x), "2026-12-06T07:00:00.000000Z".into(), "/x".into(), None));
        assert_eq!(
            text,
            "2026-12-06T07:00:00.000 REPORT   /x pid=7 (a\\x1bb) kernel report: gfp_mask=0xcc0(GFP_KERNEL) order=0\n                        why: w\\x07"
        );
    }

    /// A kill the kernel printed only the kill line for says why, in words.
    #[test]
    fn a_rate_limited_kill_says_its_report_was_suppressed() {
        let x = KillExplained {
            pid: 7,
            comm: "memhog".into(),
            kill_seq: 3,
            why: None,
            kernel_report: Box::new(KernelReport { kmsg_seq: 9, missing: Some("rate_limited".into()), ..Default::default() }),
        };
        let text = human(&Event::new(EventBody::KillExplained(x), "2026-12-06T07:00:00.000000Z".into(), "/x".into(), None));
        assert_eq!(text, "2026-12-06T07:00:00.000 REPORT   /x pid=7 (memhog) kernel report: suppressed by the kernel's rate limit");
        assert_eq!(super::missing_reason("records_lost"), "lost (the kernel log wrapped before it was read)");
        assert_eq!(super::missing_reason("something_new"), "something new");
    }
}
