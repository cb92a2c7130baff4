//! The victim's memory cgroup when the kernel program could not read it
//! from the victim's task (no BTF). Never "/" for a cgroup that is not
//! known: an operator told a kill happened in the root cgroup looks in the
//! wrong place.
//!
//! 1. /proc/PID/cgroup, read first thing on the kill path. On a cgroup v1
//!    memory hierarchy the kernel shows an exiting task in "/" whatever
//!    its cgroup was, and the victim starts exiting as soon as it runs
//!    (SIGKILL was sent before the kill record was written): a "/" there
//!    counts only when /proc/PID/stat says the task was not exiting yet.
//! 2. Else the kernel's own oom_kill counters: the kernel counts the kill
//!    in the victim's memory cgroup before the record is written, so the
//!    one tracked cgroup whose counter moved past every kill reported
//!    there is the victim's. Two such cgroups (kills still queued behind
//!    this one) tell nothing. A counter that cannot have counted this kill
//!    is not asked: another memcg than the one the kernel program named,
//!    or one whose baseline was read after the kill
//!    (`KillBaseline::could_count`).
//! 3. Else the kernel's OOM report (`task_memcg`, printed before the kill
//!    record was written) when the kernel log reader has it within a
//!    moment (`kernel_report::ReportedVictims`).
//! 4. Else the cgroup is unknown and the event says so; a report read
//!    later still fills it in (`kernel_report`).

use std::path::Path;

use crate::{
    model::{KillBaseline, KillClues},
    readers::{BootTime, CgroupVersion, ProcCgroup, proc_memory_cgroup, read_own_oom_kills},
    wire::{Attribution, CgroupSource, REPORT_PATH_CUT, printed_whole},
};

/// The victim's memory cgroup and what it rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VictimCgroup {
    pub path: Option<String>,
    pub id: Option<u64>,
    pub attribution: Attribution,
    pub from: Option<CgroupSource>,
    /// Why the cgroup is unknown, or its path incomplete, for the event's
    /// `unavailable`.
    pub unavailable: Option<String>,
}

impl VictimCgroup {
    /// Read from the kernel at the kill.
    pub fn exact(path: String, id: u64) -> Self {
        Self { path: Some(path), id: Some(id), attribution: Attribution::Exact, from: Some(CgroupSource::Kernel), unavailable: None }
    }

    fn approximate(path: String, from: CgroupSource) -> Self {
        Self { path: Some(path), id: None, attribution: Attribution::Approximate, from: Some(from), unavailable: None }
    }
}

/// /proc/PID/cgroup shows at most PATH_MAX - 1 bytes of a path: one that
/// long was cut (a tenant may nest cgroups deeper than that).
const PROC_PATH_SHOWN: usize = 4095;

/// What the tracked cgroups' own oom_kill counters say about a kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterEvidence {
    /// Exactly one cgroup has a kill nobody reported yet.
    One(String),
    /// None has (or none could be read).
    Nothing,
    /// This many have: other kills are in flight.
    Several(usize),
}

/// The tracked cgroups that could have counted `kill` whose own oom_kill
/// counter (`read`: now) is ahead of the kills accounted for there.
pub fn unaccounted_kill(baselines: &[KillBaseline], kill: &KillClues, mut read: impl FnMut(&KillBaseline) -> Option<u64>) -> CounterEvidence {
    let mut ahead = baselines.iter().filter(|b| b.could_count(kill)).filter(|b| read(b).is_some_and(|now| b.unaccounted(now) > 0));
    match (ahead.next(), ahead.count()) {
        (None, _) => CounterEvidence::Nothing,
        (Some(b), 0) => CounterEvidence::One(b.path.clone()),
        (Some(_), more) => CounterEvidence::Several(more + 1),
    }
}

/// Where the kill path looks when the kernel program could not read the
/// victim's cgroup, in order; each asked only when the one before could
/// not tell.
pub struct Fallbacks<B, R> {
    /// What /proc/PID/cgroup said, read before anything else.
    pub proc: ProcCgroup,
    /// The tracked cgroups' kill accounting (`Model::kill_baselines`).
    pub baselines: B,
    /// What the record says that a counter must agree with.
    pub clues: KillClues,
    /// The cgroup version of the memory controller, to read counters.
    pub version: Option<CgroupVersion>,
    /// The victim's `task_memcg` from the kernel's report, waited for.
    pub report: R,
}

/// The victim's cgroup from /proc, else the counters, else the kernel's
/// report; `files` counts the counter files read.
pub fn without_the_kernel(
    Fallbacks { proc, baselines, clues, version, report }: Fallbacks<impl FnOnce() -> Vec<KillBaseline>, impl FnOnce() -> Option<String>>,
    files: &mut u32,
) -> VictimCgroup {
    let why_not_proc = match proc {
        ProcCgroup::Path(path) => {
            let cut = path.len() >= PROC_PATH_SHOWN;
            let mut found = VictimCgroup::approximate(path, CgroupSource::ProcCgroup);
            if cut {
                found.unavailable = Some(format!("victim cgroup path (longer than /proc/PID/cgroup shows: cut at {PROC_PATH_SHOWN} bytes)"));
            }
            return found;
        }
        ProcCgroup::Exiting => "the victim was exiting, which cgroup v1 shows as \"/\"",
        ProcCgroup::Gone => "the victim was gone",
        ProcCgroup::Reused => "the victim was gone, its pid another process's",
    };
    let evidence = match version {
        Some(version) => unaccounted_kill(&baselines(), &clues, |b| {
            *files += 1;
            read_own_oom_kills(&b.dir, version)
        }),
        None => CounterEvidence::Nothing,
    };
    let counters = match evidence {
        CounterEvidence::One(path) => return VictimCgroup::approximate(path, CgroupSource::OomKillCounter),
        CounterEvidence::Nothing => "no tracked cgroup's oom_kill counter moved".to_owned(),
        CounterEvidence::Several(n) => format!("the oom_kill counters of {n} cgroups moved"),
    };
    if let Some(path) = report() {
        let cut = !printed_whole(&path);
        let mut found = VictimCgroup::approximate(path, CgroupSource::KernelReport);
        if cut {
            found.unavailable = Some(REPORT_PATH_CUT.to_owned());
        }
        return found;
    }
    VictimCgroup {
        path: None,
        id: None,
        attribution: Attribution::Unknown,
        from: None,
        unavailable: Some(format!("victim cgroup (/proc/PID/cgroup: {why_not_proc}; {counters}; no kernel report named it)")),
    }
}

/// /proc/PID/cgroup of the victim killed at `killed_at`, honest about what
/// it cannot tell.
pub fn read_proc(proc_root: &Path, pid: u32, version: Option<CgroupVersion>, killed_at: BootTime) -> ProcCgroup {
    proc_memory_cgroup(proc_root, pid, version == Some(CgroupVersion::V1), killed_at)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn baseline(path: &str, kernel_baseline: u64, seen_since: u64, unobserved_reported: u64) -> KillBaseline {
        KillBaseline { path: path.into(), dir: PathBuf::from(path), id: 0, counted_since: None, kernel_baseline, seen_since, unobserved_reported }
    }

    #[test]
    fn the_one_cgroup_whose_counter_moved_is_the_victims() {
        // /a: 2 kills before start, 1 reported since; /b: quiet; /c: one
        // unobserved kill already reported.
        let tracked = [baseline("/a", 2, 1, 0), baseline("/b", 0, 0, 0), baseline("/c", 0, 0, 1)];
        let counters = |a, b, c| move |k: &KillBaseline| Some(match k.path.as_str() { "/a" => a, "/b" => b, _ => c });
        assert_eq!(unaccounted_kill(&tracked, &KillClues::default(), counters(3, 0, 1)), CounterEvidence::Nothing, "every kill accounted for");
        assert_eq!(unaccounted_kill(&tracked, &KillClues::default(), counters(4, 0, 1)), CounterEvidence::One("/a".into()));
        assert_eq!(unaccounted_kill(&tracked, &KillClues::default(), counters(3, 0, 2)), CounterEvidence::One("/c".into()));
        assert_eq!(unaccounted_kill(&tracked, &KillClues::default(), counters(4, 1, 1)), CounterEvidence::Several(2), "another kill in flight");
        assert_eq!(unaccounted_kill(&tracked, &KillClues::default(), |k| (k.path == "/b").then_some(5)), CounterEvidence::One("/b".into()), "unreadable ones tell nothing");
    }

    /// The kill that CI saw credited to the wrong container: a record of
    /// another cgroup's kill, kept in the kernel program's slot while the
    /// daemon attached and sent at the next kill, met a counter that moved
    /// for that next kill.
    #[test]
    fn a_counter_that_cannot_have_counted_the_kill_names_nothing() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| Some(t0 + std::time::Duration::from_secs(s));
        let mut here = baseline("/c", 0, 0, 0);
        (here.id, here.counted_since) = (7, at(10));
        let tracked = [here];
        let moved = |_: &KillBaseline| Some(1);
        let clues = |memcg_id, kill_at| KillClues { memcg_id, at: kill_at };
        let one = CounterEvidence::One("/c".into());
        assert_eq!(unaccounted_kill(&tracked, &clues(None, at(11)), moved), one, "after the baseline, no memcg read");
        assert_eq!(unaccounted_kill(&tracked, &clues(Some(7), at(11)), moved), one, "the memcg the kernel named");
        assert_eq!(unaccounted_kill(&tracked, &clues(Some(9), at(11)), moved), CounterEvidence::Nothing, "the kernel named another memcg (gone now)");
        assert_eq!(unaccounted_kill(&tracked, &clues(None, at(9)), moved), CounterEvidence::Nothing, "a kill before the baseline is in it");
        assert_eq!(unaccounted_kill(&tracked, &clues(None, None), moved), one, "no time: the counter still tells");
        let mut unknown = tracked[0].clone();
        (unknown.id, unknown.counted_since) = (0, None);
        assert_eq!(unaccounted_kill(&[unknown], &clues(Some(9), at(9)), moved), one, "no id, a restored baseline: nothing to rule it out");
    }

    #[test]
    fn root_is_never_reported_unless_proc_said_so_of_a_live_task() {
        let mut files = 0;
        let ask = |proc, baselines: fn() -> Vec<KillBaseline>, report: Option<&'static str>| Fallbacks {
            proc,
            baselines,
            clues: KillClues::default(),
            version: Some(CgroupVersion::V1),
            report: move || report.map(str::to_owned),
        };
        let from_proc = without_the_kernel(ask(ProcCgroup::Path("/".into()), Vec::new, Some("/not-asked")), &mut files);
        assert_eq!((from_proc.path.as_deref(), from_proc.from, files), (Some("/"), Some(CgroupSource::ProcCgroup), 0));
        assert_eq!(from_proc.unavailable, None);
        // A path as long as /proc shows was cut there: kept, and said so.
        let long = format!("/tenant/{}", "x".repeat(PROC_PATH_SHOWN - 8));
        let cut = without_the_kernel(ask(ProcCgroup::Path(long.clone()), Vec::new, None), &mut files);
        assert_eq!((cut.path.as_deref(), cut.attribution), (Some(long.as_str()), Attribution::Approximate));
        assert_eq!(cut.unavailable.as_deref(), Some("victim cgroup path (longer than /proc/PID/cgroup shows: cut at 4095 bytes)"));
        let whole = without_the_kernel(ask(ProcCgroup::Path(long[..PROC_PATH_SHOWN - 1].to_owned()), Vec::new, None), &mut files);
        assert_eq!(whole.unavailable, None);

        // Exiting on v1, counters unreadable here: unknown, and said why.
        let tracked = || vec![baseline("/nonexistent/oomwatch-test-a", 0, 0, 0)];
        let unknown = without_the_kernel(ask(ProcCgroup::Exiting, tracked, None), &mut files);
        assert_eq!((unknown.path, unknown.attribution, unknown.from, files), (None, Attribution::Unknown, None, 1));
        let why = unknown.unavailable.unwrap();
        assert!(why.starts_with("victim cgroup (/proc/PID/cgroup: the victim was exiting") && why.ends_with("no tracked cgroup's oom_kill counter moved; no kernel report named it)"), "{why}");

        let gone = without_the_kernel(ask(ProcCgroup::Gone, Vec::new, None), &mut files);
        assert_eq!((gone.path, gone.attribution), (None, Attribution::Unknown));
        let reported = without_the_kernel(ask(ProcCgroup::Gone, tracked, Some("/pod/c")), &mut files);
        assert_eq!(reported, VictimCgroup::approximate("/pod/c".into(), CgroupSource::KernelReport));
        let deep: &'static str = Box::leak(format!("/pod/{}", "x".repeat(1100)).into_boxed_str());
        let cut = without_the_kernel(ask(ProcCgroup::Gone, tracked, Some(deep)), &mut files);
        assert_eq!((cut.path.as_deref(), cut.unavailable.as_deref()), (Some(deep), Some(REPORT_PATH_CUT)), "kept, and said to be cut");
    }

    #[test]
    fn the_counter_names_the_cgroup_when_proc_cannot() {
        let dir = std::env::temp_dir().join(format!("oomwatch-victim-cgroup-{}", std::process::id()));
        for (leaf, kills) in [("a", 3), ("b", 7)] {
            std::fs::create_dir_all(dir.join(leaf)).unwrap();
            std::fs::write(dir.join(leaf).join("memory.oom_control"), format!("oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n")).unwrap();
        }
        let tracked = || {
            let mut a = baseline("/a", 3, 0, 0);
            a.dir = dir.join("a");
            let mut b = baseline("/b", 6, 0, 0);
            b.dir = dir.join("b");
            vec![a, b]
        };
        let mut files = 0;
        let fallbacks = Fallbacks {
            proc: ProcCgroup::Exiting,
            baselines: tracked,
            clues: KillClues::default(),
            version: Some(CgroupVersion::V1),
            report: || Some("/not-asked".into()),
        };
        let found = without_the_kernel(fallbacks, &mut files);
        assert_eq!(found, VictimCgroup::approximate("/b".into(), CgroupSource::OomKillCounter));
        assert_eq!(files, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
