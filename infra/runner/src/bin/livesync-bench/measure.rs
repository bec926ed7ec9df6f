//! What every workload measures with: a client connection, the probe each event carries (its
//! send time), receivers that check order while they time, latency summaries, a progress line.

use serde::Serialize;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub type Socket = livesync_client::Connection;

/// A frame that has not come after this long is not coming: the receiver reports what it got.
const PATIENCE: Duration = Duration::from_secs(30);

/// Microseconds since the benchmark began: the clock every probe is stamped with.
pub fn micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

pub async fn connect(url: &str) -> Socket {
    // Many connections at once can overflow the listen backlog; retry rather than fail.
    for _ in 0..100 {
        if let Ok(socket) = Socket::open(url, None).await {
            return socket;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}");
}

/// Joins `room`; returns the room's head at the join.
pub async fn join(socket: &mut Socket, room: &str) -> u64 {
    let reply = socket.join(room, None).await.expect("join");
    reply["seq"].as_u64().unwrap_or(0)
}

/// A publish frame whose event carries its send time (`t`) and `pad` bytes of payload.
pub fn publish_frame(room: &str, reference: u64, id: Option<&str>, pad: &str) -> String {
    let mut frame = json!({"action": "publish", "room": room, "ref": reference, "data": {"t": micros(), "pad": pad}});
    if let Some(id) = id {
        frame["id"] = json!(id);
    }
    frame.to_string()
}

/// Reads until the reply carrying `reference`; pushes that come first are dropped.
pub async fn reply_to(socket: &mut Socket, reference: u64) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next_frame())
            .await
            .expect("no reply within 30 s")
            .expect("socket error")
            .expect("the server closed the connection");
        if frame["ref"] == json!(reference) {
            return frame;
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut micros: Vec<u32>) -> Latency {
        micros.sort_unstable();
        let at = |p: f64| {
            let index = ((micros.len() as f64 * p) as usize).min(micros.len().saturating_sub(1));
            micros.get(index).copied().unwrap_or(0) as f64 / 1000.0
        };
        Latency { samples: micros.len(), p50_ms: at(0.50), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", self.p50_ms, self.p99_ms, self.max_ms)
    }
}

/// What one subscriber received.
pub struct Received {
    pub latencies_us: Vec<u32>,
    /// Every expected event came, once, in seq order, with no gap.
    pub in_order: bool,
    pub last_at: Instant,
}

/// Receives the events after `after` of the room `socket` joined, until `expected` have come
/// (or none for 30 s), timing each from its probe and checking the seqs follow each other.
pub fn receive(
    mut socket: Socket,
    after: u64,
    expected: u64,
    counted: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Received> {
    tokio::spawn(async move {
        let mut latencies_us = Vec::with_capacity(expected as usize);
        let (mut next, mut in_order) = (after + 1, true);
        let mut last_at = Instant::now();
        while (latencies_us.len() as u64) < expected {
            let Ok(Ok(frame)) = tokio::time::timeout(PATIENCE, socket.next_push()).await else {
                break;
            };
            let now = micros();
            last_at = Instant::now();
            let events = livesync_client::events_of(&frame);
            for event in &events {
                in_order &= event["seq"].as_u64() == Some(next);
                next += 1;
                let sent = event["data"]["t"].as_u64().unwrap_or(now);
                latencies_us.push(now.saturating_sub(sent) as u32);
            }
            counted.fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        let complete = latencies_us.len() as u64 == expected;
        Received { latencies_us, in_order: in_order && complete, last_at }
    })
}

/// A line on stderr, redrawn every second while a workload runs: what it has done of what.
pub struct Progress {
    pub done: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(what: String, total: u64, unit: &'static str) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let ticker = tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let began = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let line = format!(
                    "  {what}: {} of {total} {unit} ({:.0} s)",
                    counter.load(Ordering::Relaxed),
                    began.elapsed().as_secs_f64()
                );
                let mut stderr = std::io::stderr();
                let _ = if terminal { write!(stderr, "\r{line}\x1b[K") } else { writeln!(stderr, "{line}") };
            }
        });
        Progress { done, ticker }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }
}
