//! Ordering: every accepted publish in a room gets the next seq (1, 2, 3, ...).
//!
//! The seq is claimed by a conditional put of the event item `EVT#<seq>` that only succeeds if no
//! event holds that seq yet. Concurrent publishers (threads, Lambdas, machines) therefore can
//! never share a seq. A publisher only claims `s` once it knows `s - 1` exists (it read the head,
//! or it just lost the race for `s - 1`), so they can never skip one either.
//!
//! A first lost race usually means the guess was stale (another process appended since this one
//! last looked), and walking up to the head would pay one billed failed write per event missed:
//! the loser reads the head once and jumps. After that it goes straight for `s + 1` with no read
//! in between (a loser that re-read the head every time would always be one round trip behind
//! the winners and could starve), and reads the head again only after several more losses.
//!
//! Within one process, publishes to a room take turns (see [`RoomHeads`]), so their races are
//! between processes only.
//!
//! A loser also waits a short random time before trying again. Without it, contenders that are
//! answered in a fixed order (a store committing in batches answers in arrival order) retry in
//! that order too, and the last of them can lose every round. A publish that wins at once, which
//! is every publish without a concurrent publisher in the room, never waits.
//!
//! A publish that carries a client `id` also writes an idempotency record `ID#<id>` in the same
//! transaction; if that record exists, the publish is a repeat and is answered with the original
//! seq, without a second event.
//!
//! Events and idempotency records carry a TTL (the retention, 7 days by default). Once a room's
//! events have all expired, "the newest event" no longer says where the room stands, so the head
//! is the larger of the newest event and the room's `HEAD` marker, which the fanout moves
//! forward for every batch: a seq is never given twice, however long a room was quiet.
//!
//! A change of shared state (a document's new version, a stock level) is appended the same way,
//! with the state's own conditional writes as more steps of the event's transaction: the change
//! and its event commit together or not at all, so no reader ever sees one without the other.

use crate::clock::Clock;
use crate::layout::{self, ClientId, IdRecord};
use crate::protocol::{Event, EventKind, JsonData};
use crate::store::{
    Attr, Condition, FailedCondition, Item, Store, StoreError, TTL_ATTRIBUTE, Transaction, TxOp, Write,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// How long events (and their idempotency records) are kept by default: a client away longer
/// is told `expired` and reloads its state.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest retention: a room's head marker is written by the fanout within seconds (at
/// most an hour, the stream mapping's record age) of its event, always before the event expires.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A remembered head older than this is read again: the events after it may have expired
/// since (another process, or this one's fanout, appended them), and a put of an expired seq
/// would succeed. Far shorter than [`MIN_RETENTION`].
const TRUST_HEAD_FOR_MS: u64 = 60 * 60 * 1000;

/// The last seq this process saw claimed in each room: a guess at the head that saves a read on
/// every publish. A stale guess costs one lost race, never a wrong seq, because the conditional
/// put is the arbiter.
///
/// It also queues this process's plain appends (publishes, presence) to each room: they take turns (a fair, first-come
/// queue), so they never race one another for a seq. Under load a racer that lost kept losing
/// to fresh publishers that had not backed off, until it gave up; a queue has no losers. Races
/// are left only between processes (Lambda instances, a CLI beside the runner), where the
/// conditional put decides, as below.
///
/// It also holds the retention every append gives its event and idempotency record.
#[derive(Debug)]
pub struct RoomHeads {
    /// Per room: the head, and when it was seen (ms).
    heads: Mutex<HashMap<String, (u64, u64)>>,
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    retention: Duration,
}

impl Default for RoomHeads {
    fn default() -> Self {
        RoomHeads::keeping(DEFAULT_RETENTION)
    }
}

impl RoomHeads {
    /// Appends keep their events this long (at least [`MIN_RETENTION`]).
    pub fn keeping(retention: Duration) -> Self {
        RoomHeads { heads: Mutex::default(), turns: Mutex::default(), retention: retention.max(MIN_RETENTION) }
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn guess(&self, room: &str, now_ms: u64) -> Option<u64> {
        let heads = self.heads.lock().expect("room heads lock");
        let (seq, seen_ms) = heads.get(room).copied()?;
        (now_ms.saturating_sub(seen_ms) < TRUST_HEAD_FOR_MS).then_some(seq)
    }

    fn observe(&self, room: &str, seq: u64, now_ms: u64) {
        let mut heads = self.heads.lock().expect("room heads lock");
        if heads.len() >= REMEMBERED_ROOMS && !heads.contains_key(room) {
            heads.clear();
        }
        let head = heads.entry(room.to_owned()).or_default();
        *head = (head.0.max(seq), now_ms);
    }

    /// The room's queue of appends.
    fn turn(&self, room: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().expect("room turns lock");
        if turns.len() >= REMEMBERED_ROOMS && !turns.contains_key(room) {
            // Forget the queues nobody is in.
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        }
        turns.entry(room.to_owned()).or_default().clone()
    }
}

/// What an append needs to know.
pub struct Entry<'a> {
    pub room: &'a str,
    /// The client's id: makes the append idempotent.
    pub client_id: Option<ClientId<'a>>,
    /// The id the event gets when the client gave none (the API Gateway request id).
    pub fallback_id: &'a str,
    pub from: &'a str,
    pub kind: EventKind,
    pub data: &'a JsonData,
    pub now_ms: u64,
    /// Writes that commit with the event or not at all: the state change the event records.
    pub steps: Vec<TxOp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub id: String,
    /// The id had been used before; `seq` is the original event's.
    pub repeat: bool,
    /// With `repeat`: the id was first used by a request asking for something else.
    pub other_request: bool,
}

/// The outcome of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored (or, with `repeat`, stored before under the same client id).
    Stored(Published),
    /// A condition of the entry's own steps failed (indexes into `steps`); nothing was written.
    Refused(Vec<FailedCondition>),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {MAX_ATTEMPTS} lost races for the next seq of room {room:?}")]
    Contention { room: String },
}

/// The room's head: the seq of its newest event, or of its head marker if that is newer (the
/// events expired), 0 if it has neither.
pub async fn head(store: &dyn Store, room: &str) -> Result<u64, StoreError> {
    let newest = match store.query(layout::head_of(room)).await?.items.first() {
        None => 0,
        Some(item) => layout::seq_of(item)?,
    };
    let marked = match store.get(&layout::head_marker_key(room)).await? {
        None => 0,
        Some(item) => layout::seq_of(&item)?,
    };
    Ok(newest.max(marked))
}

/// Marks the room's head as at least `seq` (the fanout does, for every room of a batch).
pub async fn mark_head(store: &dyn Store, room: &str, seq: u64) -> Result<(), StoreError> {
    let condition = Condition::Below { attr: "seq".to_owned(), value: i64::try_from(seq).unwrap_or(i64::MAX) };
    // Refused: the marker is already there or further on, which is as good.
    store.put(layout::head_marker(room, seq), condition).await.map(drop)
}

/// The record of a client id, if it was used before.
pub async fn id_record(store: &dyn Store, room: &str, client: ClientId<'_>) -> Result<Option<IdRecord>, StoreError> {
    match store.get(&layout::event_id_key(room, client)).await? {
        Some(record) => Ok(Some(layout::id_record(&record)?)),
        None => Ok(None),
    }
}

/// Appends a publish: its event, under the room's next seq.
pub async fn publish(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    entry: Entry<'_>,
) -> Result<Published, PublishError> {
    match append(store, clock, heads, entry).await? {
        Appended::Stored(published) => Ok(published),
        Appended::Refused(failed) => Err(StoreError::Invalid(format!(
            "a publish has no conditions of its own, yet steps {:?} failed",
            failed.iter().map(|f| f.index).collect::<Vec<_>>()
        ))
        .into()),
    }
}

/// Appends an event to its room's log under the next seq, with the entry's steps in the same
/// transaction.
pub async fn append(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    entry: Entry<'_>,
) -> Result<Appended, PublishError> {
    let id = entry.client_id.map_or(entry.fallback_id, |client| client.id);
    // Appends with their own conditions (a state change) are not queued: they were decided on a
    // state that the append before them in the queue would change, so each would wait its turn
    // only to be refused; racing, they fail together and decide again sooner.
    let turn = entry.steps.is_empty().then(|| heads.turn(entry.room));
    let _turn = match &turn {
        Some(turn) => Some(turn.lock().await),
        None => None,
    };
    let mut known_head = match heads.guess(entry.room, entry.now_ms) {
        Some(seq) => seq,
        None => head(store, entry.room).await?,
    };
    let now_secs = (entry.now_ms / 1000) as i64;
    let expires = Attr::N(now_secs + heads.retention.as_secs() as i64);
    for attempt in 1..=MAX_ATTEMPTS {
        let seq = known_head + 1;
        let event = layout::event_item(&Event {
            room: entry.room.to_owned(),
            seq,
            id: id.to_owned(),
            from: entry.from.to_owned(),
            kind: entry.kind,
            data: entry.data.clone(),
            ts: entry.now_ms,
        })
        .with(TTL_ATTRIBUTE, expires.clone());
        let claimed = if entry.client_id.is_none() && entry.steps.is_empty() {
            match store.put(event, Condition::NotExists).await? {
                Write::Done => true,
                // Our own event: an attempt whose answer was lost (the SDK retries such a put)
                // did write it. The fallback id is the request's own id, so nobody else's is.
                Write::Conflict { current: Some(item) } => {
                    item.string("id") == Some(id) && item.string("from") == Some(entry.from)
                }
                Write::Conflict { current: None } => false,
            }
        } else {
            let own_steps = entry.steps.len();
            let mut ops = entry.steps.clone();
            ops.push(TxOp::Put { item: event, condition: Condition::NotExists });
            let record = entry
                .client_id
                .map(|client| layout::event_id_item(entry.room, client, seq).with(TTL_ATTRIBUTE, expires.clone()));
            if let Some(record) = &record {
                // Absent, or expired and not yet deleted by TTL (which takes its time): an id is
                // a repeat only while its event is kept, as both carry the same expiry.
                let unused = Condition::Below { attr: TTL_ATTRIBUTE.to_owned(), value: now_secs };
                ops.push(TxOp::Put { item: record.clone(), condition: unused });
            }
            match store.transact(ops).await? {
                Transaction::Committed => true,
                Transaction::Conflict { failed } => {
                    if let Some(repeat) = failed.iter().find(|f| f.index == own_steps + 1)
                        && let Some(client) = entry.client_id
                    {
                        let original = original(store, record.as_ref(), repeat.current.as_ref()).await?;
                        return Ok(Appended::Stored(Published {
                            seq: original.seq,
                            id: id.to_owned(),
                            repeat: true,
                            other_request: !original.made_by(client.digest),
                        }));
                    }
                    let refused: Vec<FailedCondition> = failed.into_iter().filter(|f| f.index < own_steps).collect();
                    if !refused.is_empty() {
                        return Ok(Appended::Refused(refused));
                    }
                    false
                }
            }
        };
        if claimed {
            heads.observe(entry.room, seq, entry.now_ms);
            return Ok(Appended::Stored(Published { seq, id: id.to_owned(), repeat: false, other_request: false }));
        }
        // `seq` is taken, so it exists: the next one is claimable without a read.
        known_head = seq;
        if attempt == 1 || attempt % REREAD_HEAD_AFTER == 0 {
            known_head = head(store, entry.room).await?.max(seq);
        }
        heads.observe(entry.room, known_head, entry.now_ms);
        clock.sleep(backoff(attempt - 1)).await;
    }
    Err(PublishError::Contention { room: entry.room.to_owned() })
}

/// The idempotency record that was there: the one DynamoDB returned with the failed condition,
/// or read back (a store may not return it).
async fn original(store: &dyn Store, record: Option<&Item>, returned: Option<&Item>) -> Result<IdRecord, StoreError> {
    if let Some(item) = returned {
        return layout::id_record(item);
    }
    let record = record.ok_or_else(|| StoreError::Invalid("a repeat without an idempotency record".to_owned()))?;
    let item = store
        .get(&record.key)
        .await?
        .ok_or_else(|| StoreError::Invalid("idempotency record reported present, then absent".to_owned()))?;
    layout::id_record(&item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_head_is_trusted_for_an_hour_then_read_again() {
        let heads = RoomHeads::default();
        heads.observe("r", 10, 1_000);
        assert_eq!(heads.guess("r", 1_000 + TRUST_HEAD_FOR_MS - 1), Some(10));
        assert_eq!(heads.guess("r", 1_000 + TRUST_HEAD_FOR_MS), None, "stale: read the head again");
        heads.observe("r", 7, 5_000_000);
        assert_eq!(heads.guess("r", 5_000_000), Some(10), "never backwards");
    }

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
