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
//! between processes only; and the publishes that queued up while one was being written are
//! written together, in one transaction under consecutive seqs (group commit). A room with many
//! writers so commits once per group, not once per publish, and its throughput grows with them.
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
    turns: Mutex<HashMap<String, Arc<RoomQueue>>>,
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
    fn turn(&self, room: &str) -> Arc<RoomQueue> {
        let mut turns = self.turns.lock().expect("room turns lock");
        if turns.len() >= REMEMBERED_ROOMS && !turns.contains_key(room) {
            // Forget the queues nobody is in.
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        }
        turns.entry(room.to_owned()).or_default().clone()
    }
}

/// Publishes to one room waiting to be written, and the turn to write them: whoever holds the
/// turn writes every publish queued by then (its own among them) as one group.
#[derive(Debug, Default)]
struct RoomQueue {
    waiting: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

/// The most publishes one group writes: with their idempotency records, 50 of a transaction's
/// 100 steps, and at most ~3.2 MB of events (DynamoDB takes 4 MB).
const GROUP_MAX: usize = 25;

/// A plain append in its room's queue: its event (the seq is given when its group is written),
/// its client id, and where its outcome goes.
#[derive(Debug)]
struct Waiting {
    event: Event,
    client: Option<OwnedClientId>,
    outcome: tokio::sync::oneshot::Sender<Result<Published, PublishError>>,
}

#[derive(Debug)]
struct OwnedClientId {
    id: String,
    scope: Option<String>,
    digest: String,
}

impl OwnedClientId {
    fn of(client: ClientId<'_>) -> Self {
        OwnedClientId {
            id: client.id.to_owned(),
            scope: client.scope.map(str::to_owned),
            digest: client.digest.to_owned(),
        }
    }

    fn borrowed(&self) -> ClientId<'_> {
        ClientId { id: &self.id, scope: self.scope.as_deref(), digest: &self.digest }
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
    // Appends with their own conditions (a state change) are not queued: they were decided on a
    // state that the append before them in the queue would change, so each would wait its turn
    // only to be refused; racing, they fail together and decide again sooner.
    if entry.steps.is_empty() {
        return Ok(Appended::Stored(append_queued(store, clock, heads, entry).await?));
    }
    let id = entry.client_id.map_or(entry.fallback_id, |client| client.id);
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
        let own_steps = entry.steps.len();
        let mut ops = entry.steps.clone();
        ops.push(TxOp::Put { item: event, condition: Condition::NotExists });
        let record = entry
            .client_id
            .map(|client| layout::event_id_item(entry.room, client, seq).with(TTL_ATTRIBUTE, expires.clone()));
        if let Some(record) = &record {
            ops.push(TxOp::Put { item: record.clone(), condition: unused_id(now_secs) });
        }
        match store.transact(ops).await? {
            Transaction::Committed => {
                heads.observe(entry.room, seq, entry.now_ms);
                return Ok(Appended::Stored(Published { seq, id: id.to_owned(), repeat: false, other_request: false }));
            }
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
            }
        }
        // `seq` is taken, so it exists: the next one is claimable without a read.
        known_head = next_head(store, entry.room, seq, attempt).await?;
        heads.observe(entry.room, known_head, entry.now_ms);
        clock.sleep(backoff(attempt - 1)).await;
    }
    Err(PublishError::Contention { room: entry.room.to_owned() })
}

/// An idempotency record's condition: absent, or expired and not yet deleted by TTL (which takes
/// its time). An id is a repeat only while its event is kept, as both carry the same expiry.
fn unused_id(now_secs: i64) -> Condition {
    Condition::Below { attr: TTL_ATTRIBUTE.to_owned(), value: now_secs }
}

/// Where to go on after losing the race for `taken` (so `taken` exists): straight to the next
/// seq, but after a first loss (a stale guess, most likely) and every few more, from the head
/// read again.
async fn next_head(store: &dyn Store, room: &str, taken: u64, attempt: usize) -> Result<u64, StoreError> {
    if attempt == 1 || attempt.is_multiple_of(REREAD_HEAD_AFTER) {
        return Ok(head(store, room).await?.max(taken));
    }
    Ok(taken)
}

/// A plain append (no conditions of its own): queued behind the room's other plain appends of
/// this process, and written with those queued beside it as one group, by whichever of them
/// holds the room's turn. So a host must not drop an append before it is answered (the runner
/// runs each frame in a task of its own; a Lambda invocation runs to its end): the group it may
/// be writing holds others' publishes too.
async fn append_queued(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    entry: Entry<'_>,
) -> Result<Published, PublishError> {
    use tokio::sync::oneshot::error::TryRecvError;
    let queue = heads.turn(entry.room);
    let (outcome, mut answer) = tokio::sync::oneshot::channel();
    let event = Event {
        room: entry.room.to_owned(),
        seq: 0,
        id: entry.client_id.map_or(entry.fallback_id, |client| client.id).to_owned(),
        from: entry.from.to_owned(),
        kind: entry.kind,
        data: entry.data.clone(),
        ts: entry.now_ms,
    };
    let client = entry.client_id.map(OwnedClientId::of);
    queue.waiting.lock().expect("room queue lock").push(Waiting { event, client, outcome });
    let _turn = queue.turn.lock().await;
    loop {
        match answer.try_recv() {
            Ok(outcome) => return outcome,
            Err(TryRecvError::Closed) => {
                return Err(StoreError::Unavailable(
                    "the request writing this publish's group was cancelled; it may or may not be stored".into(),
                )
                .into());
            }
            Err(TryRecvError::Empty) => {}
        }
        // In arrival order, one publish per client id: a transaction may not write one item
        // twice, and a copy left for the next group is then answered as a repeat.
        let group: Vec<Waiting> = {
            let mut waiting = queue.waiting.lock().expect("room queue lock");
            let mut ids = std::collections::HashSet::new();
            let (mut group, mut later) = (Vec::new(), Vec::new());
            for publish in waiting.drain(..) {
                let first_of_its_id =
                    publish.client.as_ref().is_none_or(|client| ids.insert((client.scope.clone(), client.id.clone())));
                if first_of_its_id && group.len() < GROUP_MAX {
                    group.push(publish);
                } else {
                    later.push(publish);
                }
            }
            *waiting = later;
            group
        };
        if group.is_empty() {
            return Err(StoreError::Invalid("a queued publish was neither written nor waiting".to_owned()).into());
        }
        write_group(store, clock, heads, entry.room, entry.now_ms, group).await;
    }
}

/// Writes a group of queued publishes under the room's next seqs, all in one write (a single
/// publish without an id as a plain conditional put: a transaction costs twice as much on
/// DynamoDB), and answers each.
async fn write_group(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    room: &str,
    now_ms: u64,
    mut group: Vec<Waiting>,
) {
    let mut known_head = match heads.guess(room, now_ms) {
        Some(seq) => seq,
        None => match head(store, room).await {
            Ok(seq) => seq,
            Err(error) => return fail(group, &error),
        },
    };
    let now_secs = (now_ms / 1000) as i64;
    for attempt in 1..=MAX_ATTEMPTS {
        if group.is_empty() {
            return;
        }
        let items: Vec<(Item, Option<Item>)> = group
            .iter()
            .enumerate()
            .map(|(i, waiting)| {
                let seq = known_head + 1 + i as u64;
                let expires = Attr::N((waiting.event.ts / 1000) as i64 + heads.retention.as_secs() as i64);
                let event =
                    layout::event_item(&Event { seq, ..waiting.event.clone() }).with(TTL_ATTRIBUTE, expires.clone());
                let record = waiting
                    .client
                    .as_ref()
                    .map(|client| layout::event_id_item(room, client.borrowed(), seq).with(TTL_ATTRIBUTE, expires));
                (event, record)
            })
            .collect();
        // Each failed condition: the publish it belongs to, whether it was its idempotency
        // record (else its event), and the item that was there.
        let failed: Vec<(usize, bool, Option<Item>)> = if items.len() == 1 && items[0].1.is_none() {
            match store.put(items[0].0.clone(), Condition::NotExists).await {
                Ok(Write::Done) => Vec::new(),
                Ok(Write::Conflict { current }) => vec![(0, false, current)],
                Err(error) => return fail(group, &error),
            }
        } else {
            let mut ops = Vec::with_capacity(items.len() * 2);
            let mut owners = Vec::with_capacity(items.len() * 2);
            for (i, (event, record)) in items.iter().enumerate() {
                ops.push(TxOp::Put { item: event.clone(), condition: Condition::NotExists });
                owners.push((i, false));
                if let Some(record) = record {
                    ops.push(TxOp::Put { item: record.clone(), condition: unused_id(now_secs) });
                    owners.push((i, true));
                }
            }
            match store.transact(ops).await {
                Ok(Transaction::Committed) => Vec::new(),
                Ok(Transaction::Conflict { failed }) => failed
                    .into_iter()
                    .filter_map(|f| owners.get(f.index).map(|&(i, record)| (i, record, f.current)))
                    .collect(),
                Err(error) => return fail(group, &error),
            }
        };
        // An event already there that is this publish's own: an attempt whose answer was lost
        // (the SDK retries) wrote it. Its id is the publish's own (a client id, or the request's).
        let own = |i: usize, current: &Option<Item>| {
            current.as_ref().is_some_and(|item| {
                item.string("id") == Some(group[i].event.id.as_str())
                    && item.string("from") == Some(group[i].event.from.as_str())
            })
        };
        let repeats: Vec<usize> = failed.iter().filter(|(_, record, _)| *record).map(|(i, _, _)| *i).collect();
        let stored: Vec<usize> =
            failed.iter().filter(|(i, record, current)| !*record && own(*i, current)).map(|(i, _, _)| *i).collect();
        // The highest seq known to exist now: one another process took, or one of ours.
        let taken = failed.iter().filter(|(_, record, _)| !*record).map(|(i, _, _)| known_head + 1 + *i as u64).max();
        if failed.is_empty() {
            let last = known_head + group.len() as u64;
            heads.observe(room, last, now_ms);
            for (i, waiting) in group.into_iter().enumerate() {
                let published = Published {
                    seq: known_head + 1 + i as u64,
                    id: waiting.event.id,
                    repeat: false,
                    other_request: false,
                };
                let _ = waiting.outcome.send(Ok(published));
            }
            return;
        }
        // Repeats are answered with their original seq, and publishes whose own event is there
        // (stored by an attempt whose answer was lost) with that seq; both leave the group, and
        // the rest go again (a cancelled transaction wrote none of them).
        let mut leaving: Vec<usize> = repeats.iter().chain(&stored).copied().collect();
        leaving.sort_unstable();
        leaving.dedup();
        for &i in leaving.iter().rev() {
            let waiting = group.remove(i);
            let outcome = if repeats.contains(&i) {
                let current = failed.iter().find(|(j, record, _)| *j == i && *record).and_then(|(_, _, c)| c.as_ref());
                let digest = waiting.client.as_ref().map_or("", |client| client.digest.as_str());
                match original(store, items[i].1.as_ref(), current).await {
                    Ok(original) => Ok(Published {
                        seq: original.seq,
                        id: waiting.event.id,
                        repeat: true,
                        other_request: !original.made_by(digest),
                    }),
                    Err(error) => Err(error.into()),
                }
            } else {
                Ok(Published {
                    seq: known_head + 1 + i as u64,
                    id: waiting.event.id,
                    repeat: false,
                    other_request: false,
                })
            };
            let _ = waiting.outcome.send(outcome);
        }
        if let Some(taken) = taken {
            known_head = match next_head(store, room, taken, attempt).await {
                Ok(seq) => seq,
                Err(error) => return fail(group, &error),
            };
            heads.observe(room, known_head, now_ms);
            clock.sleep(backoff(attempt - 1)).await;
        }
    }
    for waiting in group {
        let _ = waiting.outcome.send(Err(PublishError::Contention { room: room.to_owned() }));
    }
}

/// Answers every publish of a group with the store's failure.
fn fail(group: Vec<Waiting>, error: &StoreError) {
    for waiting in group {
        let _ = waiting.outcome.send(Err(PublishError::Store(shared(error))));
    }
}

/// The same failure, for each publish of a group (a source error is not `Clone`).
fn shared(error: &StoreError) -> StoreError {
    match error {
        StoreError::Invalid(reason) => StoreError::Invalid(reason.clone()),
        StoreError::Unavailable(source) => {
            StoreError::Unavailable(crate::engine::Chain(source.as_ref()).to_string().into())
        }
        StoreError::Full => StoreError::Full,
        StoreError::Malformed { key, reason } => StoreError::Malformed { key: key.clone(), reason: reason.clone() },
    }
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
