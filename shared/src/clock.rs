//! The clock capability: event timestamps, TTLs and backoff waits come from here, not from the
//! machine directly, so a host can supply its own.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Lets `duration` pass (a backoff between lost races).
    fn sleep(&self, duration: Duration) -> Wait<'_>;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// Both hosts (lambda_runtime and the local runner) run on tokio.
    fn sleep(&self, duration: Duration) -> Wait<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told: for tests of anything scheduled, so that a day of
/// schedules passes in no time and nothing depends on how fast the machine is.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<u64>,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock { now: watch::Sender::new(now_ms) }
    }

    /// Moves the time to `now_ms` (never backwards) and wakes every sleep that is due.
    pub fn set(&self, now_ms: u64) {
        self.now.send_modify(|now| *now = (*now).max(now_ms));
    }

    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by.as_millis() as u64);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    /// Ends once the time has been moved `duration` past now.
    fn sleep(&self, duration: Duration) -> Wait<'_> {
        let due = self.now_ms().saturating_add(duration.as_millis() as u64);
        let mut moved = self.now.subscribe();
        Box::pin(async move {
            let _ = moved.wait_for(|now| *now >= due).await;
        })
    }
}
