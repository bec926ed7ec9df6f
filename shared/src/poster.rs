//! The connection-poster capability: send one frame to one connection
//! (API Gateway's PostToConnection; the local runner's socket registry).

use async_trait::async_trait;
use bytes::Bytes;

/// An encoded server frame: UTF-8 JSON text, encoded once and shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    pub fn new(json: String) -> Self {
        Frame(Bytes::from(json))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What became of a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The connection no longer exists (HTTP 410 on AWS): forget it and its subscriptions.
    Gone,
}

#[derive(Debug, thiserror::Error)]
#[error("posting to connection {connection} failed")]
pub struct PostError {
    pub connection: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

#[async_trait]
pub trait Poster: Send + Sync {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError>;

    /// Closes a connection (API Gateway's DeleteConnection): for one that keeps failing, so that
    /// its client reconnects and recovers what it missed with `sync`. A connection already gone
    /// is not an error.
    async fn delete_connection(&self, connection: &str) -> Result<(), PostError>;
}
