//! Fault injection, for tests and the simulation: a [`Store`] and a [`Poster`] that misbehave
//! the ways the real ones do, chosen by a seeded random generator so a failing run replays.
//!
//! * a store call fails before it is applied (unavailable, throttled), or is applied and its
//!   answer lost (a timeout after the commit: the caller cannot tell it from a failure);
//! * a post fails (throttled, 5xx), finds its connection gone (410), or is delivered and its
//!   answer lost (the fanout tries again, and the client sees the frame twice).
//!
//! The change feed is passed through: the feed itself is the stream's, and the stream's own
//! retries are the event source mapping's (redelivered batches are simulated by the caller).

use crate::poster::{Delivery, Frame, PostError, Poster};
use crate::store::{
    ChangeFeed, Condition, Item, Key, Page, Query, Store, StoreError, Transaction, TxOp, Update, Write,
};
use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What one injected fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// A store call failed before it was applied.
    StoreFailed,
    /// A store write was applied, then its caller was told it failed.
    StoreAnswerLost,
    /// A post failed (the fanout retries it).
    PostFailed,
    /// A post found its connection gone (410).
    PostGone,
    /// A post was delivered, then its caller was told it failed.
    PostAnswerLost,
}

/// The dice, and the count of every fault they chose. One `Faults` is shared by the wrappers of
/// a run, so that its seed decides them all.
#[derive(Debug)]
pub struct Faults {
    rng: Mutex<StdRng>,
    /// Chance of a fault per call, in millionths (0: healed).
    store_rate: AtomicU64,
    post_rate: AtomicU64,
    counts: Mutex<Vec<(Injected, u64)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0}")]
pub struct InjectedError(&'static str);

impl Faults {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Faults {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            store_rate: AtomicU64::new(0),
            post_rate: AtomicU64::new(0),
            counts: Mutex::new(Vec::new()),
        })
    }

    /// Sets the chance of a fault on each store call and each post (0.0 to 1.0).
    pub fn set_rates(&self, store: f64, post: f64) {
        self.store_rate.store((store.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
        self.post_rate.store((post.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// No more faults from now on.
    pub fn heal(&self) {
        self.set_rates(0.0, 0.0);
    }

    /// How many faults of each kind were injected.
    pub fn counts(&self) -> Vec<(Injected, u64)> {
        self.counts.lock().expect("fault counts lock").clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().map(|(_, n)| n).sum()
    }

    /// Whether this call gets a fault, and which of `kinds` (chosen evenly).
    fn roll(&self, rate: &AtomicU64, kinds: &[Injected]) -> Option<Injected> {
        let rate = rate.load(Ordering::Relaxed);
        if rate == 0 {
            return None;
        }
        let mut rng = self.rng.lock().expect("fault dice lock");
        if rng.random_range(0..1_000_000) >= rate {
            return None;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        drop(rng);
        let mut counts = self.counts.lock().expect("fault counts lock");
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
        Some(kind)
    }

    fn store_fault(&self, write: bool) -> Option<Injected> {
        let kinds: &[Injected] =
            if write { &[Injected::StoreFailed, Injected::StoreAnswerLost] } else { &[Injected::StoreFailed] };
        self.roll(&self.store_rate, kinds)
    }

    fn post_fault(&self) -> Option<Injected> {
        self.roll(&self.post_rate, &[Injected::PostFailed, Injected::PostGone, Injected::PostAnswerLost])
    }
}

fn store_error(what: &'static str) -> StoreError {
    StoreError::Unavailable(Box::new(InjectedError(what)))
}

/// A store whose calls fail as [`Faults`] decides.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, faults: Arc<Faults>) -> Self {
        FaultyStore { inner, faults }
    }

    /// Runs a write with its fault: failed before, or applied with the answer lost.
    async fn write<T>(&self, apply: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match self.faults.store_fault(true) {
            Some(Injected::StoreFailed) => Err(store_error("the store was unavailable")),
            Some(_) => {
                apply.await?;
                Err(store_error("the write timed out after it was applied"))
            }
            None => apply.await,
        }
    }

    fn read(&self) -> Result<(), StoreError> {
        match self.faults.store_fault(false) {
            Some(_) => Err(store_error("the read was throttled")),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.read()?;
        self.inner.get(key).await
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError> {
        self.write(self.inner.put(item, condition)).await
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError> {
        self.write(self.inner.update(key, update, condition)).await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError> {
        self.write(self.inner.delete(key, condition)).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        self.write(self.inner.transact(ops)).await
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        self.read()?;
        self.inner.query(query).await
    }

    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        self.inner.change_feed().await
    }
}

/// A poster whose posts fail as [`Faults`] decides. A post told `Gone` really is gone: the
/// inner poster is asked to close that connection, as API Gateway would have.
pub struct FaultyPoster {
    inner: Arc<dyn Poster>,
    faults: Arc<Faults>,
}

impl FaultyPoster {
    pub fn new(inner: Arc<dyn Poster>, faults: Arc<Faults>) -> Self {
        FaultyPoster { inner, faults }
    }
}

fn post_error(connection: &str, what: &'static str) -> PostError {
    PostError { connection: connection.to_owned(), source: Box::new(InjectedError(what)) }
}

#[async_trait]
impl Poster for FaultyPoster {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError> {
        match self.faults.post_fault() {
            Some(Injected::PostFailed) => Err(post_error(connection, "throttled")),
            Some(Injected::PostGone) => {
                self.inner.delete_connection(connection).await?;
                Ok(Delivery::Gone)
            }
            Some(_) => {
                self.inner.post(connection, frame).await?;
                Err(post_error(connection, "the answer was lost after the post was delivered"))
            }
            None => self.inner.post(connection, frame).await,
        }
    }

    async fn delete_connection(&self, connection: &str) -> Result<(), PostError> {
        self.inner.delete_connection(connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let kinds = |seed| {
            let faults = Faults::new(seed);
            faults.set_rates(0.3, 0.3);
            (0..200).map(|_| faults.post_fault()).collect::<Vec<_>>()
        };
        assert_eq!(kinds(7), kinds(7));
        assert_ne!(kinds(7), kinds(8));
        let injected = kinds(7).iter().filter(|k| k.is_some()).count();
        assert!((30..90).contains(&injected), "about 30% of 200: {injected}");
    }

    #[test]
    fn healed_faults_inject_nothing() {
        let faults = Faults::new(1);
        faults.set_rates(1.0, 1.0);
        assert!(faults.store_fault(true).is_some());
        faults.heal();
        assert!((0..100).all(|_| faults.store_fault(true).is_none() && faults.post_fault().is_none()));
        assert_eq!(faults.total(), 1);
    }
}
