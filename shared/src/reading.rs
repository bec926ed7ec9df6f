//! Reading a room without a socket: HTTP long polling and Server-Sent Events.
//!
//! A reader with no WebSocket holds no subscription: it asks for the events after the last seq
//! it has, and, when there are none yet, waits for the room's next event up to a deadline. The
//! events always come from the store, after that seq, so a reader can never see a gap or a
//! repeat, whatever it missed while it was away (that is also how a stream resumes after a cut:
//! `Last-Event-ID` is the seq).
//!
//! Waiting is a capability ([`Arrivals`]): the runner wakes readers from its change feed the
//! moment an event is committed; a Lambda, which sees no feed, looks again every so often. A
//! wake-up only means "read again": the store decides what there is.

use crate::engine::PAGE_EVENTS;
use crate::ordering;
use crate::recovery::{self, EventPage, Recovered};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The longest a long poll may wait: under API Gateway's 30 s integration timeout.
pub const MAX_WAIT: Duration = Duration::from_secs(25);

/// Who tells a waiting reader that a room may have a new event.
pub trait Arrivals: Send + Sync {
    /// Starts watching `room`. Events committed after this call wake the watch; one committed
    /// before it is found by the read that follows.
    fn watch(&self, room: &str) -> Box<dyn ArrivalWatch>;
}

/// One reader's watch on one room.
#[async_trait]
pub trait ArrivalWatch: Send {
    /// Returns once an event after `seq` may exist, or `within` has passed.
    async fn past(&mut self, seq: u64, within: Duration);
}

/// Arrivals for a host that sees no change feed (a Lambda): look again every `every`.
#[derive(Debug, Clone, Copy)]
pub struct LookAgain {
    pub every: Duration,
}

impl Arrivals for LookAgain {
    fn watch(&self, _room: &str) -> Box<dyn ArrivalWatch> {
        Box::new(*self)
    }
}

#[async_trait]
impl ArrivalWatch for LookAgain {
    async fn past(&mut self, _seq: u64, within: Duration) {
        tokio::time::sleep(within.min(self.every)).await;
    }
}

/// Arrivals for a host that runs the fanout itself (the runner): the fanout tells each room's
/// waiting readers the newest seq it planned, the moment it plans it. Only rooms with a reader
/// are tracked; a room's entry goes with its last reader.
#[derive(Clone, Default)]
pub struct RoomWaiters {
    rooms: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl RoomWaiters {
    /// `room` has events up to `seq`: its waiting readers read again.
    pub fn arrived(&self, room: &str, seq: u64) {
        let rooms = self.rooms.lock().expect("room waiters lock");
        if let Some(newest) = rooms.get(room) {
            newest.send_if_modified(|newest| {
                let newer = seq > *newest;
                *newest = (*newest).max(seq);
                newer
            });
        }
    }

    /// Rooms with a reader waiting, right now.
    pub fn rooms_watched(&self) -> usize {
        self.rooms.lock().expect("room waiters lock").len()
    }
}

impl Arrivals for RoomWaiters {
    fn watch(&self, room: &str) -> Box<dyn ArrivalWatch> {
        let mut rooms = self.rooms.lock().expect("room waiters lock");
        let newest = rooms.entry(room.to_owned()).or_insert_with(|| watch::Sender::new(0)).subscribe();
        Box::new(RoomWatch { room: room.to_owned(), newest, waiters: self.clone() })
    }
}

struct RoomWatch {
    room: String,
    newest: watch::Receiver<u64>,
    waiters: RoomWaiters,
}

#[async_trait]
impl ArrivalWatch for RoomWatch {
    async fn past(&mut self, seq: u64, within: Duration) {
        let _ = tokio::time::timeout(within, self.newest.wait_for(|newest| *newest > seq)).await;
    }
}

impl Drop for RoomWatch {
    fn drop(&mut self) {
        // Under the lock that `watch` subscribes under: no reader can join between the count
        // and the removal.
        let mut rooms = self.waiters.rooms.lock().expect("room waiters lock");
        if rooms.get(&self.room).is_some_and(|newest| newest.receiver_count() <= 1) {
            rooms.remove(&self.room);
        }
    }
}

/// What a reader is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// The room's head, and the events after `since` (none if the wait ran out).
    Page { head: u64, page: EventPage },
    /// Events after `since` have expired: `oldest` is the first seq still held.
    Expired { oldest: u64 },
}

/// The events of `room` after `since`, waiting up to `wait` for one if there are none yet.
/// `watch` must have been started (on this room) before the call, so no event slips between the
/// read and the wait.
pub async fn poll(
    store: &dyn Store,
    watch: &mut dyn ArrivalWatch,
    room: &str,
    since: u64,
    wait: Duration,
) -> Result<Polled, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let head = ordering::head(store, room).await?;
        let page = match recovery::events_after(store, room, since, PAGE_EVENTS, Some(head)).await? {
            Recovered::Page(page) => page,
            Recovered::Expired { oldest } => return Ok(Polled::Expired { oldest }),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !page.events.is_empty() || left.is_zero() {
            return Ok(Polled::Page { head, page });
        }
        watch.past(since, left).await;
    }
}
