//! The engine: what a connection's lifecycle and each client request do, over the capabilities.
//!
//! This is the code behind API Gateway's `$connect`, `$disconnect` and message routes, whoever
//! hosts it (a Lambda, or the local runner). It holds no per-connection state: everything a
//! request needs is in the store, so any number of hosts can serve the same rooms.

use crate::clock::Clock;
use crate::membership;
use crate::ordering::{self, Publication, PublishError, RoomHeads};
use crate::protocol::{ClientFrame, ErrorCode, JsonData, Reference, Request, ServerFrame, parse_client_frame};
use crate::recovery;
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Default number of events in one `joined` or `events` reply.
pub const PAGE_EVENTS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    heads: RoomHeads,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Engine { store, clock, heads: RoomHeads::default() }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// `$connect`: the connection exists from now on.
    pub async fn connect(&self, connection: &str) -> Result<(), EngineError> {
        Ok(membership::register(self.store.as_ref(), connection, self.clock.now_ms()).await?)
    }

    /// `$disconnect`: forget the connection and its subscriptions. Returns the rooms it was in.
    pub async fn disconnect(&self, connection: &str) -> Result<usize, EngineError> {
        Ok(membership::forget(self.store.as_ref(), connection).await?)
    }

    /// One client frame in, the direct reply out. Never fails: bad input gets an error frame that
    /// says what is wrong, and an infrastructure failure gets `internal` (and a log line).
    pub async fn handle(&self, connection: &str, request_id: &str, body: &str) -> ServerFrame {
        let frame = match parse_client_frame(body) {
            Ok(frame) => frame,
            Err(refusal) => return refusal.into_frame(),
        };
        let reference = frame.reference.clone();
        match self.apply(connection, request_id, frame).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::error!(connection, request_id, error = %Chain(&error), "request failed");
                ServerFrame::error(
                    ErrorCode::Internal,
                    "the server failed to complete this request; it may not have been applied. \
                     Retry it (a publish with the same id is never applied twice)",
                    reference,
                )
            }
        }
    }

    async fn apply(&self, connection: &str, request_id: &str, frame: ClientFrame) -> Result<ServerFrame, EngineError> {
        let ClientFrame { reference, request } = frame;
        let store = self.store.as_ref();
        Ok(match request {
            Request::Join { room, since } => {
                membership::subscribe(store, &room, connection, self.clock.now_ms()).await?;
                // The page is read after subscribing: an event committed before the subscription
                // is in the page (or a later one), one committed after it is pushed; a client
                // may see an event both ways and drops the repeat by its seq.
                let page = match since {
                    Some(since) => recovery::events_after(store, &room, since, PAGE_EVENTS).await?,
                    None => recovery::EventPage { events: Vec::new(), more: false },
                };
                let head = ordering::head(store, &room).await?;
                ServerFrame::Joined { room, seq: head, events: page.events, more: page.more, reference }
            }
            Request::Leave { room } => {
                membership::unsubscribe(store, &room, connection).await?;
                ServerFrame::Left { room, reference }
            }
            Request::Publish { room, id, data } => {
                self.publish(connection, request_id, room, id, data, reference).await?
            }
            Request::Sync { room, since } => {
                let page = recovery::events_after(store, &room, since, PAGE_EVENTS).await?;
                ServerFrame::Events { room, events: page.events, more: Some(page.more), reference }
            }
            Request::Ping => ServerFrame::Pong { reference },
        })
    }

    async fn publish(
        &self,
        connection: &str,
        request_id: &str,
        room: String,
        id: Option<String>,
        data: JsonData,
        reference: Option<Reference>,
    ) -> Result<ServerFrame, EngineError> {
        let published = ordering::publish(
            self.store.as_ref(),
            self.clock.as_ref(),
            &self.heads,
            Publication {
                room: &room,
                client_id: id.as_deref(),
                fallback_id: request_id,
                from: connection,
                data: &data,
                now_ms: self.clock.now_ms(),
            },
        )
        .await?;
        Ok(ServerFrame::Ack { room, seq: published.seq, id: published.id, reference })
    }
}

/// Displays an error with its whole chain of sources: `outer: inner: root cause`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
