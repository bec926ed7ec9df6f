//! The local event source mapping: change feed -> fanout, batch after batch, in order, with the
//! same retry rule as the Lambda's mapping in `template.yaml` (`MaximumRetryAttempts: 5`, failed
//! records only, through [`FanoutReport::records_to_retry`]). A batch still failing after its
//! retries is logged as an error and left: its events stay in the store, and clients recover
//! them with `sync`.
//!
//! It also keeps the fanout's figures (the ones the fanout Lambda emits as CloudWatch metrics)
//! and logs them as one structured line a minute, when something moved.

use livesync_core::engine::Chain;
use livesync_core::store::{Change, ChangeFeed};
use livesync_core::{Fanout, FanoutReport};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Change-feed records handed to one fanout call at most (an event source mapping's batch size).
pub const FANOUT_BATCH: usize = 100;

/// Tries of a batch's failed records after the first, as `MaximumRetryAttempts` in the template.
const RETRIES: u32 = 5;

/// The wait before the first retry, doubled for each next one (0.5 s to 8 s).
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);

/// How often the figures are logged (if anything moved).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// The fanout's figures since the last summary: the names of the fanout Lambda's metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub batches: u64,
    pub events: u64,
    pub deliveries: u64,
    pub posts: u64,
    pub retried_posts: u64,
    pub gone: u64,
    pub failed_posts: u64,
    pub unclosed: u64,
    pub failed_rooms: u64,
    pub unreadable_records: u64,
    pub retried_batches: u64,
    pub abandoned_records: u64,
    pub max_lag_ms: u64,
}

impl Totals {
    fn add(&mut self, report: &FanoutReport) {
        self.events += report.events as u64;
        self.deliveries += report.deliveries as u64;
        self.posts += report.posts as u64;
        self.retried_posts += report.retried_posts as u64;
        self.gone += report.gone as u64;
        self.failed_posts += report.failed_posts as u64;
        self.unclosed += report.unclosed as u64;
        self.failed_rooms += report.failed_rooms.len() as u64;
        self.unreadable_records += report.unreadable_records as u64;
        if report.events > 0 {
            self.max_lag_ms = self.max_lag_ms.max(report.lag_ms);
        }
    }

    fn log(&self) {
        tracing::info!(
            batches = self.batches,
            events = self.events,
            deliveries = self.deliveries,
            posts = self.posts,
            retried_posts = self.retried_posts,
            gone = self.gone,
            failed_posts = self.failed_posts,
            unclosed = self.unclosed,
            failed_rooms = self.failed_rooms,
            unreadable_records = self.unreadable_records,
            retried_batches = self.retried_batches,
            abandoned_records = self.abandoned_records,
            max_lag_ms = self.max_lag_ms,
            "fanout in the last minute"
        );
    }
}

pub async fn run(mut feed: Box<dyn ChangeFeed>, fanout: Fanout, mut stopping: watch::Receiver<bool>) {
    let mut totals = Totals::default();
    let mut summarised = Instant::now();
    loop {
        // Only shutdown may interrupt a read of the feed: a read dropped halfway (the DynamoDB
        // feed holds a shard's iterator while it reads) could skip records.
        tokio::select! {
            batch = feed.next_batch(FANOUT_BATCH) => match batch {
                Ok(changes) => deliver(&fanout, changes, &mut totals, &mut stopping).await,
                Err(error) => {
                    tracing::error!(error = %Chain(&error), "change feed failed; reading it again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            () = crate::stopped(&mut stopping) => break,
        }
        // Figures move only with batches, so a summary after a batch misses nothing.
        if summarised.elapsed() >= SUMMARY_EVERY && totals != Totals::default() {
            totals.log();
            totals = Totals::default();
            summarised = Instant::now();
        }
    }
    if totals != Totals::default() {
        totals.log();
    }
}

/// Delivers one batch, then its failed records again, up to [`RETRIES`] times (not past
/// shutdown: what is left is logged, and clients recover it with `sync`).
pub async fn deliver(
    fanout: &Fanout,
    mut changes: Vec<Change>,
    totals: &mut Totals,
    stopping: &mut watch::Receiver<bool>,
) {
    totals.batches += 1;
    let mut delay = FIRST_RETRY_DELAY;
    for attempt in 0..=RETRIES {
        let report = fanout.deliver(&changes).await;
        totals.add(&report);
        let failed: Vec<usize> = report.records_to_retry().into_iter().collect();
        if failed.is_empty() {
            return;
        }
        if attempt == RETRIES || *stopping.borrow() {
            tracing::error!(
                records = failed.len(),
                attempts = attempt + 1,
                "fanout gave up on records; their subscribers recover them with sync"
            );
            totals.abandoned_records += failed.len() as u64;
            return;
        }
        totals.retried_batches += 1;
        changes = failed.into_iter().map(|index| changes[index].clone()).collect();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = crate::stopped(stopping) => {}
        }
        delay *= 2;
    }
}
