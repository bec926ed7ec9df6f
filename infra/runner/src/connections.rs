//! The live sockets of this runner, and the [`Poster`] that reaches them: the local stand-in for
//! API Gateway's PostToConnection.
//!
//! Each socket has a bounded queue of outgoing frames. A post never waits: a frame goes into the
//! queue or, if the queue is full, the connection is closed as too slow (the client reconnects
//! and recovers with `since`) and reported gone. One slow client thus costs memory bounded by its
//! queue, and never delays anyone else.

use async_trait::async_trait;
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
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
    outbox: mpsc::Sender<Frame>,
    too_slow: Arc<Notify>,
    close: Arc<Notify>,
    info: ConnectionInfo,
    last_active_ms: Arc<AtomicI64>,
}

#[derive(Default)]
pub struct Connections {
    sockets: RwLock<HashMap<String, Socket>>,
    emptied: Notify,
}

/// A socket's end of its registration.
pub struct Registration {
    pub outbox: mpsc::Receiver<Frame>,
    /// Notified when the socket cannot keep up and must close.
    pub too_slow: Arc<Notify>,
    /// For the socket's own replies, which wait for room in the queue rather than close it.
    pub replies: mpsc::Sender<Frame>,
    /// Notified when the connection is deleted through the management API.
    pub close: Arc<Notify>,
    /// When the client last sent a frame, for GetConnection.
    pub last_active_ms: Arc<AtomicI64>,
}

impl Connections {
    pub fn register(&self, connection: &str, queue: usize, info: ConnectionInfo) -> Registration {
        let (outbox, receiver) = mpsc::channel(queue.max(1));
        let too_slow = Arc::new(Notify::new());
        let close = Arc::new(Notify::new());
        let last_active_ms = Arc::new(AtomicI64::new(info.last_active_ms));
        let socket = Socket {
            outbox: outbox.clone(),
            too_slow: too_slow.clone(),
            close: close.clone(),
            info,
            last_active_ms: last_active_ms.clone(),
        };
        self.sockets.write().expect("connections lock").insert(connection.to_owned(), socket);
        Registration { outbox: receiver, too_slow, replies: outbox, close, last_active_ms }
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
        sockets.remove(connection);
        if sockets.is_empty() {
            self.emptied.notify_waiters();
        }
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
        match socket.outbox.try_send(frame.clone()) {
            Ok(()) => Ok(Delivery::Sent),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection, "send queue full: closing a connection that cannot keep up");
                socket.too_slow.notify_one();
                Ok(Delivery::Gone)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Delivery::Gone),
        }
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
        let connections = Connections::default();
        let mut socket = connections.register("c1", 8, info());
        assert_eq!(connections.post("c1", &frame("1")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("c1", &frame("2")).await.unwrap(), Delivery::Sent);
        assert_eq!(socket.outbox.recv().await.unwrap(), frame("1"));
        assert_eq!(socket.outbox.recv().await.unwrap(), frame("2"));
    }

    #[tokio::test]
    async fn an_unknown_connection_is_gone() {
        let connections = Connections::default();
        assert_eq!(connections.post("nobody", &frame("x")).await.unwrap(), Delivery::Gone);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_slow_socket_and_reports_it_gone() {
        let connections = Connections::default();
        let socket = connections.register("slow", 2, info());
        assert_eq!(connections.post("slow", &frame("1")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("slow", &frame("2")).await.unwrap(), Delivery::Sent);
        assert_eq!(connections.post("slow", &frame("3")).await.unwrap(), Delivery::Gone);
        // The socket is told to close; notify_one stores the permit, so this returns at once.
        socket.too_slow.notified().await;
    }

    #[tokio::test]
    async fn closed_waits_for_the_last_socket() {
        let connections = Arc::new(Connections::default());
        connections.register("a", 1, info());
        connections.register("b", 1, info());
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
