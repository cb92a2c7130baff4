//! The event bus: every output that streams events (tail clients, alert
//! sinks) subscribes here. Publishing never blocks: a subscriber that falls
//! behind loses the oldest events and is told how many (broadcast `Lagged`).
//! The last `backlog` events are kept so a new client can ask for them.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use crate::wire::{Event, EventBody};

/// An event with its JSON line, serialized once for every client.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub json: String,
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
    state: Mutex<BusState>,
}

struct BusState {
    next_seq: u64,
    backlog: VecDeque<Arc<Published>>,
    capacity: usize,
}

impl EventBus {
    pub fn new(backlog: usize, channel: usize) -> Self {
        let (tx, _) = broadcast::channel(channel.max(1));
        Self { tx, state: Mutex::new(BusState { next_seq: 1, backlog: VecDeque::with_capacity(backlog), capacity: backlog }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, mut event: Event) -> Arc<Published> {
        let mut state = self.lock();
        event.seq = state.next_seq;
        state.next_seq += 1;
        let json = serde_json::to_string(&event).unwrap_or_else(|e| format!(r#"{{"kind":"error","error":"{e}"}}"#));
        let published = Arc::new(Published { event, json });
        if state.capacity > 0 {
            if state.backlog.len() == state.capacity {
                state.backlog.pop_front();
            }
            state.backlog.push_back(published.clone());
        }
        // Sent under the lock so a subscriber sees each event exactly once,
        // either in its backlog or live. No receivers is fine.
        let _ = self.tx.send(published.clone());
        published
    }

    /// Buffered events accepted by `keep`, then live ones, with no gap and
    /// no duplicate between the two.
    pub fn subscribe(&self, keep: impl Fn(&Event) -> bool) -> (Vec<Arc<Published>>, broadcast::Receiver<Arc<Published>>) {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let past = state.backlog.iter().filter(|p| keep(&p.event)).cloned().collect();
        (past, rx)
    }

    /// Replaces a buffered event (e.g. an OOM kill once its victim's exit is
    /// confirmed), so later replays show the complete picture.
    pub fn amend(&self, matches: impl Fn(&Event) -> bool, update: impl FnOnce(&mut Event)) {
        let mut state = self.lock();
        if let Some(slot) = state.backlog.iter_mut().rev().find(|p| matches(&p.event)) {
            let mut event = slot.event.clone();
            update(&mut event);
            let json = serde_json::to_string(&event).unwrap_or_default();
            *slot = Arc::new(Published { event, json });
        }
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

pub fn lagged_event(dropped: u64, time: String) -> Event {
    Event::new(EventBody::Lagged { dropped }, time, "/".into(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::OomKill;

    fn kill(pid: u32) -> Event {
        Event {
            body: EventBody::OomKill(Box::new(OomKill::of_pid(pid))),
            time: String::new(),
            cgroup: "/x".into(),
            ktime_ns: Some(pid as u64),
            seq: 0,
        }
    }

    #[test]
    fn backlog_is_bounded_and_ordered() {
        let bus = EventBus::new(3, 16);
        for pid in 1..=5 {
            bus.publish(kill(pid));
        }
        let (past, _rx) = bus.subscribe(|_| true);
        let seqs: Vec<u64> = past.iter().map(|p| p.event.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
    }

    #[tokio::test]
    async fn slow_subscribers_lag_instead_of_blocking() {
        let bus = EventBus::new(0, 4);
        let (_, mut rx) = bus.subscribe(|_| true);
        for pid in 0..10 {
            bus.publish(kill(pid));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().event.seq, 7);
    }

    #[test]
    fn amend_rewrites_the_buffered_event_and_its_json() {
        let bus = EventBus::new(8, 8);
        bus.publish(kill(1));
        bus.publish(kill(2));
        bus.amend(
            |e| matches!(&e.body, EventBody::OomKill(k) if k.victim.pid == 1),
            |e| {
                if let EventBody::OomKill(k) = &mut e.body {
                    k.exit_latency_ms = Some(3.5);
                }
            },
        );
        let (past, _) = bus.subscribe(|_| true);
        assert!(past[0].json.contains(r#""exit_latency_ms":3.5"#), "{}", past[0].json);
        assert!(!past[1].json.contains("exit_latency_ms"));
    }
}
