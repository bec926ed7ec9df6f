//! The change feed of the DynamoDB store: the table's stream, read the way Lambda's event source
//! mapping reads it, for hosts that fan out themselves (the local runner with `--store dynamodb`).
//! On AWS the stream triggers the fanout Lambda instead, and this module is not used.
//!
//! A stream is a set of shards; a shard splits into children as the table grows, and a child
//! holds only changes made after its parent closed. Per shard (so per partition), records are in
//! write order. To keep that order across a split, a child is read only once its parent has been
//! read to its end. A failed read never loses a shard: its iterator is acquired again after the
//! last record read (iterators also expire after 15 minutes).

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, Shard, ShardIteratorType};
use livesync_core::store::{Change, ChangeFeed, ChangeKind, Item, Key, StoreError, StoredAttr};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Pause between polls of an idle stream (GetRecords allows 5 calls per second per shard).
const POLL_EVERY: Duration = Duration::from_millis(250);

/// How often the stream is described again to find new shards.
const DESCRIBE_EVERY: Duration = Duration::from_secs(5);

/// Reads failing for this long (every shard, every try) count as a stalled feed: it is logged
/// as an error and restarted (the stream described again, every iterator taken afresh after
/// its shard's last record).
const STALLED_AFTER: Duration = Duration::from_secs(60);

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

/// Where reading a shard stands.
struct ShardCursor {
    id: String,
    parent: Option<String>,
    /// The next iterator; `None` when it must be acquired again (first read, or after an error).
    iterator: Option<String>,
    /// The last record read, to resume after it.
    last_sequence_number: Option<String>,
    /// Where to start when nothing has been read yet.
    start: ShardIteratorType,
}

pub struct StreamFeed {
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    shards: Vec<ShardCursor>,
    /// Every shard ever seen, read or skipped.
    known: HashSet<String>,
    /// Shards read to their end: their children may start.
    finished: HashSet<String>,
    /// Shards the stream describes as closed (with an ending sequence number).
    closed: HashSet<String>,
    described_at: Instant,
    pending: VecDeque<Change>,
    /// Since when every read has failed; `None` while reads succeed.
    failing_since: Option<Instant>,
}

impl StreamFeed {
    /// A feed of the changes committed from now on.
    pub async fn latest(
        tables: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<Self, StoreError> {
        let description = tables.describe_table().table_name(table).send().await.map_err(unavailable)?;
        let stream_arn = description
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| StoreError::Invalid(format!("table {table} has no stream; enable one with NEW_IMAGE")))?
            .to_owned();
        let mut feed = StreamFeed {
            streams,
            stream_arn,
            shards: Vec::new(),
            known: HashSet::new(),
            finished: HashSet::new(),
            closed: HashSet::new(),
            described_at: Instant::now(),
            pending: VecDeque::new(),
            failing_since: None,
        };
        // Now: the open shards from their latest record; closed ones are history.
        for shard in feed.describe().await? {
            let Some(id) = shard.shard_id().map(str::to_owned) else { continue };
            feed.known.insert(id.clone());
            if is_closed(&shard) {
                feed.finished.insert(id);
            } else {
                // Taken now, not at the first read: "from now on" means from this call.
                let mut open = cursor(&shard, id, ShardIteratorType::Latest);
                let iterator = feed
                    .streams
                    .get_shard_iterator()
                    .stream_arn(&feed.stream_arn)
                    .shard_id(&open.id)
                    .shard_iterator_type(ShardIteratorType::Latest)
                    .send()
                    .await
                    .map_err(unavailable)?;
                open.iterator = iterator.shard_iterator().map(str::to_owned);
                feed.shards.push(open);
            }
        }
        Ok(feed)
    }

    /// Every shard of the stream, all pages of them.
    async fn describe(&mut self) -> Result<Vec<Shard>, StoreError> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(after.take())
                .send()
                .await
                .map_err(unavailable)?;
            let Some(description) = page.stream_description() else { break };
            shards.extend(description.shards().iter().cloned());
            match description.last_evaluated_shard_id() {
                Some(last) => after = Some(last.to_owned()),
                None => break,
            }
        }
        self.described_at = Instant::now();
        self.closed.extend(shards.iter().filter(|s| is_closed(s)).filter_map(|s| s.shard_id().map(str::to_owned)));
        Ok(shards)
    }

    /// Adds shards not seen before, each read from its beginning (a new shard holds only changes
    /// made after it opened), closed ones included: a shard may open and close between looks.
    async fn discover(&mut self) -> Result<(), StoreError> {
        for shard in self.describe().await? {
            let Some(id) = shard.shard_id().map(str::to_owned) else { continue };
            if self.known.insert(id.clone()) {
                self.shards.push(cursor(&shard, id, ShardIteratorType::TrimHorizon));
            }
        }
        Ok(())
    }

    /// Reads every shard that may be read now once. A shard whose read fails is kept, to be
    /// resumed after its last record on the next poll.
    async fn poll(&mut self, max: usize) {
        let limit = i32::try_from(max).unwrap_or(1000).clamp(1, 1000);
        let mut index = 0;
        while index < self.shards.len() {
            let parent_done =
                self.shards[index].parent.as_ref().is_none_or(|p| !self.known.contains(p) || self.finished.contains(p));
            if !parent_done {
                index += 1;
                continue;
            }
            match self.read_shard(index, limit).await {
                Ok(true) if self.is_described_closed(index).await => {
                    self.failing_since = None;
                    let done = self.shards.remove(index);
                    self.finished.insert(done.id);
                }
                Ok(true) => {
                    // The end of a chain, yet the stream says the shard is open: records may
                    // still come. Read on with a fresh iterator after the last record.
                    tracing::warn!(
                        shard = self.shards[index].id,
                        "no next iterator for a shard still open; reading on"
                    );
                    self.shards[index].iterator = None;
                    index += 1;
                }
                Ok(false) => {
                    self.failing_since = None;
                    index += 1;
                }
                Err(error) => {
                    self.failing_since.get_or_insert_with(Instant::now);
                    tracing::warn!(shard = self.shards[index].id, %error, "stream read failed; resuming after the last record");
                    self.shards[index].iterator = None;
                    index += 1;
                }
            }
        }
    }

    /// Whether the stream describes the shard as closed: described again if it was not, the
    /// last time (it may have closed since).
    async fn is_described_closed(&mut self, index: usize) -> bool {
        if !self.closed.contains(&self.shards[index].id)
            && let Err(error) = self.describe().await
        {
            tracing::warn!(%error, "describing the stream failed; trying again later");
        }
        self.closed.contains(&self.shards[index].id)
    }

    /// Logs a feed whose reads have all failed for [`STALLED_AFTER`], and starts it again from
    /// the last record of each shard.
    async fn restart_if_stalled(&mut self) {
        let Some(since) = self.failing_since else { return };
        if since.elapsed() < STALLED_AFTER {
            return;
        }
        tracing::error!(
            failing_for_secs = since.elapsed().as_secs(),
            shards = self.shards.len(),
            "the stream feed has made no progress; restarting it after the last records read"
        );
        for shard in &mut self.shards {
            shard.iterator = None;
        }
        if let Err(error) = self.discover().await {
            tracing::warn!(%error, "describing the stream failed; trying again later");
        }
        self.failing_since = Some(Instant::now());
    }

    /// Reads one batch of a shard; `true` once the shard is closed and read to its end.
    async fn read_shard(&mut self, index: usize, limit: i32) -> Result<bool, StoreError> {
        let shard = &mut self.shards[index];
        let iterator = match shard.iterator.take() {
            Some(iterator) => iterator,
            None => {
                let request = self.streams.get_shard_iterator().stream_arn(&self.stream_arn).shard_id(&shard.id);
                let request = match &shard.last_sequence_number {
                    Some(sequence) => {
                        request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(sequence)
                    }
                    None => request.shard_iterator_type(shard.start.clone()),
                };
                let output = request.send().await.map_err(unavailable)?;
                match output.shard_iterator() {
                    Some(iterator) => iterator.to_owned(),
                    None => return Ok(true),
                }
            }
        };
        let output =
            self.streams.get_records().shard_iterator(iterator).limit(limit).send().await.map_err(unavailable)?;
        let records_read = output.records().len();
        for record in output.records() {
            match change_from_record(record) {
                Ok(change) => self.pending.push_back(change),
                // Reading it again would fail again: skip it rather than stall the shard.
                Err(error) => tracing::error!(shard = shard.id, %error, "unreadable stream record skipped"),
            }
            if let Some(sequence) = record.dynamodb().and_then(|d| d.sequence_number()) {
                shard.last_sequence_number = Some(sequence.to_owned());
            }
        }
        // No next iterator: the shard is closed and fully read.
        shard.iterator = output.next_shard_iterator().map(str::to_owned);
        let closed = shard.iterator.is_none();
        // An empty read of an open shard: the next read takes a fresh iterator after the last
        // record rather than the chained one, so a chain that stopped yielding records still in
        // the shard cannot stall the feed for good. Plain moto's chains do (a cancelled
        // transaction swaps the table's shard object, and old iterators keep reading the
        // abandoned one); `scripts/moto_server.py` mends that for our tests, but users point the
        // runner at moto as it is. It costs one GetShardIterator per idle poll; a busy shard
        // keeps its chain.
        if records_read == 0 && !closed && shard.last_sequence_number.is_some() {
            shard.iterator = None;
        }
        Ok(closed)
    }
}

fn cursor(shard: &Shard, id: String, start: ShardIteratorType) -> ShardCursor {
    ShardCursor {
        id,
        parent: shard.parent_shard_id().map(str::to_owned),
        iterator: None,
        last_sequence_number: None,
        start,
    }
}

fn is_closed(shard: &Shard) -> bool {
    shard.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some()
}

#[async_trait]
impl ChangeFeed for StreamFeed {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Change>, StoreError> {
        let max = max.max(1);
        loop {
            if self.described_at.elapsed() >= DESCRIBE_EVERY
                && let Err(error) = self.discover().await
            {
                tracing::warn!(%error, "describing the stream failed; trying again later");
            }
            if self.pending.is_empty() {
                self.poll(max).await;
                self.restart_if_stalled().await;
            }
            if !self.pending.is_empty() {
                let take = self.pending.len().min(max);
                return Ok(self.pending.drain(..take).collect());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// One stream record as a change-feed record.
pub fn change_from_record(record: &Record) -> Result<Change, StoreError> {
    let malformed = |reason: &str| StoreError::Malformed { key: Key::new("?", "?"), reason: reason.to_owned() };
    let kind = match record.event_name() {
        Some(OperationType::Insert) => ChangeKind::Insert,
        Some(OperationType::Modify) => ChangeKind::Modify,
        Some(OperationType::Remove) => ChangeKind::Remove,
        other => return Err(malformed(&format!("unknown stream event {other:?}"))),
    };
    let data = record.dynamodb().ok_or_else(|| malformed("stream record without data"))?;
    let key = item_from_image(data.keys().ok_or_else(|| malformed("stream record without keys"))?)?.key;
    Ok(Change { kind, key, new: data.new_image().map(item_from_image).transpose()? })
}

fn item_from_image(image: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    Item::from_stored(image.iter().map(|(name, value)| {
        let value = match value {
            AttributeValue::S(s) => StoredAttr::S(s),
            AttributeValue::N(n) => StoredAttr::N(n),
            _ => StoredAttr::Other("not S or N"),
        };
        (name.as_str(), value)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DynamoStore, create_table, emulator_config};
    use livesync_core::store::{Condition, Store};

    async fn moto_store(name: &str) -> DynamoStore {
        let endpoint =
            std::env::var("LIVESYNC_MOTO_ENDPOINT").expect("LIVESYNC_MOTO_ENDPOINT (scripts/test starts moto)");
        let config = emulator_config(&endpoint).await;
        let table = format!("{name}-{}", std::process::id());
        create_table(&aws_sdk_dynamodb::Client::new(&config), &table).await.unwrap();
        DynamoStore::new(&config, table)
    }

    async fn next_keys(feed: &mut StreamFeed) -> Vec<String> {
        let batch = tokio::time::timeout(Duration::from_secs(30), feed.next_batch(10)).await.unwrap().unwrap();
        batch.into_iter().map(|change| change.key.sk).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_resumes_after_the_last_record_without_losing_or_repeating_any() {
        let store = moto_store("feed-resume").await;
        let mut feed = StreamFeed::latest(store.client(), store.streams.clone(), store.table()).await.unwrap();
        store.put(Item::new(Key::new("P", "first")), Condition::Always).await.unwrap();
        assert_eq!(next_keys(&mut feed).await, vec!["first"]);

        // The shard's iterator goes bad (expired, trimmed, a network fault): the next read fails.
        feed.shards[0].iterator = Some("not-a-valid-iterator".to_owned());
        store.put(Item::new(Key::new("P", "second")), Condition::Always).await.unwrap();
        store.put(Item::new(Key::new("P", "third")), Condition::Always).await.unwrap();

        let mut keys = Vec::new();
        while keys.len() < 2 {
            keys.extend(next_keys(&mut feed).await);
        }
        assert_eq!(keys, vec!["second", "third"]);
    }
}
