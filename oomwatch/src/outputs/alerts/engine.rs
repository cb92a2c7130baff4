//! Alert lifecycle: pending -> firing -> resolved, with `for` durations and
//! hysteresis, one instance per (alert, severity, cgroup) so nothing fires
//! twice. Pure: it is fed signals and times and returns transitions, which
//! makes every rule testable without a kernel.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    config::AlertsConfig,
    model::Forecast,
    wire::{ActiveAlert, AlertKey, AlertName, AlertState, Severity, Transition},
};

/// What one evaluation sees for one cgroup (or the host, "/").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    pub cgroup: String,
    pub eta_s: Option<f64>,
    /// What the ETA was made from, for the alert text.
    pub forecast: Option<Forecast>,
    pub psi_some_avg10: Option<f64>,
    /// Share of wall time spent in reclaim stalls over the last interval.
    pub reclaim_ratio: Option<f64>,
}

#[derive(Clone, Debug)]
struct Instance {
    state: AlertState,
    since: Instant,
    since_wall: SystemTime,
    firing_since: Option<SystemTime>,
    /// When the condition last stopped holding while firing.
    clearing_since: Option<Instant>,
    value: Option<f64>,
    summary: String,
    last_kill: Option<Instant>,
}

/// A firing alert as kept across restarts: restored firing, so a restart
/// neither announces it again nor forgets it (it resolves, with a
/// transition, when its condition is gone).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FiringAlert {
    pub key: AlertKey,
    pub value: Option<f64>,
    pub summary: String,
    /// RFC 3339, as in transitions (Alertmanager's startsAt).
    pub firing_since: String,
    /// Kill alerts: the last kill (RFC 3339); they resolve `resolve_after` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_kill: Option<String>,
}

pub struct Engine {
    config: AlertsConfig,
    instances: HashMap<AlertKey, Instance>,
    history: VecDeque<Transition>,
}

/// Conditions clear only when comfortably past the threshold, so a value
/// hovering at it does not flap.
const HYSTERESIS: f64 = 1.25;

fn fmt_eta(s: f64) -> String {
    if s < 1.0 { "now".into() } else { format!("in {s:.0}s") }
}

impl Engine {
    pub fn new(config: AlertsConfig) -> Self {
        Self { config, instances: HashMap::new(), history: VecDeque::new() }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// New thresholds apply from the next evaluation; alert states survive.
    pub fn reconfigure(&mut self, config: AlertsConfig) {
        self.config = config;
        while self.history.len() > self.config.history {
            self.history.pop_front();
        }
    }

    pub fn history(&self) -> impl Iterator<Item = &Transition> {
        self.history.iter()
    }

    pub fn active(&self) -> Vec<ActiveAlert> {
        let mut v: Vec<ActiveAlert> = self
            .instances
            .iter()
            .filter(|(_, i)| matches!(i.state, AlertState::Pending | AlertState::Firing))
            .map(|(k, i)| ActiveAlert {
                key: k.clone(),
                state: i.state,
                since: crate::wire::rfc3339(i.since_wall),
                value: i.value,
                summary: i.summary.clone(),
            })
            .collect();
        v.sort_by(|a, b| (b.key.severity, &a.key.cgroup, a.key.alert).cmp(&(a.key.severity, &b.key.cgroup, b.key.alert)));
        v
    }

    /// The firing alerts, to be kept for the next run.
    pub fn firing_alerts(&self, now: Instant, wall: SystemTime) -> Vec<FiringAlert> {
        let wall_of = |t: Instant| crate::wire::rfc3339(wall.checked_sub(now.saturating_duration_since(t)).unwrap_or(wall));
        let mut v: Vec<FiringAlert> = self
            .instances
            .iter()
            .filter(|(_, i)| i.state == AlertState::Firing)
            .map(|(k, i)| FiringAlert {
                key: k.clone(),
                value: i.value,
                summary: i.summary.clone(),
                firing_since: crate::wire::rfc3339(i.firing_since.unwrap_or(i.since_wall)),
                last_kill: i.last_kill.map(wall_of),
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Takes over what the last run left: its firing alerts (firing again,
    /// without a transition) and its transitions, oldest first. Call before
    /// the first evaluation.
    pub fn restore(&mut self, firing: Vec<FiringAlert>, history: Vec<Transition>, now: Instant, wall: SystemTime) {
        let instant_of = |t: &str| {
            let at = humantime::parse_rfc3339_weak(t).ok()?;
            Some(now.checked_sub(wall.duration_since(at).unwrap_or_default()).unwrap_or(now))
        };
        for f in firing {
            let since_wall = humantime::parse_rfc3339_weak(&f.firing_since).unwrap_or(wall);
            let last_kill = match f.key.alert {
                // A kill alert without its last kill resolves a full
                // `resolve_after` from now rather than never.
                AlertName::OomKill => Some(f.last_kill.as_deref().and_then(instant_of).unwrap_or(now)),
                _ => None,
            };
            let inst = Instance {
                state: AlertState::Firing,
                since: instant_of(&f.firing_since).unwrap_or(now),
                since_wall,
                firing_since: Some(since_wall),
                clearing_since: None,
                value: f.value,
                summary: f.summary,
                last_kill,
            };
            self.instances.insert(f.key, inst);
        }
        let keep = self.config.history.max(1);
        let skip = history.len().saturating_sub(keep);
        let mut restored: VecDeque<Transition> = history.into_iter().skip(skip).collect();
        // Transitions of this run (none yet, normally) stay the newest.
        restored.extend(self.history.drain(..));
        while restored.len() > keep {
            restored.pop_front();
        }
        self.history = restored;
    }

    pub fn firing(&self) -> impl Iterator<Item = &AlertKey> {
        self.instances.iter().filter(|(_, i)| i.state == AlertState::Firing).map(|(k, _)| k)
    }

    /// Feeds one cgroup's (or the host's) signals; returns the transitions.
    pub fn evaluate(&mut self, s: &Signals, now: Instant, wall: SystemTime) -> Vec<Transition> {
        let mut out = Vec::new();
        let c = self.config.clone();
        let host = s.cgroup == "/";
        if c.oom_forecast.enabled {
            let f = &c.oom_forecast;
            for (severity, limit) in [(Severity::Warning, f.warning_eta), (Severity::Critical, f.critical_eta)] {
                let limit = limit.as_secs_f64();
                let (holds, clears) = match s.eta_s {
                    Some(eta) => (eta < limit, eta >= limit * HYSTERESIS),
                    None => (false, true),
                };
                let what = if host { "the host runs out of memory" } else { "the working set reaches the memory limit" };
                let summary = match (s.eta_s, s.forecast) {
                    (Some(e), Some(f)) => format!("{} {}", f.describe(what), fmt_eta(e)),
                    (Some(e), None) => format!("{what} {} at the current trend", fmt_eta(e)),
                    (None, _) => String::new(),
                };
                self.step(AlertKey { alert: AlertName::OomForecast, severity, cgroup: s.cgroup.clone() }, holds, clears, s.eta_s, summary, f.for_, f.resolve_for, now, wall, &mut out);
            }
        }
        let p = &c.memory_pressure;
        if p.enabled && (!host || p.host) {
            let threshold = p.some_avg10_percent;
            let (holds, clears) = match s.psi_some_avg10 {
                Some(v) => (v >= threshold, v < threshold / HYSTERESIS),
                None => (false, true),
            };
            let summary = s.psi_some_avg10.map(|v| format!("tasks waited on memory {v:.1}% of the last 10 s (threshold {threshold}%)")).unwrap_or_default();
            self.step(AlertKey { alert: AlertName::MemoryPressure, severity: Severity::Warning, cgroup: s.cgroup.clone() }, holds, clears, s.psi_some_avg10, summary, p.for_, p.resolve_for, now, wall, &mut out);
        }
        let r = &c.reclaim_storm;
        if r.enabled && !host {
            let (holds, clears) = match s.reclaim_ratio {
                Some(v) => (v >= r.stall_ratio, v < r.stall_ratio / HYSTERESIS),
                None => (false, true),
            };
            let summary = s.reclaim_ratio.map(|v| format!("tasks stalled in memory reclaim {:.0}% of the time", v * 100.0)).unwrap_or_default();
            self.step(AlertKey { alert: AlertName::ReclaimStorm, severity: Severity::Warning, cgroup: s.cgroup.clone() }, holds, clears, s.reclaim_ratio, summary, r.for_, r.resolve_for, now, wall, &mut out);
        }
        out
    }

    /// An OOM kill: critical at once; a further kill while firing updates it
    /// without a duplicate transition.
    pub fn on_kill(&mut self, cgroup: &str, victim: &str, now: Instant, wall: SystemTime) -> Vec<Transition> {
        if !self.config.oom_kill.enabled {
            return Vec::new();
        }
        let key = AlertKey { alert: AlertName::OomKill, severity: Severity::Critical, cgroup: cgroup.to_owned() };
        let summary = format!("the kernel OOM-killed {victim}");
        let mut out = Vec::new();
        match self.instances.get_mut(&key) {
            Some(i) if i.state == AlertState::Firing => {
                i.last_kill = Some(now);
                i.value = Some(i.value.unwrap_or(1.0) + 1.0);
                i.summary = summary;
            }
            _ => {
                let inst = Instance {
                    state: AlertState::Firing,
                    since: now,
                    since_wall: wall,
                    firing_since: Some(wall),
                    clearing_since: None,
                    value: Some(1.0),
                    summary,
                    last_kill: Some(now),
                };
                out.push(self.transition(&key, &inst, wall));
                self.instances.insert(key, inst);
            }
        }
        out
    }

    /// A further kill of an incident whose first kill fired (in
    /// `first_victim_cgroup`): counted in that alert, no new transition.
    pub fn on_incident_kill(&mut self, first_victim_cgroup: &str, now: Instant) {
        let key = AlertKey { alert: AlertName::OomKill, severity: Severity::Critical, cgroup: first_victim_cgroup.to_owned() };
        if let Some(i) = self.instances.get_mut(&key).filter(|i| i.state == AlertState::Firing) {
            i.last_kill = Some(now);
            i.value = Some(i.value.unwrap_or(1.0) + 1.0);
        }
    }

    /// Resolves kill alerts that saw no kill for `resolve_after`, and
    /// conditions for cgroups that vanished (they have no signals any more).
    /// Cgroups with an alert pending or firing: these are evaluated even
    /// when nothing holds any more (so that they clear).
    pub fn open_cgroups(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| matches!(i.state, AlertState::Pending | AlertState::Firing))
            .map(|(k, _)| k.cgroup.clone())
            .collect();
        paths.dedup();
        paths
    }

    pub fn tick(&mut self, live: &dyn Fn(&str) -> bool, now: Instant, wall: SystemTime) -> Vec<Transition> {
        let resolve_after = self.config.oom_kill.resolve_after;
        let mut out = Vec::new();
        let keys: Vec<AlertKey> = self.instances.keys().cloned().collect();
        for key in keys {
            let inst = &self.instances[&key];
            if !matches!(inst.state, AlertState::Pending | AlertState::Firing) {
                continue;
            }
            let done = match key.alert {
                AlertName::OomKill => inst.last_kill.is_some_and(|t| now.saturating_duration_since(t) >= resolve_after),
                _ => key.cgroup != "/" && !live(&key.cgroup),
            };
            if done {
                let next = if inst.state == AlertState::Firing { AlertState::Resolved } else { AlertState::Cancelled };
                self.set_state(&key, next, now, wall, &mut out);
            }
        }
        // Forget settled instances so memory stays bounded with cgroup churn.
        self.instances.retain(|_, i| matches!(i.state, AlertState::Pending | AlertState::Firing));
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        key: AlertKey,
        holds: bool,
        clears: bool,
        value: Option<f64>,
        summary: String,
        for_: Duration,
        resolve_for: Duration,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<Transition>,
    ) {
        let state = self.instances.get(&key).map(|i| i.state);
        match state {
            None | Some(AlertState::Resolved | AlertState::Cancelled) => {
                if holds {
                    let inst = Instance {
                        state: AlertState::Pending,
                        since: now,
                        since_wall: wall,
                        firing_since: None,
                        clearing_since: None,
                        value,
                        summary,
                        last_kill: None,
                    };
                    out.push(self.transition(&key, &inst, wall));
                    self.instances.insert(key.clone(), inst);
                    if for_.is_zero() {
                        self.set_state(&key, AlertState::Firing, now, wall, out);
                    }
                }
            }
            Some(AlertState::Pending) => {
                let inst = self.instances.get_mut(&key).expect("present");
                if holds {
                    inst.value = value;
                    inst.summary = summary;
                    if now.saturating_duration_since(inst.since) >= for_ {
                        self.set_state(&key, AlertState::Firing, now, wall, out);
                    }
                } else {
                    self.set_state(&key, AlertState::Cancelled, now, wall, out);
                }
            }
            Some(AlertState::Firing) => {
                let inst = self.instances.get_mut(&key).expect("present");
                if value.is_some() {
                    inst.value = value;
                }
                if !summary.is_empty() {
                    inst.summary = summary;
                }
                if clears {
                    let since = *inst.clearing_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= resolve_for {
                        self.set_state(&key, AlertState::Resolved, now, wall, out);
                    }
                } else {
                    inst.clearing_since = None;
                }
            }
        }
    }

    fn set_state(&mut self, key: &AlertKey, state: AlertState, now: Instant, wall: SystemTime, out: &mut Vec<Transition>) {
        let Some(inst) = self.instances.get_mut(key) else { return };
        inst.state = state;
        inst.since = now;
        inst.since_wall = wall;
        inst.clearing_since = None;
        if state == AlertState::Firing {
            inst.firing_since = Some(wall);
        }
        let inst = inst.clone();
        out.push(self.transition(key, &inst, wall));
    }

    fn transition(&mut self, key: &AlertKey, inst: &Instance, wall: SystemTime) -> Transition {
        let t = Transition {
            key: key.clone(),
            state: inst.state,
            value: inst.value,
            summary: inst.summary.clone(),
            at: crate::wire::rfc3339(wall),
            firing_since: inst.firing_since.map(crate::wire::rfc3339),
            workload: None,
            description: None,
        };
        if self.history.len() >= self.config.history.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(t.clone());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::new(AlertsConfig::default())
    }

    fn eta(e: Option<f64>) -> Signals {
        Signals { cgroup: "/c".into(), eta_s: e, ..Default::default() }
    }

    fn states(t: &[Transition]) -> Vec<(AlertName, Severity, AlertState)> {
        t.iter().map(|t| (t.key.alert, t.key.severity, t.state)).collect()
    }

    #[test]
    fn forecast_goes_pending_then_firing_then_resolved() {
        let mut e = engine();
        let t0 = Instant::now();
        let w = SystemTime::now();
        use AlertName::OomForecast as F;
        use AlertState::*;
        use Severity::*;
        assert_eq!(states(&e.evaluate(&eta(Some(40.0)), t0, w)), vec![(F, Warning, Pending)]);
        assert!(e.evaluate(&eta(Some(38.0)), t0 + Duration::from_secs(1), w).is_empty());
        assert_eq!(states(&e.evaluate(&eta(Some(36.0)), t0 + Duration::from_secs(2), w)), vec![(F, Warning, Firing)]);
        // Still firing: no duplicate.
        assert!(e.evaluate(&eta(Some(30.0)), t0 + Duration::from_secs(3), w).is_empty());
        // Critical joins.
        assert_eq!(states(&e.evaluate(&eta(Some(10.0)), t0 + Duration::from_secs(4), w)), vec![(F, Critical, Pending)]);
        assert_eq!(states(&e.evaluate(&eta(Some(8.0)), t0 + Duration::from_secs(6), w)), vec![(F, Critical, Firing)]);
        // Trend gone: both resolve after resolve_for (10 s), not before.
        assert!(e.evaluate(&eta(None), t0 + Duration::from_secs(7), w).is_empty());
        assert!(e.evaluate(&eta(None), t0 + Duration::from_secs(12), w).is_empty());
        let t = e.evaluate(&eta(None), t0 + Duration::from_secs(17), w);
        assert_eq!(states(&t), vec![(F, Warning, Resolved), (F, Critical, Resolved)]);
        assert_eq!(e.history().count(), 6);
    }

    #[test]
    fn a_blip_is_cancelled_not_fired() {
        let mut e = engine();
        let t0 = Instant::now();
        let w = SystemTime::now();
        e.evaluate(&eta(Some(40.0)), t0, w);
        let t = e.evaluate(&eta(None), t0 + Duration::from_secs(1), w);
        assert_eq!(states(&t), vec![(AlertName::OomForecast, Severity::Warning, AlertState::Cancelled)]);
        assert_eq!(e.firing().count(), 0);
    }

    #[test]
    fn hysteresis_keeps_a_hovering_value_firing() {
        let mut e = engine();
        let t0 = Instant::now();
        let w = SystemTime::now();
        let psi = |v| Signals { cgroup: "/c".into(), psi_some_avg10: Some(v), ..Default::default() };
        e.evaluate(&psi(25.0), t0, w);
        e.evaluate(&psi(25.0), t0 + Duration::from_secs(2), w);
        assert_eq!(e.firing().count(), 1);
        // Just under the threshold (20%) but above threshold/1.25: not clearing.
        for s in 3..40 {
            e.evaluate(&psi(18.0), t0 + Duration::from_secs(s), w);
        }
        assert_eq!(e.firing().count(), 1, "18% hovers near 20%: stays firing");
    }

    #[test]
    fn kills_fire_at_once_and_resolve_later() {
        let mut e = engine();
        let t0 = Instant::now();
        let w = SystemTime::now();
        let t = e.on_kill("/c", "hog (pid 1)", t0, w);
        assert_eq!(states(&t), vec![(AlertName::OomKill, Severity::Critical, AlertState::Firing)]);
        assert!(e.on_kill("/c", "hog (pid 2)", t0 + Duration::from_secs(1), w).is_empty(), "no duplicate");
        assert!(e.tick(&|_| true, t0 + Duration::from_secs(200), w).is_empty());
        let t = e.tick(&|_| true, t0 + Duration::from_secs(302), w);
        assert_eq!(states(&t), vec![(AlertName::OomKill, Severity::Critical, AlertState::Resolved)]);
    }

    #[test]
    fn a_group_kill_fires_once_for_its_incident() {
        let (mut e, t0, w) = (engine(), Instant::now(), SystemTime::now());
        let t = e.on_kill("/g/a", "w (pid 1)", t0, w);
        assert_eq!(states(&t), vec![(AlertName::OomKill, Severity::Critical, AlertState::Firing)]);
        e.on_incident_kill("/g/a", t0);
        e.on_incident_kill("/g/a", t0);
        let active = e.active();
        assert_eq!(active.len(), 1, "one alert for the incident, not one per victim cgroup");
        assert_eq!(active[0].value, Some(3.0), "the alert counts every victim");
    }

    #[test]
    fn vanished_cgroups_resolve_and_are_forgotten() {
        let mut e = engine();
        let t0 = Instant::now();
        let w = SystemTime::now();
        e.evaluate(&eta(Some(5.0)), t0, w);
        e.evaluate(&eta(Some(4.0)), t0 + Duration::from_secs(3), w);
        assert_eq!(e.firing().count(), 2);
        let t = e.tick(&|_| false, t0 + Duration::from_secs(4), w);
        assert!(t.iter().all(|t| t.state == AlertState::Resolved), "{t:?}");
        assert!(e.instances.is_empty());
    }

    #[test]
    fn restored_alerts_fire_on_without_a_new_transition_and_resolve_when_gone() {
        let t0 = Instant::now();
        let w = SystemTime::now();
        let mut before = engine();
        before.evaluate(&eta(Some(40.0)), t0, w);
        before.evaluate(&eta(Some(36.0)), t0 + Duration::from_secs(2), w);
        before.on_kill("/k", "hog (pid 1)", t0, w);
        let firing = before.firing_alerts(t0 + Duration::from_secs(2), w);
        assert_eq!(firing.len(), 2, "{firing:?}");
        let history: Vec<Transition> = before.history().cloned().collect();

        // A restart: the engine is new, its clock too.
        let t1 = Instant::now() + Duration::from_secs(100);
        let mut after = engine();
        after.restore(firing.clone(), history.clone(), t1, w);
        assert_eq!(after.firing().count(), 2);
        assert_eq!(after.history().cloned().collect::<Vec<_>>(), history);
        assert!(after.evaluate(&eta(Some(30.0)), t1, w).is_empty(), "still firing: not announced again");
        assert!(after.on_kill("/k", "hog (pid 2)", t1, w).is_empty(), "a kill while restored firing: no duplicate");
        assert_eq!(after.firing_alerts(t1, w).iter().map(|f| &f.firing_since).collect::<Vec<_>>(), firing.iter().map(|f| &f.firing_since).collect::<Vec<_>>());
        // The condition is gone: resolved (a transition), after resolve_for.
        assert!(after.evaluate(&eta(None), t1 + Duration::from_secs(1), w).is_empty());
        let t = after.evaluate(&eta(None), t1 + Duration::from_secs(12), w);
        assert_eq!(states(&t), vec![(AlertName::OomForecast, Severity::Warning, AlertState::Resolved)]);
        assert!(t[0].firing_since.is_some());
    }

    #[test]
    fn a_restored_kill_alert_resolves_from_its_last_kill() {
        let w = SystemTime::now();
        let t1 = Instant::now() + Duration::from_secs(1000);
        let mut e = engine();
        let key = AlertKey { alert: AlertName::OomKill, severity: Severity::Critical, cgroup: "/k".into() };
        let kill_at = crate::wire::rfc3339(w - Duration::from_secs(290));
        e.restore(vec![FiringAlert { key, value: Some(2.0), summary: "s".into(), firing_since: kill_at.clone(), last_kill: Some(kill_at) }], Vec::new(), t1, w);
        assert!(e.tick(&|_| true, t1, w).is_empty(), "290 s after the last kill: still firing");
        let t = e.tick(&|_| true, t1 + Duration::from_secs(11), w);
        assert_eq!(states(&t), vec![(AlertName::OomKill, Severity::Critical, AlertState::Resolved)]);
    }

    #[test]
    fn history_is_bounded() {
        let mut e = Engine::new(AlertsConfig { history: 3, ..Default::default() });
        let t0 = Instant::now();
        let w = SystemTime::now();
        for i in 0..10 {
            e.on_kill(&format!("/c{i}"), "x", t0, w);
        }
        assert_eq!(e.history().count(), 3);
    }

    #[test]
    fn the_forecast_alert_says_what_was_seen() {
        use crate::model::Basis;
        let mut e = engine();
        let f = Forecast { eta_s: 40.0, slope_bytes_per_s: 3.0 * 1048576.0, basis: Basis::Cycles { cycles: 9, period_s: 5.0, troughs_rising: true }, under_pressure: false };
        let t = e.evaluate(&Signals { cgroup: "/c".into(), eta_s: Some(40.0), forecast: Some(f), ..Default::default() }, Instant::now(), SystemTime::now());
        assert_eq!(t[0].summary, "troughs rising 3.0 MiB/s under a GC pattern (9 cycles, one every ~5s): the next peak reaches the memory limit in 40s");
    }

    #[test]
    fn host_uses_the_host_wording_and_no_reclaim_rule() {
        let mut e = engine();
        let t = e.evaluate(&Signals { cgroup: "/".into(), eta_s: Some(5.0), reclaim_ratio: Some(0.9), ..Default::default() }, Instant::now(), SystemTime::now());
        assert!(t.iter().all(|t| t.key.alert == AlertName::OomForecast));
        assert!(t[0].summary.contains("host"), "{}", t[0].summary);
    }
}
