//! The event bus: every output that streams events (tail clients, alert
//! sinks) subscribes here. Publishing never blocks: a subscriber that falls
//! behind loses the oldest events and is told how many (broadcast `Lagged`).
//! The last `backlog` events are kept so a new client can ask for them.
//!
//! Where a durable store is plugged in ([`Durable`], the journal), it hands
//! out the sequence numbers (they keep growing across restarts) and gets
//! every event and amendment, in publication order, without the publisher
//! ever waiting on a disk.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock},
};

use tokio::sync::broadcast;

use crate::wire::{Event, EventBody};

/// An event with its JSON line, serialized once for every client.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub json: String,
    /// Published with [`EventBus::publish_kept`] and not kept at once
    /// ([`Durable::keep_now`] could not): a client may be given it only once
    /// the durable store keeps it.
    pub kept_first: bool,
}

/// A store that keeps every published event (implemented by the journal,
/// an output: the model only defines what it needs of one).
pub trait Durable: Send + Sync {
    /// The seq of the next event; called under the bus's lock, so seqs
    /// follow publication order.
    fn next_seq(&self) -> u64;
    /// The seq [`Durable::next_seq`] would return, without taking it.
    fn next_seq_peek(&self) -> u64;
    /// Keeps `event` (its JSON line is `json`); must not wait on a disk.
    fn append(&self, event: &Event, json: &str);
    /// Replaces what is kept of `event.seq`.
    fn amend(&self, event: &Event, json: &str);
    /// Keeps the event `seq` (its JSON line is `json`) at once, on the
    /// caller's thread, so that it survives the daemon's death without
    /// waiting for [`Durable::when_kept`]; false when it cannot.
    fn keep_now(&self, _seq: u64, _json: &str) -> bool {
        false
    }
    /// Runs `then` once `seq` is kept (survives the daemon's death), on
    /// whichever thread keeps it; never when it could not be kept.
    fn when_kept(&self, seq: u64, then: Box<dyn FnOnce() + Send>);
}

/// Receivers served on the publisher's own thread, before the broadcast
/// wakes anyone: the event socket's tail clients that have written
/// everything before (implemented in outputs). A kill then reaches them
/// with no wakeup between the thread the kernel woke and the client.
pub trait Immediate: Send + Sync {
    /// `published` follows the event of seq `previous` (0: none); called
    /// under the bus's lock, in publication order. Must not block.
    fn deliver(&self, published: &Published, previous: u64);
    /// Hands `event` (a kill's first word; its JSON line is `json`) to
    /// the receivers that asked for it and are idle, from this thread,
    /// outside the stream's order: it has no seq and is kept nowhere.
    /// Must not block.
    fn notice(&self, event: &Event, json: &str);
    /// Whether any receiver asks for kills' first words: none are built
    /// for nobody.
    fn wants_first_words(&self) -> bool;
}

/// A live subscription: the backlog events asked for, the receiver, and
/// the seq of the last event published before it (every later one comes
/// through the receiver).
pub struct Subscription {
    pub past: Vec<Arc<Published>>,
    pub rx: broadcast::Receiver<Arc<Published>>,
    pub last_seq: u64,
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
    state: Mutex<BusState>,
    durable: Option<Arc<dyn Durable>>,
    immediate: OnceLock<Arc<dyn Immediate>>,
}

struct BusState {
    next_seq: u64,
    /// Seq of the last event published (0: none yet).
    last_seq: u64,
    backlog: VecDeque<Arc<Published>>,
    capacity: usize,
    /// The last kills, whatever the backlog's size: they are amended later
    /// (exit confirmed, kernel report, names).
    recent_kills: VecDeque<Arc<Published>>,
}

/// Kills that can still be amended.
const AMENDABLE_KILLS: usize = 256;

impl EventBus {
    pub fn new(backlog: usize, channel: usize) -> Self {
        Self::with_durable(backlog, channel, None)
    }

    pub fn with_durable(backlog: usize, channel: usize, durable: Option<Arc<dyn Durable>>) -> Self {
        let (tx, _) = broadcast::channel(channel.max(1));
        let state = BusState { next_seq: 1, last_seq: 0, backlog: VecDeque::with_capacity(backlog), capacity: backlog, recent_kills: VecDeque::new() };
        Self { tx, state: Mutex::new(state), durable, immediate: OnceLock::new() }
    }

    /// Plugs in the receivers served on the publisher's thread; once.
    pub fn set_immediate(&self, immediate: Arc<dyn Immediate>) {
        if self.immediate.set(immediate).is_err() {
            log::warn!("event bus: immediate receivers set twice; the first stay");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a kill's first word ([`EventBody::KillSeen`]) to the
    /// [`Immediate`] receivers at once, before the kill is explained and
    /// published. Not part of the stream: no seq, no backlog, no durable
    /// store, no broadcast (alerts and shipping take the kill itself).
    /// Whether a kill's first word would reach anyone ([`EventBus::notice`]).
    pub fn wants_first_words(&self) -> bool {
        self.immediate.get().is_some_and(|i| i.wants_first_words())
    }

    pub fn notice(&self, event: &Event) {
        let Some(immediate) = self.immediate.get() else { return };
        match serde_json::to_string(event) {
            Ok(json) => immediate.notice(event, &json),
            Err(e) => log::debug!("event bus: a kill's first word could not be written: {e}"),
        }
    }

    pub fn publish(&self, event: Event) -> Arc<Published> {
        self.publish_with(event, false).0
    }

    /// Publishes a kill: as [`EventBus::publish`], but where a durable store
    /// is plugged in, no client gets it before the store keeps it (a kill a
    /// client saw survives the daemon's death). The store keeps it at once
    /// on this thread where it can ([`Durable::keep_now`]: the journal's
    /// intent file), and then it goes out as any event; otherwise the
    /// [`Immediate`] receivers get it from the thread that commits it, so
    /// the publisher never waits on the disk. Broadcast
    /// subscribers get it at once, marked [`Published::kept_first`]; those
    /// that hand events to clients wait for the store themselves.
    pub fn publish_kept(&self, event: Event) -> Arc<Published> {
        let Some(durable) = &self.durable else { return self.publish(event) };
        let (published, previous) = self.publish_with(event, true);
        // Kept at once (`Durable::keep_now`): already given like any event.
        if published.kept_first
            && let Some(i) = self.immediate.get()
        {
            let (i, p) = (i.clone(), published.clone());
            durable.when_kept(published.event.seq, Box::new(move || i.deliver(&p, previous)));
        }
        published
    }

    /// The event as published, and the seq of the one before it.
    fn publish_with(&self, mut event: Event, kept_first: bool) -> (Arc<Published>, u64) {
        let mut state = self.lock();
        event.seq = match &self.durable {
            Some(d) => d.next_seq(),
            None => {
                state.next_seq += 1;
                state.next_seq - 1
            }
        };
        let json = serde_json::to_string(&event).unwrap_or_else(|e| format!(r#"{{"kind":"error","error":"{e}"}}"#));
        if let Some(d) = &self.durable {
            d.append(&event, &json);
        }
        // Kept on this thread, it needs no wait for the store's commit.
        let kept_first = kept_first && self.durable.as_ref().is_some_and(|d| !d.keep_now(event.seq, &json));
        let published = Arc::new(Published { event, json, kept_first });
        let previous = state.last_seq;
        state.last_seq = published.event.seq;
        if !published.kept_first && let Some(i) = self.immediate.get() {
            i.deliver(&published, previous);
        }
        if matches!(published.event.body, EventBody::OomKill(_)) {
            if state.recent_kills.len() == AMENDABLE_KILLS {
                state.recent_kills.pop_front();
            }
            state.recent_kills.push_back(published.clone());
        }
        if state.capacity > 0 {
            if state.backlog.len() == state.capacity {
                state.backlog.pop_front();
            }
            state.backlog.push_back(published.clone());
        }
        // Sent under the lock so a subscriber sees each event exactly once,
        // either in its backlog or live. No receivers is fine.
        let _ = self.tx.send(published.clone());
        (published, previous)
    }

    /// Live events from now on, and the seq the first of them will have:
    /// every event with a lower seq was published before (for a client that
    /// replays the durable store up to it).
    /// Also the seq of the last event published before (as
    /// [`Subscription::last_seq`]).
    pub fn subscribe_after_store(&self) -> (u64, u64, broadcast::Receiver<Arc<Published>>) {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let next = match &self.durable {
            Some(d) => d.next_seq_peek(),
            None => state.next_seq,
        };
        (next, state.last_seq, rx)
    }

    /// As [`EventBus::subscribe`], with the seq of the last event published
    /// before the subscription.
    pub fn subscribe_live(&self, keep: impl Fn(&Event) -> bool) -> Subscription {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let past = state.backlog.iter().filter(|p| keep(&p.event)).cloned().collect();
        Subscription { past, rx, last_seq: state.last_seq }
    }

    /// Buffered events accepted by `keep`, then live ones, with no gap and
    /// no duplicate between the two.
    pub fn subscribe(&self, keep: impl Fn(&Event) -> bool) -> (Vec<Arc<Published>>, broadcast::Receiver<Arc<Published>>) {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let past = state.backlog.iter().filter(|p| keep(&p.event)).cloned().collect();
        (past, rx)
    }

    /// Replaces a published event (e.g. an OOM kill once its victim's exit
    /// is confirmed), so later replays show the complete picture: in the
    /// backlog, among the recent kills, and in the durable store. Returns
    /// the amended event; None when no event still held matches.
    pub fn amend(&self, matches: impl Fn(&Event) -> bool, update: impl FnOnce(&mut Event)) -> Option<Arc<Published>> {
        let mut state = self.lock();
        let found = state.backlog.iter().rev().chain(state.recent_kills.iter().rev()).find(|p| matches(&p.event)).cloned();
        let old = found?;
        let mut event = old.event.clone();
        update(&mut event);
        let json = serde_json::to_string(&event).unwrap_or_default();
        if let Some(d) = &self.durable {
            d.amend(&event, &json);
        }
        let new = Arc::new(Published { event, json, kept_first: old.kept_first });
        let BusState { backlog, recent_kills, .. } = &mut *state;
        for slot in backlog.iter_mut().chain(recent_kills.iter_mut()) {
            if Arc::ptr_eq(slot, &old) {
                *slot = new.clone();
            }
        }
        Some(new)
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

    /// A kill's first word goes to the immediate receivers only: no seq,
    /// no backlog, no broadcast, nothing for the durable store.
    #[test]
    fn a_first_word_is_handed_over_and_kept_nowhere() {
        #[derive(Default)]
        struct Seen(Mutex<Vec<String>>);
        impl Immediate for Seen {
            fn deliver(&self, published: &Published, _: u64) {
                self.0.lock().unwrap().push(published.json.clone());
            }
            fn notice(&self, event: &Event, json: &str) {
                assert_eq!(event.seq, 0);
                self.0.lock().unwrap().push(json.to_owned());
            }
            fn wants_first_words(&self) -> bool {
                true
            }
        }
        let bus = EventBus::new(8, 8);
        let seen = Arc::new(Seen::default());
        bus.set_immediate(seen.clone());
        let (_, mut rx) = bus.subscribe(|_| true);
        let mut first_word = kill(1);
        first_word.body = EventBody::KillSeen(crate::wire::KillNotice {
            victim: crate::wire::Victim { pid: 1, ..Default::default() },
            trigger: Default::default(),
            attribution: crate::wire::Attribution::Exact,
            cgroup_id: None,
            workload: Default::default(),
            main_process: None,
        });
        bus.notice(&first_word);
        bus.publish(kill(1));
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].starts_with(r#"{"kind":"kill_seen","victim":{"pid":1}"#) && seen[0].contains(r#""seq":0"#), "{}", seen[0]);
        assert!(seen[1].contains(r#""kind":"oom_kill""#) && seen[1].contains(r#""seq":1"#), "{}", seen[1]);
        let (past, _) = bus.subscribe(|_| true);
        assert_eq!(past.len(), 1, "only the kill is in the backlog");
        assert_eq!(rx.try_recv().unwrap().event.seq, 1, "broadcast subscribers (alerts, shipping) get the kill only");
        assert!(rx.try_recv().is_err());
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
