//! Group commit: concurrent pushes share one append and one sync.
//!
//! What arrives while a flush runs waits for the next one, which appends it all and
//! syncs once, so that thousands of small pushes a second (one per publishing
//! connection, in the broker) cost tens of syncs, not thousands, and a reader waits for
//! at most one round's sync. A push still returns only once its entries are synced.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Buffer, BufferError, Entry, Inner};

/// The pushes a flush takes next, and whether a flush is running.
#[derive(Default)]
pub(super) struct Group {
    pub(super) pending: Vec<Waiter>,
    pub(super) flushing: bool,
}

/// One push waiting for a group commit: its entries and where its outcome goes.
pub(super) struct Waiter {
    entries: Vec<Entry>,
    done: oneshot::Sender<Outcome>,
}

/// What a group commit did with one push.
pub(super) enum Outcome {
    /// On disk and synced.
    Appended,
    /// Full under `block` (or every older entry in flight): the entries come back, to
    /// be pushed again once space is freed.
    Full(Vec<Entry>),
    Failed(BufferError),
}

impl Buffer {
    /// Append `entries` durably, waiting for space under `block`. Returns once they are
    /// synced, together with whatever other pushes joined the same group commit.
    pub async fn push(self: &Arc<Self>, entries: Vec<Entry>) -> Result<(), BufferError> {
        let mut entries = entries;
        loop {
            let freed = self.freed.notified();
            let (done, outcome) = oneshot::channel();
            let lead = {
                let mut group = self.group.lock().unwrap();
                group.pending.push(Waiter { entries, done });
                !std::mem::replace(&mut group.flushing, true)
            };
            // The flush runs in its own task, so that a push given up (its connection
            // closed) never leaves the others waiting for a leader that is gone.
            if lead {
                tokio::spawn(self.clone().flush());
            }
            match outcome
                .await
                .expect("a flush completes every push it takes")
            {
                Outcome::Appended => {
                    self.appended.notify_waiters();
                    return Ok(());
                }
                Outcome::Failed(error) => return Err(error),
                // Full under `block`: wait for an acknowledgement to free a segment.
                Outcome::Full(back) => {
                    entries = back;
                    freed.await;
                }
            }
        }
    }

    /// Commit what is pending, round after round, until nothing is: each round appends
    /// every push it took and syncs once.
    pub(super) async fn flush(self: Arc<Self>) {
        loop {
            let waiters = {
                let mut group = self.group.lock().unwrap();
                if group.pending.is_empty() {
                    group.flushing = false;
                    return;
                }
                std::mem::take(&mut group.pending)
            };
            let this = self.clone();
            let (dones, outcomes) = tokio::task::spawn_blocking(move || {
                let (batches, dones): (Vec<_>, Vec<_>) =
                    waiters.into_iter().map(|w| (w.entries, w.done)).unzip();
                let mut inner = this.inner.lock().unwrap();
                (dones, inner.append_round(batches))
            })
            .await
            .expect("the buffer's append does not panic");
            for (done, outcome) in dones.into_iter().zip(outcomes) {
                // A push given up no longer waits; its entries are stored all the same.
                let _ = done.send(outcome);
            }
        }
    }
}

impl Inner {
    /// One group commit: append the batches that fit, in order, with one write and one
    /// sync, and say what became of each. Once one batch
    /// does not fit, the later ones wait with it, so that none overtakes it for the room
    /// freed. An error fails every batch of the round that was to be appended: none of
    /// them is acknowledged, and none is numbered.
    fn append_round(&mut self, batches: Vec<Vec<Entry>>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut taken = Vec::new();
        let mut taken_bytes = 0;
        let mut full = false;
        let mut failed = None;
        for entries in batches {
            let size: u64 = entries.iter().map(Entry::stored_len).sum();
            if size > self.max_bytes {
                outcomes.push(Some(Outcome::Failed(BufferError::TooLarge {
                    size,
                    max: self.max_bytes,
                })));
                continue;
            }
            if !full && failed.is_none() {
                match self.make_room(taken_bytes + size) {
                    Ok(true) => {
                        taken_bytes += size;
                        taken.extend(entries);
                        outcomes.push(None);
                        continue;
                    }
                    Ok(false) => full = true,
                    Err(error) => failed = Some(error),
                }
            }
            outcomes.push(match &failed {
                Some(_) => None,
                None => Some(Outcome::Full(entries)),
            });
        }
        if failed.is_none()
            && !taken.is_empty()
            && let Err(error) = self.append_synced(&taken)
        {
            failed = Some(error);
        }
        outcomes
            .into_iter()
            .map(|outcome| match (outcome, &failed) {
                (Some(outcome), _) => outcome,
                (None, None) => Outcome::Appended,
                (None, Some(error)) => Outcome::Failed(error.for_another_waiter()),
            })
            .collect()
    }
}
