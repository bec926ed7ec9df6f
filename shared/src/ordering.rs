//! Ordering: every accepted publish in a room gets the next seq (1, 2, 3, ...).
//!
//! The seq is claimed by a conditional put of the event item `EVT#<seq>` that only succeeds if no
//! event holds that seq yet. Concurrent publishers (threads, Lambdas, machines) therefore can
//! never share a seq. A publisher only claims `s` once it knows `s - 1` exists (it read the head,
//! or it just lost the race for `s - 1`), so they can never skip one either.
//!
//! The loser of a race for `s` goes straight for `s + 1`, with no read in between: a loser that
//! re-read the head first would always be one round trip behind the winners and could starve.
//! Only after several losses in a row, when its idea of the head is likely far behind, does it
//! read the head again and jump.
//!
//! A loser also waits a short random time before trying again. Without it, contenders that are
//! answered in a fixed order (a store committing in batches answers in arrival order) retry in
//! that order too, and the last of them can lose every round. A publish that wins at once, which
//! is every publish without a concurrent publisher in the room, never waits.
//!
//! A publish that carries a client `id` also writes an idempotency record `ID#<id>` in the same
//! transaction; if that record exists, the publish is a repeat and is answered with the original
//! seq, without a second event.

use crate::clock::Clock;
use crate::layout;
use crate::protocol::{Event, JsonData};
use crate::store::{Condition, Store, StoreError, Transaction, TxOp, Write};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// After this many lost races in a row a publish gives up with [`PublishError::Contention`].
/// Each lost race means another publish of the room succeeded, so the room is making progress.
const MAX_ATTEMPTS: usize = 256;

/// Lost races in a row after which the head is read again rather than walked up to.
const REREAD_HEAD_AFTER: usize = 8;

/// The longest backoff after a lost race; the bound doubles from 1 ms with each loss in a row.
const MAX_BACKOFF: Duration = Duration::from_millis(16);

/// A random wait before attempt `losses + 1`: uniform up to a bound that doubles per loss.
fn backoff(losses: usize) -> Duration {
    let bound = Duration::from_millis(1 << losses.min(8)).min(MAX_BACKOFF);
    Duration::from_micros(rand::random_range(0..=bound.as_micros() as u64))
}

/// Rooms whose head this process remembers; past this it forgets them all and re-reads.
const REMEMBERED_ROOMS: usize = 10_000;

/// The last seq this process saw claimed in each room: a guess at the head that saves a read on
/// every publish. A stale guess costs one lost race, never a wrong seq, because the conditional
/// put is the arbiter.
#[derive(Debug, Default)]
pub struct RoomHeads(Mutex<HashMap<String, u64>>);

impl RoomHeads {
    fn guess(&self, room: &str) -> Option<u64> {
        self.0.lock().expect("room heads lock").get(room).copied()
    }

    fn observe(&self, room: &str, seq: u64) {
        let mut heads = self.0.lock().expect("room heads lock");
        if heads.len() >= REMEMBERED_ROOMS && !heads.contains_key(room) {
            heads.clear();
        }
        let head = heads.entry(room.to_owned()).or_default();
        *head = (*head).max(seq);
    }
}

/// What a publish needs to know.
pub struct Publication<'a> {
    pub room: &'a str,
    /// The client's id: makes the publish idempotent.
    pub client_id: Option<&'a str>,
    /// The id the event gets when the client gave none (the API Gateway request id).
    pub fallback_id: &'a str,
    pub from: &'a str,
    pub data: &'a JsonData,
    pub now_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub id: String,
    /// The id had been published before; `seq` is the original one.
    pub repeat: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {MAX_ATTEMPTS} lost races for the next seq of room {room:?}")]
    Contention { room: String },
}

/// The room's head: the seq of its newest event, 0 if it has none.
pub async fn head(store: &dyn Store, room: &str) -> Result<u64, StoreError> {
    let page = store.query(layout::head_of(room)).await?;
    match page.items.first() {
        None => Ok(0),
        Some(item) => layout::seq_of(item),
    }
}

pub async fn publish(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    p: Publication<'_>,
) -> Result<Published, PublishError> {
    let id = p.client_id.unwrap_or(p.fallback_id);
    let mut known_head = match heads.guess(p.room) {
        Some(seq) => seq,
        None => head(store, p.room).await?,
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let seq = known_head + 1;
        let event = layout::event_item(&Event {
            room: p.room.to_owned(),
            seq,
            id: id.to_owned(),
            from: p.from.to_owned(),
            data: p.data.clone(),
            ts: p.now_ms,
        });
        let claimed = match p.client_id {
            None => match store.put(event, Condition::NotExists).await? {
                Write::Done => true,
                // Our own event: an attempt whose answer was lost (the SDK retries such a put)
                // did write it. The fallback id is the request's own id, so nobody else's is.
                Write::Conflict { current: Some(item) } => {
                    item.string("id") == Some(id) && item.string("from") == Some(p.from)
                }
                Write::Conflict { current: None } => false,
            },
            Some(client_id) => {
                let record = layout::event_id_item(p.room, client_id, seq);
                let ops = vec![
                    TxOp::Put { item: event, condition: Condition::NotExists },
                    TxOp::Put { item: record.clone(), condition: Condition::NotExists },
                ];
                match store.transact(ops).await? {
                    Transaction::Committed => true,
                    Transaction::Conflict { failed } => match failed.into_iter().find(|f| f.index == 1) {
                        Some(repeat) => {
                            let original = match repeat.current {
                                Some(item) => item,
                                None => store.get(&record.key).await?.ok_or_else(|| {
                                    StoreError::Invalid("idempotency record reported present, then absent".to_owned())
                                })?,
                            };
                            let seq = layout::seq_of(&original)?;
                            return Ok(Published { seq, id: id.to_owned(), repeat: true });
                        }
                        None => false,
                    },
                }
            }
        };
        if claimed {
            heads.observe(p.room, seq);
            return Ok(Published { seq, id: id.to_owned(), repeat: false });
        }
        // `seq` is taken, so it exists: the next one is claimable without a read.
        known_head = seq;
        if attempt % REREAD_HEAD_AFTER == 0 {
            known_head = head(store, p.room).await?.max(seq);
        }
        heads.observe(p.room, known_head);
        clock.sleep(backoff(attempt - 1)).await;
    }
    Err(PublishError::Contention { room: p.room.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_each_loss_and_stays_bounded() {
        for _ in 0..200 {
            assert!(backoff(0) <= Duration::from_millis(1));
            assert!(backoff(2) <= Duration::from_millis(4));
            assert!(backoff(40) <= MAX_BACKOFF);
        }
        // Random, not fixed: contenders must not retry in lock-step.
        let waits: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(4)).collect();
        assert!(waits.len() > 1);
    }
}
