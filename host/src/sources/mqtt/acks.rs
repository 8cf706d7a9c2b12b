//! PUBACKs of QoS 1 messages: released in arrival order, queued by the source and handed
//! to the MQTT client by one task as its request channel has room, never dropped while
//! the connection they belong to lasts.
//!
//! Why a queue of our own: the client's request channel is bounded, and a backlog the
//! broker sends all at once completes downstream faster than the event loop writes
//! PUBACKs. A PUBACK that does not fit must wait, not be given up on: a message whose
//! PUBACK is lost is delivered again after the next restart.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Publish, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the connection poller, the pipeline and the ack task share.
#[derive(Default)]
pub(super) struct Acks {
    sequencer: Mutex<AckSequencer>,
    /// Wakes the ack task when PUBACKs become ready.
    ready: Notify,
    /// Messages taken but not yet acknowledged or given up on.
    in_flight: AtomicUsize,
    /// Signalled when the pipeline gives up on a message of the current connection: it
    /// holds back every PUBACK after it, and only a new connection makes the broker
    /// deliver it again.
    pub(super) gave_up: Notify,
}

impl Acks {
    /// Give the QoS 1 message `pkid`, just received, its place in the order.
    pub(super) fn register(&self, pkid: u16) -> Ticket {
        self.sequencer.lock().unwrap().register(pkid)
    }

    /// The connection is lost: the broker redelivers what it left unacknowledged, so
    /// its PUBACKs, sent or not, are moot. Drop them here; the caller drops those
    /// already in the client's channel (`EventLoop::clean`) after this returns, so
    /// that none written before can go out on the next connection.
    pub(super) fn connection_lost(&self) {
        self.sequencer.lock().unwrap().reconnected();
    }

    /// The message of `ticket` now travels the pipeline; `Pending::done` when every
    /// sink took it.
    pub(super) fn pending(self: &Arc<Self>, ticket: Ticket) -> Pending {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Pending {
            acks: self.clone(),
            ticket,
            done: false,
        }
    }

    /// Nothing in the pipeline, and every ready PUBACK handed to the client.
    pub(super) fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.sequencer.lock().unwrap().ready.is_empty()
    }

    /// Messages in the pipeline not yet done.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn complete(&self, ticket: Ticket) {
        if self.sequencer.lock().unwrap().complete(ticket) {
            self.ready.notify_one();
        }
    }
}

/// A message in the pipeline. Dropped without `done` (the pipeline gave up on it), it
/// holds back the PUBACKs after it and signals [`Acks::gave_up`], so that the source
/// reconnects and the broker delivers it again.
pub(super) struct Pending {
    acks: Arc<Acks>,
    ticket: Ticket,
    done: bool,
}

impl Pending {
    pub(super) fn done(mut self) {
        self.acks.complete(self.ticket);
        self.done = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.acks.in_flight.fetch_sub(1, Ordering::AcqRel);
        let current = self.acks.sequencer.lock().unwrap().connection == self.ticket.connection;
        if !self.done && current {
            self.acks.gave_up.notify_one();
        }
    }
}

/// Hand ready PUBACKs to `client` in order until `stop`. The client's request channel
/// is bounded and the event loop must never wait on us, so when it is full this task
/// waits and tries again; nothing is dropped. How often the channel filled up is
/// counted: PUBACKs then reach the broker late, which slows its sending.
pub(super) async fn send_acks(
    stage: Arc<str>,
    acks: Arc<Acks>,
    client: AsyncClient,
    stop: CancellationToken,
) {
    let full =
        ::metrics::counter!("sluice_mqtt_ack_channel_full_total", "stage" => stage.to_string());
    // The subscriptions are QoS 0 or 1, so every message with a ticket is QoS 1 and its
    // PUBACK needs only the packet id.
    let mut puback = Publish::new("", QoS::AtLeastOnce, Vec::new());
    let mut was_waiting = false;
    loop {
        let waiting = acks.sequencer.lock().unwrap().hand_over(|pkid| {
            puback.pkid = pkid;
            client.try_ack(&puback).is_ok()
        });
        if waiting && !was_waiting {
            full.increment(1);
        }
        was_waiting = waiting;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = acks.ready.notified(), if !waiting => {}
            // The event loop writes one request per turn: give it time to make room.
            _ = tokio::time::sleep(RETRY), if waiting => {}
        }
    }
}

/// How long the ack task waits before trying a full request channel again.
const RETRY: Duration = Duration::from_millis(2);

#[derive(Clone, Copy)]
pub(super) struct Ticket {
    connection: u64,
    sequence: u64,
}

/// Releases PUBACKs in the order the messages arrived, as MQTT requires (brokers such
/// as rumqttd drop a client that acknowledges out of order), whatever order the
/// pipeline finishes them in. A reconnect starts a new order: the broker redelivers
/// whatever the old connection left unacknowledged, under the same packet ids, so
/// acknowledging the old copies as well could acknowledge a later message that reuses
/// an id before it is processed.
#[derive(Default)]
struct AckSequencer {
    connection: u64,
    /// Sequence number of `slots[0]`.
    first: u64,
    /// Packet ids of this connection's messages in arrival order; `true` once done.
    slots: VecDeque<(u16, bool)>,
    /// Packet ids whose PUBACK may go out, in order, not yet handed to the client.
    ready: VecDeque<u16>,
}

impl AckSequencer {
    fn reconnected(&mut self) {
        self.connection += 1;
        self.first = 0;
        self.slots.clear();
        self.ready.clear();
    }

    fn register(&mut self, pkid: u16) -> Ticket {
        self.slots.push_back((pkid, false));
        Ticket {
            connection: self.connection,
            sequence: self.first + self.slots.len() as u64 - 1,
        }
    }

    /// Mark `ticket` done and queue the PUBACKs whose turn came. True when the queue
    /// was empty before (the ack task may be asleep waiting for it).
    fn complete(&mut self, ticket: Ticket) -> bool {
        if ticket.connection != self.connection || ticket.sequence < self.first {
            return false;
        }
        if let Some(slot) = self.slots.get_mut((ticket.sequence - self.first) as usize) {
            slot.1 = true;
        }
        let was_empty = self.ready.is_empty();
        while let Some((pkid, true)) = self.slots.front().copied() {
            self.slots.pop_front();
            self.first += 1;
            self.ready.push_back(pkid);
        }
        was_empty && !self.ready.is_empty()
    }

    /// Pass ready PUBACKs to `send` in order until it refuses one (keeping that one
    /// and those after it). True when some are left.
    fn hand_over(&mut self, mut send: impl FnMut(u16) -> bool) -> bool {
        while let Some(&pkid) = self.ready.front() {
            if !send(pkid) {
                return true;
            }
            self.ready.pop_front();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hand_over_all(sequencer: &mut AckSequencer) -> Vec<u16> {
        let mut sent = Vec::new();
        sequencer.hand_over(|pkid| {
            sent.push(pkid);
            true
        });
        sent
    }

    #[test]
    fn acks_leave_in_arrival_order_and_reconnects_reset_them() {
        let mut sequencer = AckSequencer::default();
        let tickets: Vec<Ticket> = (1..=3).map(|n| sequencer.register(n)).collect();
        assert!(!sequencer.complete(tickets[1]), "2 waits for 1");
        assert!(hand_over_all(&mut sequencer).is_empty());
        assert!(sequencer.complete(tickets[0]));
        assert_eq!(hand_over_all(&mut sequencer), [1, 2]);
        sequencer.reconnected();
        assert!(
            !sequencer.complete(tickets[2]),
            "a ticket of the old connection is moot"
        );
        let fresh = sequencer.register(3);
        assert!(sequencer.complete(fresh));
        assert_eq!(hand_over_all(&mut sequencer), [3]);
    }

    #[test]
    fn acks_the_client_cannot_take_wait_in_order_and_none_is_dropped() {
        let mut sequencer = AckSequencer::default();
        let tickets: Vec<Ticket> = (1..=5).map(|n| sequencer.register(n)).collect();
        for ticket in &tickets[..4] {
            sequencer.complete(*ticket);
        }
        // A client whose request channel has room for two.
        let mut sent = Vec::new();
        let left = sequencer.hand_over(|pkid| {
            sent.push(pkid);
            sent.len() <= 2
        });
        sent.truncate(2);
        assert!(left, "3 and 4 wait");
        assert!(
            !sequencer.complete(tickets[4]),
            "the queue was not empty: the ack task is retrying already"
        );
        sent.extend(hand_over_all(&mut sequencer));
        assert_eq!(sent, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_reconnect_drops_acks_not_yet_handed_over() {
        let mut sequencer = AckSequencer::default();
        let ticket = sequencer.register(7);
        sequencer.complete(ticket);
        sequencer.reconnected();
        assert!(hand_over_all(&mut sequencer).is_empty());
    }

    #[test]
    fn in_flight_counts_pending_messages_until_done_or_given_up() {
        let acks = Arc::new(Acks::default());
        let done = acks.pending(acks.register(1));
        let given_up = acks.pending(acks.register(2));
        assert_eq!(acks.in_flight(), 2);
        done.done();
        assert_eq!(acks.in_flight(), 1);
        assert!(!acks.idle(), "PUBACK 1 is ready but not handed over");
        drop(given_up);
        assert_eq!(acks.in_flight(), 0);
        acks.sequencer.lock().unwrap().hand_over(|_| true);
        assert!(acks.idle());
    }
}
