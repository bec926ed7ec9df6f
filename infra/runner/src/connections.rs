//! The live sockets of this runner, and the [`Poster`] that reaches them: the local stand-in for
//! API Gateway's PostToConnection.
//!
//! Each socket has a queue of outgoing frames, bounded in bytes, not frames: ten idle
//! subscribers of a room of 120 KB events must not pin a gigabyte. A post never waits: a frame
//! goes into the queue or, if the socket's queue is full, or the queues of all sockets together
//! are over the runner's budget and this socket is behind, the connection is closed as too slow
//! (the client reconnects and recovers with `since`) and reported gone. One slow client thus
//! costs bounded memory, and never delays anyone else.

use async_trait::async_trait;
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, mpsc};

/// What API Gateway's GetConnection tells about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub connected_at_ms: i64,
    pub last_active_ms: i64,
    pub source_ip: String,
    pub user_agent: Option<String>,
}

struct Socket {
    outbox: mpsc::UnboundedSender<Frame>,
    queue: Arc<Queue>,
    too_slow: Arc<Notify>,
    close: Arc<Notify>,
    info: ConnectionInfo,
    last_active_ms: Arc<AtomicI64>,
}

/// The bytes waiting in one socket's queue, and in all of them.
pub struct Queue {
    bytes: AtomicUsize,
    total: Arc<AtomicUsize>,
    /// Notified as the writer drains the queue: a reader waiting to queue a reply goes on.
    drained: Notify,
}

impl Queue {
    /// `bytes` more are queued; returns the socket's queued bytes.
    pub fn add(&self, bytes: usize) -> usize {
        self.total.fetch_add(bytes, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    /// The writer has written `bytes`.
    pub fn written(&self, bytes: usize) {
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until fewer than `limit` bytes are queued.
    pub async fn below(&self, limit: usize) {
        loop {
            let drained = self.drained.notified();
            if self.bytes() < limit {
                return;
            }
            drained.await;
        }
    }
}

/// Bytes of an event stream counted in the runner's budget while they are on their way.
pub struct StreamBytes {
    total: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for StreamBytes {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

pub struct Connections {
    sockets: RwLock<HashMap<String, Socket>>,
    emptied: Notify,
    /// Bytes one socket may have queued.
    queue_limit: usize,
    /// Bytes all sockets together may have queued.
    budget: usize,
    total: Arc<AtomicUsize>,
}

/// A socket's end of its registration.
pub struct Registration {
    pub outbox: mpsc::UnboundedReceiver<Frame>,
    /// For the socket's own replies, which wait for room in the queue rather than close it.
    pub replies: mpsc::UnboundedSender<Frame>,
    pub queue: Arc<Queue>,
    /// Notified when the socket cannot keep up and must close.
    pub too_slow: Arc<Notify>,
    /// Notified when the connection is deleted through the management API.
    pub close: Arc<Notify>,
    /// When the client last sent a frame, for GetConnection.
    pub last_active_ms: Arc<AtomicI64>,
}

impl Connections {
    pub fn new(queue_limit: usize, budget: usize) -> Self {
        Connections {
            sockets: RwLock::default(),
            emptied: Notify::new(),
            queue_limit: queue_limit.max(1),
            budget,
            total: Arc::default(),
        }
    }

    pub fn register(&self, connection: &str, info: ConnectionInfo) -> Registration {
        let (outbox, receiver) = mpsc::unbounded_channel();
        let queue = Arc::new(Queue { bytes: AtomicUsize::new(0), total: self.total.clone(), drained: Notify::new() });
        let too_slow = Arc::new(Notify::new());
        let close = Arc::new(Notify::new());
        let last_active_ms = Arc::new(AtomicI64::new(info.last_active_ms));
        let socket = Socket {
            outbox: outbox.clone(),
            queue: queue.clone(),
            too_slow: too_slow.clone(),
            close: close.clone(),
            info,
            last_active_ms: last_active_ms.clone(),
        };
        self.sockets.write().expect("connections lock").insert(connection.to_owned(), socket);
        Registration { outbox: receiver, replies: outbox, queue, too_slow, close, last_active_ms }
    }

    /// Bytes one socket may have queued before it is too slow.
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// Bytes queued for all sockets now.
    pub fn queued_bytes(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of an event stream (Server-Sent Events) in the runner's budget, beside
    /// the WebSocket queues, until the returned guard is dropped; `None` for a stream that is
    /// `behind` when the budget is spent (it then ends as too slow, as a WebSocket behind
    /// would be closed).
    pub fn stream_bytes(&self, bytes: usize, behind: bool) -> Option<StreamBytes> {
        let queued = self.total.fetch_add(bytes, Ordering::Relaxed);
        if behind && queued + bytes > self.budget {
            self.total.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(StreamBytes { total: self.total.clone(), bytes })
    }

    /// GetConnection: `None` if there is no such connection.
    pub fn info(&self, connection: &str) -> Option<ConnectionInfo> {
        let sockets = self.sockets.read().expect("connections lock");
        sockets.get(connection).map(|socket| ConnectionInfo {
            last_active_ms: socket.last_active_ms.load(Ordering::Relaxed),
            ..socket.info.clone()
        })
    }

    /// DeleteConnection: asks the socket to close; `false` if there is no such connection.
    pub fn close(&self, connection: &str) -> bool {
        let sockets = self.sockets.read().expect("connections lock");
        sockets.get(connection).map(|socket| socket.close.notify_one()).is_some()
    }

    pub fn remove(&self, connection: &str) {
        let mut sockets = self.sockets.write().expect("connections lock");
        if let Some(socket) = sockets.remove(connection) {
            // What it still had queued is dropped with it.
            let queued = socket.queue.bytes();
            socket.queue.written(queued);
        }
        if sockets.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.sockets.read().expect("connections lock").keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.sockets.read().expect("connections lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every socket has closed and deregistered.
    pub async fn closed(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

#[async_trait]
impl Poster for Connections {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError> {
        let sockets = self.sockets.read().expect("connections lock");
        let Some(socket) = sockets.get(connection) else {
            return Ok(Delivery::Gone);
        };
        let size = frame.bytes().len();
        let behind = socket.queue.bytes();
        let over_budget = behind > 0 && self.queued_bytes() + size > self.budget;
        if behind + size > self.queue_limit || over_budget {
            tracing::warn!(
                connection,
                queued = behind,
                over_budget,
                "send queue full: closing a connection that cannot keep up"
            );
            socket.too_slow.notify_one();
            return Ok(Delivery::Gone);
        }
        socket.queue.add(size);
        match socket.outbox.send(frame.clone()) {
            Ok(()) => Ok(Delivery::Sent),
            Err(_) => {
                socket.queue.written(size);
                Ok(Delivery::Gone)
            }
        }
    }

    async fn delete_connection(&self, connection: &str) -> Result<(), PostError> {
        self.close(connection);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::new(text.to_owned())
    }

    fn info() -> ConnectionInfo {
        ConnectionInfo { connected_at_ms: 1, last_active_ms: 1, source_ip: "127.0.0.1".into(), user_agent: None }
    }

    #[tokio::test]
    async fn a_post_reaches_the_registered_socket_in_order() {
        let connections = Connections::new(1024, 1 << 20);
        let mut socket = connections.register("c1", info());
        assert_eq!(connections.post("c1", &frame("1")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("c1", &frame("2")).await.unwrap(), Delivery::Sent);
        assert_eq!(socket.outbox.recv().await.unwrap(), frame("1"));
        assert_eq!(socket.outbox.recv().await.unwrap(), frame("2"));
    }

    #[tokio::test]
    async fn an_unknown_connection_is_gone() {
        let connections = Connections::new(1024, 1 << 20);
        assert_eq!(connections.post("nobody", &frame("x")).await.unwrap(), Delivery::Gone);
    }

    #[tokio::test]
    async fn a_queue_full_in_bytes_closes_the_slow_socket_and_reports_it_gone() {
        let connections = Connections::new(10, 1 << 20);
        let socket = connections.register("slow", info());
        assert_eq!(connections.post("slow", &frame("12345")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("slow", &frame("12345")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("slow", &frame("1")).await.unwrap(), Delivery::Gone);
        // The socket is told to close; notify_one stores the permit, so this returns at once.
        socket.too_slow.notified().await;
        assert_eq!(connections.queued_bytes(), 10);
        connections.remove("slow");
        assert_eq!(connections.queued_bytes(), 0, "a removed socket's queue is released");
    }

    #[tokio::test]
    async fn over_the_budget_a_socket_that_is_behind_is_closed_and_one_that_keeps_up_is_not() {
        let connections = Connections::new(100, 12);
        let behind = connections.register("behind", info());
        let _current = connections.register("current", info());
        assert_eq!(connections.post("behind", &frame("1234567890")).await.unwrap(), Delivery::Sent);
        // The budget is spent by the socket that is behind: it is the one closed.
        assert_eq!(connections.post("current", &frame("12345")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("behind", &frame("12345")).await.unwrap(), Delivery::Gone);
        behind.too_slow.notified().await;
    }

    #[tokio::test]
    async fn closed_waits_for_the_last_socket() {
        let connections = Arc::new(Connections::new(1024, 1 << 20));
        connections.register("a", info());
        connections.register("b", info());
        let waiter = tokio::spawn({
            let connections = connections.clone();
            async move { connections.closed().await }
        });
        connections.remove("a");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        connections.remove("b");
        waiter.await.unwrap();
    }
}
