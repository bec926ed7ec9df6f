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
//! * `management`: the connection management API (`/@connections/{id}`), for PostToConnection.

pub mod connections;
pub mod gateway;
mod management;
mod socket;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use connections::Connections;
use gateway::{Peer, Stage};
use livesync_core::clock::{Clock, SystemClock};
use livesync_core::engine::Chain;
use livesync_core::store::{ChangeFeed, Store, StoreError};
use livesync_core::{Engine, Fanout};
use livesync_embedded_store::{EmbeddedStore, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Frames read from a socket at most. API Gateway's own limit (128 KB) is answered with a
/// `too_large` error by the handler; this larger one protects the runner, and a frame over it
/// closes the connection with 1009, as API Gateway does for frames it cannot take.
pub const MAX_READ_BYTES: usize = 1024 * 1024;

/// Starting size of each socket's read and write buffers.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

/// Change-feed records handed to one fanout call at most (an event source mapping's batch size).
pub const FANOUT_BATCH: usize = 100;

/// How long shutdown waits for sockets to close and run `$disconnect`.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "livesync", version, about = "LiveSync local runner: the LiveSync WebSocket API on localhost")]
pub struct Config {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "LIVESYNC_LISTEN", default_value = "127.0.0.1:3001")]
    pub listen: SocketAddr,
    /// Where data lives: `embedded` (one SQLite file in --data-dir) or `dynamodb` (the table
    /// --table, at the endpoint of AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL, or AWS itself).
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
    /// Frames queued for one connection before it is closed as too slow.
    #[arg(long, env = "LIVESYNC_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,
    /// Seconds after which a connection is closed (1001), as API Gateway does after 2 hours.
    #[arg(long, env = "LIVESYNC_MAX_CONNECTION_SECS", default_value_t = 7200)]
    pub max_connection_secs: u64,
    /// Stage name reported in events, as API Gateway's stage.
    #[arg(long, env = "LIVESYNC_STAGE", default_value = "local")]
    pub stage: String,
    /// Versions kept per document, and edits kept per text (template.yaml's HistoryVersions).
    #[arg(long, env = "LIVESYNC_HISTORY_VERSIONS", default_value_t = livesync_core::engine::HISTORY_VERSIONS)]
    pub history_versions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Embedded,
    Dynamodb,
}

impl Config {
    /// The defaults, with the given data directory and any free port on loopback.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            send_queue: 1024,
            max_connection_secs: 7200,
            store: StoreKind::Embedded,
            table: livesync_dynamodb::DEFAULT_TABLE.to_owned(),
            create_tables: false,
            stage: "local".to_owned(),
            history_versions: livesync_core::engine::HISTORY_VERSIONS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot open the store ({place})")]
    Store { place: String, source: StoreError },
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
    #[error("the runner's task crashed")]
    Crashed(#[source] tokio::task::JoinError),
}

/// What every socket shares.
pub(crate) struct App {
    pub(crate) engine: Engine,
    pub(crate) connections: Arc<Connections>,
    pub(crate) stage: Stage,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) send_queue: usize,
    pub(crate) max_connection: Duration,
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A running runner. Dropping it does not stop it; call [`Runner::shutdown`].
pub struct Runner {
    local_addr: SocketAddr,
    connections: Arc<Connections>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RunnerError>>,
}

impl Runner {
    pub async fn start(config: Config) -> Result<Runner, RunnerError> {
        let store = open_store(&config).await?;
        let store_error = |source| RunnerError::Store { place: store_place(&config), source };
        let feed = store.change_feed().await.map_err(store_error)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| RunnerError::Listen { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| RunnerError::Listen { addr: config.listen, source })?;

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let connections = Arc::new(Connections::default());
        let (stop, stopping) = watch::channel(false);
        let app = Arc::new(App {
            engine: Engine::new(store.clone(), clock.clone()).with_history(config.history_versions),
            connections: connections.clone(),
            stage: Stage {
                api_id: "local".to_owned(),
                stage: config.stage.clone(),
                domain_name: local_addr.to_string(),
            },
            clock,
            send_queue: config.send_queue,
            max_connection: Duration::from_secs(config.max_connection_secs),
            stopping: stopping.clone(),
        });
        let fanout = Fanout::new(store, connections.clone());
        let open_sockets = connections.clone();
        let fanout_task = tokio::spawn(run_fanout(feed, fanout, stopping.clone()));

        let connection_api = axum::routing::post(management::post).get(management::get).delete(management::delete);
        let router = Router::new()
            .route("/", get(upgrade))
            .route("/@connections/{connection}", connection_api.clone())
            .route("/{stage}/@connections/{connection}", connection_api)
            .with_state(app);
        let mut server_stopping = stopping.clone();
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stopped(&mut server_stopping).await });
        let task = tokio::spawn(async move {
            server.await.map_err(RunnerError::Serve)?;
            // Upgraded sockets outlive the HTTP server: they close on the same signal and run
            // `$disconnect`; wait for them so their store writes finish before we return.
            if tokio::time::timeout(CLOSE_GRACE, connections.closed()).await.is_err() {
                tracing::warn!(open = connections.len(), "sockets still open after the grace period");
            }
            let _ = fanout_task.await;
            Ok(())
        });
        tracing::info!(%local_addr, "listening");
        Ok(Runner { local_addr, connections: open_sockets, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sockets open right now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
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

async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let now = app.clock.now_ms() as i64;
    let peer = Peer {
        connection_id: gateway::new_id(),
        connected_at_ms: now,
        source_ip: gateway::source_ip(&remote),
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
    };
    // As on API Gateway, `$connect` runs before the upgrade completes and can refuse it.
    let event = app.stage.connect_event(&peer, &headers, now);
    match livesync_handlers::connect(&app.engine, event).await {
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
    ws.max_message_size(MAX_READ_BYTES)
        .max_frame_size(MAX_READ_BYTES)
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

/// The local event source mapping: change feed -> fanout, batch after batch, in order.
async fn run_fanout(mut feed: Box<dyn ChangeFeed>, fanout: Fanout, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            batch = feed.next_batch(FANOUT_BATCH) => match batch {
                Ok(changes) => {
                    if let Err(error) = fanout.deliver(&changes).await {
                        tracing::error!(error = %Chain(&error), "fanout failed; subscribers recover with sync");
                    }
                }
                Err(error) => {
                    tracing::error!(error = %Chain(&error), "change feed failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            () = stopped(&mut stopping) => return,
        }
    }
}

/// Resolves once shutdown has been asked for (or the runner is gone).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = stopping.wait_for(|stop| *stop).await;
}

fn store_place(config: &Config) -> String {
    match config.store {
        StoreKind::Embedded => format!("embedded, in {}", config.data_dir.display()),
        StoreKind::Dynamodb => format!("DynamoDB table {}", config.table),
    }
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, RunnerError> {
    let error = |source| RunnerError::Store { place: store_place(config), source };
    match config.store {
        StoreKind::Embedded => Ok(Arc::new(EmbeddedStore::open(&config.data_dir, Options::default()).map_err(error)?)),
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
