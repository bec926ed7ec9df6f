//! The store capability: what DynamoDB offers, and no more.
//!
//! Items live in partitions (`pk`) sorted by a string sort key (`sk`). Every state change is one
//! conditional write or one small transaction; a failed condition is an *outcome*
//! ([`Write::Conflict`], [`Transaction::Conflict`]) carrying the item that stood in the way, and
//! `Err` is kept for infrastructure failures, so that retries stay honest. Reads are a point
//! `get` or a `query` of one partition in sort order, with a limit. Every change is also published
//! on an ordered change feed, as DynamoDB Streams does, and that feed, not the request path,
//! drives delivery.
//!
//! Anything a store offers beyond this (scans, secondary indexes, cross-partition order) is
//! deliberately absent: the core must run unchanged on DynamoDB.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "conformance")]
pub mod conformance;

/// DynamoDB's limit on operations in one TransactWriteItems call.
pub const MAX_TRANSACTION_OPS: usize = 100;

/// The attribute holding an item's expiry time (whole seconds since the Unix epoch). The store
/// may delete the item any time after that; until it does, reads still return it, as DynamoDB's
/// TTL does, so readers that care compare the time themselves.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// One attribute value. Strings and integers are all LiveSync stores; JSON data is kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attr {
    S(String),
    N(i64),
}

/// An item's attributes other than its key.
pub type Attrs = BTreeMap<String, Attr>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key { pk: pk.into(), sk: sk.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: Key,
    pub attrs: Attrs,
}

impl Item {
    pub fn new(key: Key) -> Self {
        Item { key, attrs: Attrs::new() }
    }

    pub fn with(mut self, name: &str, value: Attr) -> Self {
        self.attrs.insert(name.to_owned(), value);
        self
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::S(s)) => Some(s),
            _ => None,
        }
    }

    pub fn number(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::N(n)) => Some(*n),
            _ => None,
        }
    }

    /// The item's TTL, if it has one.
    pub fn expires_at(&self) -> Option<i64> {
        self.number(TTL_ATTRIBUTE)
    }
}

/// An attribute as a store adapter reads it back. DynamoDB has several attribute-value types
/// (the SDK's, the Streams SDK's, the Lambda event's); each adapter maps its own onto this, and
/// [`Item::from_stored`] rebuilds the item in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredAttr<'a> {
    S(&'a str),
    N(&'a str),
    /// A type LiveSync never writes, by name.
    Other(&'a str),
}

impl Item {
    /// Rebuilds an item from all its stored attributes, `pk` and `sk` included. Anything LiveSync
    /// does not write (a missing key, another type, a number beyond i64) is `Malformed`.
    pub fn from_stored<'a>(
        attributes: impl IntoIterator<Item = (&'a str, StoredAttr<'a>)>,
    ) -> Result<Item, StoreError> {
        let (mut pk, mut sk) = (None, None);
        let mut rest = Vec::new();
        for (name, value) in attributes {
            match (name, value) {
                ("pk", StoredAttr::S(value)) => pk = Some(value),
                ("sk", StoredAttr::S(value)) => sk = Some(value),
                _ => rest.push((name, value)),
            }
        }
        let (Some(pk), Some(sk)) = (pk, sk) else {
            return Err(StoreError::Malformed { key: Key::new("?", "?"), reason: "no string pk and sk".to_owned() });
        };
        let key = Key::new(pk, sk);
        let mut attrs = Attrs::new();
        for (name, value) in rest {
            let value = match value {
                StoredAttr::S(s) => Attr::S(s.to_owned()),
                StoredAttr::N(n) => Attr::N(n.parse().map_err(|_| StoreError::Malformed {
                    key: key.clone(),
                    reason: format!("attribute {name} is not a 64-bit integer: {n}"),
                })?),
                StoredAttr::Other(kind) => {
                    return Err(StoreError::Malformed { key, reason: format!("attribute {name} has type {kind}") });
                }
            };
            attrs.insert(name.to_owned(), value);
        }
        Ok(Item { key, attrs })
    }
}

/// The condition a write is applied under (a DynamoDB ConditionExpression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// `attribute_not_exists(pk)`: the item must not exist.
    NotExists,
    /// `attribute_exists(pk)`: the item must exist.
    Exists,
    /// `#attr = :value`: the item must exist with this attribute value (optimistic versions).
    Equals {
        attr: String,
        value: Attr,
    },
    /// `attribute_exists(pk) AND attribute_not_exists(#attr)`: the item must exist without this
    /// attribute (the first write of an attribute that later writes compare with `Equals`).
    Lacks {
        attr: String,
    },
    /// `attribute_not_exists(pk) OR #attr < :value`: the item is absent, or its number is below
    /// this one (a marker that only moves forward).
    Below {
        attr: String,
        value: i64,
    },
}

impl Condition {
    /// Whether the condition holds against the item currently stored, if any.
    pub fn holds(&self, current: Option<&Item>) -> bool {
        match self {
            Condition::Always => true,
            Condition::NotExists => current.is_none(),
            Condition::Exists => current.is_some(),
            Condition::Equals { attr, value } => current.and_then(|item| item.attrs.get(attr)) == Some(value),
            Condition::Lacks { attr } => current.is_some_and(|item| !item.attrs.contains_key(attr)),
            Condition::Below { attr, value } => {
                current.is_none_or(|item| item.number(attr).is_some_and(|n| n < *value))
            }
        }
    }
}

/// A partial update (DynamoDB's UpdateItem): set some attributes, remove others, keep the rest.
/// On an absent item it creates one, unless the condition says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub set: Attrs,
    pub remove: Vec<String>,
}

impl Update {
    pub fn set(mut self, name: &str, value: Attr) -> Self {
        self.set.insert(name.to_owned(), value);
        self
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.remove.push(name.to_owned());
        self
    }

    /// The item after this update, from what is stored now.
    pub fn apply(&self, key: &Key, current: Option<&Item>) -> Item {
        let mut item = current.cloned().unwrap_or_else(|| Item::new(key.clone()));
        for name in &self.remove {
            item.attrs.remove(name);
        }
        item.attrs.extend(self.set.iter().map(|(name, value)| (name.clone(), value.clone())));
        item
    }
}

/// The outcome of a single conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Done,
    /// The condition failed; nothing changed. `current` is the item that made it fail, if any.
    Conflict {
        current: Option<Item>,
    },
}

/// One step of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOp {
    Put {
        item: Item,
        condition: Condition,
    },
    Delete {
        key: Key,
        condition: Condition,
    },
    /// Changes nothing; the transaction only goes through if the condition holds.
    Check {
        key: Key,
        condition: Condition,
    },
}

impl TxOp {
    pub fn key(&self) -> &Key {
        match self {
            TxOp::Put { item, .. } => &item.key,
            TxOp::Delete { key, .. } | TxOp::Check { key, .. } => key,
        }
    }

    pub fn condition(&self) -> &Condition {
        match self {
            TxOp::Put { condition, .. } | TxOp::Delete { condition, .. } | TxOp::Check { condition, .. } => condition,
        }
    }
}

/// The outcome of a transaction: all of it, or none of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transaction {
    Committed,
    /// At least one condition failed; nothing changed. Lists every failed step.
    Conflict {
        failed: Vec<FailedCondition>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCondition {
    /// Position of the step in the transaction.
    pub index: usize,
    pub current: Option<Item>,
}

/// Which sort keys of the partition a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKeys {
    All,
    /// `begins_with(sk, prefix)`.
    Prefix(String),
    /// `sk BETWEEN low AND high`, both inclusive.
    Between(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// A query of one partition, in sort-key order (byte-wise, as DynamoDB compares strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub pk: String,
    pub sort_keys: SortKeys,
    /// Resume after this sort key (exclusive), in the query's direction.
    pub after: Option<String>,
    pub limit: usize,
    pub order: Order,
}

impl Query {
    pub fn new(pk: impl Into<String>, sort_keys: SortKeys, limit: usize) -> Self {
        Query { pk: pk.into(), sort_keys, after: None, limit, order: Order::Ascending }
    }

    pub fn after(mut self, sk: impl Into<String>) -> Self {
        self.after = Some(sk.into());
        self
    }

    pub fn descending(mut self) -> Self {
        self.order = Order::Descending;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// More items match after the last one returned.
    pub more: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Remove,
}

/// One record of the change feed (a DynamoDB Streams record with NEW_IMAGE: nothing reads what
/// an item was before, so neither store keeps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: Key,
    /// The item as written; `None` for a removal.
    pub new: Option<Item>,
}

/// Infrastructure failures. A failed condition is never one of these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request itself is invalid (too many steps, the same item twice in one transaction...);
    /// retrying it will not help.
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The store could not be reached or failed; the write may or may not have happened.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store has no room left (a full disk, or the runner's `--max-store-mb`): the write was
    /// not applied, and none will be until space is freed. Reads still work.
    #[error("the store is full: writes are refused until space is freed")]
    Full,
    /// A stored item does not have the shape LiveSync writes.
    #[error("stored item {key:?} is malformed: {reason}")]
    Malformed { key: Key, reason: String },
}

/// Records of the change feed, in commit order: per partition, exactly the order of the writes.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits for at least one change, then returns up to `max` of them.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Change>, StoreError>;
}

/// The store capability. Implemented by the embedded store (local runner) and DynamoDB.
#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError>;

    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError>;

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError>;

    /// Deleting an absent item under [`Condition::Always`] is `Done`.
    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError>;

    /// At most [`MAX_TRANSACTION_OPS`] steps, each on a different item.
    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError>;

    async fn query(&self, query: Query) -> Result<Page, StoreError>;

    /// A feed of every change committed from now on.
    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError>;
}

/// Checks the rules DynamoDB enforces on an update, before touching anything: the key is not
/// an attribute to change, and no attribute is both set and removed.
pub fn check_update(update: &Update) -> Result<(), StoreError> {
    let touched = update.set.keys().chain(&update.remove);
    if let Some(key) = touched.clone().find(|name| *name == "pk" || *name == "sk") {
        return Err(StoreError::Invalid(format!("an update cannot change the key attribute {key}")));
    }
    if let Some(both) = update.remove.iter().find(|name| update.set.contains_key(*name)) {
        return Err(StoreError::Invalid(format!("an update both sets and removes {both}")));
    }
    Ok(())
}

/// Checks the rules every store enforces on a transaction, before touching anything.
pub fn check_transaction(ops: &[TxOp]) -> Result<(), StoreError> {
    if ops.is_empty() || ops.len() > MAX_TRANSACTION_OPS {
        return Err(StoreError::Invalid(format!(
            "a transaction has 1 to {MAX_TRANSACTION_OPS} steps, not {}",
            ops.len()
        )));
    }
    let mut keys: Vec<&Key> = ops.iter().map(TxOp::key).collect();
    keys.sort();
    if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(StoreError::Invalid(format!("a transaction names item {:?} more than once", pair[0])));
    }
    Ok(())
}
