//! Where LiveSync keeps things: the keys and shapes of its items, in one table.
//!
//! ```text
//! pk                 sk                    attributes
//! ROOM#<room>        EVT#<seq, 20 digits>  seq, id, from, kind?, data (JSON text), ts, expires_at
//! ROOM#<room>        HEAD                  seq                   the last seq fanned out
//! ROOM#<room>        ID#<event id>         seq, digest?, expires_at   idempotency record (anonymous)
//! ROOM#<room>        UID#<n>:<user>#<event id>  seq, digest, expires_at   a user's idempotency record
//! ROOM#<room>        SUB#<connection>      expires_at, user?     who to fan out to; presence
//! ROOM#<room>        DOC#<doc>             version, value, strategy, deleted?, ts, from
//! ROOM#<room>        DOCV#<n>:<doc>#<version, 20 digits>   value, deleted?, ts, from   history
//! ROOM#<room>        TEXT#<doc>            rev, text
//! ROOM#<room>        TEXTOP#<n>:<doc>#<rev, 20 digits>     ops (JSON), from   edits to transform past
//! ROOM#<room>        STOCK#<sku>           level, version
//! CONN#<connection>  META                  tat, expires_at       an anonymous caller's write bucket
//! CONN#<connection>  SUB#<room>            expires_at, user?     what to clean up on disconnect
//! USER#<user>        BUCKET                tat, expires_at       a token user's write bucket
//! JOB#<job>          RUN#<scheduled time, RFC 3339>   status, attempt, trigger, started, lease_until,
//!                                          finished?, duration_ms?, summary?, error?   a job's run
//! STATS#<date>       ROOM#<room>           room, events, doc_versions, text_edits, conflicts,
//!                                          peak, seq, rev        a room's figures of one UTC day
//! STATS#<date>       SOLD#<n>:<room>#<sku> room, sku, sold, seq, rev   units sold that day
//! INVENTORY          <n>:<room>#<sku>      room, sku, level, version   every SKU's last level
//! REPORTS            <date>                report (JSON), generated_at  end-of-day reports
//! ```
//!
//! History and edit keys carry the name's length (`<n>` bytes) before it, so that one name's
//! prefix never matches another's: `DOCV#1:a#` cannot begin a key of the document `a#b`.
//!
//! A room's events share its partition, so the change feed keeps them in seq order and a `since`
//! query is one range read. Events and their idempotency records expire (TTL) after the
//! retention; the room's `HEAD` marker does not, so that a room whose every event has expired
//! still knows its last seq and never gives one twice. Seqs are zero-padded so that string order is numeric order.
//! Subscriptions are written twice (room side for fanout, connection side for cleanup), in one
//! transaction, so that neither path needs a scan or a secondary index.

use crate::protocol::{Event, EventKind, JsonData};
use crate::store::{Attr, Item, Key, Query, SortKeys, StoreError, TTL_ATTRIBUTE};

const ROOM: &str = "ROOM#";
const CONNECTION: &str = "CONN#";
const EVENT: &str = "EVT#";
const EVENT_ID: &str = "ID#";
const USER_EVENT_ID: &str = "UID#";
const SUBSCRIPTION: &str = "SUB#";
const META: &str = "META";
const HEAD: &str = "HEAD";
const DOC: &str = "DOC#";
const DOC_VERSION: &str = "DOCV#";
const TEXT: &str = "TEXT#";
const TEXT_EDIT: &str = "TEXTOP#";
const STOCK: &str = "STOCK#";

const JOB: &str = "JOB#";
const RUN: &str = "RUN#";
const STATS: &str = "STATS#";
const SOLD: &str = "SOLD#";
const INVENTORY: &str = "INVENTORY";
const REPORTS: &str = "REPORTS";

/// How long a connection's items outlive it if `$disconnect` never comes: API Gateway closes
/// every connection after 2 hours, and $disconnect is best effort.
pub const CONNECTION_TTL_SECS: i64 = 2 * 60 * 60 + 10 * 60;

pub fn room_pk(room: &str) -> String {
    format!("{ROOM}{room}")
}

pub fn connection_pk(connection: &str) -> String {
    format!("{CONNECTION}{connection}")
}

/// The partitions of connections all begin with this.
pub const CONNECTION_PARTITIONS: &str = CONNECTION;

/// The connection whose partition `pk` is.
pub fn connection_of(pk: &str) -> Option<&str> {
    pk.strip_prefix(CONNECTION)
}

pub fn event_key(room: &str, seq: u64) -> Key {
    Key::new(room_pk(room), format!("{EVENT}{seq:020}"))
}

pub fn event_item(event: &Event) -> Item {
    let item = Item::new(event_key(&event.room, event.seq))
        .with("seq", Attr::N(seq_attr(event.seq)))
        .with("id", Attr::S(event.id.clone()))
        .with("from", Attr::S(event.from.clone()))
        .with("data", Attr::S(event.data.as_json().to_owned()))
        .with("ts", Attr::N(event.ts as i64));
    // Publishes, by far the most events, carry no kind: it is their default.
    if event.kind.is_publish() { item } else { item.with("kind", Attr::S(event.kind.name().to_owned())) }
}

/// Reads an event item back; `None` for items that are not events.
pub fn event_from_item(item: &Item) -> Result<Option<Event>, StoreError> {
    let (Some(room), Some(_)) = (item.key.pk.strip_prefix(ROOM), item.key.sk.strip_prefix(EVENT)) else {
        return Ok(None);
    };
    let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
    let seq = item.number("seq").ok_or_else(|| malformed("no seq"))?;
    let data = item.string("data").ok_or_else(|| malformed("no data"))?;
    let kind = match item.string("kind") {
        None => EventKind::Publish,
        Some(name) => EventKind::from_name(name).ok_or_else(|| malformed("unknown kind"))?,
    };
    Ok(Some(Event {
        room: room.to_owned(),
        seq: u64::try_from(seq).map_err(|_| malformed("negative seq"))?,
        id: item.string("id").ok_or_else(|| malformed("no id"))?.to_owned(),
        from: item.string("from").ok_or_else(|| malformed("no from"))?.to_owned(),
        kind,
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

/// The room's head marker: the last seq the fanout saw, kept when the events expire.
pub fn head_marker_key(room: &str) -> Key {
    Key::new(room_pk(room), HEAD)
}

pub fn head_marker(room: &str, seq: u64) -> Item {
    Item::new(head_marker_key(room)).with("seq", Attr::N(seq_attr(seq)))
}

/// A client's idempotency id: the id, the user whose namespace it is in (none for anonymous
/// callers, who share the room's), and the digest of the request it was first used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId<'a> {
    pub id: &'a str,
    pub scope: Option<&'a str>,
    pub digest: &'a str,
}

/// What an idempotency record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRecord {
    pub seq: u64,
    /// `None` in records written before requests were digested.
    pub digest: Option<String>,
}

impl IdRecord {
    /// Whether the record was made by the request with this digest (or cannot tell).
    pub fn made_by(&self, digest: &str) -> bool {
        self.digest.as_deref().is_none_or(|made| made == digest)
    }
}

/// The record that makes a write with a client id idempotent.
pub fn event_id_item(room: &str, client: ClientId<'_>, seq: u64) -> Item {
    Item::new(event_id_key(room, client))
        .with("seq", Attr::N(seq_attr(seq)))
        .with("digest", Attr::S(client.digest.to_owned()))
}

/// `ID#<id>` in the room's namespace; `UID#<n>:<user>#<id>` in a user's (the length keeps one
/// user's ids from ever reading as another's).
pub fn event_id_key(room: &str, client: ClientId<'_>) -> Key {
    let sk = match client.scope {
        None => format!("{EVENT_ID}{}", client.id),
        Some(user) => format!("{}{}", exact_prefix(USER_EVENT_ID, user), client.id),
    };
    Key::new(room_pk(room), sk)
}

/// Reads an idempotency record.
pub fn id_record(item: &Item) -> Result<IdRecord, StoreError> {
    Ok(IdRecord { seq: seq_of(item)?, digest: item.string("digest").map(str::to_owned) })
}

/// The `seq` attribute of an event or idempotency record.
pub fn seq_of(item: &Item) -> Result<u64, StoreError> {
    item.number("seq")
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| StoreError::Malformed { key: item.key.clone(), reason: "no seq".to_owned() })
}

/// The connection's write bucket (see [`crate::limits`]): its theoretical arrival time, in µs.
pub const BUCKET_ATTRIBUTE: &str = "tat";

/// A token user's write bucket: every connection of the user takes from it.
pub fn user_bucket_key(user: &str) -> Key {
    Key::new(format!("USER#{user}"), "BUCKET")
}

pub fn connection_key(connection: &str) -> Key {
    Key::new(connection_pk(connection), META)
}

/// The two items of one subscription: the room's side and the connection's side. Both name the
/// member's `user`, if it joined as one: the room's side for `presence`, the connection's side
/// so that a disconnect knows to announce its leaving.
pub fn subscription_items(room: &str, connection: &str, user: Option<&str>, now_ms: u64) -> [Item; 2] {
    let expires = Attr::N(connection_expiry(now_ms));
    let items = [
        Item::new(room_subscription_key(room, connection)).with(TTL_ATTRIBUTE, expires.clone()),
        Item::new(connection_subscription_key(connection, room)).with(TTL_ATTRIBUTE, expires),
    ];
    match user {
        Some(user) => items.map(|item| item.with("user", Attr::S(user.to_owned()))),
        None => items,
    }
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
/// The room a room-side subscription item (`ROOM#<room>`, `SUB#<connection>`) belongs to: a join.
pub fn subscribed_room_side(item: &Item) -> Option<&str> {
    item.key.sk.strip_prefix(SUBSCRIPTION)?;
    item.key.pk.strip_prefix(ROOM)
}

pub fn subscriber(item: &Item) -> Option<&str> {
    item.key.sk.strip_prefix(SUBSCRIPTION)
}

/// A name followed by a separator, with its length first: a prefix that matches only this name.
fn exact_prefix(kind: &str, name: &str) -> String {
    format!("{kind}{}:{name}#", name.len())
}

pub fn doc_key(room: &str, doc: &str) -> Key {
    Key::new(room_pk(room), format!("{DOC}{doc}"))
}

pub fn doc_version_key(room: &str, doc: &str, version: u64) -> Key {
    Key::new(room_pk(room), format!("{}{version:020}", exact_prefix(DOC_VERSION, doc)))
}

/// A document's kept versions, newest first, before `before` if given.
pub fn doc_versions(room: &str, doc: &str, before: Option<u64>, limit: usize) -> Query {
    let query = Query::new(room_pk(room), SortKeys::Prefix(exact_prefix(DOC_VERSION, doc)), limit).descending();
    match before {
        Some(version) => query.after(doc_version_key(room, doc, version).sk),
        None => query,
    }
}

pub fn text_key(room: &str, doc: &str) -> Key {
    Key::new(room_pk(room), format!("{TEXT}{doc}"))
}

pub fn text_edit_key(room: &str, doc: &str, rev: u64) -> Key {
    Key::new(room_pk(room), format!("{}{rev:020}", exact_prefix(TEXT_EDIT, doc)))
}

/// A text's kept edits after revision `since`, oldest first.
pub fn text_edits_after(room: &str, doc: &str, since: u64, limit: usize) -> Query {
    Query::new(room_pk(room), SortKeys::Prefix(exact_prefix(TEXT_EDIT, doc)), limit)
        .after(text_edit_key(room, doc, since).sk)
}

pub fn stock_key(room: &str, sku: &str) -> Key {
    Key::new(room_pk(room), format!("{STOCK}{sku}"))
}

/// Every SKU of a room, in sku order, after `after` if given.
pub fn stock_levels(room: &str, after: Option<&str>, limit: usize) -> Query {
    let query = Query::new(room_pk(room), SortKeys::Prefix(STOCK.to_owned()), limit);
    match after {
        Some(sku) => query.after(stock_key(room, sku).sk),
        None => query,
    }
}

/// The SKU a stock item holds.
pub fn sku_of(item: &Item) -> Option<&str> {
    item.key.sk.strip_prefix(STOCK)
}

/// A job's run record for one scheduled time (`scheduled` in RFC 3339, UTC, whole seconds, so
/// that string order is time order).
pub fn run_key(job: &str, scheduled: &str) -> Key {
    Key::new(format!("{JOB}{job}"), format!("{RUN}{scheduled}"))
}

/// A job's runs, newest first.
pub fn runs_of(job: &str, limit: usize) -> Query {
    Query::new(format!("{JOB}{job}"), SortKeys::Prefix(RUN.to_owned()), limit).descending()
}

/// The scheduled time of a run record.
pub fn run_scheduled(item: &Item) -> Option<&str> {
    item.key.sk.strip_prefix(RUN)
}

fn stats_pk(date: &str) -> String {
    format!("{STATS}{date}")
}

/// A room's figures for one day (`date` is `YYYY-MM-DD`, UTC).
pub fn room_day_key(date: &str, room: &str) -> Key {
    Key::new(stats_pk(date), format!("{ROOM}{room}"))
}

/// The rooms' figures of one day, in room order.
pub fn room_days(date: &str, after: Option<&str>, limit: usize) -> Query {
    let query = Query::new(stats_pk(date), SortKeys::Prefix(ROOM.to_owned()), limit);
    match after {
        Some(sk) => query.after(sk),
        None => query,
    }
}

/// Units of one SKU sold in one day.
pub fn sku_day_key(date: &str, room: &str, sku: &str) -> Key {
    Key::new(stats_pk(date), format!("{}{sku}", exact_prefix(SOLD, room)))
}

pub fn sku_days(date: &str, after: Option<&str>, limit: usize) -> Query {
    let query = Query::new(stats_pk(date), SortKeys::Prefix(SOLD.to_owned()), limit);
    match after {
        Some(sk) => query.after(sk),
        None => query,
    }
}

/// Every SKU's last known level, across rooms (the restock list reads this one partition).
pub fn inventory_key(room: &str, sku: &str) -> Key {
    Key::new(INVENTORY, format!("{}:{room}#{sku}", room.len()))
}

pub fn inventory(after: Option<&str>, limit: usize) -> Query {
    let query = Query::new(INVENTORY, SortKeys::All, limit);
    match after {
        Some(sk) => query.after(sk),
        None => query,
    }
}

/// The stored end-of-day report of `date`.
pub fn report_key(date: &str) -> Key {
    Key::new(REPORTS, date)
}

pub fn connection_expiry(now_ms: u64) -> i64 {
    (now_ms / 1000) as i64 + CONNECTION_TTL_SECS
}

pub fn seq_attr(seq: u64) -> i64 {
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
            kind: EventKind::Doc,
            data: JsonData::from_json(r#"{"x":[1,"two"]}"#.into()).unwrap(),
            ts: 1_700_000_000_123,
        };
        assert_eq!(event_from_item(&event_item(&event)).unwrap(), Some(event));
    }

    #[test]
    fn one_names_history_never_matches_anothers() {
        let own = doc_versions("r", "a", None, 10);
        let SortKeys::Prefix(prefix) = &own.sort_keys else { panic!("a prefix query") };
        assert!(doc_version_key("r", "a", 7).sk.starts_with(prefix.as_str()));
        assert!(!doc_version_key("r", "a#b", 7).sk.starts_with(prefix.as_str()));
        assert!(!doc_version_key("r", "a#", 7).sk.starts_with(prefix.as_str()));
        assert!(!text_edit_key("r", "ab", 1).sk.starts_with(prefix.as_str()));
    }

    #[test]
    fn items_that_are_not_events_are_not_read_as_events() {
        let item = event_id_item("r", ClientId { id: "m1", scope: None, digest: "d" }, 3);
        assert_eq!(event_from_item(&item).unwrap(), None);
        assert_eq!(id_record(&item).unwrap(), IdRecord { seq: 3, digest: Some("d".into()) });
    }

    #[test]
    fn each_user_has_a_namespace_of_ids_and_anonymous_callers_share_the_rooms() {
        let id = |id, scope| event_id_key("r", ClientId { id, scope, digest: "" }).sk;
        assert_eq!(id("m1", None), "ID#m1");
        assert_ne!(id("m1", Some("ann")), id("m1", Some("bob")));
        assert_ne!(id("m1", Some("ann")), id("m1", None));
        // A user name that ends like another's namespace never reaches into it.
        assert_ne!(id("b#m1", Some("a")), id("m1", Some("a#b")));
    }

    #[test]
    fn a_damaged_event_item_is_reported_not_guessed() {
        let mut item = event_item(&Event {
            room: "r".into(),
            seq: 1,
            id: "i".into(),
            from: "c".into(),
            kind: EventKind::Publish,
            data: JsonData::from_json("1".into()).unwrap(),
            ts: 0,
        });
        item.attrs.remove("data");
        assert!(matches!(event_from_item(&item), Err(StoreError::Malformed { .. })));
    }
}
