//! The LiveSync local runner: the product's WebSocket API on localhost, on the same handlers.
//!
//! It plays API Gateway's part (upgrade, `$request.body.action` route selection, the events a
//! Lambda receives, the reply of a route response) and DynamoDB Streams' part (the change feed
//! of the embedded store drives the same fanout the stream Lambda runs). Nothing here decides
//! anything about rooms or events: that is `livesync_core`, reached through `livesync_handlers`.
//!
//! * [`gateway`]: route selection and API Gateway event building.
//! * [`connections`]: live sockets, and the local PostToConnection.
//! * `socket`: one client's socket from upgrade to close.
//! * `management`: the connection management API (`/@connections/{id}`), for PostToConnection,
//!   on its own address and checked with SigV4, as API Gateway checks it with IAM.
//! * `serve`: the accept loop: handshake timeout, connection caps.
//! * `http`: the HTTP API beside the WebSocket (publish with a POST, read or long-poll with a
//!   GET, on the HTTP Lambda's handler) and Server-Sent Events.
//! * `page`: the demo page at `/` (a GET that is not an upgrade), on the JS client library.
//! * [`template`]: the schedules of `template.yaml`; `scheduler` fires them on the same job
//!   handler the backup and report Lambdas run.
//! * [`cli`]: the `livesync` command line (serve, token, jobs, backups, restore, report, cron);
//!   [`commands`] runs its job and backup commands, [`remote`] its client commands (connect,
//!   publish, tail) on the `livesync-client` crate.

pub mod cli;
pub mod commands;
pub mod connections;
pub mod gateway;
pub mod http;
mod management;
pub mod mapping;
mod page;
pub mod remote;
mod scheduler;
mod serve;
mod socket;
pub mod template;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use connections::Connections;
use gateway::{Peer, Stage};
use livesync_core::clock::{Clock, SystemClock};
use livesync_core::engine::Chain;
use livesync_core::jobs::{JobName, JobSettings, Jobs};
use livesync_core::limits::{MemoryLimiter, WriteRate};
use livesync_core::protocol::MAX_FRAME_BYTES as API_GATEWAY_FRAME_BYTES;
use livesync_core::reading::RoomWaiters;
use livesync_core::store::{Store, StoreError};
use livesync_core::{Engine, Fanout, layout};
use livesync_embedded_store::backup::LocalBackups;
use livesync_embedded_store::{DataDirLock, EmbeddedStore, Options};
use livesync_handlers::authorizer::{self, Authorizer, Keyring, Origins};
use livesync_handlers::keys;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Messages read from a socket at most. API Gateway's own limit (128 KB) is answered with a
/// `too_large` error by the handler; past this one the runner stops reading and closes the
/// connection with 1009, so a client cannot make it buffer more.
pub const MAX_READ_BYTES: usize = 256 * 1024;

/// API Gateway's frame limit: a larger frame closes the connection with 1009.
pub const MAX_FRAME_BYTES: usize = API_GATEWAY_FRAME_BYTES;

/// Starting size of each socket's read and write buffers. The read buffer is allocated whole
/// for every connection (idle ones included: 3 KB each of 10,000 was 30 MB at 4 KB); a larger
/// frame grows it on demand, and most frames are far smaller.
const SOCKET_BUFFER_BYTES: usize = 1024;

/// How long shutdown waits for sockets to close and run `$disconnect`.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on for clients (use port 0 for any free port). A non-loopback address
    /// needs authentication (--auth-secret or --auth-jwks) or --insecure.
    #[arg(long, env = "LIVESYNC_LISTEN", default_value = "127.0.0.1:3001")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: StoreArgs,
    /// Seconds after which a connection is closed (1001), as API Gateway does after 2 hours.
    #[arg(long, env = "LIVESYNC_MAX_CONNECTION_SECS", default_value_t = 7200)]
    pub max_connection_secs: u64,
    /// Stage name reported in events, as API Gateway's stage.
    #[arg(long, env = "LIVESYNC_STAGE", default_value = "local")]
    pub stage: String,
    /// Versions kept per document, and edits kept per text (template.yaml's HistoryVersions).
    #[arg(long, env = "LIVESYNC_HISTORY_VERSIONS", default_value_t = livesync_core::engine::HISTORY_VERSIONS)]
    pub history_versions: u64,
    /// The most the embedded store may grow to, in MB. Past it (as on a full disk) writes are
    /// refused with `unavailable` while connections, reads and pings go on. Default: the disk.
    #[arg(long, env = "LIVESYNC_MAX_STORE_MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_store_mb: Option<u64>,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// Address of the connection management API (POST/GET/DELETE /@connections/{id}), which
    /// only the fanout and your backends may use: SigV4-signed with the credentials below.
    #[arg(long, env = "LIVESYNC_MANAGEMENT_LISTEN", default_value = "127.0.0.1:3002")]
    pub management_listen: SocketAddr,
    /// The access key id management requests must be signed with (as the AWS SDKs read it).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub management_key_id: Option<String>,
    /// The secret key management requests must be signed with.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub management_secret_key: Option<String>,
    /// The clock the schedules run on: the machine's, unless a test moves one by hand.
    #[arg(skip)]
    pub schedule_clock: ScheduleClock,
}

/// Where data lives: what every command that reads or writes the store shares.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Where data lives: `embedded` (one SQLite file in --data-dir) or `dynamodb` (the table
    /// --table, at the endpoint of AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL, or AWS itself;
    /// its stream is read at the same endpoint unless AWS_ENDPOINT_URL_DYNAMODB_STREAMS says).
    #[arg(long, env = "LIVESYNC_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// DynamoDB table (with --store dynamodb).
    #[arg(long, env = "LIVESYNC_TABLE", default_value = livesync_dynamodb::DEFAULT_TABLE)]
    pub table: String,
    /// Create the DynamoDB table, as template.yaml defines it, if it is missing.
    #[arg(long, env = "LIVESYNC_CREATE_TABLES")]
    pub create_tables: bool,
    /// Directory of the embedded store; created if missing, kept across restarts.
    #[arg(long, env = "LIVESYNC_DATA_DIR", default_value = "./.livesync")]
    pub data_dir: PathBuf,
    /// Days events and their idempotency records are kept (template.yaml's EventRetentionDays);
    /// a client asking for older ones is told `expired`. At least 1.
    #[arg(long, env = "LIVESYNC_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub retention_days: u64,
}

impl StoreArgs {
    /// How long events are kept (`--retention-days`).
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days * 86_400)
    }

    /// Where the embedded store's backups go: `--backup-dir`, or the data directory's `backups`.
    pub fn backup_dir(&self, jobs: &JobsArgs) -> PathBuf {
        jobs.backup_dir.clone().unwrap_or_else(|| self.data_dir.join(livesync_embedded_store::backup::BACKUP_FOLDER))
    }
}

/// The scheduled jobs: where their schedules are read, and their settings.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    /// The SAM template whose schedule events say when jobs run (as they run on AWS). Without
    /// the file no job runs on a schedule; `livesync jobs run` still runs them.
    #[arg(long, env = "LIVESYNC_TEMPLATE", default_value = "template.yaml")]
    pub template: PathBuf,
    /// Where the embedded store's backups go (default: the data directory's `backups` folder).
    #[arg(long, env = "LIVESYNC_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Backups older than this many days are deleted after each backup (template.yaml's
    /// BackupRetentionDays).
    #[arg(long, env = "LIVESYNC_BACKUP_RETENTION_DAYS", default_value_t = 35, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub backup_retention_days: u64,
    /// SKUs below this level are on the end-of-day report's restock list (LowStockThreshold).
    #[arg(long, env = "LIVESYNC_LOW_STOCK_THRESHOLD", default_value_t = 5)]
    pub low_stock_threshold: i64,
    /// Times a failed scheduled run is tried again, a minute and then two apart (as Lambda
    /// retries an asynchronous invocation twice).
    #[arg(long, env = "LIVESYNC_JOB_RETRIES", default_value_t = 2)]
    pub job_retries: u32,
}

impl Default for JobsArgs {
    fn default() -> Self {
        JobsArgs {
            template: PathBuf::from("template.yaml"),
            backup_dir: None,
            backup_retention_days: 35,
            low_stock_threshold: 5,
            job_retries: 2,
        }
    }
}

impl JobsArgs {
    pub fn settings(&self) -> JobSettings {
        JobSettings {
            backup_retention: Duration::from_secs(self.backup_retention_days.max(1) * 24 * 3600),
            low_stock_threshold: self.low_stock_threshold,
            ..JobSettings::default()
        }
    }
}

/// The clock schedules fire on; tests give a [`livesync_core::clock::ManualClock`].
#[derive(Clone, Default)]
pub struct ScheduleClock(pub Option<Arc<dyn Clock>>);

impl std::fmt::Debug for ScheduleClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ScheduleClock(given)" } else { "ScheduleClock(system)" })
    }
}

impl ScheduleClock {
    fn clock(&self) -> Arc<dyn Clock> {
        self.0.clone().unwrap_or_else(|| Arc::new(SystemClock))
    }
}

/// Who may connect: tokens on `$connect`, as the deployed stack's authorizer requires them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthConfig {
    /// Require HS256 tokens signed with this shared secret (at least 32 bytes).
    #[arg(long, env = "LIVESYNC_AUTH_SECRET", hide_env_values = true, conflicts_with = "auth_jwks")]
    pub auth_secret: Option<String>,
    /// Require RS256/ES256 tokens checked with a JWKS document or a PEM public key: an http(s)
    /// URL or a file.
    #[arg(long, env = "LIVESYNC_AUTH_JWKS")]
    pub auth_jwks: Option<String>,
    /// Tokens must carry this `iss`.
    #[arg(long, env = "LIVESYNC_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Tokens must carry this `aud`.
    #[arg(long, env = "LIVESYNC_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Browser origins allowed to connect, comma-separated (`*` for any). Default: the runner's
    /// own address. Clients that send no Origin (backends, CLIs) are not affected.
    #[arg(long, env = "LIVESYNC_ALLOW_ORIGINS")]
    pub allow_origins: Option<String>,
    /// Listen on a non-loopback address without authentication.
    #[arg(long)]
    pub insecure: bool,
}

/// What one client may take: the limits API Gateway enforces, and LiveSync's own.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Writes a connection may make per second, on average (a token bucket; `rate_limited` past it).
    #[arg(long, env = "LIVESYNC_WRITE_RATE", default_value_t = WriteRate::DEFAULT.per_second)]
    pub write_rate: f64,
    /// Writes a connection may make at once, after a quiet spell.
    #[arg(long, env = "LIVESYNC_WRITE_BURST", default_value_t = WriteRate::DEFAULT.burst)]
    pub write_burst: u32,
    /// Bytes queued for one connection before it is closed as too slow (1008).
    #[arg(long, env = "LIVESYNC_SEND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub send_queue_bytes: usize,
    /// Bytes queued for all connections together past which connections that are behind are
    /// closed as too slow.
    #[arg(long, env = "LIVESYNC_SEND_BUDGET_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub send_budget_bytes: usize,
    /// Seconds without a data message either way after which a connection is closed (1001), as
    /// API Gateway does after 10 minutes.
    #[arg(long, env = "LIVESYNC_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    pub idle_timeout_secs: u64,
    /// Seconds a client has to complete the HTTP upgrade before its socket is closed.
    #[arg(long, env = "LIVESYNC_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Connections open at once (sockets in their handshake included); more are refused.
    #[arg(long, env = "LIVESYNC_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// Connections from one IP address in their handshake at once; more are refused.
    #[arg(long, env = "LIVESYNC_MAX_HANDSHAKES_PER_IP", default_value_t = 32)]
    pub max_handshakes_per_ip: usize,
    /// Seconds of quiet after which an event stream (Server-Sent Events) gets a comment line,
    /// so that proxies do not close it as idle.
    #[arg(long, env = "LIVESYNC_STREAM_KEEPALIVE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_keepalive_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            write_rate: WriteRate::DEFAULT.per_second,
            write_burst: WriteRate::DEFAULT.burst,
            send_queue_bytes: 4 * 1024 * 1024,
            send_budget_bytes: 256 * 1024 * 1024,
            idle_timeout_secs: 600,
            handshake_timeout_secs: 10,
            max_connections: 20_000,
            max_handshakes_per_ip: 32,
            stream_keepalive_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Embedded,
    Dynamodb,
}

impl Config {
    /// How long events are kept (`--retention-days`).
    pub fn retention(&self) -> Duration {
        self.data.retention()
    }

    /// The defaults, with the given data directory and any free ports on loopback.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: StoreArgs {
                data_dir: data_dir.into(),
                store: StoreKind::Embedded,
                table: livesync_dynamodb::DEFAULT_TABLE.to_owned(),
                create_tables: false,
                retention_days: 7,
            },
            max_connection_secs: 7200,
            stage: "local".to_owned(),
            history_versions: livesync_core::engine::HISTORY_VERSIONS,
            max_store_mb: None,
            auth: AuthConfig::default(),
            // Tests write far faster than a person: a bucket no test meets unless it asks to.
            limits: Limits { write_rate: 1_000_000.0, write_burst: 1_000_000, ..Limits::default() },
            management_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            management_key_id: Some("testing".to_owned()),
            management_secret_key: Some("testing".to_owned()),
            // No schedules unless a test asks for them with a template of its own.
            jobs: JobsArgs { template: PathBuf::new(), ..JobsArgs::default() },
            schedule_clock: ScheduleClock::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot open the store ({place})")]
    Store { place: String, source: StoreError },
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(
        "refusing to listen on {0} without authentication: anyone who can reach it could read and write every room. \
         Give --auth-secret (or --auth-jwks), listen on 127.0.0.1, or pass --insecure if you mean it"
    )]
    Insecure(SocketAddr),
    #[error("cannot set up authentication: {0}")]
    Auth(String),
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
    #[error("the runner's task crashed")]
    Crashed(#[source] tokio::task::JoinError),
    #[error("cannot read the schedules")]
    Template(#[source] template::TemplateError),
}

/// What every socket shares.
pub(crate) struct App {
    pub(crate) engine: Engine,
    pub(crate) authorizer: Keyring,
    pub(crate) connections: Arc<Connections>,
    /// HTTP long polls and event streams waiting for their rooms, woken by the fanout.
    pub(crate) readers: RoomWaiters,
    pub(crate) stage: Stage,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    pub(crate) max_connection: Duration,
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A running runner. Dropping it does not stop it; call [`Runner::shutdown`].
pub struct Runner {
    local_addr: SocketAddr,
    management_addr: SocketAddr,
    open: bool,
    connections: Arc<Connections>,
    scheduled: Vec<(JobName, String)>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RunnerError>>,
}

impl Runner {
    pub async fn start(config: Config) -> Result<Runner, RunnerError> {
        let authorizer = authorizer(&config.auth).await?;
        if authorizer.is_open() && !config.listen.ip().is_loopback() && !config.auth.insecure {
            return Err(RunnerError::Insecure(config.listen));
        }
        // One runner per data directory: a second would serve the same file beside this one and
        // forget this one's subscribers as gone.
        let lock = match config.data.store {
            StoreKind::Embedded => Some(
                DataDirLock::acquire(&config.data.data_dir)
                    .map_err(|source| RunnerError::Store { place: store_place(&config.data), source })?,
            ),
            StoreKind::Dynamodb => None,
        };
        let store_error = |source| RunnerError::Store { place: store_place(&config.data), source };
        // Under the lock, the embedded store's connections are all of a process that is gone.
        let (store, previous_connections) = match config.data.store {
            StoreKind::Embedded => {
                let options =
                    Options { max_bytes: config.max_store_mb.map(|mb| mb * 1024 * 1024), ..Options::default() };
                let embedded = EmbeddedStore::open(&config.data.data_dir, options).map_err(store_error)?;
                let previous = embedded.partitions(layout::CONNECTION_PARTITIONS).await.map_err(store_error)?;
                let previous: Vec<String> =
                    previous.iter().filter_map(|pk| layout::connection_of(pk)).map(str::to_owned).collect();
                (Arc::new(embedded) as Arc<dyn Store>, previous)
            }
            StoreKind::Dynamodb => (open_store(&config.data, Options::default()).await?, Vec::new()),
        };
        let schedules = if config.jobs.template.as_os_str().is_empty() {
            Vec::new()
        } else if config.jobs.template.exists() {
            template::read(&config.jobs.template, &BTreeMap::new()).map_err(RunnerError::Template)?
        } else {
            tracing::warn!(template = %config.jobs.template.display(), "no template: no job runs on a schedule (--template names one)");
            Vec::new()
        };
        let feed = store.change_feed().await.map_err(store_error)?;
        let bind = |addr: SocketAddr| async move {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| RunnerError::Listen { addr, source })?;
            let local = listener.local_addr().map_err(|source| RunnerError::Listen { addr, source })?;
            Ok::<_, RunnerError>((listener, local))
        };
        let (listener, local_addr) = bind(config.listen).await?;
        let (management_listener, management_addr) = bind(config.management_listen).await?;
        let origins = match &config.auth.allow_origins {
            Some(list) => Origins::parse(list),
            None => Origins::Only(own_origins(local_addr)),
        };
        let authorizer = authorizer.with_origins(origins.clone());
        let open = authorizer.is_open();
        // JWKS keys follow the provider's rotation; a secret or a PEM key is fixed.
        let authorizer = match &config.auth.auth_jwks {
            Some(source) if config.auth.auth_secret.is_none() => Keyring::refreshed_from(authorizer, source.clone()),
            _ => Keyring::fixed(authorizer),
        };

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let connections = Arc::new(Connections::new(config.limits.send_queue_bytes, config.limits.send_budget_bytes));
        let (stop, stopping) = watch::channel(false);
        let rate = WriteRate { per_second: config.limits.write_rate, burst: config.limits.write_burst };
        let readers = RoomWaiters::default();
        let app = Arc::new(App {
            // Each connection lives on one socket of this process: its bucket can live here too.
            engine: Engine::new(store.clone(), clock.clone())
                .with_history(config.history_versions)
                .with_retention(config.retention())
                .with_limiter(Arc::new(MemoryLimiter::new(rate))),
            authorizer,
            connections: connections.clone(),
            readers: readers.clone(),
            stage: Stage {
                api_id: "local".to_owned(),
                stage: config.stage.clone(),
                domain_name: local_addr.to_string(),
            },
            clock,
            limits: config.limits.clone(),
            max_connection: Duration::from_secs(config.max_connection_secs),
            stopping: stopping.clone(),
        });
        // Their subscriptions would be posted to, found gone and forgotten one by one; their
        // members would stay in presence until then. They are forgotten now instead.
        if !previous_connections.is_empty() {
            let mut forgotten = 0;
            for connection in &previous_connections {
                match app.engine.disconnect(connection).await {
                    Ok(_) => forgotten += 1,
                    Err(error) => {
                        tracing::warn!(connection, error = %Chain(&error), "could not forget a previous connection")
                    }
                }
            }
            tracing::info!(forgotten, "connections of the previous process forgotten");
        }
        let schedule_clock = config.schedule_clock.clock();
        let jobs = Arc::new(jobs(&config.data, &config.jobs, store.clone(), schedule_clock.clone()).await);
        let scheduled: Vec<(JobName, String)> =
            schedules.iter().filter(|s| s.enabled).map(|s| (s.job, s.schedule.to_string())).collect();
        let scheduler_task = tokio::spawn(
            scheduler::Scheduler::new(schedules, jobs, schedule_clock, config.jobs.job_retries).run(stopping.clone()),
        );
        let fanout =
            Fanout::new(store, connections.clone()).with_retention(config.retention()).counting().waking(readers);
        let open_sockets = connections.clone();
        let fanout_task = tokio::spawn(mapping::run(feed, fanout, stopping.clone()));

        let credentials =
            management::Credentials::new(config.management_key_id.clone(), config.management_secret_key.clone());
        let management_task = tokio::spawn(serve::run(
            management_listener,
            management::router(app.clone(), credentials),
            serve::Admission::management(config.limits.handshake_timeout_secs),
            stopping.clone(),
        ));
        let rooms = Router::new()
            .route("/rooms/{room}/events", any(http::events))
            .route("/rooms/{room}/stream", get(http::stream))
            .layer(http::cors(origins));
        let router = Router::new()
            .route("/", get(upgrade))
            .route("/{file}", get(page::asset))
            .merge(rooms)
            .with_state(app.clone());
        let admission = serve::Admission::new(&config.limits, connections.clone());
        let client_stopping = stopping.clone();
        let task = tokio::spawn(async move {
            serve::run(listener, router, admission, client_stopping).await;
            // Upgraded sockets outlive the accept loop: they close on the same signal and run
            // `$disconnect`; wait for them so their store writes finish before we return.
            if tokio::time::timeout(CLOSE_GRACE, connections.closed()).await.is_err() {
                tracing::warn!(open = connections.len(), "sockets still open after the grace period");
            }
            let _ = management_task.await;
            let _ = fanout_task.await;
            let _ = scheduler_task.await;
            drop(lock);
            Ok(())
        });
        tracing::info!(%local_addr, %management_addr, open, "listening");
        Ok(Runner { local_addr, management_addr, open, connections: open_sockets, scheduled, stop, task })
    }

    /// The jobs on a schedule, and their schedules.
    pub fn scheduled_jobs(&self) -> &[(JobName, String)] {
        &self.scheduled
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the connection management API listens.
    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    /// Whether anyone may connect (no token required).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Sockets open right now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// The connection ids of the sockets open right now (clients are never told theirs).
    pub fn connection_ids(&self) -> Vec<String> {
        self.connections.ids()
    }

    /// The WebSocket URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Stops accepting, closes every socket (1001), runs their `$disconnect`, and returns once
    /// done. Every acknowledged write is already durable; nothing is lost by stopping.
    pub async fn shutdown(self) -> Result<(), RunnerError> {
        let _ = self.stop.send(true);
        self.task.await.map_err(RunnerError::Crashed)?
    }
}

/// The runner's own page, under each name of its address: the default allowed origins.
fn own_origins(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    vec![format!("http://{addr}"), format!("http://localhost:{port}"), format!("http://127.0.0.1:{port}")]
}

/// The authorizer the configuration asks for: open, HS256, or public keys (JWKS or PEM).
async fn authorizer(config: &AuthConfig) -> Result<Authorizer, RunnerError> {
    let auth = |e: &dyn std::fmt::Display| RunnerError::Auth(e.to_string());
    let authorizer = match (&config.auth_secret, &config.auth_jwks) {
        (Some(secret), _) => Authorizer::hs256(secret.as_bytes()).map_err(|e| auth(&e))?,
        (None, Some(source)) => {
            let document = keys::load(source).await.map_err(|e| auth(&e))?;
            Authorizer::public_keys(&document).map_err(|e| auth(&Chain(&e)))?
        }
        (None, None) => return Ok(Authorizer::open()),
    };
    Ok(authorizer.with_issuer(config.auth_issuer.clone()).with_audience(config.auth_audience.clone()))
}

async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // A browser opening the runner's address: the demo page.
        Err(_) if !headers.contains_key(header::UPGRADE) => return page::index(),
        Err(rejection) => return rejection.into_response(),
    };
    let now = app.clock.now_ms() as i64;
    let connection_id = gateway::new_id();
    // API Gateway runs the `$connect` authorizer first: a refusal answers the upgrade (401, 403)
    // and nothing is stored.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let token = query.get(authorizer::TOKEN_PARAMETER).map(String::as_str);
    let caller = match app.authorizer.authorize(token, origin, &connection_id).await {
        Ok(caller) => caller,
        Err(refusal) => {
            tracing::info!(source_ip = %remote.ip(), reason = refusal.reason(), "$connect refused");
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return (status, Json(serde_json::json!({ "message": refusal.to_string() }))).into_response();
        }
    };
    let peer = Peer {
        connection_id,
        connected_at_ms: now,
        source_ip: gateway::source_ip(&remote),
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
        authorizer: caller.to_context(),
    };
    // As on API Gateway, `$connect` runs before the upgrade completes and can refuse it.
    let event = app.stage.connect_event(&peer, &headers, now);
    match livesync_handlers::connect(event) {
        Ok(response) if (200..300).contains(&response.status_code) => {}
        Ok(response) => {
            return StatusCode::from_u16(response.status_code as u16).unwrap_or(StatusCode::FORBIDDEN).into_response();
        }
        Err(error) => {
            tracing::error!(connection = peer.connection_id, error = %Chain(&error), "$connect failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    let failed_app = app.clone();
    let failed_peer = peer.clone();
    // API Gateway's limits: a frame over 32 KB closes the connection (1009); a message (of
    // several frames) up to 128 KB is taken, and a larger one is answered `too_large` by the
    // handler, up to MAX_READ_BYTES, past which the connection closes (1009) before it is read.
    ws.max_message_size(MAX_READ_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Small starting buffers: most frames are small and an idle connection should cost
        // little. Both grow on demand for a large frame.
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .on_failed_upgrade(move |error| {
            tracing::info!(connection = failed_peer.connection_id, %error, "upgrade failed");
            tokio::spawn(async move {
                let _ = failed_app.engine.disconnect(&failed_peer.connection_id).await;
            });
        })
        .on_upgrade(move |socket| socket::serve(app, socket, peer))
}

/// Resolves once shutdown has been asked for (or the runner is gone).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = stopping.wait_for(|stop| *stop).await;
}

pub fn store_place(config: &StoreArgs) -> String {
    match config.store {
        StoreKind::Embedded => format!("embedded, in {}", config.data_dir.display()),
        StoreKind::Dynamodb => format!("DynamoDB table {}", config.table),
    }
}

/// The jobs on this store: its backups (files for the embedded store, on-demand backups for
/// DynamoDB), and reports kept in the store and pushed to the `reports` room (publishing them to
/// EventBridge is the deployed report function's part).
pub async fn jobs(data: &StoreArgs, settings: &JobsArgs, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Jobs {
    let jobs = Jobs::new(store, clock, JobSettings { event_retention: data.retention(), ..settings.settings() });
    match data.store {
        StoreKind::Embedded => {
            jobs.with_backups(Arc::new(LocalBackups::new(&data.data_dir, data.backup_dir(settings))))
        }
        StoreKind::Dynamodb => {
            let sdk = livesync_dynamodb::sdk_config().await;
            jobs.with_backups(Arc::new(livesync_dynamodb::DynamoBackups::new(&sdk, &data.table)))
        }
    }
}

/// Opens the store. `options` matter to the embedded store only.
pub async fn open_store(config: &StoreArgs, options: Options) -> Result<Arc<dyn Store>, RunnerError> {
    let error = |source| RunnerError::Store { place: store_place(config), source };
    match config.store {
        StoreKind::Embedded => Ok(Arc::new(EmbeddedStore::open(&config.data_dir, options).map_err(error)?)),
        StoreKind::Dynamodb => {
            let sdk = livesync_dynamodb::sdk_config().await;
            if config.create_tables {
                let client = aws_sdk_dynamodb::Client::new(&sdk);
                let outcome = livesync_dynamodb::create_table(&client, &config.table).await.map_err(error)?;
                tracing::info!(table = config.table, ?outcome, "table");
            }
            Ok(Arc::new(livesync_dynamodb::DynamoStore::new(&sdk, &config.table)))
        }
    }
}
