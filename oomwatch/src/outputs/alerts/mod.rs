//! Early warning: rules over the model's signals (forecast, PSI, reclaim
//! stalls) and over the event stream (kills), an alert lifecycle, and the
//! sinks that carry transitions out. Reads the model and the bus; writes
//! only alert state, which lives here.

pub mod engine;
pub mod sinks;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    config::{AlertsConfig, SinksConfig},
    model::{Model, bus::EventBus},
    wire::{AlertEvent, AlertKey, AlertState, AlertsReport, Event, EventBody, Transition},
};
pub use engine::{Engine, FiringAlert, Signals};
use sinks::{NotificationCounters, SinkSet};

/// Shared between the evaluation task and the readers (metrics, socket).
pub struct Alerts {
    engine: Mutex<Engine>,
    sinks: Mutex<SinkSet>,
    log: Mutex<bool>,
    pub notifications: NotificationCounters,
    keeper: Mutex<Keeper>,
}

/// Where the firing alerts are kept across restarts (the daemon hands the
/// journal's state area), and what was last handed to it.
type KeepFiring = Box<dyn Fn(&[FiringAlert]) + Send + Sync>;

#[derive(Default)]
struct Keeper {
    keep: Option<KeepFiring>,
    last: Option<(Instant, Vec<FiringAlert>)>,
}

/// A kill while its alert fires changes only its count and last kill: kept
/// at most this often.
const KEEP_UPDATES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Alerts {
    pub fn new(alerts: AlertsConfig, sinks: &SinksConfig) -> Arc<Self> {
        Self::restored(alerts, sinks, Vec::new(), Vec::new())
    }

    /// Alerts that take over the last run's firing alerts (the Alertmanager
    /// sinks go on re-sending them: no flap) and its transitions.
    pub fn restored(alerts: AlertsConfig, sinks: &SinksConfig, firing: Vec<FiringAlert>, history: Vec<Transition>) -> Arc<Self> {
        let notifications = NotificationCounters::default();
        let still_firing: Vec<Transition> = firing
            .iter()
            .map(|f| Transition {
                key: f.key.clone(),
                state: AlertState::Firing,
                value: f.value,
                summary: f.summary.clone(),
                at: f.firing_since.clone(),
                firing_since: Some(f.firing_since.clone()),
                workload: None,
                description: None,
            })
            .collect();
        let mut engine = Engine::new(alerts);
        engine.restore(firing, history, Instant::now(), SystemTime::now());
        Arc::new(Self {
            engine: Mutex::new(engine),
            sinks: Mutex::new(SinkSet::start(sinks, notifications.clone(), &still_firing)),
            log: Mutex::new(sinks.log),
            notifications,
            keeper: Mutex::default(),
        })
    }

    /// `keep` gets the firing alerts whenever they change (not waiting on a disk).
    pub fn keep_firing_with(&self, keep: impl Fn(&[FiringAlert]) + Send + Sync + 'static) {
        let now = Instant::now();
        let firing = self.engine().firing_alerts(now, SystemTime::now());
        let mut k = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        k.last = Some((now, firing));
        k.keep = Some(Box::new(keep));
    }

    /// Hands the firing alerts to the keeper when they changed: at once
    /// after a transition, at most every [`KEEP_UPDATES_EVERY`] otherwise.
    fn keep_firing(&self, transitioned: bool) {
        let now = Instant::now();
        let mut k = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        if k.keep.is_none() {
            return;
        }
        if !transitioned && k.last.as_ref().is_some_and(|(at, _)| now.saturating_duration_since(*at) < KEEP_UPDATES_EVERY) {
            return;
        }
        let firing = self.engine().firing_alerts(now, SystemTime::now());
        if k.last.as_ref().is_some_and(|(_, last)| *last == firing) {
            return;
        }
        if let Some(keep) = &k.keep {
            keep(&firing);
        }
        k.last = Some((now, firing));
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn engine_for_tests(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine()
    }

    /// Applies a reloaded configuration: thresholds now, sinks rebuilt (the
    /// alerts firing now are handed to the new Alertmanager sinks).
    pub fn reconfigure(&self, alerts: AlertsConfig, sinks: &SinksConfig) {
        let firing: Vec<Transition> = {
            let mut e = self.engine();
            e.reconfigure(alerts);
            let keys: Vec<AlertKey> = e.firing().cloned().collect();
            e.history().filter(|t| t.state == AlertState::Firing && keys.contains(&t.key)).cloned().collect()
        };
        *self.sinks.lock().unwrap_or_else(|e| e.into_inner()) = SinkSet::start(sinks, self.notifications.clone(), &firing);
        *self.log.lock().unwrap_or_else(|e| e.into_inner()) = sinks.log;
    }

    pub fn report(&self) -> AlertsReport {
        let e = self.engine();
        AlertsReport { time: crate::wire::rfc3339(SystemTime::now()), active: e.active(), history: e.history().cloned().collect() }
    }

    pub fn for_each_firing(&self, mut f: impl FnMut(&AlertKey)) {
        for k in self.engine().firing() {
            f(k);
        }
    }

    fn publish(&self, bus: &EventBus, transitions: Vec<Transition>) {
        let transitioned = !transitions.is_empty();
        if transitioned {
            self.announce(bus, transitions);
        }
        // After the events: the journal holds a transition before the state
        // that follows from it.
        self.keep_firing(transitioned);
    }

    fn announce(&self, bus: &EventBus, transitions: Vec<Transition>) {
        let log = *self.log.lock().unwrap_or_else(|e| e.into_inner());
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for t in transitions {
            if log {
                match t.state {
                    AlertState::Firing => log::warn!("ALERT {} {} {}: {}", t.key.alert.as_str(), t.key.severity.as_str(), t.key.cgroup, t.summary),
                    AlertState::Resolved => log::info!("RESOLVED {} {} {}", t.key.alert.as_str(), t.key.severity.as_str(), t.key.cgroup),
                    _ => log::debug!("alert {} {} {} is {}", t.key.alert.as_str(), t.key.severity.as_str(), t.key.cgroup, t.state.as_str()),
                }
            }
            sinks.dispatch(&t);
            let body = EventBody::Alert(AlertEvent {
                alert: t.key.alert,
                severity: t.key.severity,
                state: t.state,
                value: t.value,
                summary: t.summary.clone(),
                firing_since: t.firing_since.clone(),
                workload: t.workload.clone(),
            });
            bus.publish(Event::new(body, t.at.clone(), t.key.cgroup.clone(), Some(crate::kernel::clock::monotonic_ns())));
        }
    }
}

/// Each transition with its cgroup's workload names, from the model.
fn named(model: &Model, mut transitions: Vec<Transition>) -> Vec<Transition> {
    for t in &mut transitions {
        let (workload, _) = model.workload(&t.key.cgroup);
        t.workload = (!workload.is_empty()).then_some(workload);
    }
    transitions
}

fn slot<'a>(all: &'a mut HashMap<String, Signals>, path: &str) -> &'a mut Signals {
    all.entry(path.to_owned()).or_insert_with(|| Signals { cgroup: path.to_owned(), ..Default::default() })
}

/// What the rules see now, per cgroup and for the host ("/").
fn gather(model: &Model) -> HashMap<String, Signals> {
    let mut all: HashMap<String, Signals> = HashMap::new();
    model.for_each_signalled(|path, c| {
        // A cgroup with no forecast and no stall has nothing for a rule to
        // hold on: it is left out (10,000 of them cost 20,000 strings a
        // tick; visiting them at all, 3 ms a tick), and evaluated only
        // while one of its alerts is open.
        if c.forecast.is_none() && c.reclaim_ratio.is_none() {
            return;
        }
        let s = slot(&mut all, path);
        s.eta_s = c.forecast.map(|f| f.eta_s);
        s.forecast = c.forecast;
        s.reclaim_ratio = c.reclaim_ratio;
    });
    model.for_each_pressure(|path, p| slot(&mut all, path).psi_some_avg10 = Some(p.some.avg10));
    let node = model.node();
    let host = slot(&mut all, "/");
    host.eta_s = node.forecast.map(|f| f.eta_s);
    host.forecast = node.forecast;
    host.psi_some_avg10 = node.pressure.map(|p| p.some.avg10);
    all
}

/// Whether a cgroup is still there for its alerts: tracked, or with PSI.
fn signals_live(model: &Model, path: &str) -> bool {
    model.is_tracked(path) || model.pressure_of(path).is_some()
}

/// Evaluates after every sampling pass (`sampled`), at the configured
/// interval when no sampler runs, and at once on kills and PSI notifications.
pub async fn run(alerts: Arc<Alerts>, model: Arc<Model>, bus: Arc<EventBus>, sampled: Arc<tokio::sync::Notify>) {
    let (_, mut rx) = bus.subscribe(|_| false);
    let every = alerts.engine().config().evaluate_every;
    loop {
        tokio::select! {
            _ = async {
                let _ = tokio::time::timeout(every * 2, sampled.notified()).await;
            } => {
                let mut signals = gather(&model);
                let (now, wall) = (Instant::now(), SystemTime::now());
                let mut out = Vec::new();
                {
                    let mut e = alerts.engine();
                    let live = |p: &str| signals_live(&model, p);
                    for path in e.open_cgroups() {
                        if live(&path) {
                            slot(&mut signals, &path);
                        }
                    }
                    for s in signals.values() {
                        out.extend(e.evaluate(s, now, wall));
                    }
                    out.extend(e.tick(&|p| signals.contains_key(p) || live(p), now, wall));
                }
                alerts.publish(&bus, named(&model, out));
            }
            ev = rx.recv() => {
                let p = match ev {
                    Ok(p) => p,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let (now, wall) = (Instant::now(), SystemTime::now());
                let out = match &p.event.body {
                    // The later kills of a group kill belong to its first's alert.
                    EventBody::OomKill(k) if k.incident.as_ref().is_some_and(|i| i.victims_so_far > 1) => {
                        if let Some(i) = &k.incident {
                            alerts.engine().on_incident_kill(&i.first_victim_cgroup, now);
                        }
                        Vec::new()
                    }
                    EventBody::OomKill(k) => {
                        let victim = format!("{} (pid {})", k.victim.comm.as_deref().unwrap_or("?"), k.victim.pid);
                        let mut out = alerts.engine().on_kill(&p.event.cgroup, &victim, now, wall);
                        // Sinks tell why; the stream's alert event stays short.
                        out.iter_mut().for_each(|t| t.description = k.why.clone());
                        out
                    }
                    EventBody::Pressure(pe) => {
                        let mut s = gather(&model).remove(&p.event.cgroup).unwrap_or_else(|| Signals { cgroup: p.event.cgroup.clone(), ..Default::default() });
                        if pe.some_avg10.is_some() {
                            s.psi_some_avg10 = pe.some_avg10;
                        }
                        alerts.engine().evaluate(&s, now, wall)
                    }
                    _ => Vec::new(),
                };
                alerts.publish(&bus, named(&model, out));
            }
        }
    }
}
