//! Names for the workloads of new container cgroups: when the sampler finds
//! a cgroup whose path holds a container id, this looks the container up
//! in the runtimes' records (`readers::runtime::lookup`) and gives the
//! names, and the container's init pid, to the model. The kill path only
//! reads what is there.
//!
//! It runs on its own thread, fed by a bounded queue the sampler never
//! waits on: a slow or hung runtime directory (a stuck NFS mount, a FIFO
//! where a record should be) stalls this thread alone.
//!
//! Runtimes write a container's records around the time its cgroup
//! appears, and its init pid only once the container has started (Docker's
//! `State.Pid`, containerd's `init.pid`), which is after runc made the
//! cgroup: a lookup that finds no record or no pid is tried again, a few
//! times over half a minute, while the cgroup lives.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;

use crate::{
    model::Model,
    readers::{
        labels_for,
        runtime::{LookupError, Runtime, RuntimeRoots, WorkloadKey, lookup},
    },
};

/// When each try is made, after the cgroup was found.
const TRIES_AFTER_MS: [u64; 8] = [0, 250, 500, 1_000, 2_000, 4_000, 8_000, 16_000];

/// How often the resolver looks at its queue when it has nothing to do.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// What the resolver counts (exported by the metrics).
#[derive(Clone, Default)]
pub struct WorkloadCounters {
    /// Lookups made (each try counts).
    pub lookups: Counter,
    /// Lookups that failed to read or parse a runtime's record.
    pub errors: Counter,
    /// Cgroups not looked up: the queue was full.
    pub dropped: Counter,
}

/// The sampler's end of the queue.
#[derive(Clone)]
pub struct WorkloadFeed {
    tx: SyncSender<String>,
    counters: WorkloadCounters,
}

impl WorkloadFeed {
    /// A cgroup appeared: queue it when its path names a container. Never
    /// blocks; a full queue drops it (counted).
    pub fn found(&self, path: &str) {
        if labels_for(path).container_id.is_none() {
            return;
        }
        match self.tx.try_send(path.to_owned()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.inc();
            }
            // The resolver ended: the daemon is going down with it.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// A cgroup waiting for its next try.
struct Pending {
    due: Instant,
    found_at: Instant,
    tries: usize,
}

pub struct WorkloadResolver {
    roots: RuntimeRoots,
    model: Arc<Model>,
    rx: Receiver<String>,
    pending: HashMap<String, Pending>,
    counters: WorkloadCounters,
    /// Roots whose errors were logged once already.
    warned: HashSet<&'static str>,
}

impl WorkloadResolver {
    /// The resolver and the sampler's feed; `queue` cgroups can wait.
    pub fn new(roots: RuntimeRoots, model: Arc<Model>, queue: usize, counters: WorkloadCounters) -> (Self, WorkloadFeed) {
        let (tx, rx) = sync_channel(queue.max(1));
        let feed = WorkloadFeed { tx, counters: counters.clone() };
        (Self { roots, model, rx, pending: HashMap::new(), counters, warned: HashSet::new() }, feed)
    }

    /// Runs until the sampler's feed is gone.
    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            let wait = self.pending.values().map(|p| p.due.saturating_duration_since(now)).min().unwrap_or(IDLE_WAIT);
            match self.rx.recv_timeout(wait) {
                Ok(path) => self.queue(path),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(path) = self.rx.try_recv() {
                self.queue(path);
            }
            self.try_due(Instant::now());
        }
    }

    fn queue(&mut self, path: String) {
        let now = Instant::now();
        // A path found again is a new cgroup (a restarted container): start over.
        self.pending.insert(path, Pending { due: now, found_at: now, tries: 0 });
    }

    fn try_due(&mut self, now: Instant) {
        let due: Vec<String> = self.pending.iter().filter(|(_, p)| p.due <= now).map(|(path, _)| path.clone()).collect();
        for path in due {
            let done = self.try_one(&path);
            let Some(p) = self.pending.get_mut(&path) else { continue };
            p.tries += 1;
            // A cgroup already gone keeps what was found: its container will
            // not start again under this cgroup.
            match TRIES_AFTER_MS.get(p.tries) {
                Some(&after) if !done && self.model.is_tracked(&path) => p.due = p.found_at + Duration::from_millis(after),
                _ => {
                    self.pending.remove(&path);
                }
            }
        }
    }

    /// One lookup. Whether it is complete: the record named the container
    /// and gave its init pid.
    fn try_one(&mut self, path: &str) -> bool {
        let labels = labels_for(path);
        let Some(id) = labels.container_id.as_deref() else { return true };
        let key = WorkloadKey { container_id: id, runtime: labels.runtime.and_then(Runtime::from_name), pod_uid: labels.pod_uid.as_deref() };
        let started = Instant::now();
        let found = lookup(&self.roots, &key);
        self.counters.lookups.inc();
        match found {
            Ok(Some(meta)) => {
                log::debug!(
                    "{}: container {} named {:?} (image {:?}, pod {:?}/{:?}, init pid {:?}) in {} us",
                    crate::wire::printable(path),
                    id,
                    meta.name.as_deref().map(crate::wire::printable),
                    meta.image.as_deref().map(crate::wire::printable),
                    meta.namespace.as_deref().map(crate::wire::printable),
                    meta.pod.as_deref().map(crate::wire::printable),
                    meta.init_pid,
                    started.elapsed().as_micros()
                );
                let complete = meta.init_pid.is_some();
                self.model.remember_container(path, meta);
                complete
            }
            Ok(None) => false,
            Err(e) => {
                self.counters.errors.inc();
                let root = self.root_of(&e);
                if self.warned.insert(root) {
                    log::warn!("container names from {root} ([workloads]): {e} (names are left out; further errors are counted in oomwatch_workload_lookup_errors_total)");
                } else {
                    log::debug!("container names: {e}");
                }
                false
            }
        }
    }

    /// The `[workloads]` setting whose directory an error is under, to log
    /// once per runtime.
    fn root_of(&self, e: &LookupError) -> &'static str {
        let path = match e {
            LookupError::Read { path, .. } | LookupError::NotAFile { path } | LookupError::TooLarge { path, .. } | LookupError::Parse { path, .. } => path,
            LookupError::InvalidId(_) => return "a container id",
        };
        self.roots
            .named()
            .into_iter()
            .find(|(_, root)| path.starts_with(root))
            .map_or("a runtime record", |(key, _)| key)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    /// A real record captured from dockerd (readers/runtime/testdata).
    const PLAIN_ID: &str = "87e498ba7d8439060ef55093c6acb78b4afb3d2392cd35e6e2f99b59c513f877";
    const BROKEN_ID: &str = "11e498ba7d8439060ef55093c6acb78b4afb3d2392cd35e6e2f99b59c513f877";

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn docker_host(name: &str) -> (Dir, RuntimeRoots) {
        let root = std::env::temp_dir().join(format!("oomwatch-workloads-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let containers = root.join("var/lib/docker/containers");
        fs::create_dir_all(containers.join(PLAIN_ID)).unwrap();
        fs::create_dir_all(containers.join(BROKEN_ID)).unwrap();
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/readers/runtime/testdata/docker-plain.config.v2.json");
        fs::copy(fixture, containers.join(PLAIN_ID).join("config.v2.json")).unwrap();
        fs::write(containers.join(BROKEN_ID).join("config.v2.json"), b"{\"ID\": ").unwrap();
        let roots = RuntimeRoots::under(&root);
        (Dir(root), roots)
    }

    #[test]
    fn names_new_container_cgroups_and_counts_broken_records() {
        let (_dir, roots) = docker_host("resolve");
        let model = Arc::new(Model::default());
        let counters = WorkloadCounters::default();
        let (resolver, feed) = WorkloadResolver::new(roots, model.clone(), 16, counters.clone());
        let good = format!("/system.slice/docker-{PLAIN_ID}.scope");
        let broken = format!("/system.slice/docker-{BROKEN_ID}.scope");
        for path in [&good, &broken, &"/system.slice/nginx.service".to_owned()] {
            model.admit(path, 1, std::path::Path::new("/nonexistent"));
            feed.found(path);
        }
        let thread = std::thread::spawn(move || resolver.run());
        let deadline = Instant::now() + Duration::from_secs(10);
        while model.workload(&good).0.container_name.is_none() || counters.errors.get() == 0 {
            assert!(Instant::now() < deadline, "not resolved: {:?}, errors {}", model.workload(&good), counters.errors.get());
            std::thread::sleep(Duration::from_millis(10));
        }
        let (w, init_pid) = model.workload(&good);
        assert_eq!((w.container_name.as_deref(), w.image.as_deref(), w.runtime.as_deref()), (Some("web-frontend"), Some("oomwatch-test-busybox:1"), Some("docker")));
        assert_eq!(init_pid, Some(6845), "Docker's State.Pid");
        assert_eq!(model.workload(&broken).0.container_name, None, "a malformed record names nothing");
        assert_eq!(model.containers_remembered(), 1, "a unit without a container is not looked up");
        drop(feed);
        thread.join().unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (_dir, roots) = docker_host("full");
        let counters = WorkloadCounters::default();
        let (_resolver, feed) = WorkloadResolver::new(roots, Arc::new(Model::default()), 1, counters.clone());
        let started = Instant::now();
        for _ in 0..3 {
            feed.found(&format!("/d/{PLAIN_ID}"));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(counters.dropped.get(), 2);
    }
}
