//! What LiveSync's Lambda functions share: their configuration (read once, at cold start, from
//! the environment the template sets) and the [`Poster`] that reaches connections through API
//! Gateway's connection management API.
//!
//! Each binary in `src/bin` is a thin `lambda_runtime` main: it builds its clients once and hands
//! every event to the matching handler of `livesync_handlers`.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use livesync_core::clock::SystemClock;
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use livesync_core::{Engine, Fanout};
use livesync_dynamodb::DynamoStore;
use std::sync::Arc;

/// Configuration from the environment. Missing required variables stop the cold start: the
/// function cannot do anything useful without them, and the error names them.
pub struct Config {
    /// `TABLE_NAME`: the LiveSync table.
    pub table: String,
    /// `CONNECTIONS_URL`: the stage's connection management endpoint (fanout only).
    pub connections_url: Option<String>,
    /// `POST_CONCURRENCY`: posts in flight at once (fanout only).
    pub post_concurrency: usize,
    /// `HISTORY_VERSIONS`: versions kept per document, edits kept per text.
    pub history_versions: u64,
}

impl Config {
    pub fn from_env() -> Self {
        Config {
            table: std::env::var("TABLE_NAME").expect("TABLE_NAME must name the LiveSync table"),
            connections_url: std::env::var("CONNECTIONS_URL").ok(),
            post_concurrency: std::env::var("POST_CONCURRENCY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(livesync_core::fanout::POST_CONCURRENCY),
            history_versions: std::env::var("HISTORY_VERSIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(livesync_core::engine::HISTORY_VERSIONS),
        }
    }
}

/// The engine over DynamoDB, as the WebSocket route functions use it.
pub async fn engine(config: &Config) -> Engine {
    let sdk = livesync_dynamodb::sdk_config().await;
    Engine::new(Arc::new(DynamoStore::new(&sdk, &config.table)), Arc::new(SystemClock))
        .with_history(config.history_versions)
}

/// The fanout over DynamoDB and the connection management API, as the stream function uses it.
pub async fn fanout(config: &Config) -> Fanout {
    let sdk = livesync_dynamodb::sdk_config().await;
    let url = config.connections_url.as_deref().expect("CONNECTIONS_URL must be the stage's @connections endpoint");
    let store = Arc::new(DynamoStore::new(&sdk, &config.table));
    Fanout::new(store, Arc::new(ApiGatewayPoster::new(&sdk, url))).with_concurrency(config.post_concurrency)
}

/// PostToConnection through `aws-sdk-apigatewaymanagement`; 410 Gone is [`Delivery::Gone`].
#[derive(Clone, Debug)]
pub struct ApiGatewayPoster {
    client: aws_sdk_apigatewaymanagement::Client,
}

impl ApiGatewayPoster {
    /// `endpoint` is the stage's management URL, `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
    /// on AWS, or the local runner's address.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk).endpoint_url(endpoint).build();
        ApiGatewayPoster { client: aws_sdk_apigatewaymanagement::Client::from_conf(config) }
    }
}

#[async_trait]
impl Poster for ApiGatewayPoster {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError> {
        let result = self
            .client
            .post_to_connection()
            .connection_id(connection)
            .data(Blob::new(frame.bytes().to_vec()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Delivery::Sent),
            Err(SdkError::ServiceError(error)) if error.err().is_gone_exception() => Ok(Delivery::Gone),
            Err(error) => Err(PostError { connection: connection.to_owned(), source: Box::new(error) }),
        }
    }
}
