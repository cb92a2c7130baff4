//! Events that close over time: an OOM incident (a group kill) once no
//! kill joined it for a second, and throttling at memory.high when an
//! episode starts and ends (the sampler's tick hands over the edges).

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    model::{Model, bus::EventBus, counters::DaemonCounters, episodes::ThrottleSeen, throttle::ThrottleChange},
    wire::{Event, EventBody, Incident, ThrottleState, Throttled, rfc3339},
};

/// Publishes each group kill as one `incident` event once it settled.
pub async fn settle_incidents(model: Arc<Model>, bus: Arc<EventBus>, counters: Arc<DaemonCounters>) {
    let (_, mut rx) = bus.subscribe(|_| false);
    let mut next: Option<Instant> = None;
    loop {
        let wait = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait => {}
            received = rx.recv() => match received {
                Ok(p) if matches!(&p.event.body, EventBody::OomKill(k) if k.incident.is_some()) => {}
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        }
        let (settled, upcoming) = model.settle_incidents(Instant::now());
        next = upcoming;
        for incident in settled {
            counters.events_published.inc();
            bus.publish(incident_event(incident));
        }
    }
}

fn incident_event(incident: Incident) -> Event {
    let cgroup = incident.limit_cgroup.clone().or_else(|| incident.victims.first().map(|v| v.cgroup.clone())).unwrap_or_else(|| "/".into());
    Event::new(EventBody::Incident(incident), rfc3339(SystemTime::now()), cgroup, None)
}

/// The event of a throttling edge seen at `now`.
pub fn throttled_event(seen: ThrottleSeen, now: Instant) -> Event {
    let (state, since, duration, high_events) = match seen.change {
        ThrottleChange::Started { since, high_events } => (ThrottleState::Started, since, now.saturating_duration_since(since), high_events),
        ThrottleChange::Ended { since, duration, high_events } => (ThrottleState::Ended, since, duration, high_events),
    };
    let wall = SystemTime::now();
    let since_wall = wall.checked_sub(now.saturating_duration_since(since)).unwrap_or(wall);
    let body = EventBody::Throttled(Throttled {
        state,
        since: rfc3339(since_wall),
        duration_s: (duration.as_secs_f64() * 10.0).round() / 10.0,
        high_events,
        high_bytes: seen.high_bytes,
        some_avg10: seen.pressure.map(|p| p.some.avg10),
        full_avg10: seen.pressure.and_then(|p| p.full).map(|f| f.avg10),
    });
    Event::new(body, rfc3339(wall), seen.path, None)
}
