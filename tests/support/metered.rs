//! A store that counts what each call would cost on DynamoDB: one request per call, and the
//! capacity units DynamoDB's rules give it from the sizes of the items involved. moto answers
//! `ReturnConsumedCapacity` with a constant, so the units are computed here, by the rules:
//!
//! * an item's size is the sum of its attribute names and values (a number counts about one
//!   byte per two digits, plus one);
//! * a write costs 1 WRU per KB of the item (a condition that fails still costs it), a
//!   transactional one 2 per KB, each step of a transaction a write;
//! * a strongly consistent read (every LiveSync read) costs 1 RRU per 4 KB of what was read,
//!   summed over a Query's items before rounding, at least 1.
//!
//! Item sizes written by an update or removed by a delete are not known to the caller; they are
//! taken as the size of the key and what is set, which is exact for LiveSync's small counters
//! and buckets, the only items it updates.

use async_trait::async_trait;
use livesync_core::store::{
    Attr, ChangeFeed, Condition, Item, Key, Page, Query, Store, StoreError, Transaction, TxOp, Update, Write,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What the calls so far cost.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bill {
    /// Requests by DynamoDB operation name.
    pub requests: BTreeMap<&'static str, u64>,
    pub write_units: f64,
    pub read_units: f64,
}

impl Bill {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}

pub struct Metered {
    inner: Arc<dyn Store>,
    bill: Mutex<Bill>,
}

fn key_size(key: &Key) -> usize {
    2 + key.pk.len() + 2 + key.sk.len()
}

fn attr_size(name: &str, value: &Attr) -> usize {
    name.len()
        + match value {
            Attr::S(s) => s.len(),
            Attr::N(n) => n.to_string().len().div_ceil(2) + 1,
        }
}

fn item_size(item: &Item) -> usize {
    key_size(&item.key) + item.attrs.iter().map(|(name, value)| attr_size(name, value)).sum::<usize>()
}

fn update_size(key: &Key, update: &Update) -> usize {
    key_size(key) + update.set.iter().map(|(name, value)| attr_size(name, value)).sum::<usize>()
}

fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn read_units(bytes: usize) -> f64 {
    bytes.div_ceil(4096).max(1) as f64
}

impl Metered {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Metered { inner, bill: Mutex::default() }
    }

    /// What was spent since the last call, and a fresh start.
    pub fn take_bill(&self) -> Bill {
        std::mem::take(&mut *self.bill.lock().unwrap())
    }

    fn charge(&self, operation: &'static str, write: f64, read: f64) {
        let mut bill = self.bill.lock().unwrap();
        *bill.requests.entry(operation).or_default() += 1;
        bill.write_units += write;
        bill.read_units += read;
    }
}

#[async_trait]
impl Store for Metered {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let item = self.inner.get(key).await?;
        self.charge("GetItem", 0.0, read_units(item.as_ref().map_or(0, item_size)));
        Ok(item)
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError> {
        self.charge("PutItem", write_units(item_size(&item)), 0.0);
        self.inner.put(item, condition).await
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError> {
        self.charge("UpdateItem", write_units(update_size(key, &update)), 0.0);
        self.inner.update(key, update, condition).await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError> {
        self.charge("DeleteItem", write_units(key_size(key)), 0.0);
        self.inner.delete(key, condition).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        let units: f64 = ops
            .iter()
            .map(|op| {
                2.0 * match op {
                    TxOp::Put { item, .. } => write_units(item_size(item)),
                    TxOp::Delete { key, .. } | TxOp::Check { key, .. } => write_units(key_size(key)),
                }
            })
            .sum();
        self.charge("TransactWriteItems", units, 0.0);
        self.inner.transact(ops).await
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        let page = self.inner.query(query).await?;
        self.charge("Query", 0.0, read_units(page.items.iter().map(item_size).sum()));
        Ok(page)
    }

    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        self.inner.change_feed().await
    }
}
