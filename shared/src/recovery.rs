//! Recovery: the events of a room after a seq, a bounded page at a time, for `join` and `sync`.
//!
//! Events expire after the retention (TTL). A client asking for events after a seq whose
//! successors are no longer all held is told so (`expired`, with the oldest seq still held)
//! rather than handed a page with a hole in it: it reloads its state, then goes on from there.
//! DynamoDB deletes expired items in no particular order, so a hole may be anywhere in a page,
//! not only at its start.

use crate::layout;
use crate::ordering;
use crate::protocol::{Event, MAX_MESSAGE_BYTES};
use crate::store::{Store, StoreError};

/// Replies stay under API Gateway's 128 KB post limit, with room for the frame around the events
/// (type, room, more, and a `ref` of at most 256 bytes).
const PAGE_BYTES: usize = MAX_MESSAGE_BYTES - 2 * 1024;

/// A page of events and whether more follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub more: bool,
}

/// What a client asking for the events after a seq gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovered {
    Page(EventPage),
    /// Some of the events after `since` expired: `oldest` is the first seq held after the last
    /// missing one (the room's head + 1 if none is held).
    Expired {
        oldest: u64,
    },
}

/// Events asked for by a page's first read: a typical catch-up (a client away for seconds) in one
/// request. A longer page is read on in queries sized by the bytes the reply has left, so a page
/// of large events reads (and pays for, by the byte) little more than the reply carries, rather
/// than the whole `limit`.
const FIRST_READ: usize = 10;

/// The events after `since`, oldest first: at most `limit`, and never more bytes than one reply
/// may carry. The first event is always included, however large, so a page always makes progress.
/// `head`, if the caller read it, saves reading it again when the page is empty.
pub async fn events_after(
    store: &dyn Store,
    room: &str,
    since: u64,
    limit: usize,
    head: Option<u64>,
) -> Result<Recovered, StoreError> {
    let limit = limit.max(1);
    let first_read = limit.min(FIRST_READ);
    let mut page = store.query(layout::events_after(room, since, first_read)).await?;
    // Nothing after `since`: up to date, unless the events up to the head expired. The head is
    // read after the page, so an event committed in between would look like a hole: the page
    // is read again, and only a page still empty with the head past `since` means expired
    // (events after `since` existed, and are gone).
    if page.items.is_empty() {
        let head = match head {
            Some(head) => head,
            None => ordering::head(store, room).await?,
        };
        if head <= since {
            return Ok(Recovered::Page(EventPage { events: Vec::new(), more: false }));
        }
        page = store.query(layout::events_after(room, since, first_read)).await?;
        if page.items.is_empty() {
            return Ok(Recovered::Expired { oldest: head + 1 });
        }
    }
    let mut bytes = 0;
    let mut events: Vec<Event> = Vec::new();
    let mut expected = since + 1;
    loop {
        let mut missing_before: Option<u64> = None;
        for item in &page.items {
            let event = layout::event_from_item(item)?.ok_or_else(|| StoreError::Malformed {
                key: item.key.clone(),
                reason: "not an event, in the events range".to_owned(),
            })?;
            if event.seq != expected {
                missing_before = Some(event.seq);
            }
            expected = event.seq + 1;
            if missing_before.is_some() {
                continue;
            }
            // Exactly what the event adds to the reply, escaping included.
            let size = serde_json::to_string(&event).map_or(0, |json| json.len()) + 1;
            if !events.is_empty() && bytes + size > PAGE_BYTES {
                return Ok(Recovered::Page(EventPage { events, more: true }));
            }
            bytes += size;
            events.push(event);
        }
        if let Some(oldest) = missing_before {
            return Ok(Recovered::Expired { oldest });
        }
        if !page.more || events.len() >= limit {
            return Ok(Recovered::Page(EventPage { events, more: page.more }));
        }
        // As many more as the bytes left would hold at the average size so far, and one over
        // (to learn whether the reply is full).
        let average = (bytes / events.len()).max(1);
        let read = (limit - events.len()).min(PAGE_BYTES.saturating_sub(bytes) / average + 1);
        page = store.query(layout::events_after(room, expected - 1, read)).await?;
        if page.items.is_empty() {
            return Ok(Recovered::Page(EventPage { events, more: false }));
        }
    }
}
