//! What the daemon hands to people and other systems. For now: the journal.

pub mod journal;
