//! Creating LiveSync's table exactly as `template.yaml` defines it: string `pk`/`sk`, on-demand
//! billing, a NEW_IMAGE stream (nothing reads old images), TTL on `expires_at`, point-in-time recovery.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification,
};
use livesync_core::store::{StoreError, TTL_ATTRIBUTE};
use std::time::Duration;

/// What was found or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSpec {
    Created,
    AlreadyThere,
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn invalid(error: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(error.to_string())
}

/// Creates the table if it is missing, and waits until it is active.
pub async fn create_table(client: &Client, table: &str) -> Result<TableSpec, StoreError> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return Ok(TableSpec::AlreadyThere),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(error) => return Err(unavailable(error)),
    }
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(invalid)
    };
    let key =
        |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(invalid);
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await
        .map_err(unavailable)?;
    for _ in 0..600 {
        let description = client.describe_table().table_name(table).send().await.map_err(unavailable)?;
        if description.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name(TTL_ATTRIBUTE).enabled(true).build().map_err(invalid)?,
        )
        .send()
        .await
        .map_err(unavailable)?;
    client
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await
        .map_err(unavailable)?;
    Ok(TableSpec::Created)
}
