//! What LiveSync's Lambda functions share: their configuration (read once, at cold start, from
//! the environment the template sets) and the [`Poster`] that reaches connections through API
//! Gateway's connection management API.
//!
//! The `authorizer` function's keys come from Secrets Manager (an HS256 secret) or a JWKS URL,
//! read once at cold start.
//!
//! Each binary in `src/bin` is a thin `lambda_runtime` main: it builds its clients once and hands
//! every event to the matching handler of `livesync_handlers`.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use livesync_core::clock::{Clock, SystemClock};
use livesync_core::jobs::report::{DailyReport, ReportPublisher};
use livesync_core::jobs::{JobError, JobName, JobSettings, Jobs, RunOutcome};
use livesync_core::limits::{StoreLimiter, WriteRate};
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use livesync_core::{Engine, Fanout};
use livesync_dynamodb::{DynamoBackups, DynamoStore};
use livesync_handlers::authorizer::{Authorizer, Keyring, Origins};
use livesync_handlers::jobs::metrics_line;
use std::sync::Arc;
use std::time::Duration;

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
    /// `WRITE_RATE`, `WRITE_BURST`: each connection's write bucket.
    pub write_rate: WriteRate,
    /// `EVENT_RETENTION_DAYS`: how long events and their idempotency records are kept (7).
    pub retention: std::time::Duration,
}

/// The authorizer's configuration, from its environment.
pub struct AuthConfig {
    /// `AUTH_SECRET_ARN`: a Secrets Manager secret holding the HS256 secret.
    pub secret_arn: Option<String>,
    /// `AUTH_JWKS_URL`: the identity provider's JWKS document (RS256/ES256 tokens).
    pub jwks_url: Option<String>,
    /// `AUTH_ISSUER`, `AUTH_AUDIENCE`: claims tokens must carry, if set.
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `ALLOWED_ORIGINS`: browser origins allowed to connect, comma-separated (`*`: any).
    pub allowed_origins: String,
}

impl AuthConfig {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        AuthConfig {
            secret_arn: var("AUTH_SECRET_ARN"),
            jwks_url: var("AUTH_JWKS_URL"),
            issuer: var("AUTH_ISSUER"),
            audience: var("AUTH_AUDIENCE"),
            allowed_origins: var("ALLOWED_ORIGINS").unwrap_or_else(|| "*".to_owned()),
        }
    }
}

/// The `$connect` authorizer, its keys fetched at cold start (JWKS keys again when a token
/// names one not seen yet: a provider's rotation). A deployed stack always requires tokens:
/// without a secret or a JWKS URL the cold start fails, and with it every connection (fail
/// closed).
pub async fn authorizer(config: &AuthConfig) -> Result<Keyring, Box<dyn std::error::Error + Send + Sync>> {
    let settings = |authorizer: Authorizer| {
        authorizer
            .with_origins(Origins::parse(&config.allowed_origins))
            .with_issuer(config.issuer.clone())
            .with_audience(config.audience.clone())
    };
    Ok(match (&config.secret_arn, &config.jwks_url) {
        (Some(arn), _) => {
            let sdk = livesync_dynamodb::sdk_config().await;
            let secret = aws_sdk_secretsmanager::Client::new(&sdk).get_secret_value().secret_id(arn).send().await?;
            let secret = secret.secret_string().ok_or("the auth secret holds no SecretString")?;
            Keyring::fixed(settings(Authorizer::hs256(secret.trim().as_bytes())?))
        }
        (None, Some(url)) => {
            let keys = Authorizer::public_keys(&livesync_handlers::keys::load(url).await?)?;
            Keyring::refreshed_from(settings(keys), url.clone())
        }
        (None, None) => return Err("set AUTH_SECRET_ARN or AUTH_JWKS_URL: the deployed stack never runs open".into()),
    })
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
            write_rate: WriteRate {
                per_second: std::env::var("WRITE_RATE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(WriteRate::DEFAULT.per_second),
                burst: std::env::var("WRITE_BURST")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(WriteRate::DEFAULT.burst),
            },
            retention: std::env::var("EVENT_RETENTION_DAYS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(livesync_core::ordering::DEFAULT_RETENTION, |days| {
                    std::time::Duration::from_secs(days * 86_400)
                }),
        }
    }
}

/// The engine over DynamoDB, as the WebSocket route functions use it. Each connection's write
/// bucket lives in its item: API Gateway may run one connection's frames on several instances.
pub async fn engine(config: &Config) -> Engine {
    let sdk = livesync_dynamodb::sdk_config().await;
    let store = Arc::new(DynamoStore::new(&sdk, &config.table));
    Engine::new(store.clone(), Arc::new(SystemClock))
        .with_history(config.history_versions)
        .with_retention(config.retention)
        .with_limiter(Arc::new(StoreLimiter::new(store, config.write_rate)))
}

/// The fanout over DynamoDB and the connection management API, as the stream function uses it.
pub async fn fanout(config: &Config) -> Fanout {
    let sdk = livesync_dynamodb::sdk_config().await;
    let url = config.connections_url.as_deref().expect("CONNECTIONS_URL must be the stage's @connections endpoint");
    let store = Arc::new(DynamoStore::new(&sdk, &config.table));
    Fanout::new(store, Arc::new(ApiGatewayPoster::new(&sdk, url)))
        .with_concurrency(config.post_concurrency)
        .with_retention(config.retention)
        .counting()
}

/// The jobs' settings, from the environment: `BACKUP_RETENTION_DAYS`, `LOW_STOCK_THRESHOLD`.
pub fn job_settings() -> JobSettings {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<i64>().ok());
    let defaults = JobSettings::default();
    JobSettings {
        backup_retention: var("BACKUP_RETENTION_DAYS")
            .map_or(defaults.backup_retention, |days| Duration::from_secs(days.max(1) as u64 * 24 * 3600)),
        low_stock_threshold: var("LOW_STOCK_THRESHOLD").unwrap_or(defaults.low_stock_threshold),
        ..defaults
    }
}

/// The jobs over DynamoDB: on-demand table backups, and reports published to the EventBridge
/// bus `REPORT_BUS_NAME` (when set).
pub async fn jobs(config: &Config) -> Jobs {
    let sdk = livesync_dynamodb::sdk_config().await;
    let store = Arc::new(DynamoStore::new(&sdk, &config.table));
    let settings = JobSettings { event_retention: config.retention, ..job_settings() };
    let jobs = Jobs::new(store, Arc::new(SystemClock), settings)
        .with_backups(Arc::new(DynamoBackups::new(&sdk, &config.table)));
    match std::env::var("REPORT_BUS_NAME").ok().filter(|bus| !bus.is_empty()) {
        Some(bus) => jobs.with_publisher(Arc::new(EventBridgePublisher::new(&sdk, bus))),
        None => jobs,
    }
}

/// Runs one scheduled invocation and writes its metrics line (CloudWatch embedded metric format).
pub async fn run_scheduled(
    jobs: &Jobs,
    job: JobName,
    payload: serde_json::Value,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let outcome = livesync_handlers::jobs::scheduled(jobs, job, payload).await;
    let now = SystemClock.now_ms();
    match &outcome {
        Ok(RunOutcome::Ran(record)) => println!("{}", metrics_line(job, Some(record), false, now)),
        Err(_) => println!("{}", metrics_line(job, None, true, now)),
        Ok(_) => {}
    }
    Ok(livesync_handlers::jobs::answer(&outcome?))
}

/// The source and detail-type of the events a report is published as: what an EventBridge rule
/// matches to receive reports.
pub const REPORT_SOURCE: &str = "livesync";
pub const REPORT_DETAIL_TYPE: &str = "LiveSync Daily Report";

/// Publishes reports with `PutEvents` on one bus.
#[derive(Clone, Debug)]
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(sdk: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        EventBridgePublisher { client: aws_sdk_eventbridge::Client::new(sdk), bus: bus.into() }
    }
}

#[async_trait]
impl ReportPublisher for EventBridgePublisher {
    async fn publish(&self, report: &DailyReport) -> Result<(), JobError> {
        let detail = serde_json::to_string(report).map_err(|e| JobError::failed("the report does not serialise", e))?;
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(REPORT_SOURCE)
            .detail_type(REPORT_DETAIL_TYPE)
            .detail(detail)
            .build();
        let answer = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| JobError::failed(format!("PutEvents to bus {} failed", self.bus), e))?;
        if answer.failed_entry_count() > 0 {
            let why = answer
                .entries()
                .iter()
                .filter_map(|e| e.error_message().or(e.error_code()))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(JobError::failed(format!("EventBridge refused the report event on bus {}", self.bus), why));
        }
        Ok(())
    }
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

    async fn delete_connection(&self, connection: &str) -> Result<(), PostError> {
        match self.client.delete_connection().connection_id(connection).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error)) if error.err().is_gone_exception() => Ok(()),
            Err(error) => Err(PostError { connection: connection.to_owned(), source: Box::new(error) }),
        }
    }
}
