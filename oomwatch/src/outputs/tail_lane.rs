//! The event socket's immediate lane: a tail client that has written
//! everything published so far gets the next event from the publishing
//! thread itself, with one non-blocking send(2), before the broadcast wakes
//! its task. A kill then goes from the thread the kernel woke straight to
//! the client's socket: no hop through the async runtime, whose worker,
//! woken from another CPU, may be queued on the very CPU the kill keeps busy
//! printing to a serial console (docs/performance.md).
//!
//! The client's task stays in charge of everything else (replay, batches,
//! lag notices, a full socket): the bus writes only while the task is idle
//! and has given the client every event up to the one before, and the task
//! skips what the bus already wrote. A short write leaves the rest to the
//! task, which writes it before anything else.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, OwnedFd},
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    model::bus::{Immediate, Published},
    outputs::socket::TailFilter,
    wire::Event,
};

/// Every tail client's lane.
#[derive(Default)]
pub struct Lanes {
    lanes: Mutex<Vec<Arc<Lane>>>,
}

struct Lane {
    /// A duplicate of the client's socket, closed when the client ends.
    fd: OwnedFd,
    /// What the client asked for: the rest passes it by (not even a wakeup).
    filter: Arc<TailFilter>,
    state: Mutex<LaneState>,
}

struct LaneState {
    /// The task has nothing buffered or half-written and nothing waiting in
    /// its receiver: the bus may write.
    idle: bool,
    /// Seq of the last event the client was given, by either side.
    through_seq: u64,
    /// What a short write of the bus left; the task writes it first.
    rest: Vec<u8>,
}

/// A client's place in the lanes, given back on drop.
pub struct LaneGuard {
    lanes: Arc<Lanes>,
    lane: Arc<Lane>,
}

/// What the task must know when it takes over from the bus.
pub struct TakeOver {
    /// Bytes of an event the bus could only partly write.
    pub rest: Vec<u8>,
    /// The client has every event through this seq.
    pub through_seq: u64,
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Lane>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A lane for the client on `fd`, which has been given every event
    /// through `through_seq`. Not idle until the task says so.
    pub fn open(self: &Arc<Self>, fd: BorrowedFd<'_>, through_seq: u64, filter: Arc<TailFilter>) -> io::Result<LaneGuard> {
        let lane = Arc::new(Lane {
            fd: fd.try_clone_to_owned()?,
            filter,
            state: Mutex::new(LaneState { idle: false, through_seq, rest: Vec::new() }),
        });
        self.lock().push(lane.clone());
        Ok(LaneGuard { lanes: self.clone(), lane })
    }
}

impl Immediate for Lanes {
    fn deliver(&self, published: &Published, previous: u64) {
        let lanes = self.lock();
        if lanes.is_empty() {
            return;
        }
        let mut line = Vec::with_capacity(published.json.len() + 1);
        line.extend_from_slice(published.json.as_bytes());
        line.push(b'\n');
        for lane in lanes.iter() {
            lane.offer(&line, published, previous);
        }
    }

    fn notice(&self, event: &Event, json: &str) {
        let lanes = self.lock();
        let mut line = None;
        for lane in lanes.iter().filter(|l| l.filter.keep(event)) {
            let line = line.get_or_insert_with(|| [json.as_bytes(), b"\n"].concat());
            lane.slip_in(line);
        }
    }

    fn wants_first_words(&self) -> bool {
        self.lock().iter().any(|l| l.filter.kinds.as_ref().is_some_and(|k| k.contains(&crate::wire::EventKind::KillSeen)))
    }
}

impl Lane {
    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `line` (of `published`, which follows `previous`) when the
    /// task is idle and the client has everything before it; never waits.
    /// An event the client did not ask for is passed over the same way.
    fn offer(&self, line: &[u8], published: &Published, previous: u64) {
        let seq = published.event.seq;
        // The task holds the lock only for a moment; if it does now, it is
        // awake and writes this event itself.
        let Ok(mut state) = self.state.try_lock() else { return };
        if !state.idle || state.through_seq != previous {
            return;
        }
        if !self.filter.keep(&published.event) {
            state.through_seq = seq;
            return;
        }
        // Full or gone: the task writes it (and sees the error).
        let Some(sent) = self.send(line) else { return };
        state.through_seq = seq;
        if sent < line.len() {
            state.rest = line[sent..].to_vec();
            state.idle = false;
        }
    }

    /// Writes `line` (outside the stream: no seq) when the task is idle;
    /// never waits. A short write leaves the rest to the task, which
    /// writes it before the next event (the kill, a moment later).
    fn slip_in(&self, line: &[u8]) {
        let Ok(mut state) = self.state.try_lock() else { return };
        if !state.idle {
            return;
        }
        let Some(sent) = self.send(line) else { return };
        if sent < line.len() {
            state.rest = line[sent..].to_vec();
            state.idle = false;
        }
    }

    /// send(2) without waiting: the bytes sent, None when none were (a
    /// full socket or a client gone: the task finds out itself).
    fn send(&self, line: &[u8]) -> Option<usize> {
        // SAFETY: send(2) on a descriptor this lane owns, from a buffer of
        // `line.len()` valid bytes; MSG_DONTWAIT: a full socket returns at once.
        let sent = unsafe {
            libc::send(self.fd.as_raw_fd(), line.as_ptr().cast(), line.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        usize::try_from(sent).ok().filter(|&n| n > 0)
    }
}

impl LaneGuard {
    /// The task is awake with something to write: the bus stops writing.
    pub fn take_over(&self) -> TakeOver {
        let mut state = self.lane.state();
        state.idle = false;
        TakeOver { rest: std::mem::take(&mut state.rest), through_seq: state.through_seq }
    }

    /// The task has flushed everything through `seq`: the bus may write
    /// again, unless an event is already waiting for the task
    /// (`nothing_waiting`, checked under the lane's lock so that an event
    /// published meanwhile is either waiting or offered, never neither).
    pub fn hand_back(&self, seq: u64, nothing_waiting: impl FnOnce() -> bool) {
        let mut state = self.lane.state();
        if state.rest.is_empty() && nothing_waiting() {
            state.through_seq = state.through_seq.max(seq);
            state.idle = true;
        }
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        self.lanes.lock().retain(|l| !Arc::ptr_eq(l, &self.lane));
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, os::fd::AsFd as _, os::unix::net::UnixStream};

    use super::*;
    use crate::model::bus::lagged_event;

    fn published(seq: u64) -> Published {
        let mut event = lagged_event(seq, "t".into());
        event.seq = seq;
        Published { json: format!("{{\"seq\":{seq}}}"), event, kept_first: false }
    }

    fn pending(client: &mut UnixStream) -> String {
        client.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = client.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn the_bus_writes_only_to_an_idle_client_that_has_every_event_before() {
        let (daemon_end, mut client) = UnixStream::pair().unwrap();
        let lanes = Arc::new(Lanes::default());
        let lane = lanes.open(daemon_end.as_fd(), 4, Arc::default()).unwrap();

        lanes.deliver(&published(5), 4);
        assert_eq!(pending(&mut client), "", "not idle until the task hands back");

        lane.hand_back(5, || false);
        lanes.deliver(&published(6), 5);
        assert_eq!(pending(&mut client), "", "an event waiting for the task keeps the bus out");

        lane.hand_back(5, || true);
        lanes.deliver(&published(7), 6);
        assert_eq!(pending(&mut client), "", "a gap (6 not given yet) keeps the bus out");

        lane.hand_back(6, || true);
        lanes.deliver(&published(7), 6);
        assert_eq!(pending(&mut client), "{\"seq\":7}\n");
        let given = lane.take_over();
        assert_eq!((given.through_seq, given.rest.len()), (7, 0), "the task skips 7");

        lanes.deliver(&published(8), 7);
        assert_eq!(pending(&mut client), "", "the task is awake: it writes 8 itself");

        drop(lane);
        assert!(lanes.lock().is_empty(), "a client that ends leaves the lanes");
    }

    /// `tail --kind oom_kill`: the rest passes the client by, not even
    /// waking it, and the next kill still follows on.
    #[test]
    fn events_a_client_did_not_ask_for_pass_it_by() {
        use crate::wire::{Event, EventBody, EventKind, OomKill, VictimExit};
        let (daemon_end, mut client) = UnixStream::pair().unwrap();
        let lanes = Arc::new(Lanes::default());
        let filter = TailFilter { kinds: Some(vec![EventKind::OomKill]), cgroup: Some(glob::Pattern::new("/pods/*").unwrap()) };
        let lane = lanes.open(daemon_end.as_fd(), 1, Arc::new(filter)).unwrap();
        lane.hand_back(1, || true);
        let kill = |seq: u64, cgroup: &str| {
            let mut event = Event::new(EventBody::OomKill(Box::new(OomKill::of_pid(seq as u32))), "t".into(), cgroup.into(), None);
            event.seq = seq;
            Published { json: format!("{{\"kill\":{seq}}}"), event, kept_first: false }
        };
        let exit = |seq: u64| {
            let mut p = kill(seq, "/pods/a");
            p.event.body = EventBody::VictimExit(VictimExit { pid: 2, comm: "memhog".into(), exit_latency_ms: 1.0 });
            p
        };
        lanes.deliver(&kill(2, "/pods/a"), 1);
        lanes.deliver(&exit(3), 2);
        lanes.deliver(&kill(4, "/system.slice/x"), 3);
        lanes.deliver(&kill(5, "/pods/b"), 4);
        assert_eq!(pending(&mut client), "{\"kill\":2}\n{\"kill\":5}\n");
        assert_eq!(lane.take_over().through_seq, 5, "passed over, and given");
    }

    /// A kill's first word goes to an idle client that named it, outside
    /// the stream: the seq the bus expects next is untouched, so the kill
    /// itself still follows on.
    #[test]
    fn a_first_word_reaches_only_idle_clients_that_asked_and_leaves_the_order_alone() {
        use crate::wire::{Event, EventBody, EventKind, KillNotice, Victim};
        let notice = Event::new(
            EventBody::KillSeen(KillNotice {
                victim: Victim { pid: 9, ..Default::default() },
                trigger: Default::default(),
                attribution: crate::wire::Attribution::Exact,
                cgroup_id: None,
                workload: Default::default(),
                main_process: None,
            }),
            "t".into(),
            "/pods/a".into(),
            None,
        );
        let lanes = Arc::new(Lanes::default());
        let open = |kinds: Option<Vec<EventKind>>| {
            let (daemon_end, client) = UnixStream::pair().unwrap();
            let lane = lanes.open(daemon_end.as_fd(), 1, Arc::new(TailFilter { kinds, cgroup: None })).unwrap();
            (lane, client)
        };
        let (every_kind_first, _) = open(None);
        assert!(!lanes.wants_first_words(), "no first word is built for nobody");
        drop(every_kind_first);
        let (asked, mut asked_client) = open(Some(vec![EventKind::KillSeen, EventKind::OomKill]));
        assert!(lanes.wants_first_words());
        let (every_kind, mut every_kind_client) = open(None);
        let (busy, mut busy_client) = open(Some(vec![EventKind::KillSeen]));
        asked.hand_back(1, || true);
        every_kind.hand_back(1, || true);

        lanes.notice(&notice, "{\"first\":9}");
        assert_eq!(pending(&mut asked_client), "{\"first\":9}\n");
        assert_eq!(pending(&mut every_kind_client), "", "a client that takes every kind gets each kill once");
        assert_eq!(pending(&mut busy_client), "", "a client whose task is awake is left to it");
        drop(busy);

        lanes.deliver(&published(2), 1);
        assert_eq!(pending(&mut asked_client), "{\"seq\":2}\n", "the first word took no place in the order");
        assert_eq!(asked.take_over().through_seq, 2);
        assert_eq!(pending(&mut every_kind_client), "{\"seq\":2}\n");
    }
}
