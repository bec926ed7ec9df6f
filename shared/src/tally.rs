//! The day's figures, counted as changes pass on the change feed, for the end-of-day report.
//!
//! The store offers no scans, so a report cannot go and count afterwards: each figure is kept
//! as it happens, in one item per room and UTC day (and per SKU and day for sales), from the same
//! feed that drives the fanout. The feed delivers at least once (a stream batch is retried whole),
//! so counting must not count twice: each room-day item remembers the highest seq it has counted,
//! and a redelivered event is at or below it. A room's events reach one consumer in seq order
//! (one stream shard per partition), so that watermark is exact.
//!
//! * events, document versions, text edits: events of the room's log, by kind, by the day of
//!   their `ts`;
//! * units sold: stock events with a negative delta;
//! * the restock list: every SKU's last level, kept in one partition (`INVENTORY`), newer versions
//!   only;
//! * peak connections: the room's subscribers, counted after each batch in which someone joined
//!   (counts only rise at a join), the largest count of the day kept;
//! * conflicts refused: counted by the write path when it refuses one ([`count_conflict`]): a
//!   refused write leaves no change on the feed.
//!
//! Every update is a read and a write conditional on the item's `rev`, retried when another
//! writer came first.

use crate::layout;
use crate::membership;
use crate::protocol::EventKind;
use crate::stock::StockLevel;
use crate::store::{Attr, Change, ChangeKind, Condition, Item, Key, Store, StoreError, Write};
use std::collections::BTreeMap;

/// Rounds of read-and-write before an update gives up: each lost round means another update
/// of the same item went through.
const MAX_ATTEMPTS: usize = 64;

/// Subscribers read per query when counting a room's connections.
const COUNT_PAGE: usize = 1000;

/// The UTC date (`YYYY-MM-DD`) of a time in milliseconds since the epoch.
pub fn utc_date(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::MAX)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string()
}

/// What one room did in one day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomDay {
    pub room: String,
    /// Every event of the room's log (publishes, state changes, presence).
    pub events: u64,
    pub doc_versions: u64,
    pub text_edits: u64,
    /// Writes refused because another write came first (documents, texts, stock versions).
    pub conflicts: u64,
    pub peak_connections: u64,
    /// The highest seq counted: a redelivered event is at or below it.
    seq: u64,
    rev: u64,
}

impl RoomDay {
    fn from_item(item: &Item) -> RoomDay {
        let count = |name: &str| item.number(name).and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        RoomDay {
            room: item.string("room").unwrap_or_default().to_owned(),
            events: count("events"),
            doc_versions: count("doc_versions"),
            text_edits: count("text_edits"),
            conflicts: count("conflicts"),
            peak_connections: count("peak"),
            seq: count("seq"),
            rev: count("rev"),
        }
    }

    fn to_item(&self, key: Key) -> Item {
        let n = |v: u64| Attr::N(i64::try_from(v).unwrap_or(i64::MAX));
        Item::new(key)
            .with("room", Attr::S(self.room.clone()))
            .with("events", n(self.events))
            .with("doc_versions", n(self.doc_versions))
            .with("text_edits", n(self.text_edits))
            .with("conflicts", n(self.conflicts))
            .with("peak", n(self.peak_connections))
            .with("seq", n(self.seq))
            .with("rev", n(self.rev))
    }
}

/// Units of one SKU sold in one day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkuDay {
    pub room: String,
    pub sku: String,
    pub sold: u64,
}

/// An SKU's last level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryLevel {
    pub room: String,
    pub sku: String,
    pub level: i64,
}

/// What a batch changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TallyReport {
    pub events: usize,
    /// Events already counted by an earlier delivery of the same batch.
    pub repeats: usize,
    pub rooms_counted: usize,
}

#[derive(Default)]
struct RoomBatch {
    /// (seq, kind) in feed order, which is seq order.
    events: Vec<(u64, EventKind)>,
}

/// Counts one batch of changes.
pub async fn record(store: &dyn Store, now_ms: u64, changes: &[Change]) -> Result<TallyReport, StoreError> {
    let mut rooms: BTreeMap<(String, String), RoomBatch> = BTreeMap::new();
    let mut sales: BTreeMap<(String, String, String), Vec<(u64, u64)>> = BTreeMap::new();
    let mut levels: BTreeMap<(String, String), StockLevel> = BTreeMap::new();
    let mut joined: Vec<String> = Vec::new();
    for change in changes {
        let (ChangeKind::Insert, Some(item)) = (change.kind, &change.new) else {
            continue;
        };
        if let Some(room) = layout::subscribed_room_side(item) {
            if !joined.iter().any(|r| r == room) {
                joined.push(room.to_owned());
            }
            continue;
        }
        let Some(event) = layout::event_from_item(item)? else {
            continue;
        };
        let date = utc_date(event.ts);
        rooms.entry((date.clone(), event.room.clone())).or_default().events.push((event.seq, event.kind));
        if event.kind == EventKind::Stock
            && let Ok(level) = serde_json::from_str::<StockLevel>(event.data.as_json())
        {
            if let Some(delta) = level.delta.filter(|d| *d < 0) {
                sales
                    .entry((date, event.room.clone(), level.sku.clone()))
                    .or_default()
                    .push((event.seq, delta.unsigned_abs()));
            }
            let newer = levels.get(&(event.room.clone(), level.sku.clone())).is_none_or(|l| l.version < level.version);
            if newer {
                levels.insert((event.room.clone(), level.sku.clone()), level);
            }
        }
    }
    let mut report = TallyReport::default();
    // Each item is its own read-decide-write; they go at once, so a batch of many rooms waits
    // for a few commits, not one per room.
    let counted = all(rooms.iter().map(|((date, room), batch)| count_events(store, date, room, &batch.events))).await?;
    report.events = rooms.values().map(|batch| batch.events.len()).sum();
    report.repeats = counted.into_iter().sum();
    report.rooms_counted = rooms.len();
    all(sales.iter().map(|((date, room, sku), sold)| count_sales(store, date, room, sku, sold))).await?;
    all(levels.iter().map(|((room, sku), level)| keep_level(store, room, sku, level))).await?;
    let today = utc_date(now_ms);
    all(joined.iter().map(|room| async {
        let connections = count_connections(store, room).await?;
        note_connections(store, &today, room, connections).await
    }))
    .await?;
    Ok(report)
}

/// Runs the updates, up to [`AT_ONCE`] at a time; the first failure is the outcome.
/// (Collected first: a stream mapping a borrowing closure is not provably `Send`.)
async fn all<T, F: std::future::Future<Output = Result<T, StoreError>>>(
    updates: impl Iterator<Item = F>,
) -> Result<Vec<T>, StoreError> {
    use futures_util::{StreamExt, TryStreamExt};
    let updates: Vec<F> = updates.collect();
    futures_util::stream::iter(updates).buffer_unordered(AT_ONCE).try_collect().await
}

/// Items of a batch updated at once.
const AT_ONCE: usize = 32;

/// Read-decide-write on one item, conditional on its `rev`, until it goes through or there is
/// nothing to write. `decide` gets the stored item (if any) and returns the item to write.
async fn update_item(
    store: &dyn Store,
    key: &Key,
    mut decide: impl FnMut(Option<&Item>) -> Option<Item>,
) -> Result<bool, StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let current = store.get(key).await?;
        let Some(mut item) = decide(current.as_ref()) else {
            return Ok(false);
        };
        let rev = current.as_ref().and_then(|c| c.number("rev")).unwrap_or(0);
        item.attrs.insert("rev".to_owned(), Attr::N(rev + 1));
        let condition = match &current {
            None => Condition::NotExists,
            Some(_) => Condition::Equals { attr: "rev".to_owned(), value: Attr::N(rev) },
        };
        match store.put(item, condition).await? {
            Write::Done => return Ok(true),
            Write::Conflict { .. } => continue,
        }
    }
    Err(StoreError::Unavailable(format!("figures of {key:?} kept changing under {MAX_ATTEMPTS} attempts").into()))
}

/// Adds a room's events of one day; returns how many had been counted before.
async fn count_events(
    store: &dyn Store,
    date: &str,
    room: &str,
    events: &[(u64, EventKind)],
) -> Result<usize, StoreError> {
    let key = layout::room_day_key(date, room);
    let mut repeats = 0;
    update_item(store, &key, |current| {
        let mut day =
            current.map(RoomDay::from_item).unwrap_or_else(|| RoomDay { room: room.to_owned(), ..RoomDay::default() });
        let fresh: Vec<&(u64, EventKind)> = events.iter().filter(|(seq, _)| *seq > day.seq).collect();
        repeats = events.len() - fresh.len();
        if fresh.is_empty() {
            return None;
        }
        for (seq, kind) in fresh {
            day.events += 1;
            match kind {
                EventKind::Doc => day.doc_versions += 1,
                EventKind::Text => day.text_edits += 1,
                _ => {}
            }
            day.seq = day.seq.max(*seq);
        }
        Some(day.to_item(key.clone()))
    })
    .await?;
    Ok(repeats)
}

async fn count_sales(
    store: &dyn Store,
    date: &str,
    room: &str,
    sku: &str,
    sold: &[(u64, u64)],
) -> Result<(), StoreError> {
    let key = layout::sku_day_key(date, room, sku);
    update_item(store, &key, |current| {
        let counted = current.and_then(|c| c.number("seq")).unwrap_or(0);
        let fresh: Vec<&(u64, u64)> = sold.iter().filter(|(seq, _)| *seq as i64 > counted).collect();
        if fresh.is_empty() {
            return None;
        }
        let units = current.and_then(|c| c.number("sold")).unwrap_or(0)
            + fresh.iter().map(|(_, units)| *units as i64).sum::<i64>();
        let seq = fresh.iter().map(|(seq, _)| *seq as i64).max().unwrap_or(counted);
        Some(
            Item::new(key.clone())
                .with("room", Attr::S(room.to_owned()))
                .with("sku", Attr::S(sku.to_owned()))
                .with("sold", Attr::N(units))
                .with("seq", Attr::N(seq)),
        )
    })
    .await?;
    Ok(())
}

async fn keep_level(store: &dyn Store, room: &str, sku: &str, level: &StockLevel) -> Result<(), StoreError> {
    let key = layout::inventory_key(room, sku);
    update_item(store, &key, |current| {
        let known = current.and_then(|c| c.number("version")).unwrap_or(0);
        (level.version as i64 > known).then(|| {
            Item::new(key.clone())
                .with("room", Attr::S(room.to_owned()))
                .with("sku", Attr::S(sku.to_owned()))
                .with("level", Attr::N(level.level))
                .with("version", Attr::N(level.version as i64))
        })
    })
    .await?;
    Ok(())
}

async fn count_connections(store: &dyn Store, room: &str) -> Result<u64, StoreError> {
    let (mut count, mut after) = (0u64, None::<String>);
    loop {
        let (page, resume) = membership::subscribers(store, room, after.as_deref(), COUNT_PAGE).await?;
        count += page.len() as u64;
        match resume {
            Some(sk) => after = Some(sk),
            None => return Ok(count),
        }
    }
}

/// Keeps the largest connection count of the day.
async fn note_connections(store: &dyn Store, date: &str, room: &str, connections: u64) -> Result<(), StoreError> {
    let key = layout::room_day_key(date, room);
    update_item(store, &key, |current| {
        let mut day =
            current.map(RoomDay::from_item).unwrap_or_else(|| RoomDay { room: room.to_owned(), ..RoomDay::default() });
        (connections > day.peak_connections).then(|| {
            day.peak_connections = connections;
            day.to_item(key.clone())
        })
    })
    .await?;
    Ok(())
}

/// Counts a write refused because another came first.
pub async fn count_conflict(store: &dyn Store, now_ms: u64, room: &str) -> Result<(), StoreError> {
    let key = layout::room_day_key(&utc_date(now_ms), room);
    update_item(store, &key, |current| {
        let mut day =
            current.map(RoomDay::from_item).unwrap_or_else(|| RoomDay { room: room.to_owned(), ..RoomDay::default() });
        day.conflicts += 1;
        Some(day.to_item(key.clone()))
    })
    .await?;
    Ok(())
}

/// Every room's figures of one day, in room order.
pub async fn room_days(store: &dyn Store, date: &str) -> Result<Vec<RoomDay>, StoreError> {
    let mut days = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.query(layout::room_days(date, after.as_deref(), COUNT_PAGE)).await?;
        days.extend(page.items.iter().map(RoomDay::from_item));
        match (page.more, page.items.last()) {
            (true, Some(last)) => after = Some(last.key.sk.clone()),
            _ => return Ok(days),
        }
    }
}

/// Units sold per SKU in one day, in room and SKU order.
pub async fn sku_days(store: &dyn Store, date: &str) -> Result<Vec<SkuDay>, StoreError> {
    let mut days = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.query(layout::sku_days(date, after.as_deref(), COUNT_PAGE)).await?;
        days.extend(page.items.iter().map(|item| SkuDay {
            room: item.string("room").unwrap_or_default().to_owned(),
            sku: item.string("sku").unwrap_or_default().to_owned(),
            sold: item.number("sold").and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        }));
        match (page.more, page.items.last()) {
            (true, Some(last)) => after = Some(last.key.sk.clone()),
            _ => return Ok(days),
        }
    }
}

/// The SKUs whose last level is below `threshold`.
pub async fn below(store: &dyn Store, threshold: i64) -> Result<Vec<InventoryLevel>, StoreError> {
    let mut low = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.query(layout::inventory(after.as_deref(), COUNT_PAGE)).await?;
        for item in &page.items {
            let level = item.number("level").unwrap_or(0);
            if level < threshold {
                low.push(InventoryLevel {
                    room: item.string("room").unwrap_or_default().to_owned(),
                    sku: item.string("sku").unwrap_or_default().to_owned(),
                    level,
                });
            }
        }
        match (page.more, page.items.last()) {
            (true, Some(last)) => after = Some(last.key.sk.clone()),
            _ => return Ok(low),
        }
    }
}
