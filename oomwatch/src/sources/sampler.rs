//! The sampler: finds memory cgroups (inotify on directories, with a slow
//! rescan as a safety net), keeps their hot files open, and feeds the model.
//!
//! Cost is the point of this file. Every tracked cgroup gets one cheap usage
//! read per interval (a pread on an open fd, about 0.5 us); the expensive
//! full read (memory.stat, limits) happens on a slow rotation, more often
//! for cgroups near their limit, and at once when the kernel says a limit
//! was hit (inotify on v2 memory.events.local). It runs on its own thread so
//! a slow cgroupfs read can never delay OOM events.

use std::{
    collections::{HashMap, VecDeque},
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};

use super::{episodes::throttled_event, workloads::WorkloadFeed};
use crate::{
    kernel::usage_walk::UsageWalk,
    model::{Admission, Admitted, Model, NodeState, bus::EventBus, counters::DaemonCounters, tree},
    readers::{
        CgroupLayout, CgroupMode, CgroupPoller, CgroupVersion, PressurePoller, path_string, read_limit_above, read_meminfo, read_memory,
        read_pressure,
    },
};

/// Every tracked cgroup's usage in one pass, each tick, where cgroupfs
/// needs a read per cgroup: the kernel's usage walk (a BPF cgroup
/// iterator, `kernel::usage_walk`).
pub trait UsageSource: Send {
    /// Puts a cgroup (by its inode id) on the walk; its slot, or `None`
    /// when there is no room.
    fn track(&mut self, cgroup_id: u64) -> Option<u32>;
    fn forget(&mut self, cgroup_id: u64, slot: u32);
    /// One pass; afterwards `usage_bytes` answers for what it reached.
    /// Returns the cgroups it visited, tracked or not.
    fn run(&mut self) -> Result<u64, String>;
    /// The last pass's usage of `slot`; `None` when it did not reach it.
    fn usage_bytes(&self, slot: u32) -> Option<u64>;
}

impl UsageSource for UsageWalk {
    fn track(&mut self, cgroup_id: u64) -> Option<u32> {
        UsageWalk::track(self, cgroup_id)
    }

    fn forget(&mut self, cgroup_id: u64, slot: u32) {
        UsageWalk::forget(self, cgroup_id, slot);
    }

    fn run(&mut self) -> Result<u64, String> {
        UsageWalk::run(self).map_err(|e| e.to_string())
    }

    fn usage_bytes(&self, slot: u32) -> Option<u64> {
        UsageWalk::usage_bytes(self, slot)
    }
}

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub interval: Duration,
    /// Every cgroup gets a full read at least this often.
    pub full_every: Duration,
    /// Cgroups above this share of their limit get a full read every tick.
    pub hot_fraction: f64,
    pub rescan_every: Duration,
    pub max_depth: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            full_every: Duration::from_secs(30),
            hot_fraction: 0.8,
            rescan_every: Duration::from_secs(60),
            max_depth: 32,
        }
    }
}

/// Removed cgroups leave the model after their grace period; this is how
/// often that is checked between full rescans.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// The sampler's own state of a cgroup: open files and when to read them
/// next. What was read lives in the model.
struct Tracked {
    poller: CgroupPoller,
    next_full: Instant,
    /// Ticks in a row with unchanged usage; idle cgroups are read less often.
    idle_ticks: u32,
    /// The rescan that last found it (`Sampler::scans`): one not found by
    /// the latest is gone.
    found_in_scan: u64,
    next_usage: Instant,
    /// A limit (hard or memory.high) of its own, as of its last full read.
    limited: bool,
    /// A limit on it or on an ancestor: it can be caught in a memcg OOM.
    /// True until a full read says otherwise.
    can_oom: bool,
    /// Its inode id (the kernel's cgroup id), and its slot on the usage
    /// walk (`None`: no walk, or no room on it).
    cgroup_id: u64,
    walk_slot: Option<u32>,
    /// The usage last handed to the model: a walk that reads another one
    /// brings an idle cgroup back to every tick at once.
    last_usage: Option<u64>,
    /// The last walk read it. With a stride of `WALK_EVERY` ticks or more
    /// it is then read by walks only, never from its file.
    walk_reached: bool,
    /// Ticks between its reads, as of the last.
    stride: u32,
    /// The next full read is due even if its usage has not moved: it was
    /// just made, and whoever made it writes its limits right after.
    relook: bool,
}

/// Idle cgroups (usage unchanged for this many ticks) are read every
/// `IDLE_STRIDE` ticks instead of every tick; every `FAR_IDLE_STRIDE` when
/// below `FAR_FROM_LIMIT_FRACTION` of their own hard limit, or without one
/// (`memory.high` throttles and does not kill; an ancestor's limit is
/// forecast from the ancestor's own usage, read on its own stride); every `UNLIMITED_IDLE_STRIDE` when no limit on them or an
/// ancestor can put them in a memcg OOM (then their usage feeds only
/// metrics, still fresher than a 15 s scrape). Any change resets them.
/// Near its limit a cgroup is read every tick, idle or not.
const IDLE_AFTER: u32 = 10;
const IDLE_STRIDE: u32 = 3;
const FAR_IDLE_STRIDE: u32 = 5;
const UNLIMITED_IDLE_STRIDE: u32 = 10;
/// Above this share of its limit a cgroup is read every tick.
const NEAR_LIMIT_FRACTION: f64 = 0.5;
/// Below this share of its limit an idle cgroup must grow by three times
/// its usage, and by three quarters of the limit, to be killed: a climb
/// that long is seen 2 s later at most and still forecast.
const FAR_FROM_LIMIT_FRACTION: f64 = 0.25;
/// The longest an unchanged cgroup goes without a full read.
const FULL_MAX_STALE: Duration = Duration::from_secs(300);
/// Ticks between usage walks. A walk reads every cgroup (about 1 µs each
/// on this project's test machine, cold cache: 11 ms for 10,000), so it
/// runs as often as the idle cgroups far from a limit are read, and those
/// (and the unlimited ones) are then read by walks only: one that moves is
/// read at the next walk, sooner than its idle stride. Cgroups read more
/// often (moving, near or at a quarter of their limit) stay on their files,
/// and take the walk's value on the ticks it runs.
const WALK_EVERY: u32 = FAR_IDLE_STRIDE;
/// A walk visits every cgroup under the root, tracked or not (over
/// `--max-cgroups`, or left out by `--include`/`--exclude`). Visiting more
/// than this many per cgroup on it costs more than the file reads it saves
/// (1.1 µs a visit, against about 3 µs of file reads saved per idle
/// cgroup every 5 ticks): the walk then pauses for `WALK_PAUSE` walks.
/// A walk of fewer than `WALK_CHEAP_VISITS` costs about a millisecond
/// every 5 s, and always runs.
const WALK_MAX_VISITS_PER_CGROUP: u64 = 2;
const WALK_CHEAP_VISITS: u64 = 1000;
const WALK_PAUSE: u32 = 60;
/// Cgroups made within one tick that wait for it at most (the inotify
/// queue's default length).
const MADE_MAX: usize = 16_384;
/// Limit hits cannot happen far from the limit: v1 counters are polled
/// only above this share of it.
const FAILCNT_POLL_FRACTION: f64 = 0.5;

pub struct Sampler {
    layout: CgroupLayout,
    model: Arc<Model>,
    config: SamplerConfig,
    tracked: HashMap<String, Tracked>,
    /// The last error opening a cgroup's files, and the count of such
    /// cgroups last warned about.
    last_unreadable: Option<String>,
    unreadable_warned: usize,
    /// Open memory.pressure files, by path in the pressure tree.
    pressure: HashMap<String, PressurePoller>,
    inotify: Option<Inotify>,
    watches: Option<Watches>,
    /// What each watch is on: a directory (new children) or a v2
    /// memory.events.local file (limit hits).
    watched: HashMap<WatchDescriptor, Watched>,
    spread: u64,
    proc_root: PathBuf,
    /// Woken after every sampling pass: the alert rules evaluate fresh data.
    sampled: Option<Arc<tokio::sync::Notify>>,
    /// Told of every cgroup found, for the names of its container.
    workloads: Option<WorkloadFeed>,
    /// Where throttling at memory.high is published (`throttled` events).
    throttling: Option<(Arc<EventBus>, Arc<DaemonCounters>)>,
    /// A limit on the memory root or above it (a container's own cgroup):
    /// every cgroup here can be caught in a memcg OOM.
    root_limited: bool,
    /// Rescans begun.
    scans: u64,
    /// Every cgroup's usage in one pass of a BPF cgroup iterator; without
    /// it, one cgroupfs read per cgroup.
    walk: Option<Box<dyn UsageSource>>,
    /// The walk failed or cost more than it saved last time (said once in
    /// the log until it works).
    walk_failing: bool,
    next_walk: Instant,
    reads: Option<Arc<DaemonCounters>>,
    /// A cgroup was pushed out at the cap by a shallower one (said once).
    displacing_said: bool,
    /// Cgroups made since the last tick, opened at the next one if they
    /// still exist: whoever makes a cgroup writes its limits right after
    /// (read then, not before), and one made and removed within a tick
    /// (a tenant churning cgroups) costs no file opened.
    made: Vec<(Tree, Found)>,
}

/// A cgroup as the model names it, and its directory. Names are bytes
/// chosen by whoever made the cgroup: the path is a display form (see
/// `readers::path_string`), the directory the real name, so a cgroup whose
/// name is not UTF-8 is read like any other.
#[derive(Clone, Debug)]
struct Found {
    path: String,
    dir: PathBuf,
}

impl Found {
    fn child(&self, name: &OsStr) -> Found {
        Found { path: tree::join(&self.path, &path_string(name.as_bytes())), dir: self.dir.join(name) }
    }
}

#[derive(Clone)]
struct Watched {
    tree: Tree,
    cgroup: Found,
    kind: WatchKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WatchKind {
    Dir,
    LocalEvents,
}

/// The memory hierarchy, or (on hybrid hosts only) the unified one, which
/// carries per-cgroup PSI without the memory controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tree {
    Memory,
    Unified,
}

impl Sampler {
    pub fn new(layout: CgroupLayout, model: Arc<Model>, config: SamplerConfig) -> Self {
        let inotify = match Inotify::init() {
            Ok(i) => Some(i),
            Err(e) => {
                log::warn!("inotify unavailable ({e}); new cgroups are found by rescans every {:?}", config.rescan_every);
                None
            }
        };
        let watches = inotify.as_ref().map(|i| i.watches());
        Self {
            layout,
            model,
            config,
            tracked: HashMap::new(),
            last_unreadable: None,
            unreadable_warned: 0,
            pressure: HashMap::new(),
            inotify,
            watches,
            watched: HashMap::new(),
            spread: 0,
            proc_root: PathBuf::from("/proc"),
            sampled: None,
            workloads: None,
            throttling: None,
            root_limited: false,
            scans: 0,
            walk: None,
            walk_failing: false,
            next_walk: Instant::now(),
            reads: None,
            displacing_said: false,
            made: Vec::new(),
        }
    }

    /// Reads every tracked cgroup's usage with `walk` (files only where
    /// the walk does not reach).
    pub fn walk_usages(mut self, walk: Box<dyn UsageSource>) -> Self {
        self.walk = Some(walk);
        self
    }

    /// Counts usage reads by source (`oomwatch_cgroup_usage_reads_total`).
    pub fn count_reads(mut self, counters: Arc<DaemonCounters>) -> Self {
        self.reads = Some(counters);
        self
    }

    /// Names the workloads of the cgroups found (see `sources::workloads`).
    pub fn name_workloads(mut self, feed: WorkloadFeed) -> Self {
        self.workloads = Some(feed);
        self
    }

    /// Publishes the edges of throttling at memory.high seen each tick.
    pub fn publish_throttling(mut self, bus: Arc<EventBus>, counters: Arc<DaemonCounters>) -> Self {
        self.throttling = Some((bus, counters));
        self
    }

    pub fn notify_after_each_pass(mut self, n: Arc<tokio::sync::Notify>) -> Self {
        self.sampled = Some(n);
        self
    }

    fn hybrid(&self) -> bool {
        self.layout.mode == CgroupMode::Hybrid && self.layout.unified_root.is_some()
    }

    fn root_of(&self, tree: Tree) -> &Path {
        match tree {
            Tree::Memory => &self.layout.memory_root,
            Tree::Unified => self.layout.unified_root.as_deref().unwrap_or(&self.layout.memory_root),
        }
    }

    /// Runs forever on the calling thread.
    pub fn run(mut self) {
        self.scan(Instant::now());
        // The cgroups of the first scan took the last run's kill baselines.
        self.model.end_restore();
        let mut next_tick = Instant::now();
        let mut next_scan = Instant::now() + self.config.rescan_every;
        let mut next_expire = Instant::now() + EXPIRE_EVERY;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.discover_made(now);
                self.sample_all(now);
                next_tick += self.config.interval;
                if next_tick < now {
                    next_tick = now + self.config.interval;
                }
            }
            if now >= next_scan {
                self.scan(now);
                next_scan = now + self.config.rescan_every;
            } else if now >= next_expire {
                let root = self.layout.memory_root.clone();
                crate::model::shrink(&mut self.tracked);
                crate::model::shrink(&mut self.pressure);
                crate::model::shrink(&mut self.watched);
                self.model.expire(now, |p| root.join(p.trim_start_matches('/')).exists());
                next_expire = now + EXPIRE_EVERY;
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            self.wait_inotify(wait, &mut buf);
        }
    }

    fn wait_inotify(&mut self, wait: Duration, buf: &mut [u8]) {
        let Some(inotify) = self.inotify.as_mut() else {
            std::thread::sleep(wait);
            return;
        };
        use std::os::fd::AsRawFd as _;
        let mut pfd = libc::pollfd { fd: inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(i32::MAX as u128) as i32) };
        if n <= 0 {
            return;
        }
        let events: Vec<(WatchDescriptor, inotify::EventMask, Option<std::ffi::OsString>)> = match inotify.read_events(buf) {
            Ok(evs) => evs.map(|e| (e.wd, e.mask, e.name.map(OsStr::to_os_string))).collect(),
            Err(_) => return,
        };
        let now = Instant::now();
        for (wd, mask, name) in events {
            if mask.contains(inotify::EventMask::Q_OVERFLOW) {
                self.scan(now);
                continue;
            }
            let Some(Watched { tree, cgroup, kind }) = self.watched.get(&wd).cloned() else { continue };
            match kind {
                WatchKind::Dir if mask.contains(inotify::EventMask::CREATE) && mask.contains(inotify::EventMask::ISDIR) => {
                    // Past the bound, the next rescan finds them.
                    if let Some(name) = name.filter(|_| self.made.len() < MADE_MAX) {
                        let made = cgroup.child(&name);
                        self.name_at_once(tree, &made.path);
                        self.made.push((tree, made));
                    }
                }
                WatchKind::Dir if mask.intersects(inotify::EventMask::DELETE_SELF | inotify::EventMask::IGNORED) => {
                    self.forget_in(tree, &cgroup.path, now);
                }
                WatchKind::LocalEvents if mask.contains(inotify::EventMask::MODIFY) => {
                    // A limit was hit or a kill happened here: sample now.
                    self.sample_full(&cgroup.path, now);
                }
                _ => {}
            }
        }
    }

    /// A container's names are looked up as soon as its cgroup is made,
    /// not at the tick that opens it: a container killed in its first
    /// second is named as before. (The tick looks again, with retries, for
    /// what its runtime writes later, such as its init pid.)
    fn name_at_once(&self, tree: Tree, path: &str) {
        if let (Tree::Memory, Some(feed)) = (tree, &self.workloads) {
            if self.model.passes_filters(path) {
                feed.found(path);
            }
        }
    }

    /// The cgroups made since the last tick that still exist.
    fn discover_made(&mut self, now: Instant) {
        for (tree, cgroup) in std::mem::take(&mut self.made) {
            if cgroup.dir.is_dir() {
                self.discover_in(tree, cgroup, now);
            }
        }
    }

    fn root(&self, tree: Tree) -> Found {
        Found { path: "/".into(), dir: self.root_of(tree).to_path_buf() }
    }

    fn discover_in(&mut self, tree: Tree, cgroup: Found, now: Instant) -> Admission {
        match tree {
            Tree::Memory => self.discover(cgroup, now),
            Tree::Unified => self.discover_unified(cgroup),
        }
    }

    fn forget_in(&mut self, tree: Tree, path: &str, now: Instant) {
        match tree {
            Tree::Memory => self.forget(path, now),
            Tree::Unified => self.forget_unified(path, now),
        }
    }

    /// Hybrid hosts: a cgroup of the unified hierarchy, tracked for PSI only.
    fn discover_unified(&mut self, cgroup: Found) -> Admission {
        if self.pressure.contains_key(&cgroup.path) {
            return Admission::Tracked;
        }
        let Admitted { admission, displaced } = self.model.admit_pressure(&cgroup.path);
        if let Some(deeper) = displaced {
            self.displaced(Tree::Unified, &deeper, &cgroup.path, Instant::now());
        }
        if admission != Admission::Tracked {
            return admission;
        }
        if let Ok(Some(poller)) = PressurePoller::open(&cgroup.dir.join("memory.pressure")) {
            if let Ok(Some(p)) = poller.read() {
                self.model.observe_pressure(&cgroup.path, p);
            }
            self.pressure.insert(cgroup.path.clone(), poller);
            self.add_watch(&cgroup.dir, WatchMask::CREATE | WatchMask::DELETE_SELF | WatchMask::ONLYDIR, Tree::Unified, &cgroup, WatchKind::Dir);
            for (child, _) in subdirs(&cgroup) {
                if child.path.matches('/').count() <= self.config.max_depth {
                    self.discover_unified(child);
                }
            }
        }
        Admission::Tracked
    }

    fn forget_unified(&mut self, path: &str, now: Instant) {
        if self.pressure.remove(path).is_some() {
            self.model.mark_pressure_removed(path, now);
        }
        self.unwatch(Tree::Unified, path);
    }

    fn unwatch(&mut self, tree: Tree, path: &str) {
        let wds: Vec<WatchDescriptor> =
            self.watched.iter().filter(|(_, w)| w.tree == tree && w.cgroup.path == path).map(|(wd, _)| wd.clone()).collect();
        for wd in wds {
            self.watched.remove(&wd);
            if let Some(w) = self.watches.as_mut() {
                let _ = w.remove(wd);
            }
        }
    }

    /// Walks the hierarchy breadth-first (shallow cgroups are admitted
    /// first when the cap bites), tracking new cgroups and forgetting gone ones.
    pub fn scan(&mut self, now: Instant) {
        if self.hybrid() {
            self.scan_unified(now);
        }
        // Nothing is collected per cgroup: on a host of 10,000 cgroups a
        // list of them all, made every minute, set the daemon's peak RSS.
        self.scans += 1;
        let scan = self.scans;
        let (mut filtered, mut over_cap, mut unreadable) = (0usize, 0usize, 0usize);
        let root = self.root(Tree::Memory);
        self.note_root_limit(&root.dir, now);
        self.watch_dir(&root);
        // Only parents are queued: a leaf, most cgroups, is never read.
        let mut queue = VecDeque::new();
        if has_subdirs(&root) {
            queue.push_back((root, 0usize));
        }
        while let Some((parent, depth)) = queue.pop_front() {
            for (child, may_have_children) in subdirs_of_listed(&parent) {
                if depth + 1 < self.config.max_depth && may_have_children {
                    queue.push_back((child.clone(), depth + 1));
                }
                if let Some(t) = self.tracked.get_mut(&child.path) {
                    t.found_in_scan = scan;
                    continue;
                }
                // Tracked from now on, it is found by this scan.
                match self.discover(child, now) {
                    Admission::Tracked => {}
                    Admission::Filtered => filtered += 1,
                    Admission::OverCap => over_cap += 1,
                    Admission::Unreadable => unreadable += 1,
                }
            }
        }
        self.warn_unreadable(unreadable);
        let gone: Vec<String> = self.tracked.iter().filter(|(_, t)| t.found_in_scan != scan).map(|(p, _)| p.clone()).collect();
        for p in gone {
            self.forget(&p, now);
        }
        self.model.set_excluded(filtered, over_cap, unreadable);
        crate::model::shrink(&mut self.tracked);
        crate::model::shrink(&mut self.pressure);
        crate::model::shrink(&mut self.watched);
        let root = self.layout.memory_root.clone();
        self.model.expire(now, |p| root.join(p.trim_start_matches('/')).exists());
    }

    /// A limit set on the memory root (or above it) since the last scan
    /// puts every cgroup back on the short idle stride.
    fn note_root_limit(&mut self, root: &Path, now: Instant) {
        let limited = read_limit_above(root, self.layout.memory_version).is_some();
        if limited && !self.root_limited {
            for t in self.tracked.values_mut() {
                t.can_oom = true;
                t.next_usage = t.next_usage.min(now);
                t.stride = 1;
            }
        }
        self.root_limited = limited;
    }

    fn scan_unified(&mut self, now: Instant) {
        let root = self.root(Tree::Unified);
        self.add_watch(&root.dir, WatchMask::CREATE | WatchMask::ONLYDIR, Tree::Unified, &root, WatchKind::Dir);
        let mut seen = std::collections::HashSet::new();
        let mut queue = VecDeque::new();
        if has_subdirs(&root) {
            queue.push_back((root, 0usize));
        }
        while let Some((parent, depth)) = queue.pop_front() {
            for (child, may_have_children) in subdirs_of_listed(&parent) {
                if depth + 1 < self.config.max_depth && may_have_children {
                    queue.push_back((child.clone(), depth + 1));
                }
                seen.insert(child.path.clone());
                self.discover_unified(child);
            }
        }
        let gone: Vec<String> = self.pressure.keys().filter(|p| !seen.contains(*p)).cloned().collect();
        for p in gone {
            self.forget_unified(&p, now);
        }
    }

    fn watch_dir(&mut self, cgroup: &Found) {
        self.add_watch(&cgroup.dir, WatchMask::CREATE | WatchMask::DELETE_SELF | WatchMask::ONLYDIR, Tree::Memory, cgroup, WatchKind::Dir);
    }

    fn add_watch(&mut self, file: &Path, mask: WatchMask, tree: Tree, cgroup: &Found, kind: WatchKind) {
        let Some(watches) = self.watches.as_mut() else { return };
        match watches.add(file, mask) {
            Ok(wd) => {
                self.watched.insert(wd, Watched { tree, cgroup: cgroup.clone(), kind });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                log::warn!(
                    "inotify watch limit reached (fs.inotify.max_user_watches); new cgroups are found by rescans every {:?}",
                    self.config.rescan_every
                );
                self.watches = None;
            }
            Err(_) => {}
        }
    }

    fn discover(&mut self, cgroup: Found, now: Instant) -> Admission {
        if self.tracked.contains_key(&cgroup.path) {
            return Admission::Tracked;
        }
        let id = fs::metadata(&cgroup.dir).map(|m| m.ino()).unwrap_or(0);
        let Admitted { admission, displaced } = self.model.admit(&cgroup.path, id, &cgroup.dir);
        if let Some(deeper) = displaced {
            self.displaced(Tree::Memory, &deeper, &cgroup.path, now);
        }
        if admission != Admission::Tracked {
            return admission;
        }
        let version = self.layout.memory_version;
        let Found { path, dir } = &cgroup;
        match CgroupPoller::open(dir, version) {
            Ok(Some(poller)) => {
                self.watch_dir(&cgroup);
                if version == CgroupVersion::V2 {
                    self.add_watch(&dir.join("memory.events.local"), WatchMask::MODIFY, Tree::Memory, &cgroup, WatchKind::LocalEvents);
                    // Pure v2: PSI lives next to the memory files.
                    if let Ok(Some(poller)) = PressurePoller::open(&dir.join("memory.pressure")) {
                        self.pressure.insert(path.clone(), poller);
                    }
                }
                let walk_slot = self.walk.as_mut().and_then(|w| w.track(id));
                let t = Tracked {
                    poller,
                    next_full: now,
                    idle_ticks: 0,
                    found_in_scan: self.scans,
                    next_usage: now,
                    limited: false,
                    can_oom: true,
                    cgroup_id: id,
                    walk_slot,
                    last_usage: None,
                    walk_reached: false,
                    stride: 1,
                    relook: false,
                };
                self.tracked.insert(path.clone(), t);
                if let Some(feed) = &self.workloads {
                    feed.found(path);
                }
                self.sample_full(path, now);
                // Children made before the watch above existed raised no
                // event: look for them now.
                if path.matches('/').count() < self.config.max_depth {
                    for (child, _) in subdirs(&cgroup) {
                        self.discover(child, now);
                    }
                }
                // Runtimes create a cgroup and set its limits right after:
                // look again in a second, then join the rotation.
                if let Some(t) = self.tracked.get_mut(path) {
                    t.next_full = now + self.config.interval;
                    t.relook = true;
                }
                Admission::Tracked
            }
            Ok(None) => {
                self.model.mark_removed(path, now);
                Admission::Tracked
            }
            Err(e) => {
                log::debug!("{e}");
                self.last_unreadable = Some(e.to_string());
                self.model.reject(path, now);
                Admission::Unreadable
            }
        }
    }

    /// Once per change of the count: cgroups nobody chose to leave out are
    /// not watched, and the operator must hear why (the open-file limit is
    /// the usual one: 3 files per v1 cgroup).
    fn warn_unreadable(&mut self, unreadable: usize) {
        if unreadable == self.unreadable_warned {
            return;
        }
        self.unreadable_warned = unreadable;
        if unreadable > 0 {
            log::warn!(
                "{unreadable} memory cgroups are not tracked because their files could not be opened (last: {}); \
                 if it says too many open files, raise LimitNOFILE (the unit sets 65536)",
                self.last_unreadable.as_deref().unwrap_or("unknown error")
            );
        }
    }

    /// At `--max-cgroups`, `shallower` took the place of `deeper` (the
    /// model already counts it as over the cap): stop reading it. Said
    /// once in the log, when it first happens.
    fn displaced(&mut self, tree: Tree, deeper: &str, shallower: &str, now: Instant) {
        if !self.displacing_said {
            self.displacing_said = true;
            log::warn!(
                "more memory cgroups than --max-cgroups ({}): the shallowest are tracked, so {shallower} is tracked \
                 in place of {deeper} (said once; oomwatch_cgroups{{state=\"excluded_cap\"}} counts them)",
                self.model.config().max_cgroups
            );
        }
        self.forget_in(tree, deeper, now);
    }

    fn forget(&mut self, path: &str, now: Instant) {
        if let Some(t) = self.tracked.remove(path) {
            if let (Some(walk), Some(slot)) = (self.walk.as_mut(), t.walk_slot) {
                walk.forget(t.cgroup_id, slot);
            }
            self.model.mark_removed(path, now);
        }
        if !self.hybrid() && self.pressure.remove(path).is_some() {
            self.model.mark_pressure_removed(path, now);
        }
        self.unwatch(Tree::Memory, path);
    }

    fn sample_full(&mut self, path: &str, now: Instant) {
        let Some(t) = self.tracked.get_mut(path) else { return };
        let version = t.poller.version();
        match read_memory(t.poller.dir(), version) {
            Ok(Some(sample)) => {
                let hits = match version {
                    CgroupVersion::V2 => sample.events_local.and_then(|e| e.oom),
                    CgroupVersion::V1 => sample.failcnt,
                };
                // Spread full reads over the rotation so they do not bunch.
                self.spread = self.spread.wrapping_add(7919);
                let jitter = self.spread % (self.config.full_every.as_millis().max(1) as u64 / 4).max(1);
                t.next_full = now + self.config.full_every - Duration::from_millis(jitter);
                // When the files had been read (`now` is when the tick
                // began): a kill explained later must know whether these
                // counts hold it already (`Model::limit_evidence`).
                self.model.observe_full(path, &sample, hits, Instant::now());
                t.relook = false;
                let was_limited = t.limited;
                t.limited = sample.limit_bytes.is_some() || sample.high_bytes.is_some();
                t.can_oom = t.limited || self.root_limited || self.model.limited_above(path);
                if t.limited && !was_limited {
                    self.descendants_can_oom(path, now);
                }
            }
            Ok(None) => self.forget(path, now),
            Err(e) => log::debug!("{e}"),
        }
    }

    /// A limit newly set on `path` can catch its descendants in an OOM:
    /// back to the short idle stride, read next tick.
    fn descendants_can_oom(&mut self, path: &str, now: Instant) {
        for (p, t) in self.tracked.iter_mut() {
            if p.len() > path.len() && p.starts_with(path) && p.as_bytes()[path.len()] == b'/' {
                t.can_oom = true;
                t.next_usage = t.next_usage.min(now);
                t.stride = 1;
            }
        }
    }

    fn sample_all(&mut self, now: Instant) {
        let (full, polls, gone) = self.sample_usages(now);
        for p in gone {
            self.forget(&p, now);
        }
        for p in polls {
            if let Some(t) = self.tracked.get(&p)
                && let Ok(Some(e)) = t.poller.events()
            {
                // When read, not when the tick began (see sample_full).
                self.model.observe_events(&p, e, e.max, Instant::now());
            }
        }
        for p in full {
            self.sample_full(&p, now);
        }
        self.sample_pressure(now);
        self.model.update_forecasts(now);
        // Per tick, not per full sample: "keeps hitting" is a rate.
        let edges = self.model.update_throttling(now);
        if let Some((bus, counters)) = &self.throttling {
            for seen in edges {
                counters.events_published.inc();
                bus.publish(throttled_event(seen, now));
            }
        }
        if let Some(n) = &self.sampled {
            n.notify_one();
        }
    }

    /// One cheap usage read of every cgroup that is due, into the model
    /// under one lock, and when to read each next. Returns the cgroups that
    /// need more now: a full read (near the limit, or memory.stat stale),
    /// or v1 limit-hit counters (v1 has no limit-hit notification: failcnt
    /// is polled where a limit is set and usage is close enough to it for
    /// hits to happen); and the ones found gone.
    fn sample_usages(&mut self, now: Instant) -> (Vec<String>, Vec<String>, Vec<String>) {
        let (interval, full_every, hot) = (self.config.interval, self.config.full_every, self.config.hot_fraction);
        let walk_tick = self.walk.is_some() && now >= self.next_walk;
        if walk_tick {
            self.next_walk = now + interval * WALK_EVERY - interval / 4;
        }
        let walk = if walk_tick && self.run_walk(now) { self.walk.as_ref() } else { None };
        // While the walk fails, every cgroup is back on its file's schedule.
        let walk_works = self.walk.is_some() && !self.walk_failing;
        // Borrowed, not cloned: this runs for every cgroup every tick.
        let mut due: Vec<(&String, &mut Tracked)> = Vec::new();
        let mut usages: Vec<(&str, u64)> = Vec::new();
        let mut gone = Vec::new();
        let (mut walked, mut from_files) = (0u64, 0u64);
        for (path, t) in self.tracked.iter_mut() {
            let walked_usage = walk.and_then(|w| w.usage_bytes(t.walk_slot?));
            if walk.is_some() {
                t.walk_reached = walked_usage.is_some();
            } else if walk_works && t.walk_reached && t.stride >= WALK_EVERY {
                continue;
            }
            // The walk reads every cgroup: one that moved is not left
            // waiting for its idle stride.
            let moved = walked_usage.is_some_and(|u| t.last_usage != Some(u));
            if now < t.next_usage && !moved {
                continue;
            }
            let usage = match walked_usage {
                Some(u) => {
                    walked += 1;
                    Ok(Some(u))
                }
                None => {
                    from_files += 1;
                    t.poller.usage()
                }
            };
            match usage {
                Ok(Some(u)) => {
                    t.last_usage = Some(u);
                    usages.push((path.as_str(), u));
                    due.push((path, t));
                }
                Ok(None) => gone.push(path.clone()),
                Err(e) => log::debug!("{e}"),
            }
        }
        if let Some(c) = &self.reads {
            c.usage_reads.get_or_create(&[("source", "walk")]).inc_by(walked);
            c.usage_reads.get_or_create(&[("source", "file")]).inc_by(from_files);
        }
        let seen = self.model.observe_usages(&usages, now);
        let (mut full, mut polls) = (Vec::new(), Vec::new());
        for ((path, t), seen) in due.into_iter().zip(seen) {
            t.idle_ticks = if seen.changed { 0 } else { t.idle_ticks.saturating_add(1) };
            t.stride = usage_stride(t.idle_ticks, seen.fill, t.can_oom);
            t.next_usage = now + interval * t.stride - interval / 4;
            // Near the limit and still, the usage read stays every tick but
            // memory.stat (several files opened) only every IDLE_STRIDE: v1's
            // failcnt is polled in between (below), v2's hits notify.
            let idle = t.idle_ticks >= IDLE_AFTER;
            if seen.fill.is_some_and(|f| f >= hot) && (!idle || t.idle_ticks % IDLE_STRIDE == 0) {
                full.push(path.clone());
            } else if now >= t.next_full && (seen.moved_since_full || t.relook || now >= t.next_full + (FULL_MAX_STALE - full_every)) {
                // Nothing moved since the last full read: memory.stat would
                // say the same (but for the limits written right after a
                // cgroup is made). Look again later, but not never.
                full.push(path.clone());
            } else if t.poller.version() == CgroupVersion::V1 && seen.fill.is_some_and(|f| f >= FAILCNT_POLL_FRACTION) {
                polls.push(path.clone());
            }
        }
        (full, polls, gone)
    }

    /// Runs the usage walk; false without one, or when it failed or costs
    /// more than it saves (then every cgroup is read from its file, on the
    /// file's schedule).
    fn run_walk(&mut self, now: Instant) -> bool {
        let on_walk = self.tracked.values().filter(|t| t.walk_slot.is_some()).count() as u64;
        let Some(walk) = self.walk.as_mut() else { return false };
        match walk.run() {
            Ok(visited) if visited > WALK_CHEAP_VISITS && visited > WALK_MAX_VISITS_PER_CGROUP * on_walk => {
                if !std::mem::replace(&mut self.walk_failing, true) {
                    log::info!(
                        "the usage walk visits {visited} cgroups for the {on_walk} it reads: more than it saves; \
                         cgroup usage is read from cgroupfs files (the walk is tried again every {:?})",
                        self.config.interval * WALK_EVERY * WALK_PAUSE
                    );
                }
                self.next_walk = now + self.config.interval * WALK_EVERY * WALK_PAUSE;
                false
            }
            Ok(_) => {
                if std::mem::take(&mut self.walk_failing) {
                    log::info!("the usage walk works again");
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.walk_failing, true) {
                    log::warn!("{e}; cgroup usage is read from cgroupfs files until the walk works again");
                }
                false
            }
        }
    }

    fn sample_pressure(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (path, poller) in &self.pressure {
            match poller.read() {
                Ok(Some(p)) => self.model.observe_pressure(path, p),
                Ok(None) => gone.push(path.clone()),
                Err(e) => log::debug!("{e}"),
            }
        }
        for p in gone {
            if self.hybrid() {
                self.forget_unified(&p, now);
            } else {
                self.pressure.remove(&p);
                self.model.mark_pressure_removed(&p, now);
            }
        }
        let node = NodeState {
            meminfo: read_meminfo(&self.proc_root),
            pressure: read_pressure(&self.proc_root.join("pressure/memory")).ok().flatten(),
            forecast: None,
        };
        self.model.observe_node(node, now);
    }
}

/// Ticks until the next usage read of a cgroup: every tick while it moves
/// or is near its limit (`fill`: usage over its own limit), less often when
/// idle, the further from a limit the less (see `IDLE_STRIDE`).
fn usage_stride(idle_ticks: u32, fill: Option<f64>, can_oom: bool) -> u32 {
    if idle_ticks < IDLE_AFTER || fill.is_some_and(|f| f >= NEAR_LIMIT_FRACTION) {
        return 1;
    }
    match (can_oom, fill) {
        (false, _) => UNLIMITED_IDLE_STRIDE,
        (true, Some(f)) if f >= FAR_FROM_LIMIT_FRACTION => IDLE_STRIDE,
        (true, _) => FAR_IDLE_STRIDE,
    }
}

/// The child cgroups of `parent`, as the directory is read (a parent of
/// 10,000 is never listed whole in memory), each with whether it may have
/// children of its own.
fn subdirs(parent: &Found) -> impl Iterator<Item = (Found, bool)> + '_ {
    let entries = if has_subdirs(parent) { fs::read_dir(&parent.dir).ok() } else { None };
    listed(parent, entries)
}

/// The same, for a parent its own listing showed to have children.
fn subdirs_of_listed(parent: &Found) -> impl Iterator<Item = (Found, bool)> + '_ {
    listed(parent, fs::read_dir(&parent.dir).ok())
}

/// A child's link count comes from a stat relative to the directory being
/// read (`DirEntry::metadata`, fstatat on its fd): one name looked up, not
/// its whole path, and each cgroup of a rescan is looked at once.
fn listed(parent: &Found, entries: Option<fs::ReadDir>) -> impl Iterator<Item = (Found, bool)> + '_ {
    entries.into_iter().flatten().flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| {
        let may_have_children = !e.metadata().is_ok_and(|m| is_leaf(&m));
        (parent.child(&e.file_name()), may_have_children)
    })
}

/// False for a cgroup with no child cgroups. A directory's link count is 2
/// plus its subdirectories on cgroupfs (kernfs), as on tmpfs and ext4: a
/// stat spares the readdir of a leaf, most of a rescan's cost on a big
/// host. Other counts (1 on btrfs) say nothing, and the directory is read.
fn has_subdirs(cgroup: &Found) -> bool {
    !fs::metadata(&cgroup.dir).is_ok_and(|m| is_leaf(&m))
}

fn is_leaf(dir: &fs::Metadata) -> bool {
    dir.nlink() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::CgroupMode;

    fn fake_v2_tree(root: &Path, cgroups: &[(&str, u64, &str)]) {
        for (path, usage, max) in cgroups {
            let dir = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("memory.current"), format!("{usage}\n")).unwrap();
            fs::write(dir.join("memory.max"), format!("{max}\n")).unwrap();
            fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
            fs::write(dir.join("memory.events.local"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
            fs::write(dir.join("memory.stat"), "anon 100\nfile 50\ninactive_file 1048576\nactive_file 0\n").unwrap();
            fs::write(dir.join("memory.pressure"), "some avg10=1.50 avg60=0.00 avg300=0.00 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=10\n").unwrap();
        }
    }

    /// A fresh directory for one test's fake cgroup tree.
    fn empty_root(test: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("oomwatch-watch-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    /// A sampler over a fresh fake tree of `cgroups`, with its model.
    fn sampler_on(test: &str, cgroups: &[(&str, u64, &str)], config: crate::model::ModelConfig) -> (PathBuf, Arc<Model>, Sampler) {
        let root = empty_root(test);
        fake_v2_tree(&root, cgroups);
        let model = Arc::new(Model::new(config));
        let sampler = Sampler::new(layout(&root), model.clone(), SamplerConfig::default());
        (root, model, sampler)
    }

    fn layout(root: &Path) -> CgroupLayout {
        CgroupLayout {
            mode: CgroupMode::V2,
            memory_root: root.to_path_buf(),
            memory_version: CgroupVersion::V2,
            memory_mount_root: "/".into(),
            unified_root: Some(root.to_path_buf()),
        }
    }

    #[test]
    fn scans_a_fake_tree_and_samples_into_the_model() {
        let (root, model, mut s) = sampler_on("scan", &[("/a", 10 << 20, "max"), ("/a/b", 8 << 20, "67108864"), ("/c", 1 << 20, "max")], Default::default());
        s.scan(Instant::now());
        assert_eq!(model.counts().tracked, 3);
        let rows = model.status();
        let b = rows.iter().find(|r| r.cgroup == "/a/b").unwrap();
        assert_eq!(b.limit_bytes, Some(64 << 20));
        assert_eq!(b.working_set_bytes, (8 << 20) - (1 << 20));
        s.sample_all(Instant::now());
        assert_eq!(model.pressure_of("/a/b").map(|p| p.some.total_us), Some(1500), "v2: PSI next to the memory files");

        // Removal is noticed by the next sample or scan.
        fs::remove_dir_all(root.join("c")).unwrap();
        s.sample_all(Instant::now());
        s.scan(Instant::now());
        assert_eq!(model.counts().tracked, 2);
        assert_eq!(model.counts().removed_in_grace, 1);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A delegated user names a cgroup with bytes that are not UTF-8: it is
    /// sampled like any other (it used to be read at a lossy path that does
    /// not exist, and so hid from early warning).
    #[test]
    fn cgroups_whose_names_are_not_utf8_are_tracked() {
        use std::os::unix::ffi::OsStrExt as _;
        let root = empty_root("bytes");
        fake_v2_tree(&root, &[("/a", 1 << 20, "max")]);
        let hostile = root.join("a").join(OsStr::from_bytes(b"sec-\xff\x1b[2J"));
        fake_v2_tree(&hostile, &[("/", 8 << 20, "67108864")]);
        let model = Arc::new(Model::default());
        let mut s = Sampler::new(layout(&root), model.clone(), SamplerConfig::default());
        s.scan(Instant::now());
        let rows = model.status();
        let row = rows.iter().find(|r| r.cgroup.starts_with("/a/sec-")).unwrap_or_else(|| panic!("not tracked: {rows:?}"));
        assert_eq!(row.cgroup, "/a/sec-\\xff\u{1b}[2J", "invalid bytes as \\xNN, the rest as is");
        assert_eq!(row.limit_bytes, Some(64 << 20), "its files were read");
        assert_eq!(model.dir_of(&row.cgroup), Some(hostile));
        fs::remove_dir_all(&root).unwrap();
    }

    /// A cgroup whose files cannot be opened (here a symlink loop; on a
    /// host, usually the open-file limit) is counted as unreadable, not as
    /// left out by the filter the operator never set.
    #[test]
    fn cgroups_that_cannot_be_opened_are_counted_as_unreadable() {
        let root = empty_root("unreadable");
        fake_v2_tree(&root, &[("/a", 1, "max"), ("/b", 1, "max")]);
        let usage = root.join("b").join("memory.current");
        fs::remove_file(&usage).unwrap();
        std::os::unix::fs::symlink(&usage, &usage).unwrap();
        let model = Arc::new(Model::default());
        let mut s = Sampler::new(layout(&root), model.clone(), SamplerConfig::default());
        s.scan(Instant::now());
        let c = model.counts();
        assert_eq!((c.tracked, c.excluded_filter, c.excluded_unreadable), (1, 0, 1), "{c:?}");
        assert!(s.last_unreadable.as_deref().is_some_and(|e| e.contains("memory.current")), "{:?}", s.last_unreadable);
        fs::remove_dir_all(&root).unwrap();
    }

    /// Runs `ticks` sampler ticks a second apart after `t0`, and returns
    /// the ticks at which each of `paths` had its usage read.
    fn ticks_read(s: &mut Sampler, t0: Instant, ticks: std::ops::RangeInclusive<u32>, paths: &[&str]) -> Vec<Vec<u32>> {
        let mut read = vec![Vec::new(); paths.len()];
        for tick in ticks {
            let now = t0 + Duration::from_secs(tick.into());
            let before: Vec<Instant> = paths.iter().map(|p| s.tracked[*p].next_usage).collect();
            s.sample_all(now);
            for (i, p) in paths.iter().enumerate() {
                if s.tracked[*p].next_usage != before[i] {
                    read[i].push(tick);
                }
            }
        }
        read
    }

    /// Idle cgroups are read less often, unlimited ones least; near its
    /// limit a cgroup is read every tick however still it is (early
    /// warning must come before the kill); a change brings any back.
    #[test]
    fn idle_cgroups_are_read_less_often_but_never_near_their_limit() {
        let root = empty_root("stride");
        let limit = (64u64 << 20).to_string();
        fake_v2_tree(&root, &[("/near", 40 << 20, &limit), ("/mid", 20 << 20, &limit), ("/far", 1 << 20, &limit), ("/free", 1 << 20, "max")]);
        let model = Arc::new(Model::default());
        let mut s = Sampler::new(layout(&root), model.clone(), SamplerConfig::default());
        let t0 = Instant::now();
        s.scan(t0);
        let paths = ["/near", "/mid", "/far", "/free"];
        let read = ticks_read(&mut s, t0, 1..=40, &paths);
        let after_idle = |ticks: &[u32]| ticks.iter().copied().filter(|&t| t > IDLE_AFTER).collect::<Vec<_>>();
        assert_eq!(read[0], (1..=40).collect::<Vec<_>>(), "over half its limit: every tick");
        assert_eq!(read[1][..IDLE_AFTER as usize], (1..=IDLE_AFTER).collect::<Vec<_>>(), "every tick until idle");
        assert_eq!(after_idle(&read[1]), (13..=40).step_by(IDLE_STRIDE as usize).collect::<Vec<_>>(), "a third of its limit, idle");
        assert_eq!(after_idle(&read[2]), (15..=40).step_by(FAR_IDLE_STRIDE as usize).collect::<Vec<_>>(), "far from its limit, idle");
        assert_eq!(after_idle(&read[3]), vec![20, 30, 40], "no limit anywhere, idle");

        // It moves: read every tick again.
        fs::write(root.join("free/memory.current"), format!("{}\n", 2 << 20)).unwrap();
        let read = ticks_read(&mut s, t0, 41..=55, &paths);
        assert_eq!(read[3], (50..=55).collect::<Vec<_>>(), "read at 50, and every tick after the change");
        fs::remove_dir_all(&root).unwrap();
    }

    /// A usage walk as a test drives it: usages by cgroup id, and whether
    /// the next passes fail.
    #[derive(Clone, Default)]
    struct FakeWalk {
        usages: Arc<std::sync::Mutex<HashMap<u64, u64>>>,
        failing: Arc<std::sync::atomic::AtomicBool>,
        /// Cgroups a pass visits besides the tracked ones.
        untracked: Arc<std::sync::atomic::AtomicU64>,
        /// Slot -> cgroup id; slot 0 is never given, as in the kernel's.
        slots: Vec<u64>,
        passes: u32,
    }

    impl UsageSource for FakeWalk {
        fn track(&mut self, cgroup_id: u64) -> Option<u32> {
            self.slots.push(cgroup_id);
            Some(self.slots.len() as u32)
        }

        fn forget(&mut self, _cgroup_id: u64, slot: u32) {
            self.slots[slot as usize - 1] = 0;
        }

        fn run(&mut self) -> Result<u64, String> {
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("walk refused".into());
            }
            self.passes += 1;
            Ok(self.slots.len() as u64 + self.untracked.load(std::sync::atomic::Ordering::Relaxed))
        }

        fn usage_bytes(&self, slot: u32) -> Option<u64> {
            let id = *self.slots.get(slot.checked_sub(1)? as usize)?;
            self.usages.lock().unwrap().get(&id).copied()
        }
    }

    /// With the walk, an idle cgroup is read by walks only (every
    /// `WALK_EVERY` ticks), as often as its stride says unless it moved:
    /// then at the next walk, sooner than its stride. Where the walk gives
    /// nothing (a cgroup it does not reach, a failed pass), the file is
    /// read on the file's schedule.
    #[test]
    fn the_walk_reads_idle_cgroups_and_brings_one_that_moves_back_at_the_next_walk() {
        use std::os::unix::fs::MetadataExt as _;
        let root = empty_root("walk");
        fake_v2_tree(&root, &[("/free", 1 << 20, "max"), ("/unreached", 3 << 20, "max")]);
        let id = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
        let walk = FakeWalk::default();
        walk.usages.lock().unwrap().insert(id("free"), 1 << 20);
        let model = Arc::new(Model::default());
        let counters = Arc::new(DaemonCounters::default());
        let mut s = Sampler::new(layout(&root), model.clone(), SamplerConfig::default())
            .walk_usages(Box::new(walk.clone()))
            .count_reads(counters.clone());
        let t0 = Instant::now();
        s.scan(t0);
        let paths = ["/free", "/unreached"];
        let reads = |source| counters.usage_reads.get_or_create(&[("source", source)]).get();
        let read = ticks_read(&mut s, t0, 1..=40, &paths);
        // Walks at ticks 1, 6, 11, ... (every WALK_EVERY).
        let walk_tick = |t: u32| t % WALK_EVERY == 1;
        assert_eq!(read[0][..IDLE_AFTER as usize], (1..=IDLE_AFTER).collect::<Vec<_>>(), "every tick until idle");
        let idle: Vec<u32> = read[0].iter().copied().filter(|&t| t > IDLE_AFTER).collect();
        assert!(idle.len() >= 2 && idle.iter().all(|&t| walk_tick(t)), "idle: read by walks only, {idle:?}");
        assert!(idle.windows(2).all(|w| w[1] - w[0] >= UNLIMITED_IDLE_STRIDE), "at its idle stride, {idle:?}");
        assert_eq!(read[1].iter().copied().filter(|&t| t > IDLE_AFTER).collect::<Vec<_>>(), vec![20, 30, 40], "not reached: its file, on its stride");
        let file_reads_of_free = (1..=IDLE_AFTER).filter(|&t| !walk_tick(t)).count() as u64;
        assert_eq!(reads("file"), file_reads_of_free + read[1].len() as u64);
        assert_eq!(reads("walk"), read[0].len() as u64 - file_reads_of_free);

        // It moves right after a read (the walk reads 2 MiB, the file still
        // says 1): read at the next walk, with the walk's value, before its
        // stride is up.
        let mut last = *idle.last().unwrap();
        let mut tick = 40;
        while last != tick {
            tick += 1;
            if !ticks_read(&mut s, t0, tick..=tick, &paths)[0].is_empty() {
                last = tick;
            }
        }
        walk.usages.lock().unwrap().insert(id("free"), 2 << 20);
        let usage_of = |p: &str| model.status().into_iter().find(|r| r.cgroup == p).map(|r| r.usage_bytes);
        let read = ticks_read(&mut s, t0, last + 1..=last + UNLIMITED_IDLE_STRIDE, &paths);
        assert_eq!(read[0].first(), Some(&(last + WALK_EVERY)), "the next walk, not its stride (tick {}): {:?}", last + UNLIMITED_IDLE_STRIDE, read[0]);
        assert_eq!(usage_of("/free"), Some(2 << 20), "the walk's value");
        fs::write(root.join("free/memory.current"), format!("{}\n", 2 << 20)).unwrap();
        let tick = last + UNLIMITED_IDLE_STRIDE;
        let read = ticks_read(&mut s, t0, tick + 1..=tick + 3, &paths);
        assert_eq!(read[0], (tick + 1..=tick + 3).collect::<Vec<_>>(), "after a move: every tick");

        // A failed pass: the files, on their schedule.
        walk.failing.store(true, std::sync::atomic::Ordering::Relaxed);
        fs::write(root.join("free/memory.current"), format!("{}\n", 5 << 20)).unwrap();
        ticks_read(&mut s, t0, tick + 4..=tick + 4 + WALK_EVERY, &paths);
        assert_eq!(usage_of("/free"), Some(5 << 20), "from the file, not the walk's 2 MiB");
        assert!(s.walk_failing);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A walk that visits many more cgroups than it reads (most of the
    /// host's over `--max-cgroups`, or filtered out) costs more than the
    /// file reads it saves: the sampler reads files and tries it again
    /// after `WALK_PAUSE` walks' time.
    #[test]
    fn a_walk_that_visits_mostly_other_cgroups_pauses() {
        use std::os::unix::fs::MetadataExt as _;
        let root = empty_root("walk-pause");
        fake_v2_tree(&root, &[("/a", 1 << 20, "max"), ("/b", 1 << 20, "max")]);
        let walk = FakeWalk::default();
        for p in ["a", "b"] {
            walk.usages.lock().unwrap().insert(fs::metadata(root.join(p)).unwrap().ino(), 1 << 20);
        }
        walk.untracked.store(WALK_CHEAP_VISITS, std::sync::atomic::Ordering::Relaxed);
        let counters = Arc::new(DaemonCounters::default());
        let mut s = Sampler::new(layout(&root), Arc::new(Model::default()), SamplerConfig::default())
            .walk_usages(Box::new(walk.clone()))
            .count_reads(counters.clone());
        let t0 = Instant::now();
        s.scan(t0);
        let reads = |source| counters.usage_reads.get_or_create(&[("source", source)]).get();
        // 1,002 visits for 2 cgroups: more than WALK_MAX_VISITS_PER_CGROUP
        // each, and more than a cheap walk.
        let read = ticks_read(&mut s, t0, 1..=40, &["/a", "/b"]);
        assert!(s.walk_failing, "paused");
        assert_eq!(reads("walk"), 0, "nothing taken from a paused walk");
        assert_eq!(reads("file"), (read[0].len() + read[1].len()) as u64);
        assert_eq!(read[0].iter().copied().filter(|&t| t > IDLE_AFTER).collect::<Vec<_>>(), vec![20, 30, 40], "the file's schedule");

        // Few enough others (a cheap walk): at the next try, it is used
        // again.
        walk.untracked.store(WALK_CHEAP_VISITS - 2, std::sync::atomic::Ordering::Relaxed);
        let retry = 1 + WALK_EVERY * WALK_PAUSE;
        ticks_read(&mut s, t0, 41..=retry, &["/a", "/b"]);
        assert!(!s.walk_failing, "tried again at tick {retry}");
        fs::remove_dir_all(&root).unwrap();
    }

    /// A limit set on a parent puts its idle unlimited children back on
    /// the short stride at once: they can be caught in its OOM now.
    #[test]
    fn a_limit_on_a_parent_brings_its_idle_children_back() {
        let (root, _model, mut s) = sampler_on("parent", &[("/p", 1 << 20, "max"), ("/p/c", 1 << 20, "max"), ("/p2", 1 << 20, "max")], Default::default());
        let t0 = Instant::now();
        s.scan(t0);
        let paths = ["/p/c", "/p2"];
        let read = ticks_read(&mut s, t0, 1..=21, &paths);
        assert_eq!(read[0].last(), Some(&20), "{read:?}");
        assert!(!s.tracked["/p/c"].can_oom);

        fs::write(root.join("p/memory.max"), format!("{}\n", 64 << 20)).unwrap();
        // As when the limit-hit notification or the rotation reads it.
        s.sample_full("/p", t0 + Duration::from_secs(21));
        assert!(s.tracked["/p/c"].can_oom);
        assert!(!s.tracked["/p2"].can_oom, "not under /p");
        let read = ticks_read(&mut s, t0, 22..=29, &paths);
        assert_eq!(read[0], vec![22, 27], "the stride under an ancestor's limit, from the next tick");
        assert!(read[1].is_empty(), "still idle and unlimited until 30: {read:?}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn strides() {
        assert_eq!(usage_stride(IDLE_AFTER - 1, None, false), 1);
        assert_eq!(usage_stride(IDLE_AFTER - 1, Some(0.0), true), 1, "moving");
        assert_eq!(usage_stride(IDLE_AFTER, Some(0.5), true), 1, "near the limit");
        assert_eq!(usage_stride(IDLE_AFTER, Some(0.49), true), IDLE_STRIDE);
        assert_eq!(usage_stride(IDLE_AFTER, Some(0.25), true), IDLE_STRIDE);
        assert_eq!(usage_stride(IDLE_AFTER, Some(0.24), true), FAR_IDLE_STRIDE, "far from its own limit");
        assert_eq!(usage_stride(IDLE_AFTER, None, true), FAR_IDLE_STRIDE, "an ancestor's limit only");
        assert_eq!(usage_stride(IDLE_AFTER, None, false), UNLIMITED_IDLE_STRIDE);
        assert!(IDLE_STRIDE < FAR_IDLE_STRIDE && FAR_IDLE_STRIDE < UNLIMITED_IDLE_STRIDE);
        assert!(UNLIMITED_IDLE_STRIDE < 15, "fresher than a usual 15 s scrape");
    }

    #[test]
    fn cap_is_applied_breadth_first() {
        let (root, model, mut s) = sampler_on("cap", &[("/a", 1, "max"), ("/b", 1, "max"), ("/a/deep", 1, "max")], crate::model::ModelConfig { max_cgroups: 2, ..Default::default() });
        s.scan(Instant::now());
        let c = model.counts();
        assert_eq!((c.tracked, c.excluded_cap), (2, 1));
        assert!(!model.is_tracked("/a/deep"), "the deepest cgroup is the one left out");
        fs::remove_dir_all(&root).unwrap();
    }

    /// Runtimes make a cgroup, then write its limit: the read a second
    /// after it was found sees the limit, though no task has used memory
    /// there yet (its usage has not moved, which otherwise skips full reads).
    #[test]
    fn a_limit_written_right_after_mkdir_is_seen_without_any_usage() {
        let (root, model, mut s) = sampler_on("relook", &[("/pod", 0, "max")], Default::default());
        let t0 = Instant::now();
        s.scan(t0);
        let limit = |m: &Model| m.status().into_iter().find(|r| r.cgroup == "/pod").and_then(|r| r.limit_bytes);
        assert_eq!(limit(&model), None);
        fs::write(root.join("pod/memory.max"), "67108864\n").unwrap();
        for tick in 1..=3u64 {
            s.sample_all(t0 + Duration::from_secs(tick));
        }
        assert_eq!(limit(&model), Some(64 << 20));
        // Then, still, no more full reads than the idle rotation's.
        fs::write(root.join("pod/memory.max"), "max\n").unwrap();
        for tick in 4..=20u64 {
            s.sample_all(t0 + Duration::from_secs(tick));
        }
        assert_eq!(limit(&model), Some(64 << 20), "an idle cgroup's files are not read again until it moves or goes stale");
        fs::remove_dir_all(&root).unwrap();
    }

    /// A cgroup made is opened at the next tick, if it still exists: one
    /// made and removed in between costs nothing and leaves nothing.
    #[test]
    fn cgroups_made_are_opened_at_the_next_tick_if_they_still_exist() {
        let (root, model, mut s) = sampler_on("made", &[("/t", 1, "max")], Default::default());
        let t0 = Instant::now();
        s.scan(t0);
        fake_v2_tree(&root, &[("/t/kept", 1, "max"), ("/t/gone", 1, "max")]);
        let mut buf = vec![0u8; 64 * 1024];
        s.wait_inotify(Duration::from_millis(500), &mut buf);
        assert_eq!(s.made.len(), 2, "both creations seen");
        assert!(!model.is_tracked("/t/kept"), "nothing opened before the tick");
        fs::remove_dir_all(root.join("t/gone")).unwrap();
        s.discover_made(t0 + Duration::from_secs(1));
        assert!(model.is_tracked("/t/kept"));
        let c = model.counts();
        assert_eq!((c.tracked, c.removed_in_grace), (2, 0), "the one gone before the tick left no state");
        fs::remove_dir_all(&root).unwrap();
    }

    /// A container's cgroup is handed to the names' resolver when it is
    /// made, before the tick that opens it.
    #[test]
    fn a_containers_names_are_looked_up_when_its_cgroup_is_made() {
        use crate::sources::workloads::{WorkloadCounters, WorkloadResolver};
        let root = empty_root("made-names");
        fake_v2_tree(&root, &[("/system.slice", 1, "max")]);
        let model = Arc::new(Model::default());
        let counters = WorkloadCounters::default();
        // A queue of one, never read: a second path handed over is dropped.
        let (_resolver, feed) = WorkloadResolver::new(crate::readers::runtime::RuntimeRoots::under(&root), model.clone(), 1, counters.clone());
        let mut s = Sampler::new(layout(&root), model.clone(), SamplerConfig::default()).name_workloads(feed.clone());
        s.scan(Instant::now());
        let container = format!("/system.slice/docker-{}.scope", "0123456789abcdef".repeat(4));
        fake_v2_tree(&root, &[(&container, 1, "max")]);
        s.wait_inotify(Duration::from_millis(500), &mut vec![0u8; 64 * 1024]);
        assert!(!model.is_tracked(&container), "not opened before the tick");
        feed.found(&container);
        assert_eq!(counters.dropped.get(), 1, "the sampler handed it over already");
        fs::remove_dir_all(&root).unwrap();
    }

    /// Breadth-first only orders one scan: a cgroup made later, shallower
    /// than some tracked, takes the place of one of the deepest, whose
    /// files the sampler then stops reading.
    #[test]
    fn a_shallow_cgroup_made_at_the_cap_is_tracked_in_place_of_a_deep_one() {
        let (root, model, mut s) = sampler_on("displace", &[("/t", 1, "max"), ("/t/x0", 1, "max"), ("/t/x1", 1, "max"), ("/t/x2", 1, "max")], crate::model::ModelConfig { max_cgroups: 3, ..Default::default() });
        s.scan(Instant::now());
        assert_eq!((model.counts().tracked, model.counts().excluded_cap), (3, 1));
        fake_v2_tree(&root, &[("/pod", 1, "100000000")]);
        s.scan(Instant::now());
        assert!(model.is_tracked("/pod") && model.is_tracked("/t"));
        assert_eq!((model.counts().tracked, model.counts().excluded_cap), (3, 2));
        let mut read: Vec<&str> = s.tracked.keys().map(String::as_str).collect();
        read.sort();
        assert_eq!(read.len(), 3, "{read:?}");
        assert!(read.contains(&"/pod") && read.contains(&"/t"), "{read:?}");
        let mut psi: Vec<&str> = s.pressure.keys().map(String::as_str).collect();
        psi.sort();
        assert_eq!(psi, read, "the pushed-out cgroup's pressure file is closed too");
        // The next scans keep it so: the one pushed out waits, and pushes nothing.
        s.scan(Instant::now());
        assert_eq!((model.counts().tracked, model.counts().excluded_cap), (3, 2));
        assert!(model.is_tracked("/pod"));
        fs::remove_dir_all(&root).unwrap();
    }
}
