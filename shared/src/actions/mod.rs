//! Client actions, one file each: the frame's fields, their checks, and what applying it does.
//!
//! The list below is the only place an action is named: it gives the wire name, the module,
//! and from it come [`NAMES`] (what `unknown_action` lists and the runner routes), the
//! [`Request`] enum, parsing and dispatch. Adding an action is one file and one line here.
//!
//! Every action is a `serde` struct of its fields (`action` and `ref` are read by the envelope
//! and ignored here) implementing [`Action`]: `check` for what serde cannot say (lengths,
//! characters, ranges), `apply` for the effect. An outcome the client must act on (a conflict,
//! a missing document, too little stock) is a reply, `Ok(ServerFrame::Error { .. })`; `Err` is
//! kept for infrastructure failures, which the engine answers with `internal`.

use crate::access::{Access, Caller};
use crate::clock::Clock;
use crate::engine::EngineError;
use crate::layout::ClientId;
use crate::ordering::RoomHeads;
use crate::protocol::{ErrorCode, Invalid, Reference, ServerFrame};
use crate::store::Store;
use async_trait::async_trait;
use serde::de::DeserializeOwned;

/// What an action is applied with: the capabilities and who asked.
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub clock: &'a dyn Clock,
    pub heads: &'a RoomHeads,
    /// Versions kept per document, edits kept per text.
    pub history: u64,
    pub connection: &'a str,
    /// Who asks, as the `$connect` authorizer vouched for it.
    pub caller: &'a Caller,
    /// API Gateway's id of this request: the event id of a write without a client `id`.
    pub request_id: &'a str,
    pub reference: Option<Reference>,
    /// What the request asks (see [`crate::protocol::ClientFrame::digest`]).
    pub digest: &'a str,
}

impl Context<'_> {
    /// The client's `ref`, for the reply.
    pub fn reference(&self) -> Option<Reference> {
        self.reference.clone()
    }

    /// The request's idempotency id, in the caller's namespace and bound to its content.
    pub fn client_id<'i>(&'i self, id: &'i str) -> ClientId<'i> {
        ClientId { id, scope: self.caller.id_scope(), digest: self.digest }
    }

    /// An error reply to this request.
    pub fn error(&self, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
        ServerFrame::error(code, message, self.reference())
    }

    /// `expired`: events after `since` are no longer held; `oldest` is the first seq that is.
    pub fn expired(&self, room: &str, since: u64, oldest: u64) -> ServerFrame {
        ServerFrame::expired(room, since, oldest, self.reference())
    }
}

#[async_trait]
pub trait Action: DeserializeOwned + Send + Sync + 'static {
    /// What the fields' types do not say: lengths, characters, ranges.
    fn check(&self) -> Result<(), Invalid>;

    /// The grant the request needs: to read or to write its room, or none.
    fn access(&self) -> Access<'_>;

    /// Applies the request; the reply to send back.
    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError>;
}

macro_rules! actions {
    ($($name:literal => $module:ident :: $action:ident,)*) => {
        $(pub mod $module;)*

        /// Every action's wire name, in the order documented.
        pub const NAMES: &[&str] = &[$($name),*];

        /// A client request whose fields have been read and checked.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $($action($module::$action),)*
        }

        impl Request {
            /// Reads the fields of `action` from the frame; `None` if no action has that name.
            pub fn parse(action: &str, frame: &serde_json::Value) -> Option<Result<Request, Invalid>> {
                Some(match action {
                    $($name => fields::<$module::$action>(action, frame).map(Request::$action),)*
                    _ => return None,
                })
            }

            pub fn access(&self) -> Access<'_> {
                match self {
                    $(Request::$action(request) => request.access(),)*
                }
            }

            pub async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
                match self {
                    $(Request::$action(request) => request.apply(cx).await,)*
                }
            }
        }
    };
}

actions! {
    "join" => join::Join,
    "leave" => leave::Leave,
    "publish" => publish::Publish,
    "sync" => sync::Sync,
    "ping" => ping::Ping,
    "presence" => presence::Presence,
    "doc.get" => doc_get::DocGet,
    "doc.put" => doc_put::DocPut,
    "doc.patch" => doc_patch::DocPatch,
    "doc.incr" => doc_incr::DocIncr,
    "doc.delete" => doc_delete::DocDelete,
    "doc.history" => doc_history::DocHistory,
    "doc.rollback" => doc_rollback::DocRollback,
    "text.get" => text_get::TextGet,
    "text.edit" => text_edit::TextEdit,
    "stock.set" => stock_set::StockSet,
    "stock.adjust" => stock_adjust::StockAdjust,
    "stock.get" => stock_get::StockGet,
}

fn fields<A: Action>(action: &str, frame: &serde_json::Value) -> Result<A, Invalid> {
    let request =
        A::deserialize(frame).map_err(|e| Invalid::bad_request(format!("invalid \"{action}\" frame: {e}")))?;
    request.check()?;
    Ok(request)
}
