//! What one run leaves the next, in the journal's state area: the firing
//! alerts and the kill accounting. Taken over at start, before any source
//! runs; kept as it changes (alerts) or every reconciliation interval and at
//! once after unobserved kills (accounting), and at shutdown.
//!
//! The alert history is not kept here: it is the journal's `alert` events.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::Duration,
};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    model::{KillAccounting, Model, bus::EventBus},
    outputs::{
        alerts::{Alerts, FiringAlert},
        journal::{Journal, JournalReader, Order, Query},
    },
    readers::boot_id,
    wire::{AlertKey, EventBody, Transition},
};

const FIRING_ALERTS: &str = "alerts/firing";
const KILL_ACCOUNTING: &str = "kills/accounting";
/// How often the kill accounting is kept while nothing urgent changes it.
const KEEP_ACCOUNTING_EVERY: Duration = crate::sources::reconcile::INTERVAL;

/// The kill accounting as kept: up to which readings of the kernel's
/// counters every kill was seen or reported, on which boot, and the last
/// seq handed out when it was read (kills journalled after it were seen
/// but not yet counted in it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct KeptAccounting {
    boot_id: String,
    through_seq: u64,
    host: Option<u64>,
    #[serde(default)]
    cgroups: HashMap<String, u64>,
}

/// The last run's firing alerts and alert transitions (oldest first).
#[derive(Default)]
pub(super) struct LastAlerts {
    pub firing: Vec<FiringAlert>,
    pub history: Vec<Transition>,
}

pub(super) fn last_alerts(journal: &Journal, history_len: usize) -> LastAlerts {
    let reader = match journal.reader() {
        Ok(r) => r,
        Err(e) => {
            log::warn!("{e}; the last run's alerts are not restored");
            return LastAlerts::default();
        }
    };
    let firing = match reader.state(FIRING_ALERTS) {
        Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_else(|e| {
            log::warn!("journal {}: state {FIRING_ALERTS} does not parse ({e}); firing alerts start afresh", journal.path().display());
            Vec::new()
        }),
        Ok(None) => Vec::new(),
        Err(e) => {
            log::warn!("{e}; firing alerts start afresh");
            Vec::new()
        }
    };
    LastAlerts { firing, history: alert_history(&reader, history_len) }
}

fn alert_history(reader: &JournalReader, history_len: usize) -> Vec<Transition> {
    let q = Query { kinds: vec!["alert".into()], order: Order::NewestFirst, limit: Some(history_len.max(1)), ..Default::default() };
    let stored = match reader.query(&q) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("{e}; the alert history starts afresh");
            return Vec::new();
        }
    };
    let mut history: Vec<Transition> = stored
        .iter()
        .filter_map(|s| s.event().ok())
        .filter_map(|e| match e.body {
            EventBody::Alert(a) => Some(Transition {
                key: AlertKey { alert: a.alert, severity: a.severity, cgroup: e.cgroup },
                state: a.state,
                value: a.value,
                summary: a.summary,
                at: e.time,
                firing_since: a.firing_since,
                workload: a.workload,
                description: None,
            }),
            _ => None,
        })
        .collect();
    history.reverse();
    history
}

/// Logs what was taken over, so a restart's effect can be read in the log.
pub(super) fn log_restored(last: &LastAlerts) {
    if !last.firing.is_empty() || !last.history.is_empty() {
        let names: Vec<String> = last.firing.iter().map(|f| format!("{} {} {}", f.key.alert.as_str(), f.key.severity.as_str(), f.key.cgroup)).collect();
        log::info!(
            "journal: restored {} alert transition(s) and {} firing alert(s){}",
            last.history.len(),
            last.firing.len(),
            if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
        );
    }
}

/// From now on the firing alerts are kept in the journal as they change.
pub(super) fn keep_firing_alerts(alerts: &Alerts, journal: Arc<Journal>) {
    alerts.keep_firing_with(move |firing| match serde_json::to_string(firing) {
        // A drop is counted (and logged) by the journal.
        Ok(json) => drop(journal.put_state(FIRING_ALERTS, json)),
        Err(e) => log::warn!("journal: firing alerts not kept: {e}"),
    });
}

/// Hands the model where the last run's kill accounting left off. Kills the
/// last run saw after it last kept its accounting are in the journal: they
/// are counted as accounted for, not reported again as unobserved.
pub(super) fn restore_kill_accounting(journal: &Journal, model: &Model) {
    let Some(kept) = read_accounting(journal) else { return };
    let same_boot = boot_id(Path::new("/proc")).is_some_and(|b| b == kept.boot_id);
    let mut last = KillAccounting { host: kept.host, cgroups: kept.cgroups };
    if same_boot {
        match journal.reader().and_then(|r| r.query(&Query { after_seq: Some(kept.through_seq), kinds: vec!["oom_kill".into()], ..Default::default() })) {
            Ok(kills) => {
                for k in &kills {
                    *last.cgroups.entry(k.cgroup.clone()).or_insert(0) += 1;
                }
                last.host = last.host.map(|h| h + kills.len() as u64);
            }
            Err(e) => log::warn!("{e}; kills seen just before the last stop may be reported again as unobserved"),
        }
    }
    log::info!(
        "journal: kill accounting restored ({}); kills the kernel counted since are reported as unobserved_kills",
        if same_boot { "same boot" } else { "the host rebooted since: every kill of this boot was unobserved" }
    );
    model.restore_kill_accounting(last, same_boot);
}

fn read_accounting(journal: &Journal) -> Option<KeptAccounting> {
    let json = match journal.reader().and_then(|r| r.state(KILL_ACCOUNTING)) {
        Ok(j) => j?,
        Err(e) => {
            log::warn!("{e}; kill accounting starts afresh: kills while the daemon was down are not reported");
            return None;
        }
    };
    serde_json::from_str(&json)
        .map_err(|e| log::warn!("journal {}: state {KILL_ACCOUNTING} does not parse ({e}); kill accounting starts afresh", journal.path().display()))
        .ok()
}

/// Keeps the model's kill accounting in the journal.
pub(super) struct AccountingKeeper {
    journal: Arc<Journal>,
    model: Arc<Model>,
    boot_id: String,
    last: Option<KeptAccounting>,
}

impl AccountingKeeper {
    pub fn new(journal: Arc<Journal>, model: Arc<Model>) -> Self {
        let boot_id = boot_id(Path::new("/proc")).unwrap_or_default();
        Self { journal, model, boot_id, last: None }
    }

    /// Every interval, and at once after unobserved kills were reported (a
    /// crash right after must not report them again).
    pub async fn run(mut self, bus: Arc<EventBus>) {
        let (_, mut rx) = bus.subscribe(|_| false);
        let mut tick = tokio::time::interval(KEEP_ACCOUNTING_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.keep(),
                ev = rx.recv() => match ev {
                    Ok(p) if matches!(p.event.body, EventBody::UnobservedKills(_)) => self.keep(),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    pub fn keep(&mut self) {
        // The seq first: a kill published by then is already in the model
        // (the model records it before the bus publishes it).
        let through_seq = self.journal.last_seq();
        let KillAccounting { host, cgroups } = self.model.kill_accounting();
        if host.is_none() && cgroups.is_empty() {
            return;
        }
        let unchanged = self.last.as_ref().is_some_and(|l| l.host == host && l.cgroups == cgroups);
        if unchanged {
            return;
        }
        let kept = KeptAccounting { boot_id: self.boot_id.clone(), through_seq, host, cgroups };
        match serde_json::to_string(&kept) {
            Ok(json) => {
                if self.journal.put_state(KILL_ACCOUNTING, json).is_ok() {
                    self.last = Some(kept);
                }
            }
            Err(e) => log::warn!("journal: kill accounting not kept: {e}"),
        }
    }
}
