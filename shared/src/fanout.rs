//! Fanout: from a batch of change-feed records to frames on subscribers' connections.
//!
//! Planning is pure: the batch's new events are grouped by room and sorted by seq (a stream
//! keeps write order per partition, but the records of transactions may interleave), and each
//! room's events are encoded into as few frames as fit under API Gateway's 32 KB frame limit.
//! Each frame is encoded once and shared by all of the room's subscribers. The plan remembers
//! which records of the batch each room's events came from, so that a failure is reported for
//! exactly those records.
//!
//! Delivery fans out a few rooms at once (a room of 10,000 subscribers does not hold the others
//! back), pages through each room's subscribers and posts to many connections at once, a bounded
//! number at a time, and each connection's frames in order. A connection that is gone (410) is
//! forgotten with its subscriptions, so that no later batch tries it again. A post that fails
//! for any other reason (throttled, 5xx, a policy mistake) is tried again with backoff; if it
//! still fails, the connection is closed, so that its client reconnects and recovers with `sync`
//! rather than miss the room's last event until it happens to write. Every such failure is
//! counted in the [`FanoutReport`].
//!
//! With [`Fanout::counting`], each batch is also counted into the day's figures ([`crate::tally`])
//! once it has been delivered: the same feed, read once, serves both.

use crate::clock::{Clock, SystemClock};
use crate::engine::Chain;
use crate::layout;
use crate::membership;
use crate::ordering::{self, RoomHeads};
use crate::poster::{Delivery, Frame, Poster};
use crate::protocol::{Event, MAX_FRAME_BYTES, ServerFrame};
use crate::reading::RoomWaiters;
use crate::store::{Change, ChangeKind, Store, StoreError};
use crate::tally;
use futures_util::stream::{self, StreamExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Posts in flight at once, per room.
pub const POST_CONCURRENCY: usize = 64;

/// Rooms of one batch fanned out at once. Each room waits on its own reads and writes (its
/// subscribers, the day's figures, its head marker): with many quiet rooms in a batch, those
/// waits, not the posts, bound the fanout, so many rooms go at once (the embedded store commits
/// their writes together). 4 at a time managed ~660 events/s over 100 rooms.
pub const ROOM_CONCURRENCY: usize = 32;

/// Subscribers read per store query.
const SUBSCRIBER_PAGE: usize = 1000;

/// The waits before each new try of a post that failed for another reason than 410. The SDK has
/// already retried its own way (3 attempts); these ride out a longer throttle, within a batch.
pub const POST_RETRY_DELAYS: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(400), Duration::from_millis(1600)];

/// Posts are retried only this long after a batch began: when every post fails (a policy
/// mistake, an account-wide throttle), a room of thousands must not hold the batch past the
/// fanout function's timeout (60 s), which would fail the whole batch and block its shard.
pub const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// The frames of one room for one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomFrames {
    pub room: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: usize,
    pub frames: Vec<Frame>,
    /// Indexes, in the batch, of the records these events came from.
    pub records: Vec<usize>,
    /// The oldest event's time, for the fanout's lag.
    pub oldest_ts: u64,
}

/// What one batch of changes sends, room by room.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FanoutPlan {
    pub rooms: Vec<RoomFrames>,
    /// Indexes of event records that cannot be read: skipped (reading them again would fail
    /// again), so that one damaged record never holds back the good ones.
    pub unreadable: Vec<usize>,
}

impl FanoutPlan {
    /// Plans the delivery of every event inserted in `changes`; other changes are not events.
    pub fn from_changes(changes: &[Change]) -> Self {
        let mut by_room: Vec<(String, Vec<(usize, Event)>)> = Vec::new();
        let mut unreadable = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            let (ChangeKind::Insert, Some(item)) = (change.kind, &change.new) else {
                continue;
            };
            let event = match layout::event_from_item(item) {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(error = %Chain(&error), "unreadable event record skipped");
                    unreadable.push(index);
                    continue;
                }
            };
            match by_room.iter_mut().find(|(room, _)| *room == event.room) {
                Some((_, events)) => events.push((index, event)),
                None => by_room.push((event.room.clone(), vec![(index, event)])),
            }
        }
        let rooms = by_room.into_iter().map(|(room, events)| encode_room(room, events)).collect();
        FanoutPlan { rooms, unreadable }
    }
}

fn encode_room(room: String, mut events: Vec<(usize, Event)>) -> RoomFrames {
    let records = events.iter().map(|(index, _)| *index).collect();
    // Seq order, whatever order the records came in; a record delivered twice in one batch is
    // pushed once.
    events.sort_by_key(|(_, event)| event.seq);
    events.dedup_by_key(|(_, event)| event.seq);
    let first_seq = events.first().map_or(0, |(_, e)| e.seq);
    let last_seq = events.last().map_or(0, |(_, e)| e.seq);
    let oldest_ts = events.iter().map(|(_, e)| e.ts).min().unwrap_or(0);
    let count = events.len();
    // The exact size of an `events` frame is its empty form plus each event plus the commas.
    let empty = ServerFrame::Events { room: room.clone(), events: Vec::new(), more: None, reference: None };
    let frame_base = empty.to_json().len();
    let mut frames = Vec::new();
    let mut chunk: Vec<Event> = Vec::new();
    let mut chunk_bytes = frame_base;
    for (_, event) in events {
        let size = serde_json::to_string(&event).map_or(0, |json| json.len());
        let separator = usize::from(!chunk.is_empty());
        if !chunk.is_empty() && chunk_bytes + separator + size > MAX_FRAME_BYTES {
            frames.push(encode_chunk(&room, std::mem::take(&mut chunk)));
            chunk_bytes = frame_base;
        }
        chunk_bytes += usize::from(!chunk.is_empty()) + size;
        chunk.push(event);
    }
    if !chunk.is_empty() {
        frames.push(encode_chunk(&room, chunk));
    }
    RoomFrames { room, first_seq, last_seq, events: count, frames, records, oldest_ts }
}

fn encode_chunk(room: &str, mut events: Vec<Event>) -> Frame {
    let frame = if events.len() == 1 {
        ServerFrame::Event(events.remove(0))
    } else {
        ServerFrame::Events { room: room.to_owned(), events, more: None, reference: None }
    };
    Frame::new(frame.to_json())
}

/// What a batch achieved. Every delivery that did not happen is counted in one of `gone`,
/// `failed_posts` or `failed_rooms`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanoutReport {
    pub records: usize,
    pub events: usize,
    /// Events delivered, counted once per receiving connection.
    pub deliveries: usize,
    pub posts: usize,
    /// Posts tried again after a failure other than 410.
    pub retried_posts: usize,
    /// Connections found gone and forgotten.
    pub gone: usize,
    /// Connections whose posts still failed after every retry: they miss these events, are
    /// closed, and recover them with `sync` when their client reconnects.
    pub failed_posts: usize,
    /// Of those, the connections that could not even be closed.
    pub unclosed: usize,
    /// Event records that could not be read, skipped.
    pub unreadable_records: usize,
    /// Rooms whose subscribers could not be read: none of their subscribers got this batch.
    pub failed_rooms: Vec<RoomFailure>,
    /// The batch could not be counted into the day's figures; counting it again is safe.
    pub tally_failed: Option<String>,
    /// From the oldest event's `ts` to the end of its delivery.
    pub lag_ms: u64,
}

impl FanoutReport {
    /// The records of the batch to deliver again (indexes into it): those of rooms that failed,
    /// or the whole batch if it could not be counted. Both hosts retry exactly these: the
    /// Lambda by naming them in `batchItemFailures`, the runner by delivering them again.
    pub fn records_to_retry(&self) -> BTreeSet<usize> {
        if self.tally_failed.is_some() {
            return (0..self.records).collect();
        }
        self.failed_rooms.iter().flat_map(|room| room.records.iter().copied()).collect()
    }

    /// Whether any delivery failed (other than to a connection found gone).
    pub fn has_failures(&self) -> bool {
        self.failed_posts > 0 || !self.failed_rooms.is_empty() || self.tally_failed.is_some()
    }

    fn merge(&mut self, room: RoomReport) {
        self.deliveries += room.deliveries;
        self.posts += room.posts;
        self.retried_posts += room.retried_posts;
        self.gone += room.gone;
        self.failed_posts += room.failed_posts;
        self.unclosed += room.unclosed;
        self.failed_rooms.extend(room.failure);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomFailure {
    pub room: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Indexes, in the batch, of the room's records.
    pub records: Vec<usize>,
    pub error: String,
}

/// One room's share of a [`FanoutReport`].
#[derive(Debug, Default)]
struct RoomReport {
    deliveries: usize,
    posts: usize,
    retried_posts: usize,
    gone: usize,
    failed_posts: usize,
    unclosed: usize,
    failure: Option<RoomFailure>,
}

pub struct Fanout {
    store: Arc<dyn Store>,
    poster: Arc<dyn Poster>,
    concurrency: usize,
    /// Event times for the lag, presence events of members whose connection turns out gone,
    /// and the waits between post retries.
    clock: Arc<dyn Clock>,
    retry_delays: Vec<Duration>,
    retry_window: Duration,
    heads: RoomHeads,
    counting: bool,
    /// Readers without a socket (long polls, event streams) in this process, woken per room.
    readers: Option<RoomWaiters>,
}

impl Fanout {
    pub fn new(store: Arc<dyn Store>, poster: Arc<dyn Poster>) -> Self {
        Fanout {
            store,
            poster,
            concurrency: POST_CONCURRENCY,
            clock: Arc::new(SystemClock),
            retry_delays: POST_RETRY_DELAYS.to_vec(),
            retry_window: RETRY_WINDOW,
            heads: RoomHeads::default(),
            counting: false,
            readers: None,
        }
    }

    /// Also counts every batch into the day's figures, for the end-of-day report.
    pub fn counting(mut self) -> Self {
        self.counting = true;
        self
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The retention of the presence events it appends for members found gone.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.heads = RoomHeads::keeping(retention);
        self
    }

    /// Also wakes these readers (HTTP long polls and event streams) of each room with events:
    /// they are subscribers that read the store themselves.
    pub fn waking(mut self, readers: RoomWaiters) -> Self {
        self.readers = Some(readers);
        self
    }

    /// The waits before each new try of a failing post (an empty list: no retries).
    pub fn with_retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.retry_delays = delays;
        self
    }

    /// Delivers one batch of changes. What failed is in the report, down to the record.
    pub async fn deliver(&self, changes: &[Change]) -> FanoutReport {
        let plan = FanoutPlan::from_changes(changes);
        let mut report = FanoutReport {
            records: changes.len(),
            unreadable_records: plan.unreadable.len(),
            ..FanoutReport::default()
        };
        report.events = plan.rooms.iter().map(|room| room.events).sum();
        if let Some(readers) = &self.readers {
            for room in &plan.rooms {
                readers.arrived(&room.room, room.last_seq);
            }
        }
        let retry_until = self.clock.now_ms() + self.retry_window.as_millis() as u64;
        // Collected first: a stream mapping a borrowing closure is not provably `Send`.
        let deliveries: Vec<_> = plan.rooms.iter().map(|room| self.deliver_room(room, retry_until)).collect();
        let mut rooms = stream::iter(deliveries).buffer_unordered(ROOM_CONCURRENCY);
        while let Some(room) = rooms.next().await {
            report.merge(room);
        }
        drop(rooms);
        if self.counting
            && let Err(error) = tally::record(self.store.as_ref(), self.clock.now_ms(), changes).await
        {
            tracing::warn!(error = %Chain(&error), "could not count the batch into the day's figures");
            report.tally_failed = Some(Chain(&error).to_string());
        }
        if let Some(oldest) = plan.rooms.iter().map(|room| room.oldest_ts).min() {
            report.lag_ms = self.clock.now_ms().saturating_sub(oldest);
        }
        if report.events > 0 {
            tracing::info!(
                events = report.events,
                rooms = plan.rooms.len(),
                deliveries = report.deliveries,
                posts = report.posts,
                retried = report.retried_posts,
                gone = report.gone,
                failed_posts = report.failed_posts,
                failed_rooms = report.failed_rooms.len(),
                unclosed = report.unclosed,
                unreadable = report.unreadable_records,
                lag_ms = report.lag_ms,
                "fanout"
            );
        }
        report
    }

    async fn deliver_room(&self, room: &RoomFrames, retry_until: u64) -> RoomReport {
        let mut report = RoomReport::default();
        // The room's head marker, whatever becomes of the posts (and beside them, so pushes wait
        // for no extra write): once every event has expired, it is what keeps the room from
        // giving a seq twice. If it cannot be written, the room's records are retried.
        let (marked, posted) = futures_util::future::join(
            ordering::mark_head(self.store.as_ref(), &room.room, room.last_seq),
            self.post_to_subscribers(room, retry_until, &mut report),
        )
        .await;
        if let Err(error) = marked.and(posted) {
            tracing::warn!(room = room.room, error = %Chain(&error), "fanout could not mark the room's head or read its subscribers");
            report.failure = Some(RoomFailure {
                room: room.room.clone(),
                first_seq: room.first_seq,
                last_seq: room.last_seq,
                records: room.records.clone(),
                error: Chain(&error).to_string(),
            });
        }
        report
    }

    async fn post_to_subscribers(
        &self,
        room: &RoomFrames,
        retry_until: u64,
        report: &mut RoomReport,
    ) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let (subscribers, resume) =
                membership::subscribers(self.store.as_ref(), &room.room, after.as_deref(), SUBSCRIBER_PAGE).await?;
            let mut outcomes = stream::iter(subscribers)
                .map(|connection| self.post_frames(connection, &room.frames, retry_until))
                .buffer_unordered(self.concurrency);
            while let Some(outcome) = outcomes.next().await {
                match outcome {
                    Outcome::Delivered { posts, retries } => {
                        report.posts += posts;
                        report.retried_posts += retries;
                        report.deliveries += room.events;
                    }
                    Outcome::Gone { retries } => {
                        report.retried_posts += retries;
                        report.gone += 1;
                    }
                    Outcome::Failed { retries, closed } => {
                        report.retried_posts += retries;
                        report.failed_posts += 1;
                        report.unclosed += usize::from(!closed);
                    }
                }
            }
            match resume {
                Some(sk) => after = Some(sk),
                None => return Ok(()),
            }
        }
    }

    async fn post_frames(&self, connection: String, frames: &[Frame], retry_until: u64) -> Outcome {
        let mut retries = 0;
        for frame in frames {
            let mut delays = self.retry_delays.iter();
            loop {
                match self.poster.post(&connection, frame).await {
                    Ok(Delivery::Sent) => break,
                    Ok(Delivery::Gone) => {
                        if let Err(error) =
                            membership::forget(self.store.as_ref(), self.clock.as_ref(), &self.heads, &connection).await
                        {
                            tracing::warn!(connection, error = %Chain(&error), "could not forget a gone connection");
                        }
                        return Outcome::Gone { retries };
                    }
                    Err(error) => match delays
                        .next()
                        .filter(|delay| self.clock.now_ms().saturating_add(delay.as_millis() as u64) <= retry_until)
                    {
                        Some(delay) => {
                            tracing::debug!(connection, error = %Chain(&error), ?delay, "post failed; trying again");
                            retries += 1;
                            self.clock.sleep(*delay).await;
                        }
                        None => {
                            tracing::warn!(connection, error = %Chain(&error), retries, "post failed for good; closing the connection");
                            let closed = match self.poster.delete_connection(&connection).await {
                                Ok(()) => true,
                                Err(error) => {
                                    tracing::error!(connection, error = %Chain(&error), "could not close a failing connection");
                                    false
                                }
                            };
                            return Outcome::Failed { retries, closed };
                        }
                    },
                }
            }
        }
        Outcome::Delivered { posts: frames.len(), retries }
    }
}

enum Outcome {
    Delivered { posts: usize, retries: usize },
    Gone { retries: usize },
    Failed { retries: usize, closed: bool },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JsonData;
    use crate::store::Item;

    fn event(room: &str, seq: u64, data: &str) -> Event {
        Event {
            room: room.into(),
            seq,
            id: format!("e{seq}"),
            from: "c".into(),
            kind: crate::protocol::EventKind::Publish,
            data: JsonData::from_json(format!("\"{data}\"")).unwrap(),
            ts: 1,
        }
    }

    fn inserted(event: &Event) -> Change {
        let item = layout::event_item(event);
        Change { kind: ChangeKind::Insert, key: item.key.clone(), new: Some(item) }
    }

    fn frame_seqs(frame: &Frame) -> Vec<u64> {
        let parsed: ServerFrame = serde_json::from_slice(frame.bytes()).unwrap();
        match parsed {
            ServerFrame::Event(event) => vec![event.seq],
            ServerFrame::Events { events, more: None, reference: None, .. } => events.iter().map(|e| e.seq).collect(),
            other => panic!("not a push: {other:?}"),
        }
    }

    #[test]
    fn a_lone_event_is_pushed_as_an_event_frame() {
        let plan = FanoutPlan::from_changes(&[inserted(&event("a", 1, "x"))]);
        assert_eq!(plan.rooms.len(), 1);
        let text = std::str::from_utf8(plan.rooms[0].frames[0].bytes()).unwrap();
        assert!(text.starts_with(r#"{"type":"event","room":"a","seq":1"#), "{text}");
    }

    #[test]
    fn events_are_grouped_by_room_in_feed_order_and_everything_else_is_ignored() {
        let connection = Item::new(crate::store::Key::new("CONN#c", "META"));
        let changes = vec![
            inserted(&event("a", 1, "x")),
            Change { kind: ChangeKind::Insert, key: connection.key.clone(), new: Some(connection.clone()) },
            inserted(&event("b", 7, "y")),
            inserted(&event("a", 2, "z")),
            Change { kind: ChangeKind::Remove, key: connection.key.clone(), new: None },
            inserted(&event("a", 3, "w")),
        ];
        let plan = FanoutPlan::from_changes(&changes);
        let rooms: Vec<(&str, u64, u64, usize)> =
            plan.rooms.iter().map(|r| (r.room.as_str(), r.first_seq, r.last_seq, r.events)).collect();
        assert_eq!(rooms, vec![("a", 1, 3, 3), ("b", 7, 7, 1)]);
        assert_eq!(plan.rooms[0].frames.len(), 1, "one frame for a's three events");
        assert_eq!(frame_seqs(&plan.rooms[0].frames[0]), vec![1, 2, 3]);
    }

    #[test]
    fn batched_frames_stay_under_32_kb_and_keep_every_event_in_order() {
        let data = "d".repeat(3000);
        let changes: Vec<Change> = (1..=40).map(|seq| inserted(&event("big", seq, &data))).collect();
        let plan = FanoutPlan::from_changes(&changes);
        let frames = &plan.rooms[0].frames;
        assert!(frames.len() > 1);
        assert!(
            frames.iter().all(|f| f.len() <= MAX_FRAME_BYTES),
            "{:?}",
            frames.iter().map(Frame::len).collect::<Vec<_>>()
        );
        // Packed, not one event per frame: each frame but the last is close to the limit.
        assert!(frames[..frames.len() - 1].iter().all(|f| f.len() > MAX_FRAME_BYTES - 3200));
        let seqs: Vec<u64> = frames.iter().flat_map(frame_seqs).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn an_event_larger_than_a_frame_travels_alone() {
        let huge = "h".repeat(MAX_FRAME_BYTES + 10);
        let changes =
            vec![inserted(&event("r", 1, "s")), inserted(&event("r", 2, &huge)), inserted(&event("r", 3, "t"))];
        let plan = FanoutPlan::from_changes(&changes);
        let frames = &plan.rooms[0].frames;
        assert_eq!(frames.iter().map(frame_seqs).collect::<Vec<_>>(), vec![vec![1], vec![2], vec![3]]);
    }
}
