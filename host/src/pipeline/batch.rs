//! What flows between stages: events with their acknowledgement tokens.

use crate::event::Event;

use super::ack::Ack;

/// A batch in flight. `acks[i]` belongs to `events[i]`.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub acks: Vec<Ack>,
}

impl Batch {
    pub fn with_capacity(capacity: usize) -> Self {
        Batch {
            events: Vec::with_capacity(capacity),
            acks: Vec::with_capacity(capacity),
        }
    }

    pub fn push(&mut self, event: Event, ack: Ack) {
        self.events.push(event);
        self.acks.push(ack);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every event is durably held by the sink that calls this (see [`Ack::delivered`]).
    pub fn delivered(self) {
        self.acks.into_iter().for_each(Ack::delivered);
    }

    /// Mark every event as not delivered (see [`Ack::fail`]).
    pub fn fail(self) {
        self.acks.into_iter().for_each(Ack::fail);
    }
}
