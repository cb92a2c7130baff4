//! Keeps PSI triggers on the host and on watched cgroups, and turns each
//! kernel notification into a `pressure` event within milliseconds. Triggers
//! follow cgroups as they come and go; how many are held is capped (each
//! costs the kernel a polling worker); a refused trigger is reported once,
//! never fatal.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use tokio::task::JoinHandle;

use super::psi_trigger::{PsiTrigger, TriggerError};
use crate::{
    model::{Model, bus::EventBus, counters::DaemonCounters},
    readers::{TriggerSpec, read_pressure},
    wire::{Event, EventBody, PressureEvent, rfc3339},
};

pub const HOST: &str = "/";

#[derive(Clone, Debug)]
pub struct TriggerConfig {
    pub spec: TriggerSpec,
    /// Triggers held at most, the host's included.
    pub max_triggers: usize,
    /// Root of the hierarchy whose cgroups have memory.pressure.
    pub cgroup_root: Option<PathBuf>,
    pub proc_root: PathBuf,
    pub reconcile_every: Duration,
}

pub struct TriggerManager {
    config: TriggerConfig,
    model: Arc<Model>,
    bus: Arc<EventBus>,
    counters: Arc<DaemonCounters>,
    active: HashMap<String, JoinHandle<()>>,
    refused: HashSet<String>,
    said_fallback: bool,
}

impl TriggerManager {
    pub fn new(config: TriggerConfig, model: Arc<Model>, bus: Arc<EventBus>, counters: Arc<DaemonCounters>) -> Self {
        Self { config, model, bus, counters, active: HashMap::new(), refused: HashSet::new(), said_fallback: false }
    }

    fn file_of(&self, path: &str) -> Option<PathBuf> {
        if path == HOST {
            return Some(self.config.proc_root.join("pressure/memory"));
        }
        Some(self.config.cgroup_root.as_ref()?.join(path.trim_start_matches('/')).join("memory.pressure"))
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.reconcile_every);
        loop {
            tick.tick().await;
            self.reconcile();
        }
    }

    /// Moves the held triggers towards: the host, then the highest-priority
    /// cgroups the model knows, up to the cap.
    pub fn reconcile(&mut self) {
        self.active.retain(|_, task| !task.is_finished());
        let mut desired = vec![HOST.to_owned()];
        if self.config.cgroup_root.is_some() {
            desired.extend(self.model.pressure_paths_by_priority().into_iter().filter(|p| p != HOST));
        }
        desired.truncate(self.config.max_triggers);
        let desired_set: HashSet<&String> = desired.iter().collect();
        self.active.retain(|path, task| {
            let keep = desired_set.contains(path);
            if !keep {
                task.abort();
            }
            keep
        });
        self.refused.retain(|p| desired_set.contains(p));
        for path in desired {
            if self.active.contains_key(&path) || self.refused.contains(&path) {
                continue;
            }
            let Some(file) = self.file_of(&path) else { continue };
            match PsiTrigger::register(&file, self.config.spec) {
                Ok(trigger) => {
                    if trigger.fell_back() && !self.said_fallback {
                        self.said_fallback = true;
                        log::info!(
                            "PSI trigger \"{}\" needs CAP_SYS_RESOURCE for its window; using \"{}\" instead (pressure events may arrive up to {:?} after the stall)",
                            trigger.requested(),
                            trigger.effective(),
                            trigger.effective().window
                        );
                    }
                    let task = tokio::spawn(watch(trigger, path.clone(), self.model.clone(), self.bus.clone(), self.counters.clone()));
                    self.active.insert(path, task);
                }
                Err(e) if e.is_gone() => {}
                Err(e) => {
                    log::warn!("{e}");
                    self.refused.insert(path);
                }
            }
        }
        self.counters.psi_triggers_active.set(self.active.len() as i64);
        self.counters.psi_triggers_refused.set(self.refused.len() as i64);
    }
}

async fn watch(mut trigger: PsiTrigger, path: String, model: Arc<Model>, bus: Arc<EventBus>, counters: Arc<DaemonCounters>) {
    let spec = trigger.effective().to_string();
    loop {
        match trigger.wait().await {
            Ok(_) => {
                let pressure = read_pressure(trigger.path()).ok().flatten();
                if let Some(p) = pressure {
                    if path == HOST {
                        model.observe_node_pressure(p);
                    } else {
                        model.observe_pressure(&path, p);
                    }
                }
                let event = Event {
                    body: EventBody::Pressure(PressureEvent {
                        trigger: spec.clone(),
                        some_avg10: pressure.map(|p| p.some.avg10),
                        full_avg10: pressure.and_then(|p| p.full).map(|f| f.avg10),
                        some_total_us: pressure.map(|p| p.some.total_us),
                        full_total_us: pressure.and_then(|p| p.full).map(|f| f.total_us),
                    }),
                    time: rfc3339(std::time::SystemTime::now()),
                    cgroup: path.clone(),
                    ktime_ns: Some(crate::kernel::clock::monotonic_ns()),
                    seq: 0,
                };
                counters.events_published.inc();
                bus.publish(event);
            }
            Err(TriggerError::Gone { .. }) => return,
            Err(e) => {
                log::warn!("{e}");
                return;
            }
        }
    }
}
