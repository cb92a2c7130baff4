//! The events users see: in `oomwatch tail`, as NDJSON on the event socket,
//! and (through the model) behind the metrics. The JSON shape is a contract:
//! every object has `kind`, `time` (RFC 3339) and `cgroup`; fields the kernel
//! did not give are absent, never zero.

use serde::{Deserialize, Serialize};

use super::{
    alert::{AlertName, AlertState, Severity},
    episode::{Incident, IncidentRef, Throttled},
    explain::{Composition, Consumer, KernelReport},
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    #[serde(flatten)]
    pub body: EventBody,
    pub time: String,
    /// Memory cgroup path ("/a/b"), "/" for host-wide events.
    pub cgroup: String,
    /// Kernel CLOCK_MONOTONIC timestamp of what happened, when the kernel
    /// stamped it: lets a reader on the same host measure delivery latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ktime_ns: Option<u64>,
    /// Position in the daemon's stream (gaps mean a client lagged).
    #[serde(default)]
    pub seq: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// Boxed: a kill carries its history and victim details (over 600
    /// bytes), and every other event in the backlog would pay for them.
    OomKill(Box<OomKill>),
    /// The first word of a kill, sent before it is explained: who died,
    /// where, who triggered it. Live only, to clients that ask for it by
    /// name; the `oom_kill` of the same victim follows with everything.
    KillSeen(KillNotice),
    VictimExit(VictimExit),
    /// The kernel's report of a kill was read: the kill (`kill_seq`) now
    /// carries it, and its `why` says more.
    KillExplained(KillExplained),
    /// A PSI trigger fired: memory stalls crossed its threshold.
    Pressure(PressureEvent),
    /// An alert changed state (pending, firing, resolved, cancelled).
    Alert(AlertEvent),
    /// The kernel counted OOM kills oomwatch did not see (reconciliation).
    UnobservedKills(UnobservedKills),
    ReclaimStall(ReclaimStall),
    /// Every kill of one OOM-killer invocation (a group kill), once settled.
    Incident(Incident),
    /// A cgroup's throttling at memory.high started or ended.
    Throttled(Throttled),
    /// The client fell behind and `dropped` events were not sent to it.
    Lagged { dropped: u64 },
}

impl Event {
    /// A new event; the stream gives it its `seq` when it is published.
    pub fn new(body: EventBody, time: String, cgroup: String, ktime_ns: Option<u64>) -> Self {
        Self { body, time, cgroup, ktime_ns, seq: 0 }
    }
}

/// Declares [`EventKind`] from the variants of [`EventBody`]: one list, so a
/// new variant cannot be left out of `kind()`, `ALL` or the names.
macro_rules! event_kinds {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The `kind` of an event, as its JSON names it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($variant),*
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name),*
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|k| k.as_str() == name)
            }
        }

        impl EventBody {
            pub fn kind(&self) -> EventKind {
                match self {
                    $(EventBody::$variant { .. } => EventKind::$variant),*
                }
            }
        }
    };
}

event_kinds! {
    OomKill => "oom_kill",
    KillSeen => "kill_seen",
    VictimExit => "victim_exit",
    KillExplained => "kill_explained",
    ReclaimStall => "reclaim_stall",
    Pressure => "pressure",
    Alert => "alert",
    UnobservedKills => "unobserved_kills",
    Incident => "incident",
    Throttled => "throttled",
    Lagged => "lagged",
}

impl EventKind {
    /// Whether events of this kind are kept (journal, history, shipping):
    /// all but a kill's first word, which is live only.
    pub fn is_kept(self) -> bool {
        self != EventKind::KillSeen
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the victim's cgroup was found.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// Read from the victim's task in the kernel at the moment of the kill.
    Exact,
    /// From /proc/PID/cgroup after the fact (no BTF, or an older kernel).
    Approximate,
    /// Nothing found (the victim was gone before we could look).
    Unknown,
}

/// Where the victim's cgroup was read (see [`OomKill::cgroup_from`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CgroupSource {
    /// The victim's task (or the trigger's, when it is the victim), read
    /// by the kernel program at the kill.
    Kernel,
    /// /proc/PID/cgroup, read before the victim started exiting.
    ProcCgroup,
    /// The one tracked cgroup whose own oom_kill counter had moved past
    /// every kill reported there: the kernel counts a kill in the victim's
    /// memory cgroup before the kill record is written.
    OomKillCounter,
    /// `task_memcg` of the kernel's OOM report (/dev/kmsg), which amended
    /// a kill published with its cgroup unknown.
    KernelReport,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Victim {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_vm_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shmem_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgtables_bytes: Option<u64>,
}

impl Victim {
    /// Resident memory, when the kernel reported its parts.
    pub fn rss_bytes(&self) -> Option<u64> {
        let anon = self.anon_rss_bytes?;
        Some(anon + self.file_rss_bytes.unwrap_or(0) + self.shmem_rss_bytes.unwrap_or(0))
    }
}

/// The task whose allocation made the kernel kill: it is often not the victim.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Trigger {
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id of the allocating thread.
    pub tid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// Names people recognize: the unit, container id, pod uid and QoS class
/// from the cgroup path; the container's name and image, and for
/// Kubernetes the pod, its namespace and the container's name in the pod,
/// from the container runtime's records (looked up when the cgroup
/// appeared). Absent when unknown, never empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Workload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// The runtime's name of the container (`docker run --name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The image as asked for (`nginx:1.25`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kubernetes pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Kubernetes namespace of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container's name in the pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Workload {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The name people know the workload by: `namespace/pod/container` for
    /// Kubernetes, `docker:web-frontend` for a named container, the unit
    /// (`nginx.service`) for anything else systemd runs. `None` when only
    /// the path names it. Not escaped: callers showing it to people do.
    pub fn display_name(&self) -> Option<String> {
        if let (Some(namespace), Some(pod)) = (&self.namespace, &self.pod) {
            return Some(match &self.container {
                Some(container) => format!("{namespace}/{pod}/{container}"),
                None => format!("{namespace}/{pod}"),
            });
        }
        if let Some(name) = &self.container_name {
            return Some(match &self.runtime {
                Some(runtime) => format!("{runtime}:{name}"),
                None => name.clone(),
            });
        }
        // A container's scope (`docker-<id>.scope`) names nothing a person knows.
        self.unit.clone().filter(|_| self.container_id.is_none())
    }
}

/// What is known of a kill the instant its record is read: the fields of
/// the `oom_kill` to come that need nothing but the record and what the
/// daemon already holds in memory (same names, same meaning). No seq, not
/// kept: a heads-up for a person or a pager, not the record of the kill.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KillNotice {
    pub victim: Victim,
    pub trigger: Trigger,
    pub attribution: Attribution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Workload::is_empty")]
    pub workload: Workload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_process: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OomKill {
    pub victim: Victim,
    pub trigger: Trigger,
    pub attribution: Attribution,
    /// `memcg` when a memory cgroup's limit was hit, `global` when the host ran out.
    pub constraint: Constraint,
    /// The cgroup whose limit was hit: the victim's own or an ancestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_cgroup: Option<String>,
    /// That cgroup's usage and limit when the kill was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_cgroup_usage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Workload::is_empty")]
    pub workload: Workload,
    /// Whether the victim was its container's main process (PID 1 in the
    /// container). `false`: the container kept running, and Kubernetes
    /// reports no OOMKilled and no restart for it (kubernetes#78973).
    /// Absent outside containers and when the container's init pid was
    /// not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_process: Option<bool>,
    /// The victim cgroup's last 60 s: the ramp that led here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Ramp>,
    /// The OOM killer's own view, where the kernel lets us read it (a
    /// kprobe on oom_kill_process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_control: Option<OomControl>,
    /// Groups of fields this kernel (or this host's setup) could not give
    /// for this event: they are absent on purpose, not zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
    /// Kernel inode id of the victim's memory cgroup, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The evidence the victim's cgroup (the event's `cgroup`) rests on;
    /// absent when it is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_from: Option<CgroupSource>,
    /// Time from the kill to the victim's exit, once confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_latency_ms: Option<f64>,
    /// One sentence of why it happened, from the fields of this event
    /// (rewritten when the kernel's report amends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The kernel's own report of this kill (dmesg), once read: absent
    /// when the kernel log is not readable (see `oomwatch check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_report: Option<Box<KernelReport>>,
    /// The OOM-killer invocation this kill was part of (see `incident` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentRef>,
    /// How long the victim's cgroup (or an ancestor) had been throttled at
    /// memory.high before the kill, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_for_s: Option<f64>,
    /// Who held the limit cgroup's memory, largest first: its child cgroups
    /// at the daemon's last sample (at most [`crate::wire::TOP_CHILDREN`]),
    /// and the largest tasks of the kernel's report once it amends the kill.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_consumers: Vec<Consumer>,
    /// The limit cgroup's own last 60 s, when it is not the victim's
    /// cgroup (then `history` is its history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_history: Option<Ramp>,
    /// The limit cgroup's memory by kind at the kill: the kernel report's
    /// memory.stat once it amends the kill, until then (or when the kernel
    /// printed none) the daemon's last reading of it (`sampled_seconds_ago`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composition: Option<Composition>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OomControl {
    /// The memory cgroup the OOM killer worked on (`oc->memcg`), when a limit was hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcg: Option<String>,
    /// Pages the OOM killer could choose from (the limit, or all RAM + swap).
    pub totalpages: u64,
    /// The victim's badness score.
    pub points: i64,
    /// `enum oom_constraint` as the kernel names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// The failed allocation: gfp flags (hex) and order (0 = one page).
    pub gfp_mask: String,
    pub order: i32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VictimExit {
    pub pid: u32,
    pub comm: String,
    pub exit_latency_ms: f64,
}

/// Sent when the kernel's report of a kill has been joined to it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KillExplained {
    pub pid: u32,
    pub comm: String,
    /// The `seq` of the kill this explains (amended with the same fields).
    pub kill_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub kernel_report: Box<KernelReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PressureEvent {
    /// The trigger as the kernel holds it: "some 300000 2000000".
    pub trigger: String,
    /// PSI averages (%) and totals right after the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub some_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub some_total_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_total_us: Option<u64>,
}

/// Kills the kernel counted that never reached oomwatch: a lost ring-buffer
/// record, or a kill while the programs were not attached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UnobservedKills {
    pub count: u64,
    /// Kills the kernel counted since the daemon started.
    pub kernel_total: u64,
    /// Kills oomwatch reported in that time.
    pub observed_total: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertEvent {
    pub alert: AlertName,
    pub severity: Severity,
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<String>,
    /// The cgroup's workload names, when known (see [`Workload`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// A task stalled in reclaim for at least the daemon's `--stall-threshold`.
/// At most one per cgroup per `--stall-min-interval`; `suppressed` says how
/// many more this cgroup had since the previous one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReclaimStall {
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id of the stalled thread.
    pub tid: u32,
    pub comm: String,
    pub duration_ms: f64,
    /// `direct` (the host or a zone ran low) or `memcg` (a cgroup limit).
    pub reclaim_kind: ReclaimKindName,
    /// Pages this reclaim freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_reclaimed: Option<u64>,
    /// Allocation order that started it (0: one page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    pub suppressed: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReclaimKindName {
    Direct,
    Memcg,
}

impl ReclaimKindName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Memcg => "memcg",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// A memory cgroup's limit was hit.
    Memcg,
    /// The whole host ran out.
    Global,
    /// The allocation was confined to a cpuset's memory nodes, which ran out
    /// (only known where the kernel's oom_control is readable).
    Cpuset,
    /// Confined by a NUMA memory policy (mbind/set_mempolicy).
    MemoryPolicy,
    /// Nothing told which: no BTF (no kernel chain, no oom_control), the
    /// victim's cgroup unreadable (gone from /proc, untracked), and no line
    /// of the kernel's report read within the kill path's wait. Never
    /// passed off as `global`: that pages as the host running out.
    Unknown,
}

impl Constraint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memcg => "memcg",
            Self::Global => "global",
            Self::Cpuset => "cpuset",
            Self::MemoryPolicy => "memory_policy",
            Self::Unknown => "unknown",
        }
    }

    /// From the kernel's `enum oom_constraint` name (BTF, prefix stripped).
    pub fn from_kernel_name(name: &str) -> Self {
        match name {
            "memcg" => Self::Memcg,
            "cpuset" => Self::Cpuset,
            "memory_policy" => Self::MemoryPolicy,
            _ => Self::Global,
        }
    }
}

/// The ramp before a kill, column-wise so a reader can scan one series.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Ramp {
    pub seconds_ago: Vec<u32>,
    pub usage_bytes: Vec<u64>,
    pub working_set_bytes: Vec<u64>,
    /// PSI "some" avg10 (%) of the cgroup, where the kernel keeps it.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "finite_f32s")]
    pub pressure_some_avg10: Vec<f32>,
    /// The cgroup's hard limit as last read (None: unlimited or unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
}

/// f32s that are numbers: JSON's too large for an f32 would read as
/// infinity, which JSON cannot carry (it is written `null`, which no
/// reader takes back), so they are refused where they are read.
fn finite_f32s<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    let values = Vec::<f32>::deserialize(d)?;
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(serde::de::Error::custom(format!("{v} is out of range for a pressure percentage"))),
        None => Ok(values),
    }
}

#[cfg(test)]
impl OomKill {
    /// A kill of `pid` with nothing else known, for tests of the outputs.
    pub(crate) fn of_pid(pid: u32) -> Self {
        Self {
            victim: Victim { pid, ..Default::default() },
            trigger: Trigger::default(),
            attribution: Attribution::Exact,
            constraint: Constraint::Memcg,
            limit_cgroup: None,
            limit_cgroup_usage_bytes: None,
            limit_bytes: None,
            workload: Default::default(),
            main_process: None,
            history: None,
            oom_control: None,
            unavailable: Vec::new(),
            cgroup_id: None,
            cgroup_from: None,
            exit_latency_ms: None,
            why: None,
            kernel_report: None,
            incident: None,
            throttled_for_s: None,
            top_consumers: Vec::new(),
            limit_history: None,
            composition: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom() -> Event {
        Event {
            body: EventBody::OomKill(Box::new(OomKill {
                victim: Victim { pid: 10, comm: Some("hog".into()), anon_rss_bytes: Some(1 << 20), ..Default::default() },
                trigger: Trigger { pid: 10, tid: 11, comm: "hog".into(), cgroup: Some("/a".into()) },
                attribution: Attribution::Exact,
                constraint: Constraint::Memcg,
                limit_cgroup: Some("/".into()),
                limit_cgroup_usage_bytes: None,
                limit_bytes: None,
                workload: Workload::default(),
                main_process: None,
                history: None,
                oom_control: None,
                unavailable: Vec::new(),
                cgroup_id: Some(77),
                cgroup_from: None,
                exit_latency_ms: None,
                why: None,
                kernel_report: None,
                incident: None,
                throttled_for_s: None,
                top_consumers: Vec::new(),
                limit_history: None,
                composition: None,
            })),
            time: "2026-11-22T05:40:01.123456Z".into(),
            cgroup: "/a".into(),
            ktime_ns: Some(5),
            seq: 1,
        }
    }

    /// Found by the fuzzer: in an event (its body is flattened, so numbers
    /// pass through serde's buffer as f64s) 4e39 read as an f32 was
    /// infinity, written back as `null`, which then did not read.
    #[test]
    fn a_pressure_too_large_for_an_f32_is_refused_where_it_is_read() {
        let mut event = oom();
        let EventBody::OomKill(k) = &mut event.body else { unreachable!() };
        k.history = Some(Ramp { seconds_ago: vec![1, 0], usage_bytes: vec![1, 2], working_set_bytes: vec![1, 2], pressure_some_avg10: vec![0.5, 12.25], limit_bytes: None });
        let line = serde_json::to_string(&event).unwrap();
        assert!(line.contains("[0.5,12.25]"), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
        for too_large in ["4000000000000000000000000000000000000000.0", "1e300"] {
            let e = serde_json::from_str::<Event>(&line.replace("12.25", too_large)).unwrap_err();
            assert!(e.to_string().contains("inf is out of range for a pressure percentage"), "{e}");
        }
        let direct = serde_json::from_str::<Ramp>(r#"{"seconds_ago":[],"usage_bytes":[],"working_set_bytes":[],"pressure_some_avg10":[4e39]}"#);
        assert!(direct.is_err(), "read outside an event, serde_json refuses it itself");
    }

    #[test]
    fn json_has_the_contract_fields_and_omits_unknowns() {
        let v: serde_json::Value = serde_json::to_value(oom()).unwrap();
        assert_eq!(v["kind"], "oom_kill");
        assert_eq!(v["time"], "2026-11-22T05:40:01.123456Z");
        assert_eq!(v["cgroup"], "/a");
        assert_eq!(v["victim"]["pid"], 10);
        assert_eq!(v["victim"]["anon_rss_bytes"], 1 << 20);
        assert!(v["victim"].get("uid").is_none(), "absent fields must be omitted, not zero");
        assert!(v.get("exit_latency_ms").is_none());
        assert_eq!(v["attribution"], "exact");
        assert_eq!(v["constraint"], "memcg");
        assert!(v.get("workload").is_none() && v.get("history").is_none());
    }

    #[test]
    fn reclaim_stall_json_shape() {
        let e = Event {
            body: EventBody::ReclaimStall(ReclaimStall {
                pid: 10,
                tid: 11,
                comm: "hog".into(),
                duration_ms: 120.5,
                reclaim_kind: ReclaimKindName::Memcg,
                nr_reclaimed: Some(32),
                order: None,
                suppressed: 3,
            }),
            time: "2026-11-22T05:40:01.123456Z".into(),
            cgroup: "/a".into(),
            ktime_ns: Some(5),
            seq: 2,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "reclaim_stall");
        assert_eq!(v["reclaim_kind"], "memcg");
        assert_eq!((v["pid"].as_u64(), v["tid"].as_u64(), v["suppressed"].as_u64()), (Some(10), Some(11), Some(3)));
        assert_eq!(v["nr_reclaimed"], 32);
        assert!(v.get("order").is_none(), "absent, not zero");
        assert_eq!((v["cgroup"].as_str(), v["time"].is_string()), (Some("/a"), true));
        assert_eq!(v["kind"], e.body.kind().as_str());
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    }

    #[test]
    fn status_report_reads_without_top_stallers() {
        // From a daemon that predates them.
        let old = r#"{"time":"t","cgroups":{"tracked":1,"removed_in_grace":0,"excluded_filter":0,"excluded_cap":0},"kills_total":0,"rows":[]}"#;
        let r: crate::wire::StatusReport = serde_json::from_str(old).unwrap();
        assert!(r.top_stallers.is_empty());
    }

    #[test]
    fn round_trips() {
        let e = oom();
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        let lagged = Event { body: EventBody::Lagged { dropped: 3 }, time: "t".into(), cgroup: "/".into(), ktime_ns: None, seq: 0 };
        let line = serde_json::to_string(&lagged).unwrap();
        assert!(line.contains(r#""kind":"lagged""#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), lagged);
    }
}
