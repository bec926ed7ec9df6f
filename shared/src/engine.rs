//! The engine: what a connection's lifecycle and each client request do, over the capabilities.
//!
//! This is the code behind API Gateway's `$connect`, `$disconnect` and message routes, whoever
//! hosts it (a Lambda, or the local runner). It holds no per-connection state: everything a
//! request needs is in the store, so any number of hosts can serve the same rooms. What each
//! action does is in its own file under [`crate::actions`].

use crate::access::{Access, Caller};
use crate::actions::Context;
use crate::clock::Clock;
use crate::limits::{Admission, Bucket, WriteLimiter};
use crate::membership;
use crate::ordering::{PublishError, RoomHeads};
use crate::protocol::{ErrorCode, ServerFrame, parse_client_frame};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Default number of events in one `joined` or `events` reply.
pub const PAGE_EVENTS: usize = 100;

/// Default number of versions kept per document, and of edits kept per text.
pub const HISTORY_VERSIONS: u64 = 100;

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
    history: u64,
    limiter: Option<Arc<dyn WriteLimiter>>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Engine { store, clock, heads: RoomHeads::default(), history: HISTORY_VERSIONS, limiter: None }
    }

    /// Limits each connection's writes (see [`crate::limits`]); without one, writes are unlimited.
    pub fn with_limiter(mut self, limiter: Arc<dyn WriteLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Events and idempotency records are kept this long (at least a day; 7 days by default).
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.heads = RoomHeads::keeping(retention);
        self
    }

    /// Keeps this many versions per document (and edits per text); at least 1.
    pub fn with_history(mut self, versions: u64) -> Self {
        self.history = versions.max(1);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// `$disconnect`: forget the connection and its subscriptions (members leave presence).
    /// Returns the number of rooms it was in.
    pub async fn disconnect(&self, connection: &str) -> Result<usize, EngineError> {
        if let Some(limiter) = &self.limiter {
            limiter.forget(connection);
        }
        membership::forget(self.store.as_ref(), self.clock.as_ref(), &self.heads, connection).await
    }

    /// One client frame in, the direct reply out. Never fails: bad input gets an error frame that
    /// says what is wrong, a room outside the caller's grant gets `forbidden`, a write over the
    /// connection's rate gets `rate_limited`, and an infrastructure failure gets `internal` (and
    /// a log line). A refused frame changes nothing.
    pub async fn handle(&self, caller: &Caller, connection: &str, request_id: &str, body: &str) -> ServerFrame {
        let frame = match parse_client_frame(body) {
            Ok(frame) => frame,
            Err(refusal) => return refusal.into_frame(),
        };
        let cx = Context {
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
            heads: &self.heads,
            history: self.history,
            connection,
            caller,
            request_id,
            reference: frame.reference,
            digest: &frame.digest,
        };
        let access = frame.request.access();
        if !caller.may(access) {
            let (verb, room) = match access {
                Access::Read(room) => ("read", room),
                Access::Write(room) => ("write", room),
                Access::ReadWrite(room) => ("read and write (joining as a member announces you)", room),
                Access::Open => unreachable!("open access is always granted"),
            };
            return cx.error(ErrorCode::Forbidden, format!("your token does not grant {verb} access to room {room:?}"));
        }
        if let (true, Some(limiter)) = (access.writes(), &self.limiter) {
            match limiter.admit(Bucket::of(caller, connection), self.clock.now_ms()).await {
                Ok(Admission::Admitted(())) => {}
                Ok(Admission::Refused { retry_after_ms }) => {
                    let mut refusal =
                        cx.error(ErrorCode::RateLimited, format!("too many writes; retry after {retry_after_ms} ms"));
                    if let ServerFrame::Error { retry_after_ms: wait, .. } = &mut refusal {
                        *wait = Some(retry_after_ms);
                    }
                    return refusal;
                }
                Err(error) => return self.internal(&cx, &EngineError::Store(error)),
            }
        }
        match frame.request.apply(&cx).await {
            Ok(reply) => reply,
            Err(error) => self.internal(&cx, &error),
        }
    }

    fn internal(&self, cx: &Context<'_>, error: &EngineError) -> ServerFrame {
        if let EngineError::Store(StoreError::Full) | EngineError::Publish(PublishError::Store(StoreError::Full)) =
            error
        {
            tracing::warn!(connection = cx.connection, request_id = cx.request_id, "write refused: the store is full");
            return cx.error(
                ErrorCode::Unavailable,
                "the server's storage is full: this write was not applied (reads still work). \
                 Retry it later (a write with the same id is never applied twice)",
            );
        }
        tracing::error!(connection = cx.connection, request_id = cx.request_id, error = %Chain(error), "request failed");
        cx.error(
            ErrorCode::Internal,
            "the server failed to complete this request; it may not have been applied. \
             Retry it (a write with the same id is never applied twice)",
        )
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
