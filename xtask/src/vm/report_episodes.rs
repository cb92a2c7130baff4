//! Expectations of the group-kill and memory.high scenarios (pure cgroup
//! v2 only: this host's memory controller is on v1, where neither exists).

use std::collections::BTreeSet;

use serde_json::Value;

use super::report::{Results, Verdict};

const SIGKILL_STATUS: u64 = 128 + 9;

/// The events of `scenario` of `kind` in cgroup `cg` or below it.
fn events<'a>(r: &'a Results, scenario: &'a str, kind: &'a str, cg: &'a str) -> Vec<&'a Value> {
    r.all(scenario, "event")
        .filter(|e| e["kind"] == kind && e["cgroup"].as_str().is_some_and(|c| c == cg || c.starts_with(&format!("{cg}/"))))
        .collect()
}

/// `memory.oom.group=1` on a parent with three children, one process each:
/// one incident of three kills, one oom_kill alert.
pub(super) fn check_group_kill(r: &Results, v: &mut Verdict) {
    let (s, cg) = ("group_kill", "/oomwatch-test-vm4");
    let members: BTreeSet<u64> = r.all(s, "member_pid").filter_map(Value::as_u64).collect();
    let statuses: Vec<u64> = r.all(s, "member_status").filter_map(Value::as_u64).collect();
    v.expect(
        members.len() == 3 && statuses.len() == 3 && statuses.iter().all(|&st| st == SIGKILL_STATUS),
        format!("{s}: the kernel killed all 3 processes of the group (statuses {statuses:?})"),
    );
    // 6.1 kills the chosen victim again as a member of its group, and
    // counts it twice: oom_kill 4 for 3 processes (mark_victim fires once).
    let kernel = r.get(s, "memory_events");
    v.expect(
        kernel.and_then(|e| e["oom_group_kill"].as_u64()) == Some(1) && kernel.and_then(|e| e["oom_kill"].as_u64()).is_some_and(|n| n == 3 || n == 4),
        format!("{s}: the kernel counted one group kill of 3 processes (memory.events: {kernel:?})"),
    );
    let unobserved = events(r, s, "unobserved_kills", cg);
    v.expect(
        unobserved.is_empty(),
        format!("{s}: no `unobserved_kills`: the kernel's second count of the first victim is expected (got {})", short_list(&unobserved)),
    );
    let kills = events(r, s, "oom_kill", cg);
    let victims: BTreeSet<u64> = kills.iter().filter_map(|k| k["victim"]["pid"].as_u64()).collect();
    v.expect(kills.len() == 3 && victims == members, format!("{s}: 3 oom_kill events, one per member (victims {victims:?}, members {members:?})"));
    let ids: BTreeSet<Option<u64>> = kills.iter().map(|k| k["incident"]["id"].as_u64()).collect();
    let places: BTreeSet<u64> = kills.iter().filter_map(|k| k["incident"]["victims_so_far"].as_u64()).collect();
    let id = ids.iter().next().copied().flatten();
    v.expect(
        ids.len() == 1 && id.is_some() && places == BTreeSet::from([1, 2, 3]),
        format!("{s}: the 3 kills share one incident id, victims_so_far 1, 2, 3 (ids {ids:?}, places {places:?})"),
    );
    let incidents = events(r, s, "incident", cg);
    let listed: BTreeSet<u64> = incidents.first().map_or_else(BTreeSet::new, |i| i["victims"].as_array().into_iter().flatten().filter_map(|v| v["pid"].as_u64()).collect());
    v.expect(
        r.get(s, "incident_seen") == Some(&Value::from(true))
            && incidents.len() == 1
            && incidents[0]["count"] == 3
            && incidents[0]["id"].as_u64() == id
            && listed == members,
        format!("{s}: one `incident` event: count 3, the kills' id, every victim listed (got {})", short_list(&incidents)),
    );
    let alerts: Vec<&Value> =
        events(r, s, "alert", cg).into_iter().filter(|a| a["alert"] == "oom_kill" && a["state"] == "firing").collect();
    v.expect(alerts.len() == 1, format!("{s}: one oom_kill alert fired for the incident, not one per victim cgroup (got {})", short_list(&alerts)));
    let before = r.all(s, "metric_before").filter_map(Value::as_str).find_map(|l| l.strip_prefix("oomwatch_oom_incidents_total ")?.trim().parse::<f64>().ok());
    let after = r.metric(s, "oomwatch_oom_incidents_total");
    v.expect(
        matches!((before, after), (Some(b), Some(a)) if a - b == 1.0),
        format!("{s}: oomwatch_oom_incidents_total grew by 1 (before {before:?}, after {after:?})"),
    );
    let counted: f64 = r
        .all(s, "metric")
        .filter_map(Value::as_str)
        .filter(|l| l.starts_with(&format!("oomwatch_oom_kills_total{{cgroup=\"{cg}/")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    v.expect(counted == 3.0, format!("{s}: oomwatch_oom_kills_total still counts every victim (got {counted})"));
    v.table.push(format!("  group_kill scenario: {} kills, incident {id:?}, {} incident event(s), {} oom_kill alert(s)", kills.len(), incidents.len(), alerts.len()));
}

/// memory.high below memory.max and a hog growing through both: a
/// throttled episode (one start, one end), and the kill says so.
pub(super) fn check_throttle_kill(r: &Results, v: &mut Verdict) {
    let (s, cg) = ("throttle_kill", "/oomwatch-test-vm5");
    v.expect(
        r.get(s, "hog_status").and_then(Value::as_u64) == Some(SIGKILL_STATUS) && r.get(s, "hog_watchdog") == Some(&Value::from(0)),
        format!("{s}: the hog was OOM-killed, not stopped by the watchdog (status {:?}, ran {} s)", r.get(s, "hog_status"), r.str(s, "hog_ran_s").unwrap_or("?")),
    );
    let throttled: Vec<&Value> = r.all(s, "event").filter(|e| e["kind"] == "throttled" && e["cgroup"] == cg).collect();
    let started: Vec<&&Value> = throttled.iter().filter(|e| e["state"] == "started").collect();
    let ended: Vec<&&Value> = throttled.iter().filter(|e| e["state"] == "ended").collect();
    v.expect(
        started.len() == 1 && ended.len() == 1,
        format!("{s}: one `throttled` started and one ended event, nothing per tick (got {})", short_list(&throttled)),
    );
    let duration = ended.first().and_then(|e| e["duration_s"].as_f64());
    v.expect(
        duration.is_some_and(|d| d > 0.0) && ended.first().is_some_and(|e| e["high_events"].as_u64().is_some_and(|n| n > 0)),
        format!("{s}: the episode has a duration and the memory.high events it saw (duration {duration:?})"),
    );
    let kill = r.all(s, "event").find(|e| e["kind"] == "oom_kill" && e["cgroup"] == cg);
    let throttled_for = kill.and_then(|k| k["throttled_for_s"].as_f64());
    let why = kill.and_then(|k| k["why"].as_str()).unwrap_or("");
    v.expect(
        throttled_for.is_some_and(|t| t >= 1.0) && why.contains("throttled at memory.high for"),
        format!("{s}: the kill carries throttled_for_s and its why says throttled (throttled_for_s {throttled_for:?}, why {why:?})"),
    );
    v.table.push(format!(
        "  throttle_kill scenario: hog ran {} s; episode {duration:?} s; kill throttled_for_s {throttled_for:?}",
        r.str(s, "hog_ran_s").unwrap_or("?")
    ));
}

fn short_list(events: &[impl std::ops::Deref<Target = Value>]) -> String {
    let all: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    let text = format!("{} event(s): {}", all.len(), all.join(" | "));
    if text.chars().count() > 600 { format!("{}…", text.chars().take(599).collect::<String>()) } else { text }
}
