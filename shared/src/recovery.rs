//! Recovery: the events of a room after a seq, a bounded page at a time, for `join` and `sync`.

use crate::layout;
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

/// The events after `since`, oldest first: at most `limit`, and never more bytes than one reply
/// may carry. The first event is always included, however large, so a page always makes progress.
pub async fn events_after(store: &dyn Store, room: &str, since: u64, limit: usize) -> Result<EventPage, StoreError> {
    let page = store.query(layout::events_after(room, since, limit)).await?;
    let mut more = page.more;
    let mut bytes = 0;
    let mut events = Vec::with_capacity(page.items.len());
    for item in &page.items {
        let event = layout::event_from_item(item)?.ok_or_else(|| StoreError::Malformed {
            key: item.key.clone(),
            reason: "not an event, in the events range".to_owned(),
        })?;
        // Exactly what the event adds to the reply, escaping included.
        let size = serde_json::to_string(&event).map_or(0, |json| json.len()) + 1;
        if !events.is_empty() && bytes + size > PAGE_BYTES {
            more = true;
            break;
        }
        bytes += size;
        events.push(event);
    }
    Ok(EventPage { events, more })
}
