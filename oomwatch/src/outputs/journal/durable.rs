//! The journal as the event bus's durable store: seqs come from it (they
//! keep growing across restarts), and every event and amendment goes to its
//! queue without the publisher waiting on the disk.

use super::{Journal, Record};
use crate::{model::bus::Durable, wire::Event};

impl Durable for Journal {
    fn next_seq(&self) -> u64 {
        Journal::next_seq(self)
    }

    fn next_seq_peek(&self) -> u64 {
        self.last_seq() + 1
    }

    fn append(&self, event: &Event, json: &str) {
        // A drop is counted by the journal (and logged once per episode).
        let _ = Journal::append(self, Record::from_event(event, json.to_owned()));
    }

    fn amend(&self, event: &Event, json: &str) {
        let _ = Journal::amend(self, event.seq, json.to_owned());
    }

    fn keep_now(&self, seq: u64, json: &str) -> bool {
        Journal::keep_now(self, seq, json)
    }

    fn when_kept(&self, seq: u64, then: Box<dyn FnOnce() + Send>) {
        Journal::when_kept(self, seq, then);
    }
}
