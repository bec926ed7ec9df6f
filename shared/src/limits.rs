//! Write limits: a token bucket per user (every connection of a token's `sub` shares one, so
//! opening more connections or reconnecting buys nothing), or per connection for the anonymous
//! callers of an open runner; one client cannot flood a room or the store.
//!
//! The bucket is GCRA (the generic cell rate algorithm, as `governor` and most rate limiters
//! use): one number per connection, its *theoretical arrival time* (TAT). A write at `now` is
//! admitted if `max(TAT, now)` is at most `burst - 1` intervals ahead of `now`, and moves the TAT
//! one interval on. So a quiet connection may send `burst` writes at once, then one per
//! interval; a refused write learns exactly how long to wait, and changes nothing.
//!
//! Where the TAT lives is the host's choice, the decision is the same:
//!
//! * [`StoreLimiter`] keeps it in an item (the user's `USER#<sub>/BUCKET`, or the connection's
//!   `META`) and moves it with a conditional write, so the bucket holds across every Lambda
//!   instance (API Gateway may run two frames of one connection, or two connections of one
//!   user, on two instances at once). Cost: one consistent read and one conditional write per
//!   write request.
//! * [`MemoryLimiter`] keeps it in memory: right for a host that serves all of a user's
//!   connections from one process, as the runner does, with no store round trip.

use crate::access::Caller;
use crate::layout;
use crate::store::{Attr, Condition, Key, Store, StoreError, TTL_ATTRIBUTE, Update, Write};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// A write rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteRate {
    pub per_second: f64,
    pub burst: u32,
}

impl WriteRate {
    /// The default: 50 writes a second, bursts of 100 (a chat or an editor sends far fewer; a
    /// backend publishing more should use several connections or the HTTP API).
    pub const DEFAULT: WriteRate = WriteRate { per_second: 50.0, burst: 100 };

    /// Microseconds between two writes at the steady rate.
    fn interval_us(&self) -> u64 {
        (1_000_000.0 / self.per_second.max(1e-6)).round().max(1.0) as u64
    }

    /// The decision for one write at `now_us`, given the bucket's TAT (0 for a fresh bucket):
    /// the new TAT, or how long to wait.
    pub fn decide(&self, tat_us: u64, now_us: u64) -> Admission<u64> {
        let interval = self.interval_us();
        let tolerance = interval.saturating_mul(u64::from(self.burst.max(1)) - 1);
        let start = tat_us.max(now_us);
        let ahead = start - now_us;
        if ahead > tolerance {
            // Rounded up, so a client that waits exactly this long is admitted.
            Admission::Refused { retry_after_ms: (ahead - tolerance).div_ceil(1000) }
        } else {
            Admission::Admitted(start + interval)
        }
    }
}

/// Whether a write may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission<T = ()> {
    Admitted(T),
    /// Over the limit: nothing was applied; the next write is admitted after this long.
    Refused {
        retry_after_ms: u64,
    },
}

/// Whose writes one bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket<'a> {
    /// A token's user, across all its connections.
    User(&'a str),
    /// One connection of an anonymous caller.
    Connection(&'a str),
}

impl<'a> Bucket<'a> {
    pub fn of(caller: &'a Caller, connection: &'a str) -> Self {
        match &caller.user {
            Some(user) => Bucket::User(user),
            None => Bucket::Connection(connection),
        }
    }

    /// Where a store keeps it.
    fn key(&self) -> Key {
        match self {
            Bucket::User(user) => layout::user_bucket_key(user),
            Bucket::Connection(connection) => layout::connection_key(connection),
        }
    }

    /// Its name in memory.
    fn name(&self) -> String {
        match self {
            Bucket::User(user) => format!("u:{user}"),
            Bucket::Connection(connection) => format!("c:{connection}"),
        }
    }
}

/// Admits or refuses writes, by bucket.
#[async_trait]
pub trait WriteLimiter: Send + Sync {
    async fn admit(&self, bucket: Bucket<'_>, now_ms: u64) -> Result<Admission, StoreError>;

    /// The connection is gone: its bucket can go too.
    fn forget(&self, _connection: &str) {}
}

/// Buckets kept in memory before full ones (those whose TAT has passed: a new bucket would be
/// the same) are swept.
const SWEEP_AT: usize = 10_000;

/// The buckets in memory, for a host that serves all of a user's connections from one process.
pub struct MemoryLimiter {
    rate: WriteRate,
    tats: Mutex<HashMap<String, u64>>,
}

impl MemoryLimiter {
    pub fn new(rate: WriteRate) -> Self {
        MemoryLimiter { rate, tats: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl WriteLimiter for MemoryLimiter {
    async fn admit(&self, bucket: Bucket<'_>, now_ms: u64) -> Result<Admission, StoreError> {
        let now_us = now_ms * 1000;
        let mut tats = self.tats.lock().expect("limiter lock");
        if tats.len() >= SWEEP_AT {
            tats.retain(|_, tat| *tat > now_us);
        }
        let tat = tats.entry(bucket.name()).or_default();
        Ok(match self.rate.decide(*tat, now_us) {
            Admission::Admitted(next) => {
                *tat = next;
                Admission::Admitted(())
            }
            Admission::Refused { retry_after_ms } => Admission::Refused { retry_after_ms },
        })
    }

    fn forget(&self, connection: &str) {
        self.tats.lock().expect("limiter lock").remove(&Bucket::Connection(connection).name());
    }
}

/// The bucket in an item (attribute `tat`, microseconds), moved by a write conditional on the
/// value read: concurrent requests each take their own token, however many hosts serve them.
pub struct StoreLimiter<S: ?Sized> {
    rate: WriteRate,
    store: std::sync::Arc<S>,
}

impl<S: Store + ?Sized> StoreLimiter<S> {
    pub fn new(store: std::sync::Arc<S>, rate: WriteRate) -> Self {
        StoreLimiter { rate, store }
    }
}

/// Lost races for one bucket after which a write is refused for a moment rather than retried.
const MAX_RACES: usize = 16;

#[async_trait]
impl<S: Store + ?Sized> WriteLimiter for StoreLimiter<S> {
    async fn admit(&self, bucket: Bucket<'_>, now_ms: u64) -> Result<Admission, StoreError> {
        let key = bucket.key();
        for _ in 0..MAX_RACES {
            let item = self.store.get(&key).await?;
            let read = item.as_ref().and_then(|item| item.number(layout::BUCKET_ATTRIBUTE));
            let tat = read.map_or(0, |tat| tat.max(0) as u64);
            let next = match self.rate.decide(tat, now_ms * 1000) {
                Admission::Admitted(next) => next,
                Admission::Refused { retry_after_ms } => return Ok(Admission::Refused { retry_after_ms }),
            };
            let mut update = Update::default().set(layout::BUCKET_ATTRIBUTE, Attr::N(next as i64));
            let condition = match (read, &item) {
                (Some(tat), _) => Condition::Equals { attr: layout::BUCKET_ATTRIBUTE.to_owned(), value: Attr::N(tat) },
                // The connection's first write: a concurrent first write finds the bucket there.
                (None, Some(_)) => Condition::Lacks { attr: layout::BUCKET_ATTRIBUTE.to_owned() },
                // No item (a user's first write, a `$connect` not yet written, or expired):
                // create it, expiring as a connection's items do.
                (None, None) => {
                    update = update.set(TTL_ATTRIBUTE, Attr::N(layout::connection_expiry(now_ms)));
                    Condition::NotExists
                }
            };
            match self.store.update(&key, update, condition).await? {
                Write::Done => return Ok(Admission::Admitted(())),
                Write::Conflict { .. } => continue,
            }
        }
        // Every race lost means as many writes of this connection were admitted meanwhile.
        Ok(Admission::Refused { retry_after_ms: self.rate.interval_us().div_ceil(1000) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_A_SECOND: WriteRate = WriteRate { per_second: 5.0, burst: 3 };

    #[test]
    fn a_quiet_connection_may_burst_then_waits_one_interval_per_write() {
        let (mut tat, now) = (0, 1_000_000_000);
        for _ in 0..3 {
            let Admission::Admitted(next) = FIVE_A_SECOND.decide(tat, now) else { panic!("within the burst") };
            tat = next;
        }
        assert_eq!(FIVE_A_SECOND.decide(tat, now), Admission::Refused { retry_after_ms: 200 });
        // 200 ms later exactly one more fits.
        let Admission::Admitted(next) = FIVE_A_SECOND.decide(tat, now + 200_000) else { panic!("a token came back") };
        assert!(matches!(FIVE_A_SECOND.decide(next, now + 200_000), Admission::Refused { .. }));
    }

    #[test]
    fn a_refusal_says_exactly_how_long_to_wait_and_changes_nothing() {
        let tat = 2_000_000 + 400_000 + 200_000; // a full bucket at t = 2 s, plus one
        let Admission::Refused { retry_after_ms } = FIVE_A_SECOND.decide(tat, 2_000_000) else { panic!("over") };
        assert!(matches!(FIVE_A_SECOND.decide(tat, 2_000_000 + retry_after_ms * 1000), Admission::Admitted(_)));
        assert!(matches!(
            FIVE_A_SECOND.decide(tat, 2_000_000 + retry_after_ms * 1000 - 1000),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn a_long_silence_refills_the_bucket_but_never_beyond_the_burst() {
        let Admission::Admitted(mut tat) = FIVE_A_SECOND.decide(0, 0) else { panic!() };
        let later = 3_600_000_000;
        let mut admitted = 0;
        while let Admission::Admitted(next) = FIVE_A_SECOND.decide(tat, later) {
            tat = next;
            admitted += 1;
        }
        assert_eq!(admitted, 3);
    }

    #[tokio::test]
    async fn the_memory_limiter_keeps_one_bucket_per_user_or_anonymous_connection() {
        let limiter = MemoryLimiter::new(WriteRate { per_second: 1.0, burst: 2 });
        let a = Bucket::Connection("a");
        assert_eq!(limiter.admit(a, 1000).await.unwrap(), Admission::Admitted(()));
        assert_eq!(limiter.admit(a, 1000).await.unwrap(), Admission::Admitted(()));
        assert_eq!(limiter.admit(a, 1000).await.unwrap(), Admission::Refused { retry_after_ms: 1000 });
        let b = Bucket::Connection("b");
        assert_eq!(limiter.admit(b, 1000).await.unwrap(), Admission::Admitted(()), "another client is unaffected");
        limiter.forget("a");
        assert_eq!(limiter.admit(a, 1000).await.unwrap(), Admission::Admitted(()));
        // A user's connections share its bucket: a second connection (or a reconnect) buys nothing.
        let ann = Caller::user("ann", "c1", crate::access::Grants::all());
        let also_ann = Caller::user("ann", "c2", crate::access::Grants::all());
        assert_eq!(limiter.admit(Bucket::of(&ann, "c1"), 1000).await.unwrap(), Admission::Admitted(()));
        assert_eq!(limiter.admit(Bucket::of(&also_ann, "c2"), 1000).await.unwrap(), Admission::Admitted(()));
        assert!(matches!(limiter.admit(Bucket::of(&also_ann, "c3"), 1000).await.unwrap(), Admission::Refused { .. }));
    }
}
