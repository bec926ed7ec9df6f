//! The DynamoDB store: LiveSync's [`Store`] on one DynamoDB table, through `aws-sdk-dynamodb`.
//!
//! Every write carries its condition as a ConditionExpression with
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD`, so a failed condition comes back as
//! [`Write::Conflict`] with the item that stood in the way. Transactions are TransactWriteItems;
//! reads are strongly consistent (GetItem, Query), so a publisher that lost a race sees the
//! winner. There is no Scan anywhere. The change feed ([`feed`]) reads the table's stream.
//!
//! The table design (the same as the embedded store's, and `template.yaml`'s) is documented in
//! `docs/TABLES.md`.

mod attrs;
mod backups;
pub mod feed;
mod table;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use livesync_core::store::{
    ChangeFeed, Condition, FailedCondition, Item, Key, Order, Page, Query, SortKeys, Store, StoreError, Transaction,
    TxOp, Update, Write, check_transaction, check_update,
};
use std::collections::HashMap;
use std::time::Duration;

pub use attrs::{item_from_attributes, key_attributes};
pub use backups::DynamoBackups;
pub use table::{TableSpec, create_table};

/// The table name the template gives, used when no other is configured.
pub const DEFAULT_TABLE: &str = "livesync";

/// Times a transaction cancelled by contention or throttling (not by a condition) is retried.
const TRANSACTION_CONFLICT_RETRIES: u32 = 8;

/// The HTTP client every LiveSync AWS client uses: rustls on ring.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An SDK configuration for a local emulator (moto, DynamoDB Local): every service at
/// `endpoint`, region us-east-1, placeholder credentials.
pub async fn emulator_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "emulator"))
        .endpoint_url(endpoint)
        .http_client(http_client())
        .load()
        .await
}

/// The SDK configuration LiveSync uses everywhere: region, credentials and endpoint from the
/// standard AWS environment (`AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB`, ...), and [`http_client`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client()).load().await
}

/// The Streams client. An emulator (moto, DynamoDB Local) serves the table's stream at the
/// table's own endpoint, so with only `AWS_ENDPOINT_URL_DYNAMODB` set, the stream is read there
/// too, rather than at AWS's. `AWS_ENDPOINT_URL_DYNAMODB_STREAMS` (or `AWS_ENDPOINT_URL`, read
/// into `config`) still decides when set.
/// The longest one stream call (DescribeStream, GetShardIterator, GetRecords) may take.
const STREAM_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn streams_client(
    config: &aws_config::SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> aws_sdk_dynamodbstreams::Client {
    // A stream call that hangs would hold the whole feed (the SDK sets no read timeout of its
    // own): each attempt gets 10 s, then the feed logs it and reads on after its last record.
    let timeouts = aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(STREAM_CALL_TIMEOUT).build();
    let builder = aws_sdk_dynamodbstreams::config::Builder::from(config).timeout_config(timeouts);
    match (env("AWS_ENDPOINT_URL_DYNAMODB_STREAMS"), env("AWS_ENDPOINT_URL_DYNAMODB")) {
        (None, Some(table_endpoint)) => {
            aws_sdk_dynamodbstreams::Client::from_conf(builder.endpoint_url(table_endpoint).build())
        }
        _ => aws_sdk_dynamodbstreams::Client::from_conf(builder.build()),
    }
}

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
}

impl DynamoStore {
    /// The table and its stream, through clients built from one SDK configuration.
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoStore {
            client: Client::new(config),
            streams: streams_client(config, |name| std::env::var(name).ok()),
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

fn unavailable<E>(error: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(Box::new(error))
}

/// A condition as a ConditionExpression, with its placeholders. `#c`/`:c` are reserved for it.
struct Expression {
    text: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn expression(condition: &Condition) -> Expression {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let text = match condition {
        Condition::Always => None,
        Condition::NotExists => Some("attribute_not_exists(pk)".to_owned()),
        Condition::Exists => Some("attribute_exists(pk)".to_owned()),
        Condition::Equals { attr, value } => {
            names.insert("#c".to_owned(), attr.clone());
            values.insert(":c".to_owned(), attrs::to_attribute(value));
            Some("#c = :c".to_owned())
        }
        Condition::Lacks { attr } => {
            names.insert("#c".to_owned(), attr.clone());
            Some("attribute_exists(pk) AND attribute_not_exists(#c)".to_owned())
        }
        Condition::Below { attr, value } => {
            names.insert("#c".to_owned(), attr.clone());
            values.insert(":c".to_owned(), AttributeValue::N(value.to_string()));
            Some("attribute_not_exists(pk) OR #c < :c".to_owned())
        }
    };
    Expression { text, names, values }
}

fn empty_to_none<K, V>(map: HashMap<K, V>) -> Option<HashMap<K, V>> {
    if map.is_empty() { None } else { Some(map) }
}

/// A conditional write's outcome: `Done`; `Conflict` with the item DynamoDB returned when the
/// condition failed (`conflict` finds it in the operation's own error type, `Some` meaning
/// "the condition failed"); or the infrastructure error, source kept.
fn write_outcome<O, E>(
    result: Result<O, SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>>,
    conflict: impl Fn(&E) -> Option<Option<&HashMap<String, AttributeValue>>>,
) -> Result<Write, StoreError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let error = match result {
        Ok(_) => return Ok(Write::Done),
        Err(error) => error,
    };
    let failed_condition = error.as_service_error().and_then(&conflict).map(current).transpose()?;
    match failed_condition {
        Some(current) => Ok(Write::Conflict { current }),
        None => Err(unavailable(error)),
    }
}

/// The conflicting item DynamoDB returned, or `None` if there was none.
fn current(item: Option<&HashMap<String, AttributeValue>>) -> Result<Option<Item>, StoreError> {
    match item {
        Some(item) if !item.is_empty() => item_from_attributes(item).map(Some),
        _ => Ok(None),
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item().map(item_from_attributes).transpose()
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError> {
        let expression = expression(&condition);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attrs::item_attributes(&item)))
            .set_condition_expression(expression.text)
            .set_expression_attribute_names(empty_to_none(expression.names))
            .set_expression_attribute_values(empty_to_none(expression.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        write_outcome(result, |error| match error {
            aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e) => Some(e.item()),
            _ => None,
        })
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError> {
        check_update(&update)?;
        let mut expression = expression(&condition);
        let mut clauses = Vec::new();
        let sets: Vec<String> = update
            .set
            .iter()
            .enumerate()
            .map(|(i, (name, value))| {
                expression.names.insert(format!("#s{i}"), name.clone());
                expression.values.insert(format!(":s{i}"), attrs::to_attribute(value));
                format!("#s{i} = :s{i}")
            })
            .collect();
        if !sets.is_empty() {
            clauses.push(format!("SET {}", sets.join(", ")));
        }
        let removes: Vec<String> = update
            .remove
            .iter()
            .enumerate()
            .map(|(i, name)| {
                expression.names.insert(format!("#r{i}"), name.clone());
                format!("#r{i}")
            })
            .collect();
        if !removes.is_empty() {
            clauses.push(format!("REMOVE {}", removes.join(", ")));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .set_update_expression(if clauses.is_empty() { None } else { Some(clauses.join(" ")) })
            .set_condition_expression(expression.text)
            .set_expression_attribute_names(empty_to_none(expression.names))
            .set_expression_attribute_values(empty_to_none(expression.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        write_outcome(result, |error| match error {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(e) => {
                Some(e.item())
            }
            _ => None,
        })
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError> {
        let expression = expression(&condition);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .set_condition_expression(expression.text)
            .set_expression_attribute_names(empty_to_none(expression.names))
            .set_expression_attribute_values(empty_to_none(expression.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        write_outcome(result, |error| match error {
            aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(e) => {
                Some(e.item())
            }
            _ => None,
        })
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        check_transaction(&ops)?;
        let items = ops.iter().map(|op| self.transact_item(op)).collect::<Result<Vec<_>, _>>()?;
        let mut attempt = 0;
        loop {
            // A client request token makes the SDK's own retries of this call idempotent: if an
            // attempt committed but its answer was lost, the retry is answered with success
            // instead of failing on the conditions the first attempt made false (which would
            // read as a lost race and apply a state change twice). A new token per send of
            // ours, because a cancelled transaction is sent again on purpose.
            let token = format!("{:032x}", rand::random::<u128>());
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(token)
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Transaction::Committed),
                Err(error) => error,
            };
            let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                cancelled,
            )) = error.as_service_error()
            else {
                return Err(unavailable(error));
            };
            let reasons = cancelled.cancellation_reasons();
            let mut failed = Vec::new();
            let mut contended = false;
            for (index, reason) in reasons.iter().enumerate() {
                match reason.code() {
                    Some("ConditionalCheckFailed") => {
                        failed.push(FailedCondition { index, current: current(reason.item())? })
                    }
                    // Another transaction held an item, or the table was throttled: nothing is known
                    // about the condition, and the same request may well succeed shortly.
                    Some(
                        "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                        | "RequestLimitExceeded",
                    ) => contended = true,
                    _ => {}
                }
            }
            if !failed.is_empty() {
                return Ok(Transaction::Conflict { failed });
            }
            if contended && attempt < TRANSACTION_CONFLICT_RETRIES {
                attempt += 1;
                // Exponential, from 10 ms to 640 ms: about 1.3 s in all before giving up.
                tokio::time::sleep(Duration::from_millis(10 << attempt.min(6))).await;
                continue;
            }
            return Err(unavailable(error));
        }
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        let mut values = HashMap::from([(":pk".to_owned(), AttributeValue::S(query.pk.clone()))]);
        let key_condition = match &query.sort_keys {
            SortKeys::All => "pk = :pk".to_owned(),
            SortKeys::Prefix(prefix) => {
                values.insert(":prefix".to_owned(), AttributeValue::S(prefix.clone()));
                "pk = :pk AND begins_with(sk, :prefix)".to_owned()
            }
            SortKeys::Between(low, high) => {
                values.insert(":low".to_owned(), AttributeValue::S(low.clone()));
                values.insert(":high".to_owned(), AttributeValue::S(high.clone()));
                "pk = :pk AND sk BETWEEN :low AND :high".to_owned()
            }
        };
        let start = query.after.as_ref().map(|sk| key_attributes(&Key::new(query.pk.clone(), sk.clone())));
        // One past the limit tells whether more follow.
        let limit = i32::try_from(query.limit.saturating_add(1)).unwrap_or(i32::MAX);
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_condition)
            .set_expression_attribute_values(Some(values))
            .set_exclusive_start_key(start)
            .scan_index_forward(query.order == Order::Ascending)
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .map_err(unavailable)?;
        let mut items = output.items().iter().map(item_from_attributes).collect::<Result<Vec<_>, _>>()?;
        // DynamoDB also stops at 1 MB with a LastEvaluatedKey: more may follow then too.
        let more = items.len() > query.limit || output.last_evaluated_key().is_some();
        items.truncate(query.limit);
        Ok(Page { items, more })
    }

    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        Ok(Box::new(feed::StreamFeed::latest(&self.client, self.streams.clone(), &self.table).await?))
    }
}

impl DynamoStore {
    fn transact_item(&self, op: &TxOp) -> Result<TransactWriteItem, StoreError> {
        let expression = expression(op.condition());
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Invalid(e.to_string());
        let returns = ReturnValuesOnConditionCheckFailure::AllOld;
        let item = match op {
            TxOp::Put { item, .. } => TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(attrs::item_attributes(item)))
                    .set_condition_expression(expression.text)
                    .set_expression_attribute_names(empty_to_none(expression.names))
                    .set_expression_attribute_values(empty_to_none(expression.values))
                    .return_values_on_condition_check_failure(returns)
                    .build()
                    .map_err(build)?,
            ),
            TxOp::Delete { key, .. } => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_attributes(key)))
                    .set_condition_expression(expression.text)
                    .set_expression_attribute_names(empty_to_none(expression.names))
                    .set_expression_attribute_values(empty_to_none(expression.values))
                    .return_values_on_condition_check_failure(returns)
                    .build()
                    .map_err(build)?,
            ),
            TxOp::Check { key, .. } => {
                let Some(text) = expression.text else {
                    return Err(StoreError::Invalid("a check step needs a condition".to_owned()));
                };
                TransactWriteItem::builder().condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_attributes(key)))
                        .condition_expression(text)
                        .set_expression_attribute_names(empty_to_none(expression.names))
                        .set_expression_attribute_values(empty_to_none(expression.values))
                        .return_values_on_condition_check_failure(returns)
                        .build()
                        .map_err(build)?,
                )
            }
        };
        Ok(item.build())
    }
}
