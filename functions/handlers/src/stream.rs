//! The fanout function's handler: a DynamoDB stream batch in, `batchItemFailures` out.
//!
//! The event source mapping is configured with `ReportBatchItemFailures`: records named here are
//! retried (from the lowest sequence number on), the rest count as done. A record is failed when
//! it cannot be read, or when its room's subscribers could not be read, so none of them got it.
//! A retry may deliver an event twice to some subscribers; clients drop repeats by seq. A record
//! that cannot be read will not be readable on retry either; it is reported anyway so that, once
//! the retries are spent, it lands in the on-failure queue where someone can look at it. A batch
//! that could not be counted into the day's figures is failed whole, to be counted on retry.
//!
//! A post that fails for a reason other than 410 (throttled after the SDK's retries, 5xx) is
//! tried again within the batch; if it keeps failing, that connection is closed and counted, and
//! its client reconnects and recovers with `sync`. Failing the record instead would re-post the
//! room's whole batch to every subscriber, and one bad connection would hold every later batch
//! of its room.
//!
//! Each invocation logs one line of CloudWatch embedded metrics (see [`crate::metrics`]).

use crate::metrics;
use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use livesync_core::Fanout;
use livesync_core::engine::Chain;
use livesync_core::layout;
use livesync_core::store::{Change, ChangeKind, Item, Key, StoreError, StoredAttr};
use serde_dynamo::AttributeValue;
use std::collections::HashMap;

pub async fn fanout(fanout: &Fanout, event: Event) -> DynamoDbEventResponse {
    let mut failed: Vec<String> = Vec::new();
    let mut changes = Vec::with_capacity(event.records.len());
    let mut sequence_numbers = Vec::with_capacity(event.records.len());
    for record in &event.records {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        // A record is read whole here, its event included, so one damaged record fails alone
        // instead of failing the plan of the whole batch.
        let readable = change_from_record(record).and_then(|change| {
            change.new.as_ref().map(layout::event_from_item).transpose()?;
            Ok(change)
        });
        match readable {
            Ok(change) => {
                changes.push(change);
                sequence_numbers.push(sequence_number);
            }
            Err(error) if sequence_number.is_empty() => {
                // An empty itemIdentifier would fail the whole batch; this record cannot be named.
                tracing::error!(error = %Chain(&error), "unreadable stream record without a sequence number");
            }
            Err(error) => {
                tracing::error!(sequence_number, error = %Chain(&error), "unreadable stream record");
                failed.push(sequence_number);
            }
        }
    }
    let report = fanout.deliver(&changes).await;
    // The records of rooms that failed, or the whole batch if the day's figures missed it
    // (counting is idempotent, and subscribers drop the events they have by seq).
    failed.extend(report.records_to_retry().into_iter().map(|index| sequence_numbers[index].clone()));
    println!("{}", metrics::fanout_line(event.records.len(), &report, failed.len(), metrics::now_ms()));
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|sequence_number| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            failure
        })
        .collect();
    response
}

/// A stream record as a change-feed record, the form the fanout reads.
pub fn change_from_record(record: &EventRecord) -> Result<Change, StoreError> {
    let kind = match record.event_name.as_str() {
        "INSERT" => ChangeKind::Insert,
        "MODIFY" => ChangeKind::Modify,
        "REMOVE" => ChangeKind::Remove,
        other => return Err(malformed(format!("unknown eventName {other:?}"))),
    };
    let key = item_from_image(&record.change.keys)?.ok_or_else(|| malformed("a record without keys".to_owned()))?.key;
    Ok(Change { kind, key, new: item_from_image(&record.change.new_image)? })
}

fn malformed(reason: String) -> StoreError {
    StoreError::Malformed { key: Key::new("?", "?"), reason }
}

/// An image as an item; an empty image (no such image in this record) is `None`.
fn item_from_image(image: &HashMap<String, AttributeValue>) -> Result<Option<Item>, StoreError> {
    if image.is_empty() {
        return Ok(None);
    }
    let attributes = image.iter().map(|(name, value)| {
        let value = match value {
            AttributeValue::S(s) => StoredAttr::S(s),
            AttributeValue::N(n) => StoredAttr::N(n),
            _ => StoredAttr::Other("not S or N"),
        };
        (name.as_str(), value)
    });
    Item::from_stored(attributes).map(Some)
}
