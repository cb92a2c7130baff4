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
pub use engine::{Engine, Signals};
use sinks::{NotificationCounters, SinkSet};

/// Shared between the evaluation task and the readers (metrics, socket).
pub struct Alerts {
    engine: Mutex<Engine>,
    sinks: Mutex<SinkSet>,
    log: Mutex<bool>,
    pub notifications: NotificationCounters,
}

impl Alerts {
    pub fn new(alerts: AlertsConfig, sinks: &SinksConfig) -> Arc<Self> {
        let notifications = NotificationCounters::default();
        Arc::new(Self {
            engine: Mutex::new(Engine::new(alerts)),
            sinks: Mutex::new(SinkSet::start(sinks, notifications.clone(), &[])),
            log: Mutex::new(sinks.log),
            notifications,
        })
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
        if transitions.is_empty() {
            return;
        }
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
            });
            bus.publish(Event::new(body, t.at.clone(), t.key.cgroup.clone(), Some(crate::kernel::clock::monotonic_ns())));
        }
    }
}

fn slot<'a>(all: &'a mut HashMap<String, Signals>, path: &str) -> &'a mut Signals {
    all.entry(path.to_owned()).or_insert_with(|| Signals { cgroup: path.to_owned(), ..Default::default() })
}

/// What the rules see now, per cgroup and for the host ("/").
fn gather(model: &Model) -> HashMap<String, Signals> {
    let mut all: HashMap<String, Signals> = HashMap::new();
    model.for_each_cgroup(|path, c| {
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
                let signals = gather(&model);
                let (now, wall) = (Instant::now(), SystemTime::now());
                let mut out = Vec::new();
                {
                    let mut e = alerts.engine();
                    for s in signals.values() {
                        out.extend(e.evaluate(s, now, wall));
                    }
                    out.extend(e.tick(&|p| signals.contains_key(p), now, wall));
                }
                alerts.publish(&bus, out);
            }
            ev = rx.recv() => {
                let p = match ev {
                    Ok(p) => p,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let (now, wall) = (Instant::now(), SystemTime::now());
                let out = match &p.event.body {
                    EventBody::OomKill(k) => {
                        let victim = format!("{} (pid {})", k.victim.comm.as_deref().unwrap_or("?"), k.victim.pid);
                        alerts.engine().on_kill(&p.event.cgroup, &victim, now, wall)
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
                alerts.publish(&bus, out);
            }
        }
    }
}
