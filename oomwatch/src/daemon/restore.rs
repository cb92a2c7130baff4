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
    model::{CgroupKills, KillAccounting, Model, bus::EventBus},
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
    /// The inode id of each of `cgroups` whose id was known (added
    /// 2026-12-07; a journal kept before has none, and a cgroup made again
    /// while no daemon ran is then not told from the one before).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    cgroup_ids: HashMap<String, u64>,
}

impl KeptAccounting {
    fn new(boot_id: String, through_seq: u64, accounting: &KillAccounting) -> Self {
        let cgroups = accounting.cgroups.iter().map(|(path, c)| (path.clone(), c.accounted)).collect();
        let cgroup_ids = accounting.cgroups.iter().filter(|(_, c)| c.id != 0).map(|(path, c)| (path.clone(), c.id)).collect();
        Self { boot_id, through_seq, host: accounting.host, cgroups, cgroup_ids }
    }

    fn accounting(&self) -> KillAccounting {
        let cgroups = self
            .cgroups
            .iter()
            .map(|(path, &accounted)| (path.clone(), CgroupKills { accounted, id: self.cgroup_ids.get(path).copied().unwrap_or(0) }))
            .collect();
        KillAccounting { host: self.host, cgroups }
    }
}

/// Counts the kills the last run journalled after it last kept its
/// accounting (cgroup path and id of each, oldest first) as accounted for.
/// A kill in a cgroup whose id is not the kept one was in a cgroup made
/// again under that path since: its counter started at 0, and this kill
/// is its first one counted.
fn add_journalled_kills<'a>(last: &mut KillAccounting, kills: impl IntoIterator<Item = (&'a str, Option<u64>)>) {
    let mut count = 0;
    for (cgroup, id) in kills {
        count += 1;
        let kept = last.cgroups.entry(cgroup.to_owned()).or_default();
        match id {
            Some(id) if kept.id != 0 && kept.id != id => *kept = CgroupKills { accounted: 1, id },
            Some(id) => *kept = CgroupKills { accounted: kept.accounted + 1, id },
            None => kept.accounted += 1,
        }
    }
    last.host = last.host.map(|h| h + count);
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
    let mut last = kept.accounting();
    if same_boot {
        match journal.reader().and_then(|r| r.query(&Query { after_seq: Some(kept.through_seq), kinds: vec!["oom_kill".into()], ..Default::default() })) {
            Ok(kills) => {
                let ids: Vec<Option<u64>> = kills.iter().map(|k| k.event().ok().and_then(|e| kill_cgroup_id(&e.body))).collect();
                add_journalled_kills(&mut last, kills.iter().map(|k| k.cgroup.as_str()).zip(ids));
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

fn kill_cgroup_id(body: &EventBody) -> Option<u64> {
    match body {
        EventBody::OomKill(kill) => kill.cgroup_id,
        _ => None,
    }
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
        let accounting = self.model.kill_accounting();
        if accounting.host.is_none() && accounting.cgroups.is_empty() {
            return;
        }
        let kept = KeptAccounting::new(self.boot_id.clone(), through_seq, &accounting);
        let unchanged = self.last.as_ref().is_some_and(|l| l.host == kept.host && l.cgroups == kept.cgroups && l.cgroup_ids == kept.cgroup_ids);
        if unchanged {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kills(entries: &[(&str, u64, u64)]) -> KillAccounting {
        let cgroups = entries.iter().map(|&(path, accounted, id)| (path.to_owned(), CgroupKills { accounted, id })).collect();
        KillAccounting { host: Some(10), cgroups }
    }

    #[test]
    fn the_kept_accounting_round_trips_with_its_ids_and_reads_a_journal_kept_without_them() {
        let accounting = kills(&[("/a", 3, 41), ("/b", 2, 0)]);
        let kept = KeptAccounting::new("boot".into(), 7, &accounting);
        let json = serde_json::to_string(&kept).unwrap();
        let back: KeptAccounting = serde_json::from_str(&json).unwrap();
        assert_eq!(back.accounting(), accounting, "{json}");
        // As an older daemon kept it: no ids, so no cgroup is told from one made again.
        let old: KeptAccounting = serde_json::from_str(r#"{"boot_id":"boot","through_seq":7,"host":10,"cgroups":{"/a":3}}"#).unwrap();
        assert_eq!(old.accounting(), kills(&[("/a", 3, 0)]));
    }

    #[test]
    fn kills_journalled_after_the_last_keep_are_accounted_for_in_the_cgroup_that_had_them() {
        let mut last = kills(&[("/a", 3, 41), ("/old", 1, 0)]);
        add_journalled_kills(
            &mut last,
            [("/a", Some(41)), ("/old", None), ("/new", Some(50)), ("/new", Some(50))],
        );
        assert_eq!(last, KillAccounting { host: Some(14), ..kills(&[("/a", 4, 41), ("/old", 2, 0), ("/new", 2, 50)]) });
        // /a made again (id 42) before its next kill: its counter started at 0.
        add_journalled_kills(&mut last, [("/a", Some(42)), ("/a", Some(42))]);
        assert_eq!(last.cgroups["/a"], CgroupKills { accounted: 2, id: 42 });
        assert_eq!(last.host, Some(16));
    }
}
