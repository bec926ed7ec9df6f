//! Ordering: every accepted publish in a room gets the next seq (1, 2, 3, ...).
//!
//! The seq is claimed by a conditional put of the event item `EVT#<seq>` that only succeeds if no
//! event holds that seq yet. Concurrent publishers (threads, Lambdas, machines) therefore can
//! never share a seq, and since a publisher only ever claims head + 1 of an existing head, they
//! can never skip one. The loser of a race re-reads the head and tries the next seq.
//!
//! A publish that carries a client `id` also writes an idempotency record `ID#<id>` in the same
//! transaction; if that record exists, the publish is a repeat and is answered with the original
//! seq, without a second event.

use crate::layout;
use crate::protocol::{Event, JsonData};
use crate::store::{Condition, Store, StoreError, Transaction, TxOp, Write};
use std::collections::HashMap;
use std::sync::Mutex;

/// After this many lost races in a row a publish gives up with [`Contention`]. Each lost race
/// means another publish of the room succeeded, so the room as a whole is making progress.
const MAX_ATTEMPTS: usize = 64;

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
    heads: &RoomHeads,
    p: Publication<'_>,
) -> Result<Published, PublishError> {
    let id = p.client_id.unwrap_or(p.fallback_id);
    let mut known_head = match heads.guess(p.room) {
        Some(seq) => seq,
        None => head(store, p.room).await?,
    };
    for _ in 0..MAX_ATTEMPTS {
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
            None => store.put(event, Condition::NotExists).await? == Write::Done,
            Some(client_id) => {
                let record = layout::event_id_item(p.room, client_id, seq);
                let ops = vec![
                    TxOp::Put {
                        item: event,
                        condition: Condition::NotExists,
                    },
                    TxOp::Put {
                        item: record.clone(),
                        condition: Condition::NotExists,
                    },
                ];
                match store.transact(ops).await? {
                    Transaction::Committed => true,
                    Transaction::Conflict { failed } => {
                        match failed.into_iter().find(|f| f.index == 1) {
                            Some(repeat) => {
                                let original = match repeat.current {
                                    Some(item) => item,
                                    None => store.get(&record.key).await?.ok_or_else(|| {
                                        StoreError::Invalid(
                                            "idempotency record reported present, then absent"
                                                .to_owned(),
                                        )
                                    })?,
                                };
                                let seq = layout::seq_of(&original)?;
                                return Ok(Published {
                                    seq,
                                    id: id.to_owned(),
                                    repeat: true,
                                });
                            }
                            None => false,
                        }
                    }
                }
            }
        };
        if claimed {
            heads.observe(p.room, seq);
            return Ok(Published {
                seq,
                id: id.to_owned(),
                repeat: false,
            });
        }
        known_head = head(store, p.room).await?.max(seq);
        heads.observe(p.room, known_head);
    }
    Err(PublishError::Contention {
        room: p.room.to_owned(),
    })
}
