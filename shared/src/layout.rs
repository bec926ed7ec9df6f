//! Where LiveSync keeps things: the keys and shapes of its items, in one table.
//!
//! ```text
//! pk                 sk                    attributes
//! ROOM#<room>        EVT#<seq, 20 digits>  seq, id, from, data (JSON text), ts
//! ROOM#<room>        ID#<event id>         seq                   idempotency record
//! ROOM#<room>        SUB#<connection>      expires_at            who to fan out to
//! CONN#<connection>  META                  connected_at, expires_at
//! CONN#<connection>  SUB#<room>            expires_at            what to clean up on disconnect
//! ```
//!
//! A room's events share its partition, so the change feed keeps them in seq order and a `since`
//! query is one range read. Seqs are zero-padded so that string order is numeric order.
//! Subscriptions are written twice (room side for fanout, connection side for cleanup), in one
//! transaction, so that neither path needs a scan or a secondary index.

use crate::protocol::{Event, JsonData};
use crate::store::{Attr, Item, Key, Query, SortKeys, StoreError, TTL_ATTRIBUTE};

const ROOM: &str = "ROOM#";
const CONNECTION: &str = "CONN#";
const EVENT: &str = "EVT#";
const EVENT_ID: &str = "ID#";
const SUBSCRIPTION: &str = "SUB#";
const META: &str = "META";

/// How long a connection's items outlive it if `$disconnect` never comes: API Gateway closes
/// every connection after 2 hours, and $disconnect is best effort.
pub const CONNECTION_TTL_SECS: i64 = 2 * 60 * 60 + 10 * 60;

pub fn room_pk(room: &str) -> String {
    format!("{ROOM}{room}")
}

pub fn connection_pk(connection: &str) -> String {
    format!("{CONNECTION}{connection}")
}

pub fn event_key(room: &str, seq: u64) -> Key {
    Key::new(room_pk(room), format!("{EVENT}{seq:020}"))
}

pub fn event_item(event: &Event) -> Item {
    Item::new(event_key(&event.room, event.seq))
        .with("seq", Attr::N(seq_attr(event.seq)))
        .with("id", Attr::S(event.id.clone()))
        .with("from", Attr::S(event.from.clone()))
        .with("data", Attr::S(event.data.as_json().to_owned()))
        .with("ts", Attr::N(event.ts as i64))
}

/// Reads an event item back; `None` for items that are not events.
pub fn event_from_item(item: &Item) -> Result<Option<Event>, StoreError> {
    let (Some(room), Some(_)) = (item.key.pk.strip_prefix(ROOM), item.key.sk.strip_prefix(EVENT)) else {
        return Ok(None);
    };
    let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
    let seq = item.number("seq").ok_or_else(|| malformed("no seq"))?;
    let data = item.string("data").ok_or_else(|| malformed("no data"))?;
    Ok(Some(Event {
        room: room.to_owned(),
        seq: u64::try_from(seq).map_err(|_| malformed("negative seq"))?,
        id: item.string("id").ok_or_else(|| malformed("no id"))?.to_owned(),
        from: item.string("from").ok_or_else(|| malformed("no from"))?.to_owned(),
        data: JsonData::from_json(data.to_owned()).map_err(|_| malformed("data is not JSON"))?,
        ts: item.number("ts").ok_or_else(|| malformed("no ts"))?.max(0) as u64,
    }))
}

/// The events of a room after `since`, oldest first.
pub fn events_after(room: &str, since: u64, limit: usize) -> Query {
    Query::new(room_pk(room), SortKeys::Prefix(EVENT.to_owned()), limit).after(event_key(room, since).sk)
}

/// The newest event of a room, whose seq is the room's head.
pub fn head_of(room: &str) -> Query {
    Query::new(room_pk(room), SortKeys::Prefix(EVENT.to_owned()), 1).descending()
}

/// The record that makes a publish with a client id idempotent.
pub fn event_id_item(room: &str, id: &str, seq: u64) -> Item {
    Item::new(Key::new(room_pk(room), format!("{EVENT_ID}{id}"))).with("seq", Attr::N(seq_attr(seq)))
}

/// The `seq` attribute of an event or idempotency record.
pub fn seq_of(item: &Item) -> Result<u64, StoreError> {
    item.number("seq")
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| StoreError::Malformed { key: item.key.clone(), reason: "no seq".to_owned() })
}

pub fn connection_item(connection: &str, connected_at_ms: u64) -> Item {
    Item::new(Key::new(connection_pk(connection), META))
        .with("connected_at", Attr::N(connected_at_ms as i64))
        .with(TTL_ATTRIBUTE, Attr::N(connection_expiry(connected_at_ms)))
}

/// The two items of one subscription: the room's side and the connection's side.
pub fn subscription_items(room: &str, connection: &str, now_ms: u64) -> [Item; 2] {
    let expires = Attr::N(connection_expiry(now_ms));
    [
        Item::new(room_subscription_key(room, connection)).with(TTL_ATTRIBUTE, expires.clone()),
        Item::new(connection_subscription_key(connection, room)).with(TTL_ATTRIBUTE, expires),
    ]
}

pub fn room_subscription_key(room: &str, connection: &str) -> Key {
    Key::new(room_pk(room), format!("{SUBSCRIPTION}{connection}"))
}

pub fn connection_subscription_key(connection: &str, room: &str) -> Key {
    Key::new(connection_pk(connection), format!("{SUBSCRIPTION}{room}"))
}

/// Every item of a connection's partition: its META item and its side of each subscription.
pub fn connection_items(connection: &str, limit: usize) -> Query {
    Query::new(connection_pk(connection), SortKeys::All, limit)
}

/// The room a connection-side subscription item names; `None` for the META item.
pub fn subscribed_room(item: &Item) -> Option<&str> {
    item.key.sk.strip_prefix(SUBSCRIPTION)
}

/// The subscribers of a room, a page at a time.
pub fn subscribers_of(room: &str, limit: usize) -> Query {
    Query::new(room_pk(room), SortKeys::Prefix(SUBSCRIPTION.to_owned()), limit)
}

/// The connection a room-side subscription item names.
pub fn subscriber(item: &Item) -> Option<&str> {
    item.key.sk.strip_prefix(SUBSCRIPTION)
}

fn connection_expiry(now_ms: u64) -> i64 {
    (now_ms / 1000) as i64 + CONNECTION_TTL_SECS
}

fn seq_attr(seq: u64) -> i64 {
    i64::try_from(seq).expect("a room never reaches 2^63 events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_in_seq_order() {
        let seqs = [100u64, 9, 10, 1, 99, u64::MAX >> 1];
        let mut by_key: Vec<(String, u64)> = seqs.iter().map(|s| (event_key("r", *s).sk, *s)).collect();
        by_key.sort();
        let mut by_number = seqs.to_vec();
        by_number.sort();
        assert_eq!(by_key.into_iter().map(|(_, seq)| seq).collect::<Vec<_>>(), by_number);
    }

    #[test]
    fn an_event_survives_the_trip_through_its_item() {
        let event = Event {
            room: "a#b".into(),
            seq: 42,
            id: "m1".into(),
            from: "c9".into(),
            data: JsonData::from_json(r#"{"x":[1,"two"]}"#.into()).unwrap(),
            ts: 1_700_000_000_123,
        };
        assert_eq!(event_from_item(&event_item(&event)).unwrap(), Some(event));
    }

    #[test]
    fn items_that_are_not_events_are_not_read_as_events() {
        let item = event_id_item("r", "m1", 3);
        assert_eq!(event_from_item(&item).unwrap(), None);
        assert_eq!(seq_of(&item).unwrap(), 3);
    }

    #[test]
    fn a_damaged_event_item_is_reported_not_guessed() {
        let mut item = event_item(&Event {
            room: "r".into(),
            seq: 1,
            id: "i".into(),
            from: "c".into(),
            data: JsonData::from_json("1".into()).unwrap(),
            ts: 0,
        });
        item.attrs.remove("data");
        assert!(matches!(event_from_item(&item), Err(StoreError::Malformed { .. })));
    }
}
