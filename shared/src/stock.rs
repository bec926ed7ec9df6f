//! Stock levels: one item per SKU with its level and a version, every change an event of the
//! room (so dashboards see levels move live). A level never goes below zero: an adjustment is
//! decided on the level read and written only if that level is still the one stored
//! (`version = :read`), so two buyers of the last unit can never both have it.

use crate::actions::Context;
use crate::engine::EngineError;
use crate::layout;
use crate::protocol::{ErrorCode, EventKind, MAX_MESSAGE_BYTES, ServerFrame};
use crate::state::{Decision, StateWrite};
use crate::store::{Attr, Condition, Item, Store, StoreError, TxOp};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One SKU's level: the body of a `stock` reply and the data of its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: String,
    pub level: i64,
    /// Counts the SKU's accepted changes.
    pub version: u64,
    /// The change this level results from: in events and in the reply to `stock.adjust`
    /// (negative for a sale), absent from `stock.set` and `stock.get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
}

fn from_item(item: &Item) -> Result<StockLevel, StoreError> {
    let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
    Ok(StockLevel {
        sku: layout::sku_of(item).ok_or_else(|| malformed("not a stock item"))?.to_owned(),
        level: item.number("level").ok_or_else(|| malformed("no level"))?,
        version: item.number("version").and_then(|v| u64::try_from(v).ok()).ok_or_else(|| malformed("no version"))?,
        delta: None,
    })
}

pub async fn read(store: &dyn Store, room: &str, sku: &str) -> Result<Option<StockLevel>, StoreError> {
    store.get(&layout::stock_key(room, sku)).await?.as_ref().map(from_item).transpose()
}

/// The room's SKUs in sku order, after `after`: at most `limit`, no more than one reply holds
/// (as JSON, escapes included), and whether more follow.
pub async fn levels(
    store: &dyn Store,
    room: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<StockLevel>, bool), StoreError> {
    let page = store.query(layout::stock_levels(room, after, limit)).await?;
    let (mut levels, mut bytes, mut more) = (Vec::with_capacity(page.items.len()), 0, page.more);
    for item in &page.items {
        let level = from_item(item)?;
        bytes += serde_json::to_string(&level).map_or(0, |json| json.len()) + 1;
        if bytes > REPLY_BUDGET {
            more = true;
            break;
        }
        levels.push(level);
    }
    Ok((levels, more))
}

/// What the items of one reply may take, leaving room for the frame around them.
const REPLY_BUDGET: usize = MAX_MESSAGE_BYTES - 4 * 1024;

pub fn reply(cx: &Context<'_>, room: &str, level: StockLevel) -> ServerFrame {
    ServerFrame::Stock { room: room.to_owned(), level, reference: cx.reference() }
}

/// What a stock write does to the level it read.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    Set(i64),
    Adjust(i64),
}

/// One `stock.set` or `stock.adjust`.
pub struct StockWrite<'a> {
    pub room: &'a str,
    pub sku: &'a str,
    pub change: Change,
}

#[async_trait]
impl StateWrite for StockWrite<'_> {
    type State = Option<StockLevel>;
    type Outcome = StockLevel;
    const KIND: EventKind = EventKind::Stock;

    async fn read(&self, cx: &Context<'_>) -> Result<Option<StockLevel>, EngineError> {
        Ok(read(cx.store, self.room, self.sku).await?)
    }

    fn decide(&self, cx: &Context<'_>, current: Option<StockLevel>) -> Result<Decision<StockLevel>, EngineError> {
        let (level, delta) = match (self.change, &current) {
            (Change::Set(level), _) => (level, None),
            (Change::Adjust(_), None) => {
                return Ok(Decision::Reply(
                    cx.error(ErrorCode::NotFound, format!("no SKU {:?} in this room: stock.set it first", self.sku)),
                ));
            }
            (Change::Adjust(delta), Some(current)) => match current.level.checked_add(delta) {
                Some(level) if level >= 0 => (level, Some(delta)),
                _ => {
                    return Ok(Decision::Reply(ServerFrame::Error {
                        code: ErrorCode::InsufficientStock,
                        message: format!("SKU {:?} has {} left; {delta} cannot be applied", self.sku, current.level),
                        current: None,
                        level: Some(current.level),
                        retry_after_ms: None,
                        oldest: None,
                        reference: cx.reference(),
                    }));
                }
            },
        };
        let version = current.as_ref().map_or(0, |c| c.version) + 1;
        let condition = match &current {
            None => Condition::NotExists,
            Some(current) => {
                Condition::Equals { attr: "version".to_owned(), value: Attr::N(layout::seq_attr(current.version)) }
            }
        };
        let item = Item::new(layout::stock_key(self.room, self.sku))
            .with("level", Attr::N(level))
            .with("version", Attr::N(layout::seq_attr(version)));
        Ok(Decision::Change {
            steps: vec![TxOp::Put { item, condition }],
            outcome: StockLevel { sku: self.sku.to_owned(), level, version, delta },
        })
    }

    fn reply(&self, cx: &Context<'_>, level: StockLevel) -> ServerFrame {
        reply(cx, self.room, level)
    }

    fn is_outcome_of(&self, level: &StockLevel) -> bool {
        level.sku == self.sku
    }
}
