//! The reclaim feed: once a second, reads the kernel's per-thread reclaim
//! stall totals (`RECLAIM_THREADS`) and hands them to the model, which sums
//! them per cgroup (the reclaim_storm alert's ratio, the stall metrics) and
//! keeps the processes that stalled longest (`oomwatch status`).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::resolve::CgroupResolver;
use crate::{
    kernel::{decode::comm_str, loader::StallMaps, thread_map},
    model::{
        Model,
        reclaim::{ProcStalls, top_n},
    },
    readers::Hierarchy,
    wire::TopStaller,
};

/// Processes kept for the status answer.
const TOP_STALLERS: usize = 10;

pub struct ReclaimFeed {
    maps: StallMaps,
    resolver: Arc<CgroupResolver>,
    /// What the memcg ids are: memory cgroup ids (BTF walk) or, without
    /// BTF, v2 cgroup ids.
    hierarchy: Hierarchy,
    /// The psi_memstall probes are attached: memstall times mean something.
    memstall: bool,
    model: Arc<Model>,
}

impl ReclaimFeed {
    pub fn new(maps: StallMaps, resolver: Arc<CgroupResolver>, hierarchy: Hierarchy, memstall: bool, model: Arc<Model>) -> Self {
        Self { maps, resolver, hierarchy, memstall, model }
    }

    fn path(&self, id: u64) -> Option<String> {
        if id == 0 {
            return Some("unknown".to_owned());
        }
        self.resolver.resolve(self.hierarchy, id)
    }

    /// One pass over the kernel map: per-cgroup sums into the model, and
    /// the top stallers by process. Growth of a cgroup id that no longer
    /// resolves is not counted; a cgroup removed and created again under the
    /// same path continues its series.
    pub fn read_once(&self, now: Instant) {
        let mut procs: HashMap<u32, ProcStalls> = HashMap::new();
        let mut read = self.model.begin_reclaim_read();
        let complete = thread_map::for_each(&self.maps.threads, |tid, t| {
            read.observe(tid, t, now, |id| self.path(id));
            if t.count > 0 || t.memstall_ns > 0 {
                procs.entry(t.tgid).or_default().add(t);
            }
        });
        read.finish(complete, now);
        let top = top_n(procs, TOP_STALLERS)
            .into_iter()
            .map(|(pid, p)| TopStaller {
                pid,
                comm: comm_str(&p.comm),
                cgroup: self.path(p.memcg_id).unwrap_or_else(|| "unknown".to_owned()),
                count: p.count,
                total_ms: ms(p.total_ns),
                max_ms: ms(p.max_ns),
                memstall_ms: self.memstall.then(|| ms(p.memstall_ns)),
            })
            .collect();
        self.model.set_top_stallers(top);
    }

    /// Reads every `every`, on the blocking pool (a read is thousands of
    /// map entries through a few syscalls).
    pub async fn run(self, every: Duration) {
        let feed = Arc::new(self);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let feed = feed.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || feed.read_once(Instant::now())).await {
                log::error!("reclaim feed: a read of the kernel's stall map failed: {e}");
            }
        }
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}
