//! The model: the single owner of per-cgroup and per-host state (samples,
//! limits, history, forecasts, pressure, reclaim stall sums, kill counts and
//! the kernel's kill baselines), and of the event stream ([`bus`]). Sources
//! write to it; outputs read from it. Nothing else keeps its own copy.
//!
//! May depend on: `readers`, `config`, `wire`.

pub mod bus;
mod cap;
pub mod consumers;
pub mod counters;
mod due;
pub mod episodes;
pub mod forecast;
pub mod history;
pub mod incidents;
pub mod limit;
pub mod reclaim;
pub mod throttle;
pub mod tree;
pub mod unplaced;
pub mod workloads;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, RwLock},
    time::{Duration, Instant},
};

use oomwatch_common::reclaim::ThreadStalls;

use crate::{
    readers::{CgroupLabels, MemInfo, MemoryEvents, MemorySample, Pressure, labels_for, runtime::ContainerMeta},
    wire::{CgroupCounts, Constraint, Ramp, StatusRow, TopStaller, Workload},
};
use cap::{LiveDepths, Room};
use due::DueList;
use workloads::{ContainerNames, workload_of};
pub use forecast::{Basis, Forecast, ForecastParams};
pub use history::{History, Point};
use reclaim::{CgroupStalls, Ledger};

#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Cgroups tracked at most (sampled, exported per cgroup). Kills are
    /// counted for every cgroup regardless.
    pub max_cgroups: usize,
    pub include: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
    /// How long the series of a removed cgroup stay before they disappear.
    pub removal_grace: Duration,
    /// Points of history kept per cgroup (one per sampling interval).
    pub history_len: usize,
    pub forecast: ForecastParams,
    /// Container names kept by cgroup path, removed cgroups included.
    pub max_workloads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            max_cgroups: 4096,
            include: Vec::new(),
            exclude: Vec::new(),
            removal_grace: Duration::from_secs(600),
            history_len: 120,
            forecast: ForecastParams::default(),
            max_workloads: 8192,
        }
    }
}

/// What admitting a cgroup did: whether it is tracked, and the deeper
/// cgroup it was tracked in place of at the cap (the caller stops reading
/// that one; the model has marked it removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub admission: Admission,
    pub displaced: Option<String>,
}

impl From<Admission> for Admitted {
    fn from(admission: Admission) -> Self {
        Self { admission, displaced: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Tracked,
    Filtered,
    OverCap,
    /// Admitted, but its files could not be opened (the open-file limit,
    /// a permission): not tracked, and counted apart from the filter.
    Unreadable,
}

/// What the model knows of one cgroup.
#[derive(Clone, Debug)]
pub struct CgroupState {
    pub id: u64,
    /// The cgroup's directory, as the filesystem names it (the path key is
    /// a display form: names need not be UTF-8).
    pub dir: PathBuf,
    pub labels: CgroupLabels,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    /// Usage the kernel cannot reclaim without swap (see forecast.rs).
    pub unreclaimable_bytes: u64,
    pub inactive_file_bytes: Option<u64>,
    /// File cache minus shmem at the last full sample.
    pub reclaimable_file_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub high_bytes: Option<u64>,
    pub swap_usage_bytes: Option<u64>,
    pub swap_limit_bytes: Option<u64>,
    pub events: MemoryEvents,
    /// Local limit-hit counter (v2 events.local oom, v1 failcnt) and when
    /// the model last saw it move.
    pub limit_hits: Option<u64>,
    pub limit_hit_at: Option<Instant>,
    /// When `limit_hits` was read (at the latest): a value read after a
    /// kill has counted that kill's hit already.
    pub limit_hits_read_at: Option<Instant>,
    pub history: History,
    pub full_sample_at: Option<Instant>,
    /// Memory by kind (anon, file, shmem) at the last full sample.
    pub kinds: Option<consumers::Kinds>,
    /// Usage at the last full sample: memory.stat need not be read again
    /// while usage has not moved since.
    pub full_sample_usage_bytes: u64,
    /// Full reads so far: the first happens at mkdir, before whoever
    /// created the cgroup has written its limit.
    pub full_samples: u32,
    pub removed_at: Option<Instant>,
    /// Time to OOM at the current trend; None when there is no risk.
    pub forecast: Option<Forecast>,
    /// Share of wall time the cgroup's tasks spent in reclaim stalls over
    /// the last interval (from the kernel's stall totals).
    pub reclaim_ratio: Option<f64>,
    /// The kernel's local oom_kill counter when first seen, and how many
    /// kills oomwatch had reported for the path by then: the reconciler
    /// compares later counts against these.
    pub kernel_kills_baseline: Option<u64>,
    pub seen_kills_baseline: u64,
    /// When the baseline had been read: every kill before then is in it,
    /// and one in the moment of the read is taken to be (its counter then
    /// names nothing, which is never wrong). None for a baseline restored
    /// from the last run, which leaves out the kills while no daemon ran.
    pub kills_counted_since: Option<Instant>,
    /// Kills the reconciler already reported as unobserved here.
    pub unobserved_reported: u64,
    reclaim_total: Option<(Instant, u64)>,
    /// v2 `memory.events.local` `high` at the last full sample.
    pub high_hits: Option<u64>,
    pub throttle: throttle::Throttle,
    /// Listed in the state's forecast and throttling passes ([`DueList`]),
    /// and among the cgroups with a reclaim ratio.
    forecast_listed: bool,
    throttle_listed: bool,
    reclaim_listed: bool,
    /// Kills the kernel counted twice here: a group kill's first victim is
    /// killed again as a member of its group (see `episodes.rs`).
    pub kernel_recounts: u64,
}

impl CgroupState {
    /// What the working set runs into: the hard limit, else memory.high.
    pub fn ceiling(&self) -> Option<u64> {
        self.limit_bytes.or(self.high_bytes)
    }

    /// The cgroup was made again under this path: its kernel counters
    /// (oom_kill, limit hits) start again at 0, so what was kept of the
    /// last one's is no baseline for them. Its series go on.
    fn counts_from_zero(&mut self) {
        self.kernel_kills_baseline = None;
        self.kills_counted_since = None;
        self.unobserved_reported = 0;
        self.kernel_recounts = 0;
        self.limit_hits = None;
        self.limit_hit_at = None;
        self.limit_hits_read_at = None;
        self.full_samples = 0;
    }

    fn new(id: u64, path: &str, dir: &Path, history_len: usize) -> Self {
        Self {
            id,
            dir: dir.to_path_buf(),
            labels: labels_for(path),
            usage_bytes: 0,
            working_set_bytes: 0,
            unreclaimable_bytes: 0,
            inactive_file_bytes: None,
            reclaimable_file_bytes: None,
            limit_bytes: None,
            high_bytes: None,
            swap_usage_bytes: None,
            swap_limit_bytes: None,
            events: MemoryEvents::default(),
            limit_hits: None,
            limit_hit_at: None,
            limit_hits_read_at: None,
            history: History::new(history_len),
            full_sample_at: None,
            kinds: None,
            full_sample_usage_bytes: 0,
            full_samples: 0,
            removed_at: None,
            forecast: None,
            reclaim_ratio: None,
            reclaim_total: None,
            kernel_kills_baseline: None,
            seen_kills_baseline: 0,
            kills_counted_since: None,
            unobserved_reported: 0,
            high_hits: None,
            throttle: throttle::Throttle::default(),
            forecast_listed: false,
            reclaim_listed: false,
            throttle_listed: false,
            kernel_recounts: 0,
        }
    }

    /// Whether the forecast is none, and stays none until what it reads
    /// (history, ceiling, removal) changes: gone, never read, no ceiling,
    /// or still below the ceiling.
    fn forecast_settled(&self, params: &ForecastParams) -> bool {
        if self.removed_at.is_some() || self.history.is_empty() {
            return true;
        }
        let Some(ceiling) = self.ceiling() else { return true };
        self.still_below(ceiling, params)
    }

    /// A level that never moved over the whole history, below `ceiling`:
    /// it forecasts none, whatever the pressure (forecast::forecast's first
    /// answer).
    fn still_below(&self, ceiling: u64, params: &ForecastParams) -> bool {
        params.min_growth_fraction > 0.0
            && self.history.level_never_moved()
            && self.history.last_as_slice().last().is_some_and(|p| u64::from(p.unreclaimable_kib) * 1024 < ceiling)
    }

    /// The forecast at `now_s`; `points` is a buffer kept across cgroups.
    fn forecast_now(
        &self,
        path: &str,
        pressure: &HashMap<String, PressureState>,
        points: &mut Vec<Point>,
        now_s: u32,
        params: &ForecastParams,
    ) -> Option<Forecast> {
        if self.removed_at.is_some() {
            return None;
        }
        let limit = self.ceiling()?;
        // Most cgroups of a big host: no copy, no pressure lookup.
        if self.still_below(limit, params) {
            return None;
        }
        // A level that never moved (at its limit here) forecasts as its last
        // point alone does (see forecast::forecast): nothing is copied.
        let still = self.history.level_never_moved() && params.min_growth_fraction > 0.0;
        let pts = if still { self.history.last_as_slice() } else { self.history.points_into(points) };
        let psi = pressure.get(path).filter(|p| p.removed_at.is_none()).map(|p| p.pressure.some.avg10);
        let evidence = forecast::Pressure { psi_some_avg10: psi, reclaim_ratio: self.reclaim_ratio };
        forecast::forecast(pts, limit, now_s, params, evidence)
    }

    /// Free room under the limit, as a fraction of it (None: unlimited).
    pub fn headroom(&self) -> Option<f64> {
        let limit = self.limit_bytes? as f64;
        Some(((limit - self.working_set_bytes as f64) / limit).clamp(0.0, 1.0))
    }
}

#[derive(Clone, Debug, Default)]
struct KillSeries {
    count: u64,
    last_at: Option<Instant>,
    last_victim: Option<String>,
    /// The workload's Kubernetes names at the series' first kill: a
    /// series keeps its labels even after the names leave the model.
    names: KillNames,
}

/// What a kill series is labelled with besides its cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillNames {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// One kill counter series: cgroup, constraint, and whether the victims
/// were their container's main process (`None`: not known).
pub type KillKey = (String, Constraint, Option<bool>);

/// PSI of one cgroup, keyed by its path in the hierarchy that has
/// `memory.pressure` (the memory hierarchy on v2; the unified one on hybrid
/// hosts, where systemd mirrors the same paths).
#[derive(Clone, Copy, Debug)]
pub struct PressureState {
    pub pressure: Pressure,
    pub removed_at: Option<Instant>,
}

/// The host as a whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeState {
    pub meminfo: Option<MemInfo>,
    pub pressure: Option<Pressure>,
    /// Time until MemAvailable runs out at the current trend.
    pub forecast: Option<Forecast>,
}

/// The host's kill accounting, for the reconciler: the kernel's OOM kill
/// counter (/proc/vmstat) compared with the kills oomwatch reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostKills {
    /// The kernel's counter when counting started (at start, or where the
    /// last run left off, restored from the journal).
    pub kernel_baseline: Option<u64>,
    /// Kills oomwatch had reported by then.
    pub seen_baseline: u64,
    /// The gap seen by the previous pass, and how much of it was reported.
    pub last_gap: u64,
    pub reported: u64,
}

impl HostKills {
    /// The kernel's counter up to which every kill was either observed or
    /// reported as unobserved.
    pub fn accounted(&self, seen_total: u64) -> Option<u64> {
        Some(self.kernel_baseline? + seen_total.saturating_sub(self.seen_baseline) + self.reported)
    }
}

/// What the last run had accounted for, restored from the journal: the
/// kernel's kill counters up to which every kill was seen or reported.
/// Counters that moved past them while the daemon was down are kills it
/// did not see: the reconciler reports them after start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillAccounting {
    pub host: Option<u64>,
    /// Per cgroup path; a cgroup not listed had accounted for none.
    pub cgroups: HashMap<String, CgroupKills>,
}

/// One cgroup's part of [`KillAccounting`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupKills {
    /// Its own oom_kill counter up to which every kill was seen or reported.
    pub accounted: u64,
    /// The cgroup's inode id (0: not known). A cgroup found under the path
    /// with another id was made again while no daemon ran: its counter
    /// started at 0, and every kill it counts went unseen.
    pub id: u64,
}

impl CgroupKills {
    /// Where a cgroup with inode `id` found under this path starts counting.
    fn baseline_for(self, id: u64) -> u64 {
        let made_again = self.id != 0 && id != 0 && self.id != id;
        if made_again { 0 } else { self.accounted }
    }
}

struct State {
    /// Boxed: a state is several hundred bytes, and a table sized for
    /// 10,000 cgroups keeps a third of its slots empty (and, while it grows,
    /// two tables at once); empty slots of pointers cost little.
    cgroups: HashMap<String, Box<CgroupState>>,
    /// Which of `cgroups` are whose children (kept with it).
    children: tree::Children,
    pressure: HashMap<String, PressureState>,
    /// The live (not removed) ones of `cgroups` and of `pressure`, by
    /// depth: the cap keeps the shallowest.
    live: LiveDepths,
    live_pressure: LiveDepths,
    node: NodeState,
    host_kills: HostKills,
    /// Until the sampler's first scan ends: per-cgroup baselines restored
    /// from the last run (cgroups found later start counting at once).
    restored_kills: Option<HashMap<String, CgroupKills>>,
    node_history: History,
    kills: BTreeMap<KillKey, KillSeries>,
    /// Kills whose series wait for the kernel's report to place them.
    unplaced: unplaced::Held,
    /// Kills recorded since start. Not the sum of `kills`: the series of a
    /// cgroup long gone leave the table, its kills were still seen (the
    /// reconciler compares this with the kernel's counter).
    kills_seen: u64,
    containers: ContainerNames,
    excluded_filter: usize,
    excluded_cap: usize,
    excluded_unreadable: usize,
    /// Cgroups whose forecast may be other than none (the rest are
    /// settled: [`CgroupState::forecast_settled`]).
    forecast_due: DueList,
    /// Cgroups whose `high` counter moved since the last throttling pass,
    /// or that are rising or in an episode.
    throttle_due: DueList,
    /// Cgroups with a reclaim ratio (they stalled once): with
    /// `forecast_due`, every cgroup an alert rule can hold on.
    with_reclaim: DueList,
}

/// At the cap: the live cgroup at `depth` (the deepest) that makes room
/// for a shallower one, the one using least memory (a crowd of empty
/// cgroups goes first), marked removed.
fn displace(s: &mut State, depth: usize) -> Option<String> {
    let State { cgroups, live, .. } = s;
    let (path, c) = cgroups
        .iter_mut()
        .filter(|(p, c)| c.removed_at.is_none() && cap::depth(p) == depth)
        .min_by(|a, b| a.1.usage_bytes.cmp(&b.1.usage_bytes).then_with(|| a.0.cmp(b.0)))?;
    c.removed_at = Some(Instant::now());
    live.remove(path);
    Some(path.clone())
}

/// Removed cgroups are kept for the grace period (a kill that comes right
/// after the removal is still explained), but never more of them than
/// `bound`: whoever may make cgroups could otherwise make and remove
/// thousands a second and fill the daemon's memory with the states of
/// cgroups that are gone. Past the bound, a quarter of it goes at once
/// (one pass over the table per many removals): first those removed
/// before a second sample (they held nothing to explain), then the
/// longest gone.
fn bound_removed(s: &mut State, bound: usize) {
    let bound = bound.max(4);
    if s.cgroups.len() - s.live.live() > bound {
        let mut removed: Vec<(bool, Instant, String)> = s
            .cgroups
            .iter()
            .filter_map(|(p, c)| Some((c.history.len() > 1, c.removed_at?, p.clone())))
            .collect();
        removed.sort_unstable();
        let State { cgroups, children, forecast_due, throttle_due, with_reclaim, live, .. } = s;
        for (_, _, p) in removed.into_iter().take(cgroups.len() - live.live() - bound * 3 / 4) {
            cgroups.remove(&p);
        }
        children.rebuild(cgroups.keys());
        forecast_due.retain(|p| cgroups.contains_key(p));
        throttle_due.retain(|p| cgroups.contains_key(p));
        with_reclaim.retain(|p| cgroups.contains_key(p));
    }
    if s.pressure.len() - s.live_pressure.live() > bound {
        let mut removed: Vec<(Instant, String)> = s.pressure.iter().filter_map(|(p, ps)| Some((ps.removed_at?, p.clone()))).collect();
        removed.sort_unstable();
        let excess = s.pressure.len() - s.live_pressure.live() - bound * 3 / 4;
        for (_, p) in removed.into_iter().take(excess) {
            s.pressure.remove(&p);
        }
    }
}

/// One more kill in its series (made with the workload's names).
fn count_kill(s: &mut State, max_cgroups: usize, (cgroup, constraint, main_process): (&str, Constraint, Option<bool>), victim_comm: Option<&str>, workload: &Workload, at: Instant) {
    let k = s.kills.entry((cgroup.to_owned(), constraint, main_process)).or_default();
    let new_series = k.count == 0;
    if new_series {
        k.names = KillNames { namespace: workload.namespace.clone(), pod: workload.pod.clone(), container: workload.container.clone() };
    }
    k.count += 1;
    k.last_at = Some(at);
    k.last_victim = victim_comm.map(str::to_owned);
    if new_series {
        bound_kill_series(s, max_cgroups);
    }
}

fn count_unplaced(s: &mut State, max_cgroups: usize, kill: &unplaced::UnplacedKill) {
    count_kill(s, max_cgroups, (&kill.cgroup, kill.constraint, kill.main_process), kill.victim_comm.as_deref(), &kill.workload, kill.at);
}

/// Kill counter series (one per cgroup, constraint and main-process flag)
/// stay while their cgroup is tracked, and for the grace period after its
/// last kill; never more than `bound` of cgroups not tracked, or a tenant
/// that kills a process in a new cgroup each time would grow the table and
/// every scrape without end. Past the bound a quarter of it goes, the
/// series whose last kill is oldest first. Their kills stay counted in
/// `kills_seen`.
fn bound_kill_series(s: &mut State, bound: usize) {
    let bound = bound.max(64);
    if s.kills.len() <= bound {
        return;
    }
    let State { kills, cgroups, .. } = s;
    let tracked = |path: &str| cgroups.get(path).is_some_and(|c| c.removed_at.is_none());
    let mut untracked: Vec<(Option<Instant>, KillKey)> =
        kills.iter().filter(|((p, _, _), _)| !tracked(p)).map(|(key, k)| (k.last_at, key.clone())).collect();
    if untracked.len() <= bound {
        return;
    }
    untracked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let excess = untracked.len() - bound * 3 / 4;
    for (_, key) in untracked.into_iter().take(excess) {
        kills.remove(&key);
    }
}

/// After a change to what `c`'s forecast reads: listed for the next pass
/// unless settled (its forecast is none then, as it was: a cgroup off the
/// list has none).
fn forecast_changed(due: &mut DueList, path: &str, c: &mut CgroupState, params: &ForecastParams) {
    if !c.forecast_settled(params) {
        due.add(&mut c.forecast_listed, path);
    }
}

/// After `c`'s `high` counter was read or `c` came back: listed for the
/// next throttling pass when a tick could change something (the counter
/// is not the one the last tick saw, or an episode is under way).
fn throttle_changed(due: &mut DueList, path: &str, c: &mut CgroupState) {
    if c.throttle.is_active() || (c.high_hits.is_some() && c.high_hits != c.throttle.last_count()) {
        due.add(&mut c.throttle_listed, path);
    }
}

pub struct Model {
    config: ModelConfig,
    started: Instant,
    state: RwLock<State>,
    /// Reclaim stall sums per cgroup, under their own lock: a read of the
    /// kernel map walks thousands of threads and must not hold up readers
    /// of the rest of the state (the kill path).
    reclaim: Mutex<Ledger>,
    top_stallers: Mutex<Vec<TopStaller>>,
    /// Kills grouped by OOM-killer invocation; its own lock, taken on the kill path only.
    incidents: Mutex<incidents::Incidents>,
}

/// Evidence the model has on a cgroup's limit hits, for `limit::find_limit`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LimitEvidence {
    pub hits_before: Option<u64>,
    pub recently_hit: bool,
}

const RECENT_HIT: Duration = Duration::from_secs(10);

impl Default for Model {
    fn default() -> Self {
        Self::new(ModelConfig::default())
    }
}

impl Model {
    pub fn new(config: ModelConfig) -> Self {
        let containers = ContainerNames::new(config.max_workloads);
        Self {
            config,
            started: Instant::now(),
            state: RwLock::new(State {
                cgroups: HashMap::new(),
                children: tree::Children::default(),
                pressure: HashMap::new(),
                live: LiveDepths::default(),
                live_pressure: LiveDepths::default(),
                node: NodeState::default(),
                node_history: History::new(120),
                kills: BTreeMap::new(),
                kills_seen: 0,
                unplaced: unplaced::Held::default(),
                containers,
                excluded_filter: 0,
                excluded_cap: 0,
                excluded_unreadable: 0,
                forecast_due: DueList::default(),
                throttle_due: DueList::default(),
                with_reclaim: DueList::default(),
                host_kills: HostKills::default(),
                restored_kills: None,
            }),
            reclaim: Mutex::default(),
            top_stallers: Mutex::default(),
            incidents: Mutex::default(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the model started, the time base of history points.
    pub fn now_s(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.started).as_secs() as u32
    }

    pub fn passes_filters(&self, path: &str) -> bool {
        let included = self.config.include.is_empty() || self.config.include.iter().any(|g| g.matches(path));
        included && !self.config.exclude.iter().any(|g| g.matches(path))
    }

    /// Whether a newly found cgroup is tracked; starts tracking it if so.
    /// At `--max-cgroups` it takes the place of a deeper one, if any.
    pub fn admit(&self, path: &str, id: u64, dir: &Path) -> Admitted {
        if !self.passes_filters(path) {
            return Admission::Filtered.into();
        }
        let mut s = self.write();
        let live = s.cgroups.get(path).is_some_and(|c| c.removed_at.is_none());
        let displaced = match s.live.room_for(path, self.config.max_cgroups) {
            _ if live => None,
            Room::Free => None,
            Room::Full => return Admission::OverCap.into(),
            Room::Displace { depth } => {
                let displaced = displace(&mut s, depth);
                s.excluded_cap += 1;
                bound_removed(&mut s, self.config.max_cgroups);
                displaced
            }
        };
        if !live {
            s.live.add(path);
        }
        let State { cgroups, children, forecast_due, throttle_due, .. } = &mut *s;
        if let Some(c) = cgroups.get_mut(path) {
            // Same path again: a recreated cgroup continues its series.
            if c.id != id && c.id != 0 && id != 0 {
                c.counts_from_zero();
            }
            c.removed_at = None;
            c.id = id;
            c.dir = dir.to_path_buf();
            forecast_changed(forecast_due, path, c, &self.config.forecast);
            throttle_changed(throttle_due, path, c);
        } else {
            cgroups.insert(path.to_owned(), Box::new(CgroupState::new(id, path, dir, self.config.history_len)));
            children.add(path);
        }
        Admitted { admission: Admission::Tracked, displaced }
    }

    /// A cgroup admitted a moment ago whose files could not be opened: it
    /// leaves the model at once if nothing was ever read from it, instead
    /// of holding its state and its series for the removal grace period
    /// (and, readmitted by every rescan, for ever).
    pub fn reject(&self, path: &str, now: Instant) {
        let mut s = self.write();
        let State { cgroups, children, live, .. } = &mut *s;
        let Some(c) = cgroups.get_mut(path) else { return };
        if c.removed_at.is_none() {
            live.remove(path);
        }
        if c.full_samples == 0 && c.history.is_empty() {
            cgroups.remove(path);
            children.remove(path);
        } else {
            c.removed_at.get_or_insert(now);
        }
        bound_removed(&mut s, self.config.max_cgroups);
    }

    /// Admission for a pressure-only cgroup (hybrid hosts): same filters,
    /// same cap, counted separately.
    pub fn admit_pressure(&self, path: &str) -> Admitted {
        if !self.passes_filters(path) {
            return Admission::Filtered.into();
        }
        let mut s = self.write();
        if s.pressure.get(path).is_some_and(|p| p.removed_at.is_none()) {
            return Admission::Tracked.into();
        }
        match s.live_pressure.room_for(path, self.config.max_cgroups) {
            Room::Free => Admission::Tracked.into(),
            Room::Full => Admission::OverCap.into(),
            Room::Displace { depth } => {
                let State { pressure, live_pressure, .. } = &mut *s;
                let displaced = pressure
                    .iter_mut()
                    .filter(|(p, ps)| ps.removed_at.is_none() && cap::depth(p) == depth)
                    .min_by(|a, b| a.1.pressure.some.avg10.total_cmp(&b.1.pressure.some.avg10).then_with(|| a.0.cmp(b.0)))
                    .map(|(p, ps)| {
                        ps.removed_at = Some(Instant::now());
                        p.clone()
                    });
                if let Some(p) = &displaced {
                    live_pressure.remove(p);
                }
                bound_removed(&mut s, self.config.max_cgroups);
                Admitted { admission: Admission::Tracked, displaced }
            }
        }
    }

    pub fn observe_pressure(&self, path: &str, pressure: Pressure) {
        let mut s = self.write();
        let was_live = s.pressure.insert(path.to_owned(), PressureState { pressure, removed_at: None }).is_some_and(|p| p.removed_at.is_none());
        if !was_live {
            s.live_pressure.add(path);
        }
    }

    pub fn mark_pressure_removed(&self, path: &str, now: Instant) {
        let mut s = self.write();
        let State { pressure, live_pressure, .. } = &mut *s;
        if let Some(p) = pressure.get_mut(path).filter(|p| p.removed_at.is_none()) {
            p.removed_at = Some(now);
            live_pressure.remove(path);
        }
        bound_removed(&mut s, self.config.max_cgroups);
    }

    pub fn pressure_of(&self, path: &str) -> Option<Pressure> {
        self.read().pressure.get(path).filter(|p| p.removed_at.is_none()).map(|p| p.pressure)
    }

    pub fn for_each_pressure(&self, mut f: impl FnMut(&str, &Pressure)) {
        for (path, p) in &self.read().pressure {
            if p.removed_at.is_none() {
                f(path, &p.pressure);
            }
        }
    }

    /// Paths with PSI, for trigger placement: cgroups with a memory limit
    /// first, then the shallowest.
    pub fn pressure_paths_by_priority(&self) -> Vec<String> {
        let s = self.read();
        let mut paths: Vec<(bool, usize, &String)> = s
            .pressure
            .iter()
            .filter(|(_, p)| p.removed_at.is_none())
            .map(|(path, _)| {
                let limited = s.cgroups.get(path).is_some_and(|c| c.limit_bytes.is_some());
                (!limited, cap::depth(path), path)
            })
            .collect();
        paths.sort();
        paths.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    /// A host sample. The used side (total - available) feeds the host's
    /// forecast like a cgroup's working set.
    pub fn observe_node(&self, mut node: NodeState, now: Instant) {
        let at_s = self.now_s(now);
        let mut s = self.write();
        node.forecast = s.node.forecast;
        if let Some(m) = node.meminfo {
            let used = m.total_bytes.saturating_sub(m.available_bytes);
            let used = history::kib(used);
            s.node_history.push(Point { at_s, usage_kib: used, working_set_kib: used, unreclaimable_kib: used });
        }
        s.node = node;
    }

    /// Host pressure seen outside the sampler (a PSI trigger fired).
    pub fn observe_node_pressure(&self, pressure: Pressure) {
        self.write().node.pressure = Some(pressure);
    }

    /// Recomputes the forecasts that may have changed (after each sampling
    /// tick): those of the cgroups on the forecast list; every other one is
    /// none and stays so.
    pub fn update_forecasts(&self, now: Instant) {
        let now_s = self.now_s(now);
        let params = self.config.forecast;
        let mut s = self.write();
        let State { cgroups, pressure, node, node_history, forecast_due, .. } = &mut *s;
        // One buffer for every cgroup each tick.
        let mut points = Vec::new();
        let mut kept = Vec::new();
        for path in forecast_due.take() {
            // Expired meanwhile: nothing left to forecast.
            let Some(c) = cgroups.get_mut(&path) else { continue };
            c.forecast = c.forecast_now(&path, pressure, &mut points, now_s, &params);
            if c.forecast_settled(&params) {
                c.forecast_listed = false;
            } else {
                kept.push(path);
            }
        }
        forecast_due.keep(kept);
        node.forecast = node.meminfo.and_then(|m| {
            let pts = node_history.points_into(&mut points);
            let evidence = forecast::Pressure { psi_some_avg10: node.pressure.map(|p| p.some.avg10), reclaim_ratio: None };
            forecast::forecast(pts, m.total_bytes, now_s, &params, evidence)
        });
    }

    pub fn node(&self) -> NodeState {
        self.read().node
    }

    pub fn set_excluded(&self, filtered: usize, over_cap: usize, unreadable: usize) {
        let mut s = self.write();
        s.excluded_filter = filtered;
        s.excluded_cap = over_cap;
        s.excluded_unreadable = unreadable;
    }

    /// The directory of a tracked cgroup (None: not tracked).
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        self.read().cgroups.get(path).map(|c| c.dir.clone())
    }

    pub fn is_tracked(&self, path: &str) -> bool {
        self.read().cgroups.get(path).is_some_and(|c| c.removed_at.is_none())
    }

    fn note_hits(c: &mut CgroupState, hits: Option<u64>, now: Instant) {
        if let (Some(before), Some(after)) = (c.limit_hits, hits)
            && after > before
        {
            c.limit_hit_at = Some(now);
        }
        if hits.is_some() {
            c.limit_hits = hits;
            c.limit_hits_read_at = Some(now);
        }
    }

    fn push_point(&self, c: &mut CgroupState, now: Instant) {
        c.history.push(Point {
            at_s: self.now_s(now),
            usage_kib: history::kib(c.usage_bytes),
            working_set_kib: history::kib(c.working_set_bytes),
            unreclaimable_kib: history::kib(c.unreclaimable_bytes),
        });
    }

    /// A full sample (memory.stat and limits were read).
    pub fn observe_full(&self, path: &str, sample: &MemorySample, limit_hits: Option<u64>, now: Instant) {
        let mut s = self.write();
        let State { cgroups, kills, unplaced, restored_kills, forecast_due, throttle_due, .. } = &mut *s;
        let Some(c) = cgroups.get_mut(path) else { return };
        c.usage_bytes = sample.usage_bytes;
        c.working_set_bytes = sample.working_set_bytes;
        c.inactive_file_bytes = sample.inactive_file_bytes;
        c.reclaimable_file_bytes = sample.reclaimable_file_bytes();
        c.unreclaimable_bytes = sample.usage_bytes.saturating_sub(c.reclaimable_file_bytes.unwrap_or(0));
        c.limit_bytes = sample.limit_bytes;
        c.high_bytes = sample.high_bytes;
        c.swap_usage_bytes = sample.swap_usage_bytes;
        c.swap_limit_bytes = sample.swap_limit_bytes;
        c.events = sample.events;
        c.high_hits = sample.events_local.and_then(|e| e.high);
        throttle_changed(throttle_due, path, c);
        if c.kernel_kills_baseline.is_none() {
            // v2 memory.events counts descendants too; the local file does not.
            let now_counter = sample.events_local.unwrap_or(sample.events).oom_kill;
            (c.kernel_kills_baseline, c.kills_counted_since) = match (restored_kills.as_mut(), now_counter) {
                // Where the last run left off: kills since then, while the
                // daemon was down, become visible to the reconciler. A
                // counter below it was reset (a new cgroup of that name,
                // from a journal that kept no id).
                (Some(restored), Some(counter)) => {
                    let last = restored.remove(path).unwrap_or_default();
                    (Some(last.baseline_for(c.id).min(counter)), None)
                }
                _ => (now_counter, now_counter.map(|_| now)),
            };
            c.seen_kills_baseline = kills_of(kills, unplaced, path);
        }
        c.full_sample_at = Some(now);
        c.kinds = consumers::Kinds::of(sample);
        c.full_sample_usage_bytes = sample.usage_bytes;
        c.full_samples = c.full_samples.saturating_add(1);
        Self::note_hits(c, limit_hits, now);
        self.push_point(c, now);
        forecast_changed(forecast_due, path, c, &self.config.forecast);
    }

    /// Cheap samples (usage only) of many cgroups under one lock: the
    /// sampler's tick. The working set is estimated with the last
    /// inactive_file seen, which moves slowly compared to a leak. Returns,
    /// per sample, what the sampler needs to decide what to read next.
    pub fn observe_usages(&self, usages: &[(&str, u64)], now: Instant) -> Vec<UsageSeen> {
        let mut s = self.write();
        let State { cgroups, forecast_due, .. } = &mut *s;
        usages
            .iter()
            .map(|&(path, usage)| {
                let Some(c) = cgroups.get_mut(path) else { return UsageSeen::default() };
                let seen = UsageSeen {
                    changed: c.usage_bytes != usage,
                    fill: c.limit_bytes.filter(|&l| l > 0).map(|l| usage as f64 / l as f64),
                    moved_since_full: usage.abs_diff(c.full_sample_usage_bytes) > c.full_sample_usage_bytes / 100 + 4096,
                };
                self.apply_usage(c, usage, None, None, now);
                forecast_changed(forecast_due, path, c, &self.config.forecast);
                seen
            })
            .collect()
    }

    /// Event counters read outside a full sample (v1 failcnt polling).
    pub fn observe_events(&self, path: &str, events: MemoryEvents, limit_hits: Option<u64>, now: Instant) {
        if let Some(c) = self.write().cgroups.get_mut(path) {
            c.events = events;
            Self::note_hits(c, limit_hits, now);
        }
    }

    pub fn observe_usage(&self, path: &str, usage: u64, events: Option<MemoryEvents>, limit_hits: Option<u64>, now: Instant) {
        let mut s = self.write();
        let State { cgroups, forecast_due, .. } = &mut *s;
        let Some(c) = cgroups.get_mut(path) else { return };
        self.apply_usage(c, usage, events, limit_hits, now);
        forecast_changed(forecast_due, path, c, &self.config.forecast);
    }

    fn apply_usage(&self, c: &mut CgroupState, usage: u64, events: Option<MemoryEvents>, limit_hits: Option<u64>, now: Instant) {
        c.usage_bytes = usage;
        c.working_set_bytes = usage.saturating_sub(c.inactive_file_bytes.unwrap_or(0));
        c.unreclaimable_bytes = usage.saturating_sub(c.reclaimable_file_bytes.unwrap_or(0));
        if let Some(e) = events {
            c.events = e;
        }
        Self::note_hits(c, limit_hits, now);
        self.push_point(c, now);
    }

    /// Starts one read of the kernel's per-thread stall totals: observe
    /// every thread, then [`ReclaimRead::finish`].
    pub fn begin_reclaim_read(&self) -> ReclaimRead<'_> {
        let mut ledger = self.reclaim.lock().unwrap_or_else(|e| e.into_inner());
        ledger.begin_read();
        ReclaimRead { model: self, ledger }
    }

    /// Reclaim stall sums of the cgroups that stalled and pass `keep`.
    pub fn reclaim_totals(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, CgroupStalls> {
        self.reclaim.lock().unwrap_or_else(|e| e.into_inner()).totals(keep)
    }

    pub fn set_top_stallers(&self, top: Vec<TopStaller>) {
        *self.top_stallers.lock().unwrap_or_else(|e| e.into_inner()) = top;
    }

    /// The processes that stalled longest in reclaim, as of the last read.
    pub fn top_stallers(&self) -> Vec<TopStaller> {
        self.top_stallers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Each tracked cgroup's share of wall time in reclaim stalls since the
    /// previous read, from the ledger's sums: the cgroups that stalled, not
    /// every one (a pass over 10,000 each second was a tenth of the
    /// daemon's CPU).
    fn update_reclaim_ratios(&self, ledger: &Ledger, now: Instant) {
        let mut s = self.write();
        let State { cgroups, with_reclaim, .. } = &mut *s;
        ledger.each_total_ns(|path, total_ns| {
            let Some(c) = cgroups.get_mut(path) else { return };
            if let Some((at, before)) = c.reclaim_total {
                let dt = now.saturating_duration_since(at).as_nanos() as f64;
                if dt > 0.0 {
                    c.reclaim_ratio = Some(total_ns.saturating_sub(before) as f64 / dt);
                    with_reclaim.add(&mut c.reclaim_listed, path);
                }
            }
            c.reclaim_total = Some((now, total_ns));
        });
    }

    /// Every tracked cgroup with a forecast or a reclaim ratio (and maybe a
    /// few without, a cgroup at most twice): what the alert rules can hold
    /// on, without a pass over every cgroup. A forecast other than none
    /// is only ever set on a cgroup listed for the forecast pass.
    pub fn for_each_signalled(&self, mut f: impl FnMut(&str, &CgroupState)) {
        let s = self.read();
        for path in s.forecast_due.iter().chain(s.with_reclaim.iter()) {
            if let Some(c) = s.cgroups.get(path).filter(|c| c.removed_at.is_none()) {
                f(path, c);
            }
        }
    }

    /// A limit read outside the sampler's rotation (on the kill path).
    pub fn observe_limit(&self, path: &str, limit: Option<u64>) {
        let mut s = self.write();
        let State { cgroups, forecast_due, .. } = &mut *s;
        if let Some(c) = cgroups.get_mut(path) {
            c.limit_bytes = limit;
            forecast_changed(forecast_due, path, c, &self.config.forecast);
        }
    }

    pub fn mark_removed(&self, path: &str, now: Instant) {
        let mut s = self.write();
        let State { cgroups, live, .. } = &mut *s;
        if let Some(c) = cgroups.get_mut(path).filter(|c| c.removed_at.is_none()) {
            c.removed_at = Some(now);
            live.remove(path);
        }
        bound_removed(&mut s, self.config.max_cgroups);
    }

    /// Drops removed cgroups after the grace period, and kill series of
    /// cgroups that no longer exist (`exists` asks the filesystem) and saw
    /// no kill for as long.
    pub fn expire(&self, now: Instant, exists: impl Fn(&str) -> bool) {
        let grace = self.config.removal_grace;
        // Lock order: the ledger, then the state (as a reclaim read does).
        self.reclaim.lock().unwrap_or_else(|e| e.into_inner()).expire(now, grace, |path| {
            self.read().cgroups.contains_key(path) || exists(path)
        });
        let old = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) >= grace);
        let mut s = self.write();
        let before = s.cgroups.len() + s.pressure.len();
        s.cgroups.retain(|_, c| !old(c.removed_at));
        s.pressure.retain(|_, p| !old(p.removed_at));
        let State { cgroups, children, kills, pressure, forecast_due, throttle_due, with_reclaim, .. } = &mut *s;
        if cgroups.len() + pressure.len() != before {
            children.rebuild(cgroups.keys());
            forecast_due.retain(|p| cgroups.contains_key(p));
            throttle_due.retain(|p| cgroups.contains_key(p));
            with_reclaim.retain(|p| cgroups.contains_key(p));
        }
        kills.retain(|(path, _, _), k| cgroups.contains_key(path) || !old(k.last_at) || exists(path));
        // After churn, give the tables back: a host that had 5,000 cgroups
        // an hour ago should not pay for them now.
        shrink(cgroups);
        shrink(pressure);
        let freed = before - (cgroups.len() + pressure.len());
        drop(s);
        if freed >= 256 {
            crate::release_freed_memory();
        }
    }

    /// Whether a tracked ancestor of `path` has a limit (hard or
    /// memory.high) as of its last full read: then `path` can be caught in
    /// that ancestor's OOM or throttling.
    pub fn limited_above(&self, path: &str) -> bool {
        let s = self.read();
        let mut p = path.trim_end_matches('/');
        while let Some(i) = p.rfind('/').filter(|&i| i > 0) {
            p = &p[..i];
            if s.cgroups.get(p).is_some_and(|c| c.removed_at.is_none() && c.ceiling().is_some()) {
                return true;
            }
        }
        false
    }

    /// Tracked, and unlimited as of a full read in the last minute that
    /// was not the one at creation (limits are written right after mkdir):
    /// no limit of its own to have been hit (the kill path skips its files).
    pub fn known_unlimited(&self, path: &str, now: Instant) -> bool {
        self.read().cgroups.get(path).is_some_and(|c| {
            c.limit_bytes.is_none()
                && c.high_bytes.is_none()
                && c.full_samples >= 2
                && c.full_sample_at.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60))
        })
    }

    pub fn limit_evidence(&self, path: &str, now: Instant, kill_at: Option<Instant>) -> LimitEvidence {
        let s = self.read();
        match s.cgroups.get(path) {
            Some(c) => LimitEvidence {
                // Only a count read before the kill can show it moved.
                hits_before: c.limit_hits.filter(|_| match (c.limit_hits_read_at, kill_at) {
                    (Some(read), Some(kill)) => read < kill,
                    _ => true,
                }),
                recently_hit: c.limit_hit_at.is_some_and(|t| now.saturating_duration_since(t) <= RECENT_HIT),
            },
            None => LimitEvidence::default(),
        }
    }

    pub fn record_kill(&self, cgroup: &str, constraint: Constraint, victim_comm: Option<&str>, now: Instant) {
        self.record_workload_kill(cgroup, constraint, victim_comm, &Workload::default(), None, now);
    }

    /// A kill, counted with the workload's names and whether the victim was
    /// its container's main process.
    pub fn record_workload_kill(
        &self,
        cgroup: &str,
        constraint: Constraint,
        victim_comm: Option<&str>,
        workload: &Workload,
        main_process: Option<bool>,
        now: Instant,
    ) {
        let mut s = self.write();
        s.kills_seen += 1;
        count_kill(&mut s, self.config.max_cgroups, (cgroup, constraint, main_process), victim_comm, workload, now);
    }

    /// A kill published unplaced (cgroup or constraint `unknown`): counted
    /// in the totals now, in its series once its report places it
    /// ([`Model::place_unplaced_kill`]) or after [`unplaced::HOLD`]
    /// ([`Model::count_unplaced_overdue`]).
    pub fn record_unplaced_kill(&self, kill: unplaced::UnplacedKill) {
        let mut s = self.write();
        s.kills_seen += 1;
        if let Some(out) = s.unplaced.hold(kill) {
            count_unplaced(&mut s, self.config.max_cgroups, &out);
        }
    }

    /// The kernel's report placed an unplaced kill (victim `pid`, kernel
    /// time `ktime_ns`): its series is the one the report names. False when
    /// the kill is not held (counted already).
    pub fn place_unplaced_kill(&self, pid: u32, ktime_ns: Option<u64>, cgroup: &str, constraint: Constraint, workload: &Workload, main_process: Option<bool>) -> bool {
        let mut s = self.write();
        let Some(kill) = s.unplaced.take(pid, ktime_ns) else { return false };
        let placed = unplaced::UnplacedKill { cgroup: cgroup.to_owned(), constraint, workload: workload.clone(), main_process, ..kill };
        count_unplaced(&mut s, self.config.max_cgroups, &placed);
        true
    }

    /// Counts the unplaced kills no report placed within the hold, as they
    /// were published.
    pub fn count_unplaced_overdue(&self, now: Instant) {
        let mut s = self.write();
        for kill in s.unplaced.overdue(now) {
            count_unplaced(&mut s, self.config.max_cgroups, &kill);
        }
    }

    pub fn for_each_kill_count(&self, mut f: impl FnMut(&str, Constraint, u64)) {
        self.for_each_kill_series(|(cgroup, constraint, _), _, count| f(cgroup, *constraint, count));
    }

    /// Every kill counter series with its names.
    pub fn for_each_kill_series(&self, mut f: impl FnMut(&KillKey, &KillNames, u64)) {
        for (key, k) in &self.read().kills {
            f(key, &k.names, k.count);
        }
    }

    /// The names the runtime's records give the container at `path`, found
    /// when its cgroup appeared (`sources::workloads`).
    pub fn remember_container(&self, path: &str, meta: ContainerMeta) {
        self.write().containers.insert(path, meta);
    }

    /// Container names held, removed cgroups included.
    pub fn containers_remembered(&self) -> usize {
        self.read().containers.len()
    }

    /// The workload at `path` as events name it, and its container's init
    /// pid as last looked up (to tell its main process from the others).
    pub fn workload(&self, path: &str) -> (Workload, Option<u32>) {
        let s = self.read();
        let labels = s.cgroups.get(path).map(|c| c.labels.clone()).unwrap_or_else(|| labels_for(path));
        let meta = s.containers.get(path);
        let workload = workload_of(labels, meta.map(|m| &**m));
        let init_pid = meta.filter(|m| workload.container_id.as_deref() == Some(m.id.as_str())).and_then(|m| m.init_pid);
        (workload, init_pid)
    }

    /// Visits every live tracked cgroup's workload names (for metrics).
    pub fn for_each_workload(&self, mut f: impl FnMut(&str, &Workload)) {
        let s = self.read();
        for (path, c) in &s.cgroups {
            if c.removed_at.is_none() {
                f(path, &workload_of(c.labels.clone(), s.containers.get(path).map(|m| &**m)));
            }
        }
    }

    /// Kills recorded since start, in every cgroup, gone ones included.
    pub fn total_kills(&self) -> u64 {
        self.read().kills_seen
    }

    pub fn kills_of(&self, cgroup: &str) -> u64 {
        let s = self.read();
        kills_of(&s.kills, &s.unplaced, cgroup)
    }

    /// Tracked cgroups with their kill baselines.
    pub fn kill_baselines(&self) -> Vec<KillBaseline> {
        let s = self.read();
        // Once, not per cgroup: a storm may hold a few hundred.
        let mut held: HashMap<&str, u64> = HashMap::new();
        for path in s.unplaced.cgroups() {
            *held.entry(path).or_default() += 1;
        }
        s.cgroups
            .iter()
            .filter(|(_, c)| c.removed_at.is_none())
            .filter_map(|(p, c)| {
                Some(KillBaseline {
                    path: p.clone(),
                    dir: c.dir.clone(),
                    id: c.id,
                    counted_since: c.kills_counted_since,
                    kernel_baseline: c.kernel_kills_baseline?,
                    seen_since: (counted_kills_of(&s.kills, p) + held.get(p.as_str()).copied().unwrap_or(0) + c.kernel_recounts).saturating_sub(c.seen_kills_baseline),
                    unobserved_reported: c.unobserved_reported,
                })
            })
            .collect()
    }

    /// Restores where the last run's kill accounting left off (same boot);
    /// on a new boot, every kill since boot happened while no daemon ran.
    pub fn restore_kill_accounting(&self, last: KillAccounting, same_boot: bool) {
        let mut s = self.write();
        s.host_kills.kernel_baseline = if same_boot { last.host } else { Some(0) };
        s.restored_kills = Some(if same_boot { last.cgroups } else { HashMap::new() });
    }

    /// The sampler's first scan is over: cgroups found from now on were made
    /// while the daemon runs.
    pub fn end_restore(&self) {
        self.write().restored_kills = None;
    }

    pub fn host_kills(&self) -> HostKills {
        self.read().host_kills
    }

    pub fn set_host_kills(&self, h: HostKills) {
        self.write().host_kills = h;
    }

    /// What is accounted for now, to be kept for the next run: the host's
    /// counter, and each tracked cgroup's whose counter is not zero.
    pub fn kill_accounting(&self) -> KillAccounting {
        let s = self.read();
        let seen_total = s.kills_seen;
        // Summed once: a range query per cgroup allocated a key for each of
        // 10,000 cgroups every pass.
        let mut kills_by_cgroup: HashMap<&str, u64> = HashMap::new();
        for ((path, _, _), k) in &s.kills {
            *kills_by_cgroup.entry(path.as_str()).or_default() += k.count;
        }
        for path in s.unplaced.cgroups() {
            *kills_by_cgroup.entry(path).or_default() += 1;
        }
        let mut cgroups: HashMap<String, CgroupKills> = s
            .cgroups
            .iter()
            .filter(|(_, c)| c.removed_at.is_none())
            .filter_map(|(p, c)| {
                let kills = kills_by_cgroup.get(p.as_str()).copied().unwrap_or(0);
                let accounted = c.kernel_kills_baseline? + kills.saturating_sub(c.seen_kills_baseline) + c.unobserved_reported;
                (accounted > 0).then(|| (p.clone(), CgroupKills { accounted, id: c.id }))
            })
            .collect();
        // Restored baselines of cgroups the first scan has not sampled yet
        // are still owed to the next run.
        for (path, kept) in s.restored_kills.iter().flatten() {
            cgroups.entry(path.clone()).or_insert(*kept);
        }
        KillAccounting { host: s.host_kills.accounted(seen_total), cgroups }
    }

    /// The reconciler reported unobserved kills up to `reported` here.
    pub fn note_unobserved_reported(&self, path: &str, reported: u64) {
        if let Some(c) = self.write().cgroups.get_mut(path) {
            c.unobserved_reported = reported;
        }
    }

    /// The last `window_s` seconds of a cgroup's samples.
    pub fn ramp(&self, path: &str, window_s: u32, now: Instant) -> Option<Ramp> {
        let s = self.read();
        let c = s.cgroups.get(path)?;
        (!c.history.is_empty()).then(|| Ramp { limit_bytes: c.limit_bytes, ..c.history.recent(self.now_s(now), window_s) })
    }

    pub fn labels(&self, path: &str) -> CgroupLabels {
        self.read().cgroups.get(path).map(|c| c.labels.clone()).unwrap_or_else(|| labels_for(path))
    }

    /// Visits every live tracked cgroup under one read lock (for metrics).
    pub fn for_each_cgroup(&self, mut f: impl FnMut(&str, &CgroupState)) {
        for (path, c) in &self.read().cgroups {
            if c.removed_at.is_none() {
                f(path, c);
            }
        }
    }

    pub fn counts(&self) -> CgroupCounts {
        let s = self.read();
        CgroupCounts {
            tracked: s.live.live(),
            removed_in_grace: s.cgroups.values().filter(|c| c.removed_at.is_some()).count(),
            excluded_filter: s.excluded_filter,
            excluded_cap: s.excluded_cap,
            excluded_unreadable: s.excluded_unreadable,
        }
    }

    /// Per-cgroup rows for `oomwatch status`, riskiest first.
    pub fn status(&self) -> Vec<StatusRow> {
        let now_s = self.now_s(Instant::now());
        let s = self.read();
        let mut rows: Vec<StatusRow> = s
            .cgroups
            .iter()
            .filter(|(_, c)| c.removed_at.is_none())
            .map(|(path, c)| (path, c, workload_of(c.labels.clone(), s.containers.get(path).map(|m| &**m))))
            .map(|(path, c, w)| StatusRow {
                cgroup: path.clone(),
                usage_bytes: c.usage_bytes,
                working_set_bytes: c.working_set_bytes,
                limit_bytes: c.limit_bytes,
                headroom_percent: c.headroom().map(|h| (h * 1000.0).round() / 10.0),
                oom_eta_seconds: c.forecast.map(|f| f.eta_s.round()),
                swap_bytes: c.swap_usage_bytes,
                pressure_some_avg10: s.pressure.get(path).filter(|p| p.removed_at.is_none()).map(|p| p.pressure.some.avg10),
                kills: s.kills.iter().filter(|((p, _, _), _)| p == path).map(|(_, k)| k.count).sum(),
                unit: c.labels.unit.clone(),
                container_id: c.labels.container_id.clone(),
                pod_uid: c.labels.pod_uid.clone(),
                workload: w.display_name(),
                image: w.image,
                history: c.limit_bytes.filter(|_| !c.history.is_empty()).map(|l| Ramp { limit_bytes: Some(l), ..c.history.recent(now_s, 60) }),
            })
            .collect();
        rows.sort_by(|a, b| risk_order(a).partial_cmp(&risk_order(b)).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.cgroup.cmp(&b.cgroup)));
        rows
    }
}

/// What one cheap sample changed, for the sampler's scheduling.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UsageSeen {
    /// Usage differs from the previous sample.
    pub changed: bool,
    /// Usage as a share of the hard limit (None: unlimited or untracked).
    pub fill: Option<f64>,
    /// Usage moved since the last full sample (memory.stat is stale).
    pub moved_since_full: bool,
}

/// What the reconciler compares with a cgroup's own kill counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillBaseline {
    pub path: String,
    pub dir: PathBuf,
    /// The cgroup's inode id (0: not read).
    pub id: u64,
    /// Every kill before this is in `kernel_baseline` (None: not known).
    pub counted_since: Option<Instant>,
    /// The kernel's local oom_kill counter when the model first saw the cgroup.
    pub kernel_baseline: u64,
    /// Kills oomwatch reported here since then.
    pub seen_since: u64,
    /// Unobserved kills already reported here.
    pub unobserved_reported: u64,
}

impl KillBaseline {
    /// Kills the kernel counted here (`counter_now`: its own oom_kill
    /// counter) that oomwatch has not reported yet, as kills or as
    /// unobserved ones.
    pub fn unaccounted(&self, counter_now: u64) -> u64 {
        counter_now.saturating_sub(self.kernel_baseline).saturating_sub(self.seen_since).saturating_sub(self.unobserved_reported)
    }

    /// Whether a kill could be among those unaccounted here. The counter
    /// is the cgroup's own (local), so not when the kernel named another
    /// memory cgroup as the victim's; and not when the kill came before the
    /// baseline was read, which counts it already. A kill record can reach
    /// the daemon that late: one kept in the kernel program's slot until
    /// the next kill, or queued behind a storm's.
    pub fn could_count(&self, kill: &KillClues) -> bool {
        let other_memcg = kill.memcg_id.is_some_and(|id| self.id != 0 && self.id != id);
        let counted_already = matches!((kill.at, self.counted_since), (Some(at), Some(since)) if at < since);
        !other_memcg && !counted_already
    }
}

/// What a kill record says that a cgroup's oom_kill counter must agree
/// with before the counter may name the victim's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillClues {
    /// The victim's memory cgroup id, as the kernel program read it.
    pub memcg_id: Option<u64>,
    /// When the kernel marked the victim.
    pub at: Option<Instant>,
}

/// One read of the kernel's stall map, holding the ledger.
pub struct ReclaimRead<'a> {
    model: &'a Model,
    ledger: MutexGuard<'a, Ledger>,
}

impl ReclaimRead<'_> {
    /// Adds what thread `tid`'s totals grew since the previous read to the
    /// cgroup `path` names (None: not resolvable, not counted).
    pub fn observe(&mut self, tid: u32, t: &ThreadStalls, now: Instant, path: impl FnOnce(u64) -> Option<String>) {
        self.ledger.observe(tid, t, now, path);
    }

    /// `complete`: the read saw the whole map.
    pub fn finish(mut self, complete: bool, now: Instant) {
        self.ledger.end_read(complete, self.model.config.max_cgroups);
        self.model.update_reclaim_ratios(&self.ledger, now);
    }
}

pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() < m.capacity() / 4 {
        m.shrink_to_fit();
    }
}

/// Kills seen in `cgroup`: counted in its series, or held for their report.
fn kills_of(kills: &BTreeMap<KillKey, KillSeries>, held: &unplaced::Held, cgroup: &str) -> u64 {
    counted_kills_of(kills, cgroup) + held.cgroups().filter(|c| *c == cgroup).count() as u64
}

fn counted_kills_of(kills: &BTreeMap<KillKey, KillSeries>, cgroup: &str) -> u64 {
    // Memcg and None sort first among a cgroup's series.
    kills.range((cgroup.to_owned(), Constraint::Memcg, None)..).take_while(|((c, _, _), _)| c == cgroup).map(|(_, k)| k.count).sum()
}

/// Lower sorts first: recent killers and little headroom lead; unlimited
/// cgroups follow, biggest first.
fn risk_order(r: &StatusRow) -> (u8, f64) {
    match (r.oom_eta_seconds, r.headroom_percent) {
        (Some(eta), _) => (0, eta),
        (None, Some(h)) => (1, h - if r.kills > 0 { 1000.0 } else { 0.0 }),
        (None, None) => (2, -(r.working_set_bytes as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(usage: u64, limit: Option<u64>, inactive: u64) -> MemorySample {
        MemorySample {
            usage_bytes: usage,
            limit_bytes: limit,
            inactive_file_bytes: Some(inactive),
            working_set_bytes: usage - inactive,
            ..Default::default()
        }
    }

    /// A full sample of a cgroup whose own oom_kill counter is at `n`.
    fn with_kills(n: u64) -> MemorySample {
        let mut s = sample(10 * MIB, Some(64 * MIB), 0);
        s.events_local = Some(MemoryEvents { oom_kill: Some(n), ..Default::default() });
        s
    }

    #[test]
    fn a_cgroup_made_again_counts_its_kills_from_its_own_zero() {
        let t0 = Instant::now();
        let m = Model::default();
        m.admit("/svc", 1, Path::new("/svc"));
        m.observe_full("/svc", &with_kills(2), Some(9), t0);
        m.record_kill("/svc", Constraint::Memcg, Some("hog"), t0);
        m.mark_removed("/svc", t0);
        // The same cgroup back (same inode): nothing starts again.
        m.admit("/svc", 1, Path::new("/svc"));
        assert_eq!(m.kill_baselines()[0].kernel_baseline, 2);
        m.mark_removed("/svc", t0);
        // A new cgroup under the path: its counters start at 0.
        m.admit("/svc", 7, Path::new("/svc"));
        assert!(m.kill_baselines().is_empty(), "no baseline before its first read");
        assert_eq!(m.limit_evidence("/svc", t0, None).hits_before, None, "the last cgroup's limit count is not this one's");
        m.observe_full("/svc", &with_kills(0), Some(0), t0 + Duration::from_secs(1));
        let b = &m.kill_baselines()[0];
        assert_eq!((b.id, b.kernel_baseline, b.seen_since), (7, 0, 0));
        assert_eq!(b.unaccounted(1), 1, "a kill there not seen is found there");
        assert_eq!(m.kills_of("/svc"), 1, "its series go on");
    }

    #[test]
    fn a_cgroup_made_again_while_no_daemon_ran_counts_every_kill_of_its_own_as_unseen() {
        let now = Instant::now();
        let kept = |accounted, id| CgroupKills { accounted, id };
        let last = KillAccounting {
            host: Some(40),
            cgroups: HashMap::from([("/again".to_owned(), kept(5, 7)), ("/same".to_owned(), kept(5, 8)), ("/no-id".to_owned(), kept(5, 0))]),
        };
        let m = Model::default();
        m.restore_kill_accounting(last, true);
        // Made again (inode 70): one kill of its own since, none seen.
        m.admit("/again", 70, Path::new("/again"));
        m.observe_full("/again", &with_kills(1), None, now);
        // The same cgroup (inode 8): two kills since the last run.
        m.admit("/same", 8, Path::new("/same"));
        m.observe_full("/same", &with_kills(7), None, now);
        // Kept without an id: a counter below the kept count was reset.
        m.admit("/no-id", 9, Path::new("/no-id"));
        m.observe_full("/no-id", &with_kills(1), None, now);
        let baselines: HashMap<String, u64> = m.kill_baselines().into_iter().map(|b| (b.path, b.kernel_baseline)).collect();
        assert_eq!(baselines, HashMap::from([("/again".to_owned(), 0), ("/same".to_owned(), 5), ("/no-id".to_owned(), 1)]));
        let again = m.kill_baselines().into_iter().find(|b| b.path == "/again").unwrap();
        assert_eq!(again.unaccounted(1), 1, "its kill is found there, not on /");
        m.note_unobserved_reported("/again", 1);
        assert_eq!(m.kill_accounting().cgroups["/again"], kept(1, 70), "kept for the next run with its new id");
    }

    #[test]
    fn an_unplaced_kill_is_counted_where_its_report_puts_it_or_as_published_after_the_hold() {
        let t0 = Instant::now();
        let m = Model::default();
        let unplaced = |pid: u32| unplaced::UnplacedKill {
            victim_pid: pid,
            ktime_ns: Some(u64::from(pid)),
            cgroup: "unknown".into(),
            constraint: Constraint::Unknown,
            victim_comm: Some("hog".into()),
            workload: Workload::default(),
            main_process: None,
            at: t0,
        };
        let series = |m: &Model| {
            let mut out = Vec::new();
            m.for_each_kill_count(|cgroup, constraint, n| out.push((cgroup.to_owned(), constraint, n)));
            out
        };
        m.record_unplaced_kill(unplaced(1));
        m.record_unplaced_kill(unplaced(2));
        assert_eq!(m.total_kills(), 2, "the reconciler counts them at once");
        // Its cgroup known, its constraint not: seen there at once, as the
        // reconciler and the counter fallback compare with its counter.
        m.admit("/known", 5, Path::new("/known"));
        m.observe_full("/known", &with_kills(0), None, t0);
        m.record_unplaced_kill(unplaced::UnplacedKill { cgroup: "/known".into(), ..unplaced(3) });
        assert_eq!((m.kills_of("/known"), m.total_kills()), (1, 3));
        assert_eq!(m.kill_baselines()[0].unaccounted(1), 0, "{:?}", m.kill_baselines());
        assert!(m.place_unplaced_kill(3, Some(3), "/known", Constraint::Memcg, &Workload::default(), None));
        assert_eq!(m.kills_of("/known"), 1, "placed: counted once");
        let known = ("/known".to_owned(), Constraint::Memcg, 1);
        assert_eq!(series(&m), [known.clone()], "the others held");
        assert!(m.place_unplaced_kill(1, Some(1), "/pod/c", Constraint::Memcg, &Workload::default(), Some(true)));
        assert!(!m.place_unplaced_kill(1, Some(1), "/pod/c", Constraint::Memcg, &Workload::default(), Some(true)), "counted once");
        assert_eq!(series(&m), [known.clone(), ("/pod/c".to_owned(), Constraint::Memcg, 1)]);
        assert_eq!(m.kills_of("/pod/c"), 1);
        m.count_unplaced_overdue(t0 + unplaced::HOLD - Duration::from_millis(1));
        assert_eq!(series(&m).len(), 2, "still held");
        m.count_unplaced_overdue(t0 + unplaced::HOLD);
        assert_eq!(series(&m), [known, ("/pod/c".to_owned(), Constraint::Memcg, 1), ("unknown".to_owned(), Constraint::Unknown, 1)]);
        assert!(!m.place_unplaced_kill(2, Some(2), "/late", Constraint::Memcg, &Workload::default(), None), "too late: counted as published");
        assert_eq!(m.total_kills(), 3);
    }

    #[test]
    fn kill_accounting_round_trips_through_a_restart() {
        let now = Instant::now();
        let no_id = |accounted| CgroupKills { accounted, id: 0 };
        let last = KillAccounting { host: Some(40), cgroups: HashMap::from([("/a".to_owned(), no_id(3)), ("/gone-yet".to_owned(), no_id(5))]) };
        let m = Model::default();
        m.restore_kill_accounting(last, true);
        assert_eq!(m.host_kills().kernel_baseline, Some(40));
        // /a killed twice while no daemon ran: its baseline is where the last run left it.
        assert_eq!(m.admit("/a", 1, Path::new("/a")).admission, Admission::Tracked);
        m.observe_full("/a", &with_kills(5), None, now);
        let b = m.kill_baselines();
        assert_eq!((b[0].kernel_baseline, b[0].seen_since), (3, 0));
        // A cgroup the first scan has not sampled yet keeps its restored
        // baseline in what is kept for the next run.
        let kept = m.kill_accounting();
        assert_eq!(kept.cgroups.get("/gone-yet"), Some(&CgroupKills { accounted: 5, id: 0 }), "{kept:?}");
        assert_eq!(kept.cgroups.get("/a"), Some(&CgroupKills { accounted: 3, id: 1 }), "kept with its id");
        m.note_unobserved_reported("/a", 2);
        assert_eq!(m.kill_accounting().cgroups["/a"].accounted, 5, "reported kills are accounted for");
        m.end_restore();
        assert_eq!(m.kill_accounting().cgroups.get("/gone-yet"), None, "after the first scan, a cgroup not found is gone");
        // A new boot: every kill since boot went unseen.
        let fresh = Model::default();
        fresh.restore_kill_accounting(KillAccounting { host: Some(40), cgroups: HashMap::from([("/a".to_owned(), no_id(3))]) }, false);
        assert_eq!(fresh.host_kills().kernel_baseline, Some(0));
        fresh.admit("/a", 1, Path::new("/a"));
        fresh.observe_full("/a", &with_kills(2), None, now);
        assert_eq!(fresh.kill_baselines()[0].kernel_baseline, 0);
    }

    /// The forecast and throttling passes visit only listed cgroups: after
    /// every tick of a long pseudo-random run (levels that move and stop,
    /// limits set, raised and lifted, memory.high counters, removals and
    /// returns), each cgroup's forecast and throttling are what a pass over
    /// every cgroup gives.
    #[test]
    fn the_per_tick_passes_visit_only_what_moves_and_miss_nothing() {
        let defaults = ForecastParams::default();
        passes_match_a_pass_over_every_cgroup(defaults);
        // At the edge `check` accepts (0): no level counts as still, and
        // every limited cgroup stays listed.
        passes_match_a_pass_over_every_cgroup(ForecastParams { min_growth_fraction: 0.0, ..defaults });
    }

    fn passes_match_a_pass_over_every_cgroup(forecast: ForecastParams) {
        // No grace (the config allows 0 s): a removed cgroup can leave and
        // come back between two passes.
        let config = ModelConfig { history_len: 6, removal_grace: Duration::ZERO, forecast, ..ModelConfig::default() };
        let params = config.forecast;
        let m = Model::new(config);
        let t0 = Instant::now();
        let paths: Vec<String> = (0..24).map(|i| format!("/c{i}")).collect();
        for (i, p) in paths.iter().enumerate() {
            m.admit(p, i as u64, Path::new(p));
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // Reference throttles, ticked for every live cgroup every tick.
        let mut throttles: HashMap<String, throttle::Throttle> = HashMap::new();
        let mut high: HashMap<String, u64> = HashMap::new();
        let mut levels: HashMap<String, u64> = HashMap::new();
        let (mut forecasts_seen, mut edges_seen, mut settled_seen) = (0, 0, 0);
        for tick in 0..600u32 {
            let now = t0 + Duration::from_secs(u64::from(tick));
            // Removed cgroups leave after the grace; one of the same name
            // that comes back later (this tick too) starts afresh.
            if tick % 7 == 0 {
                m.expire(now, |_| false);
                throttles.retain(|p, _| m.read().cgroups.contains_key(p));
            }
            for (i, p) in paths.iter().enumerate() {
                // A third of the cgroups are read in full often (their
                // `high` counters make episodes), the rest seldom (their
                // levels move and settle between full reads).
                let full_read = if i % 3 == 0 { 25 } else { 2 };
                match next(100) {
                    0 => m.mark_removed(p, now),
                    1 => {
                        m.admit(p, i as u64, Path::new(p));
                    }
                    2 => m.observe_limit(p, [None, Some(8 * MIB), Some(64 * MIB)][next(3) as usize]),
                    r if r < 3 + full_read => {
                        let h = high.entry(p.clone()).or_default();
                        *h += next(3);
                        let mut sm = sample([4, 7, 9, 30][next(4) as usize] * MIB, [None, Some(8 * MIB), Some(64 * MIB)][next(3) as usize], 0);
                        sm.high_bytes = Some(16 * MIB);
                        sm.events_local = Some(MemoryEvents { high: Some(*h), ..Default::default() });
                        m.observe_full(p, &sm, None, now);
                    }
                    // Most reads find the level where it was; some climb
                    // towards a limit, some jump past one.
                    r => {
                        let level = levels.entry(p.clone()).or_insert(4 * MIB);
                        if r < 12 {
                            *level = (*level + next(3) * MIB / 4) % (70 * MIB);
                        } else if r < 15 {
                            *level = [4, 7, 30][next(3) as usize] * MIB;
                        }
                        m.observe_usages(&[(p, *level)], now);
                    }
                }
            }
            m.update_forecasts(now);
            let edges = m.update_throttling(now);
            let s = m.read();
            settled_seen += s.cgroups.len() - s.forecast_due.len();
            // Each listed cgroup once, flagged; each flagged one listed.
            for (due, listed) in [(&s.forecast_due, (|c: &CgroupState| c.forecast_listed) as fn(&CgroupState) -> bool), (&s.throttle_due, |c| c.throttle_listed)] {
                let mut paths = due.paths().to_vec();
                paths.sort();
                paths.dedup();
                assert_eq!(paths.len(), due.len(), "a path listed twice at tick {tick}");
                assert!(paths.iter().all(|p| s.cgroups.get(p).is_some_and(|c| listed(c))), "a listed path unflagged or gone at tick {tick}");
                assert_eq!(s.cgroups.values().filter(|c| listed(c)).count(), due.len(), "a flagged cgroup not listed at tick {tick}");
            }
            // What `for_each_signalled` (the alert rules' pass) relies on.
            assert!(s.cgroups.values().all(|c| c.forecast.is_none() || c.forecast_listed), "a forecast on an unlisted cgroup at tick {tick}");
            let mut points = Vec::new();
            for (p, c) in &s.cgroups {
                let full = c.forecast_now(p, &s.pressure, &mut points, m.now_s(now), &params);
                assert_eq!(c.forecast, full, "{p} at tick {tick}");
                forecasts_seen += usize::from(full.is_some());
            }
            let mut want: Vec<(String, throttle::ThrottleChange)> = Vec::new();
            for (p, c) in s.cgroups.iter().filter(|(_, c)| c.removed_at.is_none()) {
                if let Some(change) = throttles.entry(p.clone()).or_default().tick(c.high_hits, now) {
                    want.push((p.clone(), change));
                }
                assert_eq!(c.throttle, throttles[p], "{p} at tick {tick}");
            }
            let mut got: Vec<(String, throttle::ThrottleChange)> = edges.into_iter().map(|e| (e.path, e.change)).collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "tick {tick}");
            edges_seen += got.len();
        }
        let seen = format!("{forecasts_seen} forecasts, {settled_seen} settled, {edges_seen} edges");
        // Settled: removed or unlimited ones always; still ones only where
        // a level can be still.
        let settled_min = if params.min_growth_fraction > 0.0 { 1000 } else { 10 };
        assert!(forecasts_seen > 1000 && settled_seen > settled_min && edges_seen > 20, "the run exercised both passes: {seen}");
    }

    /// A listed cgroup removed and swept before the next pass (no grace)
    /// and then back under its name starts unlisted, as a new one does.
    #[test]
    fn a_cgroup_swept_before_a_pass_leaves_the_lists() {
        let m = Model::new(ModelConfig { removal_grace: Duration::ZERO, ..ModelConfig::default() });
        let t0 = Instant::now();
        m.admit("/a", 1, Path::new("/a"));
        let mut sm = sample(4 * MIB, Some(8 * MIB), 0);
        sm.events_local = Some(MemoryEvents { high: Some(3), ..Default::default() });
        m.observe_full("/a", &sm, None, t0);
        m.observe_usages(&[("/a", 5 * MIB)], t0 + Duration::from_secs(1));
        let listed = |m: &Model| (m.read().forecast_due.len(), m.read().throttle_due.len());
        assert_eq!(listed(&m), (1, 1), "a moving level and a new `high` counter");
        m.mark_removed("/a", t0);
        m.expire(t0 + Duration::from_secs(2), |_| false);
        assert_eq!(listed(&m), (0, 0));
        m.admit("/a", 2, Path::new("/a"));
        m.observe_usages(&[("/a", 5 * MIB)], t0 + Duration::from_secs(3));
        assert_eq!(listed(&m), (0, 0), "back, read once, no ceiling: nothing to do");
        m.update_forecasts(t0 + Duration::from_secs(3));
        assert!(m.update_throttling(t0 + Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn counts_kills_per_cgroup_and_constraint() {
        let m = Model::default();
        let now = Instant::now();
        m.record_kill("/a", Constraint::Memcg, Some("hog"), now);
        m.record_kill("/a", Constraint::Memcg, Some("hog2"), now);
        m.record_kill("/b", Constraint::Global, None, now);
        let mut seen = Vec::new();
        m.for_each_kill_count(|c, k, n| seen.push((c.to_owned(), k, n)));
        assert_eq!(seen, vec![("/a".to_owned(), Constraint::Memcg, 2), ("/b".to_owned(), Constraint::Global, 1)]);
        assert_eq!(m.total_kills(), 3);
    }

    #[test]
    fn filters_and_cap_decide_admission() {
        let m = Model::new(ModelConfig {
            max_cgroups: 2,
            include: vec![glob::Pattern::new("/kubepods*").unwrap()],
            exclude: vec![glob::Pattern::new("*/besteffort*").unwrap()],
            ..Default::default()
        });
        assert_eq!(m.admit("/system.slice/x", 1, Path::new("/x")).admission, Admission::Filtered);
        assert_eq!(m.admit("/kubepods/besteffort/p", 2, Path::new("/x")).admission, Admission::Filtered);
        assert_eq!(m.admit("/kubepods/a", 3, Path::new("/x")).admission, Admission::Tracked);
        assert_eq!(m.admit("/kubepods/b", 4, Path::new("/x")).admission, Admission::Tracked);
        assert_eq!(m.admit("/kubepods/c", 5, Path::new("/x")).admission, Admission::OverCap);
        // A removed cgroup frees its slot.
        m.mark_removed("/kubepods/a", Instant::now());
        assert_eq!(m.admit("/kubepods/c", 5, Path::new("/x")).admission, Admission::Tracked);
    }

    /// A crowd of deep cgroups made first cannot keep a workload made
    /// later from being tracked: at the cap, a shallower cgroup takes the
    /// place of the deepest one using least memory; one as deep waits.
    #[test]
    fn at_the_cap_a_shallower_cgroup_takes_the_place_of_the_deepest() {
        let m = Model::new(ModelConfig { max_cgroups: 3, ..Default::default() });
        let t0 = Instant::now();
        for p in ["/tenant", "/tenant/x/a", "/tenant/x/b"] {
            assert_eq!(m.admit(p, 1, Path::new("/x")), Admission::Tracked.into());
        }
        m.observe_usage("/tenant/x/a", 10 * MIB, None, None, t0);
        let pod = m.admit("/pod", 2, Path::new("/x"));
        assert_eq!(pod, Admitted { admission: Admission::Tracked, displaced: Some("/tenant/x/b".into()) }, "the emptier of the deepest");
        assert!(!m.is_tracked("/tenant/x/b") && m.is_tracked("/pod"));
        // As deep as the deepest left: it waits, whether new or back from removal.
        assert_eq!(m.admit("/tenant/x/c", 3, Path::new("/x")), Admission::OverCap.into());
        assert_eq!(m.admit("/tenant/x/b", 3, Path::new("/x")), Admission::OverCap.into());
        assert_eq!(m.admit("/pod2", 4, Path::new("/x")).displaced.as_deref(), Some("/tenant/x/a"));
        assert_eq!(m.admit("/pod3", 5, Path::new("/x")), Admission::OverCap.into(), "/tenant, /pod, /pod2 are all as shallow");
        assert_eq!(m.counts().tracked, 3);
        assert_eq!(m.counts().excluded_cap, 2);
        // A slot given back is taken by the next one, however deep.
        m.mark_removed("/pod2", t0);
        assert_eq!(m.admit("/tenant/x/a", 1, Path::new("/x")), Admission::Tracked.into());
    }

    /// Pressure-only cgroups (a hybrid host's unified tree) share the rule:
    /// a shallower one takes the place of the deepest, the calmest first.
    #[test]
    fn pressure_only_cgroups_keep_the_shallowest_at_the_cap() {
        let m = Model::new(ModelConfig { max_cgroups: 2, ..Default::default() });
        let psi = |avg10: f64| Pressure { some: crate::readers::PsiLine { avg10, avg60: 0.0, avg300: 0.0, total_us: 0 }, full: None };
        for (path, avg10) in [("/t/x/a", 5.0), ("/t/x/b", 0.0)] {
            assert_eq!(m.admit_pressure(path), Admission::Tracked.into());
            m.observe_pressure(path, psi(avg10));
        }
        assert_eq!(m.admit_pressure("/t/x/c"), Admission::OverCap.into());
        assert_eq!(m.admit_pressure("/pod").displaced.as_deref(), Some("/t/x/b"));
        m.observe_pressure("/pod", psi(1.0));
        assert_eq!(m.pressure_of("/t/x/b"), None);
        assert_eq!(m.admit_pressure("/t/x/b"), Admission::OverCap.into(), "as deep as /t/x/a: it waits");
        m.mark_pressure_removed("/t/x/a", Instant::now());
        assert_eq!(m.admit_pressure("/t/x/b"), Admission::Tracked.into());
    }

    /// Cgroups made and removed as fast as a tenant can: the removed ones
    /// kept for the grace period never outnumber the cap, and the first to
    /// go are those that were gone before their second sample.
    #[test]
    fn removed_cgroups_kept_for_the_grace_period_are_bounded() {
        let m = Model::new(ModelConfig { max_cgroups: 8, ..Default::default() });
        let t0 = Instant::now();
        m.admit("/lived", 1, Path::new("/x"));
        for k in 0..3u64 {
            m.observe_usage("/lived", (k + 1) * MIB, None, None, t0 + Duration::from_secs(k));
        }
        m.mark_removed("/lived", t0 + Duration::from_secs(3));
        for i in 0..1000u64 {
            let path = format!("/tenant/c{i}");
            m.admit(&path, i + 2, Path::new("/x"));
            m.observe_usage(&path, 0, None, None, t0 + Duration::from_secs(4));
            m.mark_removed(&path, t0 + Duration::from_secs(4));
            m.observe_pressure(&path, Pressure { some: crate::readers::PsiLine { avg10: 0.0, avg60: 0.0, avg300: 0.0, total_us: 0 }, full: None });
            m.mark_pressure_removed(&path, t0 + Duration::from_secs(4));
            let c = m.counts();
            assert!(c.removed_in_grace <= 8, "{i}: {} removed kept", c.removed_in_grace);
            assert!(m.read().pressure.len() <= 8, "{i}: pressure");
        }
        assert!(m.read().cgroups.contains_key("/lived"), "a cgroup that lived is kept over the churn");
        assert_eq!(m.read().children.of("/tenant").count(), m.read().cgroups.keys().filter(|p| p.starts_with("/tenant/")).count());
    }

    /// A gone cgroup's kill series leaves the table after the grace
    /// period; its kills stay counted, or the reconciler would take them
    /// for kills it never saw.
    #[test]
    fn kills_stay_counted_after_their_series_leave() {
        let m = Model::new(ModelConfig { max_cgroups: 64, ..Default::default() });
        let t0 = Instant::now();
        m.admit("/pod", 1, Path::new("/x"));
        m.record_kill("/pod", Constraint::Memcg, Some("hog"), t0);
        m.mark_removed("/pod", t0);
        m.expire(t0 + Duration::from_secs(601), |_| false);
        assert_eq!(m.kills_of("/pod"), 0, "the series left");
        assert_eq!(m.total_kills(), 1);
        // A kill in a new cgroup each time: the series of untracked cgroups
        // are bounded, the tracked one's kept, every kill counted.
        m.admit("/tracked", 2, Path::new("/x"));
        m.record_kill("/tracked", Constraint::Memcg, None, t0);
        for i in 0..500u64 {
            m.record_kill(&format!("/tenant/c{i}"), Constraint::Memcg, None, t0 + Duration::from_millis(i));
            assert!(m.read().kills.len() <= 64 + 1, "{i}: {} series", m.read().kills.len());
        }
        assert_eq!(m.kills_of("/tracked"), 1);
        assert_eq!(m.kills_of("/tenant/c499"), 1, "the newest are kept");
        assert_eq!(m.total_kills(), 502);
    }

    /// The live counts by depth the cap decides on are what counting the
    /// cgroups gives, over a long pseudo-random run of admissions,
    /// removals, rejections and expiries; none tracked is deeper than one
    /// refused at the cap.
    #[test]
    fn the_caps_live_counts_follow_every_change() {
        let m = Model::new(ModelConfig { max_cgroups: 6, removal_grace: Duration::from_secs(5), ..Default::default() });
        let paths: Vec<String> = (0..24).map(|i| ["/a", "/a/b", "/a/b/c", "/d/e/f/g"][i % 4].to_owned() + &format!("{i}")).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let t0 = Instant::now();
        let (mut refused, mut displaced) = (0, 0);
        for step in 0..5000u64 {
            let now = t0 + Duration::from_secs(step);
            let p = &paths[next(paths.len() as u64) as usize];
            match next(8) {
                0..=3 => match m.admit(p, step, Path::new("/x")) {
                    Admitted { admission: Admission::OverCap, .. } => {
                        refused += 1;
                        let s = m.read();
                        let deepest = s.cgroups.iter().filter(|(_, c)| c.removed_at.is_none()).map(|(q, _)| cap::depth(q)).max();
                        assert!(deepest.is_some_and(|d| d <= cap::depth(p)), "step {step}: {p} refused with a deeper one tracked");
                    }
                    Admitted { displaced: Some(d), .. } => {
                        displaced += 1;
                        assert!(cap::depth(&d) > cap::depth(p), "step {step}: {d} for {p}");
                    }
                    _ => {}
                },
                4 | 5 => m.mark_removed(p, now),
                6 => m.reject(p, now),
                _ => m.expire(now, |_| false),
            }
            let s = m.read();
            let live: Vec<&String> = s.cgroups.iter().filter(|(_, c)| c.removed_at.is_none()).map(|(q, _)| q).collect();
            assert_eq!(s.live.live(), live.len(), "step {step}");
            assert!(live.len() <= 6, "step {step}: {} tracked", live.len());
            let mut probe = LiveDepths::default();
            live.iter().for_each(|q| probe.add(q));
            for q in &paths {
                assert_eq!(s.live.room_for(q, 6), probe.room_for(q, 6), "step {step}, {q}");
            }
        }
        assert!(refused > 100 && displaced > 100, "the run reached the cap both ways: {refused} refused, {displaced} displaced");
    }

    #[test]
    fn working_set_tracks_usage_between_full_samples() {
        let m = Model::default();
        let t0 = Instant::now();
        m.admit("/c", 1, Path::new("/x"));
        m.observe_full("/c", &sample(100 * MIB, Some(200 * MIB), 30 * MIB), None, t0);
        m.observe_usage("/c", 150 * MIB, None, None, t0 + Duration::from_secs(1));
        let mut ws = 0;
        m.for_each_cgroup(|_, c| ws = c.working_set_bytes);
        assert_eq!(ws, 120 * MIB);
        let ramp = m.ramp("/c", 60, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(ramp.working_set_bytes, vec![70 * MIB, 120 * MIB]);
    }

    #[test]
    fn unlimited_is_trusted_only_after_the_read_at_creation() {
        let m = Model::default();
        let t = Instant::now();
        m.admit("/c", 1, Path::new("/x"));
        // Read at mkdir: no limit yet (it is written right after).
        m.observe_full("/c", &sample(10, None, 0), None, t);
        assert!(!m.known_unlimited("/c", t), "one read at creation proves nothing");
        m.observe_full("/c", &sample(10, None, 0), None, t + Duration::from_secs(1));
        assert!(m.known_unlimited("/c", t + Duration::from_secs(1)));
        assert!(!m.known_unlimited("/c", t + Duration::from_secs(120)), "an old read proves nothing");
    }

    #[test]
    fn limit_hits_are_remembered_for_a_while() {
        let m = Model::default();
        let t0 = Instant::now();
        m.admit("/c", 1, Path::new("/x"));
        m.observe_usage("/c", 10, None, Some(3), t0);
        assert!(!m.limit_evidence("/c", t0, None).recently_hit);
        m.observe_usage("/c", 10, None, Some(4), t0 + Duration::from_secs(1));
        let e = m.limit_evidence("/c", t0 + Duration::from_secs(2), None);
        assert!(e.recently_hit);
        assert_eq!(e.hits_before, Some(4));
        assert!(!m.limit_evidence("/c", t0 + Duration::from_secs(30), None).recently_hit);
    }

    /// A daemon that starts while a cgroup is being killed reads its
    /// counter for the first time after a kill whose record still waits:
    /// that count holds the kill's hit, so "it did not move" says nothing.
    #[test]
    fn a_limit_count_read_after_the_kill_is_no_evidence_of_it() {
        let m = Model::default();
        let t0 = Instant::now();
        let after = |s| t0 + Duration::from_secs(s);
        m.admit("/c", 1, Path::new("/x"));
        m.observe_usage("/c", 10, None, Some(3), after(2));
        assert_eq!(m.limit_evidence("/c", after(3), Some(after(1))).hits_before, None, "read after the kill");
        assert_eq!(m.limit_evidence("/c", after(3), Some(after(2))).hits_before, None, "read at the kill's moment");
        assert_eq!(m.limit_evidence("/c", after(3), Some(after(5))).hits_before, Some(3), "read before the kill");
        assert_eq!(m.limit_evidence("/c", after(3), None).hits_before, Some(3), "no kill time: as before");
    }

    #[test]
    fn removed_cgroups_expire_after_grace_with_their_kills() {
        let m = Model::new(ModelConfig { removal_grace: Duration::from_secs(10), ..Default::default() });
        let t0 = Instant::now();
        m.admit("/c", 1, Path::new("/x"));
        m.record_kill("/c", Constraint::Memcg, None, t0);
        m.mark_removed("/c", t0);
        m.expire(t0 + Duration::from_secs(5), |_| false);
        assert_eq!(m.counts().removed_in_grace, 1);
        assert_eq!(m.kills_of("/c"), 1);
        m.expire(t0 + Duration::from_secs(11), |_| false);
        assert_eq!(m.counts().removed_in_grace, 0);
        assert_eq!(m.kills_of("/c"), 0);
    }

    #[test]
    fn status_puts_the_riskiest_first() {
        let m = Model::default();
        let t = Instant::now();
        for (p, usage, limit) in [("/roomy", 10 * MIB, Some(100 * MIB)), ("/tight", 95 * MIB, Some(100 * MIB)), ("/free", 500 * MIB, None)] {
            m.admit(p, 1, Path::new("/x"));
            m.observe_full(p, &sample(usage, limit, 0), None, t);
        }
        let order: Vec<String> = m.status().into_iter().map(|r| r.cgroup).collect();
        assert_eq!(order, vec!["/tight", "/roomy", "/free"]);
    }

    /// Reclaim ratios come from the ledger's cgroups alone, and the alert
    /// rules' pass visits the cgroups with a ratio or a forecast, not the
    /// still ones.
    #[test]
    fn the_signalled_pass_visits_stalled_and_forecast_cgroups_only() {
        let m = Model::default();
        for (i, p) in ["/stalled", "/still", "/gone"].iter().enumerate() {
            assert_eq!(m.admit(p, i as u64 + 1, Path::new(p)).admission, Admission::Tracked);
        }
        let t0 = Instant::now();
        let stalled = |total_ns: u64| ThreadStalls { born_ns: 1, memcg_id: 1, tgid: 1, count: 1, total_ns, ..Default::default() };
        let name = |id: u64| (id == 1).then(|| "/stalled".to_owned());
        for (k, total_ns) in [(0u64, 0u64), (1, 250_000_000)] {
            let mut read = m.begin_reclaim_read();
            read.observe(7, &stalled(total_ns), t0 + Duration::from_secs(k), name);
            read.finish(true, t0 + Duration::from_secs(k));
        }
        let mut seen = Vec::new();
        m.for_each_signalled(|p, c| seen.push((p.to_owned(), c.reclaim_ratio.is_some())));
        assert_eq!(seen, vec![("/stalled".to_owned(), true)]);
        assert_eq!(m.read().cgroups["/still"].reclaim_ratio, None);
    }

}
