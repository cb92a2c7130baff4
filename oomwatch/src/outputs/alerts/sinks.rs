//! Where alert transitions go besides the event stream: Alertmanager (v2
//! API, re-sent while firing, endsAt on resolve, as Prometheus does), a JSON
//! webhook, and an exec hook. Each sink has its own task and a bounded
//! queue: a sink that is down or slow loses notifications (counted and
//! logged), never the daemon's time.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::SystemTime,
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::{io::AsyncWriteExt as _, sync::mpsc, task::JoinHandle};

use crate::{
    outputs::http_client::{HttpClient, hostname},
    wire::{AlertKey, AlertName, AlertState, Transition, printable},
    config::{AlertmanagerSink, ExecSink, SinksConfig, WebhookSink},
};

pub type NotificationCounters = Family<[(&'static str, &'static str); 2], Counter>;

fn count(counters: &NotificationCounters, sink: &'static str, result: &'static str) {
    counters.get_or_create(&[("sink", sink), ("result", result)]).inc();
}

/// The running sinks; rebuilt on config reload.
pub struct SinkSet {
    queues: Vec<(&'static str, mpsc::Sender<Transition>)>,
    tasks: Vec<JoinHandle<()>>,
    counters: NotificationCounters,
}

impl Drop for SinkSet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SinkSet {
    /// `firing` are the alerts firing now, so a rebuilt Alertmanager sink
    /// keeps re-sending them.
    pub fn start(config: &SinksConfig, counters: NotificationCounters, firing: &[Transition]) -> Self {
        let mut set = Self { queues: Vec::new(), tasks: Vec::new(), counters };
        for am in &config.alertmanager {
            let (tx, rx) = mpsc::channel(am.queue);
            let task = tokio::spawn(alertmanager(am.clone(), rx, set.counters.clone(), firing.to_vec()));
            set.queues.push(("alertmanager", tx));
            set.tasks.push(task);
        }
        for wh in &config.webhook {
            let (tx, rx) = mpsc::channel(wh.queue);
            set.tasks.push(tokio::spawn(webhook(wh.clone(), rx, set.counters.clone())));
            set.queues.push(("webhook", tx));
        }
        for ex in &config.exec {
            let (tx, rx) = mpsc::channel(ex.queue);
            set.tasks.push(tokio::spawn(exec(ex.clone(), rx, set.counters.clone())));
            set.queues.push(("exec", tx));
        }
        set
    }

    /// Hands a firing or resolved transition to every sink without waiting.
    pub fn dispatch(&self, t: &Transition) {
        if !matches!(t.state, AlertState::Firing | AlertState::Resolved) {
            return;
        }
        for (name, q) in &self.queues {
            if q.try_send(t.clone()).is_err() {
                count(&self.counters, name, "dropped");
                log::warn!("alert sink {name} is not keeping up: dropped the {} {} notification for {}", t.key.alert.as_str(), t.state.as_str(), t.key.cgroup);
            }
        }
    }
}

fn alertname(key: &AlertKey) -> &'static str {
    match key.alert {
        AlertName::OomForecast => "OomwatchOomForecast",
        AlertName::MemoryPressure => "OomwatchMemoryPressure",
        AlertName::ReclaimStorm => "OomwatchReclaimStorm",
        AlertName::OomKill => "OomwatchOomKill",
    }
}

/// One postableAlert of the Alertmanager v2 API.
fn am_alert(t: &Transition, extra: &BTreeMap<String, String>, host: &str, ends_at: SystemTime) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in extra {
        labels.insert(k.clone(), v.clone().into());
    }
    labels.insert("alertname".into(), alertname(&t.key).into());
    labels.insert("alert".into(), t.key.alert.as_str().into());
    labels.insert("severity".into(), t.key.severity.as_str().into());
    labels.insert("cgroup".into(), t.key.cgroup.clone().into());
    // Kubernetes names as labels, so Alertmanager routes by namespace or
    // team; the rest of the workload as annotations.
    let w = t.workload.clone().unwrap_or_default();
    for (name, value) in [("namespace", &w.namespace), ("pod", &w.pod), ("container", &w.container)] {
        if let Some(v) = value {
            labels.insert(name.into(), v.clone().into());
        }
    }
    labels.insert("instance".into(), host.into());
    labels.insert("source".into(), "oomwatch".into());
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), format!("{} on {host}: {}", t.key.cgroup, t.summary).into());
    annotations.insert("value".into(), t.value.map(|v| format!("{v:.2}")).unwrap_or_default().into());
    // Kill alerts say why; receivers show it to people, so names in it
    // are escaped (the webhook carries it as data, unescaped).
    if let Some(why) = &t.description {
        annotations.insert("description".into(), printable(why).into_owned().into());
    }
    serde_json::json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": t.firing_since.clone().unwrap_or_else(|| t.at.clone()),
        "endsAt": crate::wire::rfc3339(ends_at),
    })
}

async fn alertmanager(cfg: AlertmanagerSink, mut rx: mpsc::Receiver<Transition>, counters: NotificationCounters, firing: Vec<Transition>) {
    let client = HttpClient::new();
    let url = format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'));
    let host = hostname();
    let mut active: HashMap<AlertKey, Transition> = firing.into_iter().map(|t| (t.key.clone(), t)).collect();
    let mut resend = tokio::time::interval(cfg.resend_interval);
    resend.tick().await;
    // Firing alerts stay valid for a few resend intervals, so a daemon that
    // dies lets Alertmanager resolve them by itself.
    let validity = cfg.resend_interval * 4;
    loop {
        let batch: Vec<serde_json::Value> = tokio::select! {
            t = rx.recv() => {
                let Some(t) = t else { return };
                let now = SystemTime::now();
                if t.state == AlertState::Resolved {
                    active.remove(&t.key);
                    vec![am_alert(&t, &cfg.labels, &host, now)]
                } else {
                    active.insert(t.key.clone(), t.clone());
                    vec![am_alert(&t, &cfg.labels, &host, now + validity)]
                }
            }
            _ = resend.tick() => {
                if active.is_empty() { continue }
                let ends = SystemTime::now() + validity;
                active.values().map(|t| am_alert(t, &cfg.labels, &host, ends)).collect()
            }
        };
        match client.post_json(&url, serde_json::Value::Array(batch).to_string(), cfg.timeout).await {
            Ok(()) => count(&counters, "alertmanager", "sent"),
            Err(e) => {
                count(&counters, "alertmanager", "failed");
                log::warn!("alertmanager sink: {e}");
            }
        }
    }
}

async fn webhook(cfg: WebhookSink, mut rx: mpsc::Receiver<Transition>, counters: NotificationCounters) {
    let client = HttpClient::new();
    let host = hostname();
    while let Some(t) = rx.recv().await {
        let body = serde_json::json!({
            "alert": t.key.alert.as_str(),
            "severity": t.key.severity.as_str(),
            "state": t.state.as_str(),
            "cgroup": t.key.cgroup,
            "value": t.value,
            "summary": t.summary,
            "time": t.at,
            "firing_since": t.firing_since,
            "workload": t.workload,
            "description": t.description,
            "host": host,
        });
        match client.post_json(&cfg.url, body.to_string(), cfg.timeout).await {
            Ok(()) => count(&counters, "webhook", "sent"),
            Err(e) => {
                count(&counters, "webhook", "failed");
                log::warn!("webhook sink: {e}");
            }
        }
    }
}

async fn exec(cfg: ExecSink, mut rx: mpsc::Receiver<Transition>, counters: NotificationCounters) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent));
    let host = hostname();
    while let Some(t) = rx.recv().await {
        // Waiting here (not spawning unbounded) lets the queue fill and drop.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (cfg, counters, host) = (cfg.clone(), counters.clone(), host.clone());
        tokio::spawn(async move {
            let result = run_hook(&cfg, &t, &host).await;
            match result {
                Ok(()) => count(&counters, "exec", "sent"),
                Err(e) => {
                    count(&counters, "exec", "failed");
                    log::warn!("exec sink: {e}");
                }
            }
            drop(permit);
        });
    }
}

async fn run_hook(cfg: &ExecSink, t: &Transition, host: &str) -> Result<(), String> {
    let program = &cfg.command[0];
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&cfg.command[1..])
        .envs(&cfg.env)
        .env("OOMWATCH_ALERT", t.key.alert.as_str())
        .env("OOMWATCH_SEVERITY", t.key.severity.as_str())
        .env("OOMWATCH_STATE", t.state.as_str())
        .env("OOMWATCH_CGROUP", printable(&t.key.cgroup).as_ref())
        .env("OOMWATCH_VALUE", t.value.map(|v| format!("{v:.2}")).unwrap_or_default())
        .env("OOMWATCH_SUMMARY", printable(&t.summary).as_ref())
        .env("OOMWATCH_DESCRIPTION", t.description.as_deref().map(printable).unwrap_or_default().as_ref())
        .env("OOMWATCH_TIME", &t.at)
        .env("OOMWATCH_HOST", host);
    // The workload's names, escaped like every other name: set only when known.
    let w = t.workload.clone().unwrap_or_default();
    for (var, value) in [
        ("OOMWATCH_NAMESPACE", &w.namespace),
        ("OOMWATCH_POD", &w.pod),
        ("OOMWATCH_CONTAINER", &w.container),
        ("OOMWATCH_CONTAINER_NAME", &w.container_name),
        ("OOMWATCH_IMAGE", &w.image),
        ("OOMWATCH_UNIT", &w.unit),
    ] {
        if let Some(v) = value {
            cmd.env(var, printable(v).as_ref());
        }
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = serde_json::to_vec(t).unwrap_or_default();
        let _ = stdin.write_all(&json).await;
    }
    match tokio::time::timeout(cfg.timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "{program} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
        )),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        // Dropping the future drops the child, which kill_on_drop ends (by
        // its own pid).
        Err(_) => Err(format!("{program} did not finish within {:?}; killed", cfg.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AlertKey, AlertName, AlertState, Severity, Workload};

    fn transition(workload: Option<Workload>) -> Transition {
        Transition {
            key: AlertKey { alert: AlertName::OomKill, severity: Severity::Critical, cgroup: "/kubepods/pod1/c1".into() },
            state: AlertState::Firing,
            value: Some(1.0),
            summary: "s".into(),
            at: "2026-12-06T08:00:00Z".into(),
            firing_since: None,
            workload,
            description: Some("memhog (pid 7) was killed because /kubepods/pod1 hit its 64 MiB limit.".into()),
        }
    }

    #[test]
    fn alertmanager_labels_carry_the_kubernetes_names_when_known() {
        let named = Workload { namespace: Some("shop".into()), pod: Some("web-7d9f".into()), container: Some("frontend".into()), image: Some("web:1".into()), ..Default::default() };
        let a = am_alert(&transition(Some(named)), &BTreeMap::new(), "h", SystemTime::now());
        assert_eq!(a["labels"]["namespace"], "shop");
        assert_eq!(a["labels"]["pod"], "web-7d9f");
        assert_eq!(a["labels"]["container"], "frontend");
        assert!(a["labels"].get("image").is_none(), "the image is not a routing label: {a}");
        let a = am_alert(&transition(None), &BTreeMap::new(), "h", SystemTime::now());
        for label in ["namespace", "pod", "container"] {
            assert!(a["labels"].get(label).is_none(), "no empty {label} label: {a}");
        }
    }

    /// A kill alert's description is the kill's why, escaped for the people
    /// Alertmanager shows it to; other alerts have none.
    #[test]
    fn kill_alerts_say_why_in_the_description() {
        let mut t = transition(None);
        let a = am_alert(&t, &BTreeMap::new(), "h", SystemTime::now());
        assert_eq!(a["annotations"]["description"], "memhog (pid 7) was killed because /kubepods/pod1 hit its 64 MiB limit.");
        t.description = Some("x\u{1b}[2J\u{202e} (pid 7) was killed".into());
        let a = am_alert(&t, &BTreeMap::new(), "h", SystemTime::now());
        assert_eq!(a["annotations"]["description"], "x\\x1b[2J\\u{202e} (pid 7) was killed");
        t.description = None;
        assert!(am_alert(&t, &BTreeMap::new(), "h", SystemTime::now())["annotations"].get("description").is_none());
    }
}
