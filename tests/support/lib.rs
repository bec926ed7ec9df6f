//! Test support: a real runner on a free port with its own data directory, and a WebSocket
//! client that speaks the protocol the way an application would.

pub mod http;
pub mod metered;

use livesync_client::{Connection, Message};
use livesync_runner::{Config, Runner};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// API Gateway's frame limit.
pub const FRAME_BYTES: usize = 32 * 1024;

/// A frame that has not come after this long is not coming: the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A runner with its own temporary data directory, which outlives restarts.
pub struct Local {
    runner: Option<Runner>,
    dir: tempfile::TempDir,
}

impl Local {
    pub async fn start() -> Local {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Local {
        log_to_test_output();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        adjust(&mut config);
        let runner = Runner::start(config).await.unwrap();
        Local { runner: Some(runner), dir }
    }

    pub fn url(&self) -> String {
        self.runner.as_ref().expect("running").url()
    }

    /// The endpoint of the runner's connection management API (its own address, SigV4 with
    /// the `testing` credentials of [`livesync_dynamodb::emulator_config`]).
    pub fn management_url(&self) -> String {
        format!("http://{}", self.runner.as_ref().expect("running").management_addr())
    }

    /// The runner's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The runner's client address over HTTP.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.runner.as_ref().expect("running").local_addr())
    }

    /// A new client and its connection id, which the server never tells clients (the
    /// management API is keyed by it); the runner knows its sockets.
    pub async fn client_with_id(&self) -> (Client, String) {
        let before = self.runner.as_ref().expect("running").connection_ids();
        let client = self.client().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.runner.as_ref().expect("running").connection_ids();
            if let Some(id) = now.into_iter().find(|id| !before.contains(id)) {
                return (client, id);
            }
            assert!(tokio::time::Instant::now() < deadline, "the new connection never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn open_connections(&self) -> usize {
        self.runner.as_ref().expect("running").open_connections()
    }

    /// Waits until the runner has exactly `count` sockets open.
    pub async fn wait_for_open_connections(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.open_connections() != count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} sockets open, expected {count}",
                self.open_connections()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// Stops the runner as SIGTERM would and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.runner.take().expect("running").shutdown().await.unwrap();
        self.runner = Some(Runner::start(Config::for_tests(PathBuf::from(self.dir.path()))).await.unwrap());
    }

    pub async fn stop(mut self) {
        self.runner.take().expect("running").shutdown().await.unwrap();
    }
}

/// An SDK configuration for the moto server `scripts/test` starts.
pub async fn moto_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("LIVESYNC_MOTO_ENDPOINT").expect(
        "LIVESYNC_MOTO_ENDPOINT is not set: run scripts/test, which starts moto_server, \
         or start one yourself and point this variable at it (e.g. http://127.0.0.1:5005)",
    );
    livesync_dynamodb::emulator_config(&endpoint).await
}

/// A fresh table on moto, created as the template defines it.
pub async fn moto_table(config: &aws_config::SdkConfig, name: &str) -> String {
    let table = format!("{name}-{}-{}", std::process::id(), rand_suffix());
    livesync_dynamodb::create_table(&aws_sdk_dynamodb::Client::new(config), &table).await.unwrap();
    table
}

fn rand_suffix() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The runner's log lines go to the test's captured output (shown when a test fails).
fn log_to_test_output() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::INFO).try_init();
    });
}

/// A protocol client on the `livesync-client` crate's connection, strict as a test needs:
/// replies are matched to requests by `ref` and anything else but a push on the way fails the
/// test; pushed events that arrive meanwhile are kept, in order, for [`Client::pushed_seqs`].
pub struct Client {
    socket: Connection,
    pushed: VecDeque<Value>,
    next_ref: u64,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let socket = Connection::open(url, None).await.unwrap();
        Client { socket, pushed: VecDeque::new(), next_ref: 0 }
    }

    /// Sends any message as it is: a raw frame, a fragment, bytes that are not UTF-8.
    pub async fn send_message(&mut self, message: Message) {
        self.socket.send_message(message).await.unwrap();
    }

    /// Sends a text message as fragments of at most `fragment` bytes (API Gateway takes frames
    /// of up to 32 KB, and messages of up to 128 KB in several frames).
    pub async fn send_fragmented(&mut self, text: &str, fragment: usize) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(fragment).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            let opcode = if n == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            let header = FrameHeader { is_final: n + 1 == chunks.len(), opcode, ..FrameHeader::default() };
            let frame = Frame::from_payload(header, tokio_tungstenite::tungstenite::Bytes::copy_from_slice(chunk));
            self.send_message(Message::Frame(frame)).await;
        }
    }

    /// Sends a text message as a client that is not a browser does: in frames of at most 32 KB,
    /// API Gateway's frame limit (a larger frame is closed with 1009).
    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.len() <= FRAME_BYTES {
            self.try_send_text(text).await.unwrap();
        } else {
            self.send_fragmented(&text, FRAME_BYTES).await;
        }
    }

    /// Sends a text message as one frame, whatever its size.
    pub async fn try_send_text(&mut self, text: impl Into<String>) -> Result<(), livesync_client::ClientError> {
        self.socket.send_message(Message::text(text.into())).await
    }

    /// The next frame from the server, whatever it is.
    pub async fn next_frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next_message())
                .await
                .expect("no frame from the server")
                .unwrap()
                .expect("the server closed the connection");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(close) => panic!("the server closed the connection: {close:?}"),
                _ => continue,
            }
        }
    }

    /// Sends a frame with a fresh `ref` and returns the reply that carries it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        frame["ref"] = json!(reference);
        self.send_text(frame.to_string()).await;
        self.reply_to(&reference).await
    }

    /// Waits for the reply carrying `reference`, keeping pushed frames that come first.
    pub async fn reply_to(&mut self, reference: &str) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["ref"] == json!(reference) {
                return frame;
            }
            assert!(is_push(&frame), "unexpected frame while waiting for {reference}: {frame}");
            self.pushed.push_back(frame);
        }
    }

    /// Sends a frame without a `ref` and returns the next frame that is not a push.
    pub async fn request_unreferenced(&mut self, text: impl Into<String>) -> Value {
        self.send_text(text).await;
        loop {
            let frame = self.next_frame().await;
            if !is_push(&frame) {
                return frame;
            }
            self.pushed.push_back(frame);
        }
    }

    pub async fn join(&mut self, room: &str, since: Option<u64>) -> Value {
        let mut frame = json!({"action": "join", "room": room});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        let reply = self.request(frame).await;
        assert_eq!(reply["type"], "joined", "{reply}");
        reply
    }

    pub async fn publish(&mut self, room: &str, id: Option<&str>, data: Value) -> Value {
        let mut frame = json!({"action": "publish", "room": room, "data": data});
        if let Some(id) = id {
            frame["id"] = json!(id);
        }
        let reply = self.request(frame).await;
        assert_eq!(reply["type"], "ack", "{reply}");
        reply
    }

    /// Pushes of `room` received but not yet taken by [`Client::pushed_seqs`].
    pub fn queued_pushes(&self, room: &str) -> usize {
        self.pushed.iter().filter(|frame| frame["room"] == room).count()
    }

    /// Waits until `count` pushed events of `room` have arrived; returns their seqs in arrival
    /// order, `event` and batched `events` frames alike.
    /// Pushes of other rooms stay queued for later calls.
    pub async fn pushed_seqs(&mut self, room: &str, count: usize) -> Vec<u64> {
        seqs(&self.pushed_events(room, count).await)
    }

    /// Waits until at least `count` pushed events of `room` have arrived; returns them, whole,
    /// in arrival order.
    pub async fn pushed_events(&mut self, room: &str, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            let position = self.pushed.iter().position(|frame| frame["room"] == room);
            let frame = match position {
                Some(position) => self.pushed.remove(position).expect("position is in range"),
                None => {
                    let frame = self.next_frame().await;
                    assert!(is_push(&frame), "expected a pushed event, got {frame}");
                    self.pushed.push_back(frame);
                    continue;
                }
            };
            events.extend(events_of(&frame));
        }
        events
    }

    /// The next raw message, or `None` once the connection has ended.
    pub async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(PATIENCE, self.socket.next_message()).await.expect("nothing arrived").ok().flatten()
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(PATIENCE, self.socket.next_message()).await.expect("the connection stayed open")
            {
                Ok(None) | Err(_) => return None,
                Ok(Some(Message::Close(close))) => return close.map(|c| c.code),
                Ok(Some(_)) => continue,
            }
        }
    }

    pub async fn close(self) {
        self.socket.close().await;
    }
}

/// Pushed frames: `event`, and `events` without `more` or `ref`.
pub fn is_push(frame: &Value) -> bool {
    frame["type"] == "event" || (frame["type"] == "events" && frame.get("ref").is_none() && frame.get("more").is_none())
}

/// The events a frame carries: itself for `event`, its list for `events` and `joined`.
pub fn events_of(frame: &Value) -> Vec<Value> {
    match frame["type"].as_str() {
        Some("event") => vec![frame.clone()],
        Some("events" | "joined") => frame["events"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}
