//! The change feed of the DynamoDB store: the table's stream, read the way Lambda's event source
//! mapping reads it (every open shard, polled a few times a second), for hosts that fan out
//! themselves (the local runner with `--store dynamodb`). On AWS the stream triggers the fanout
//! Lambda instead, and this module is not used.

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, ShardIteratorType};
use livesync_core::store::{Change, ChangeFeed, ChangeKind, Item, Key, StoreError, StoredAttr};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Pause between polls of an idle stream (GetRecords allows 5 calls per second per shard).
const POLL_EVERY: Duration = Duration::from_millis(250);

/// How often the stream is described again to find new shards.
const DESCRIBE_EVERY: Duration = Duration::from_secs(5);

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

pub struct StreamFeed {
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// Open shards and where to read next.
    iterators: Vec<(String, String)>,
    known_shards: HashSet<String>,
    described_at: Instant,
    pending: VecDeque<Change>,
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
            .ok_or_else(|| StoreError::Invalid(format!("table {table} has no stream; enable NEW_AND_OLD_IMAGES")))?
            .to_owned();
        let mut feed = StreamFeed {
            streams,
            stream_arn,
            iterators: Vec::new(),
            known_shards: HashSet::new(),
            described_at: Instant::now(),
            pending: VecDeque::new(),
        };
        feed.discover(ShardIteratorType::Latest).await?;
        Ok(feed)
    }

    /// Starts reading shards not seen before: at `start` for the first description, from their
    /// beginning afterwards (a new shard holds only changes made after it opened).
    async fn discover(&mut self, start: ShardIteratorType) -> Result<(), StoreError> {
        let description =
            self.streams.describe_stream().stream_arn(&self.stream_arn).send().await.map_err(unavailable)?;
        let shards = description.stream_description().map(|d| d.shards()).unwrap_or_default();
        for shard in shards {
            let Some(id) = shard.shard_id() else { continue };
            if !self.known_shards.insert(id.to_owned()) {
                continue;
            }
            let open = shard.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_none();
            if !open {
                continue;
            }
            let iterator = self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(id)
                .shard_iterator_type(start.clone())
                .send()
                .await
                .map_err(unavailable)?;
            if let Some(iterator) = iterator.shard_iterator() {
                self.iterators.push((id.to_owned(), iterator.to_owned()));
            }
        }
        self.described_at = Instant::now();
        Ok(())
    }

    async fn poll(&mut self, max: usize) -> Result<(), StoreError> {
        let mut still_open = Vec::with_capacity(self.iterators.len());
        for (shard, iterator) in std::mem::take(&mut self.iterators) {
            let output = self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(i32::try_from(max).unwrap_or(1000).clamp(1, 1000))
                .send()
                .await
                .map_err(unavailable)?;
            for record in output.records() {
                self.pending.push_back(change_from_record(record)?);
            }
            // No next iterator: the shard is closed and fully read.
            if let Some(next) = output.next_shard_iterator() {
                still_open.push((shard, next.to_owned()));
            }
        }
        self.iterators = still_open;
        Ok(())
    }
}

#[async_trait]
impl ChangeFeed for StreamFeed {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Change>, StoreError> {
        let max = max.max(1);
        loop {
            if self.pending.is_empty() {
                self.poll(max).await?;
            }
            if !self.pending.is_empty() {
                let take = self.pending.len().min(max);
                return Ok(self.pending.drain(..take).collect());
            }
            if self.described_at.elapsed() >= DESCRIBE_EVERY {
                self.discover(ShardIteratorType::TrimHorizon).await?;
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
    Ok(Change {
        kind,
        key,
        new: data.new_image().map(item_from_image).transpose()?,
        old: data.old_image().map(item_from_image).transpose()?,
    })
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
