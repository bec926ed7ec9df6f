//! `publish {room, data, id?}`: append application data to the room's log. A repeated `id` is
//! acknowledged with the original seq and stores nothing; the same `id` with other content is a
//! `conflict` (as payment APIs treat an idempotency key reused for another payment).

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::ordering::{self, Entry};
use crate::layout;
use crate::protocol::{ErrorCode, EventKind, Invalid, JsonData, ServerFrame, check_data, check_id, check_name};
use crate::store::StoreError;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Publish {
    pub room: String,
    #[serde(default)]
    pub id: Option<String>,
    pub data: JsonData,
}

#[async_trait]
impl Action for Publish {
    fn check(&self) -> Result<(), Invalid> {
        check_data("data", &self.data)?;
        check_name("room", &self.room)?;
        check_id(self.id.as_deref())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let published = ordering::publish(
            cx.store,
            cx.clock,
            cx.heads,
            Entry {
                room: &self.room,
                client_id: self.id.as_deref().map(|id| cx.client_id(id)),
                fallback_id: cx.request_id,
                from: cx.caller.from(),
                kind: EventKind::Publish,
                data: &self.data,
                now_ms: cx.clock.now_ms(),
                steps: Vec::new(),
            },
        )
        .await?;
        if published.other_request && made_by_a_publish(cx, &self.room, published.seq).await? {
            return Ok(cx.error(ErrorCode::Conflict, id_reused(&published.id, published.seq)));
        }
        if published.repeat && !made_by_a_publish(cx, &self.room, published.seq).await? {
            return Ok(cx.error(
                ErrorCode::BadRequest,
                format!("id {:?} was already used in this room for another write (seq {}); use a new id", published.id, published.seq),
            ));
        }
        Ok(ServerFrame::Ack { room: self.room, seq: published.seq, id: published.id, reference: cx.reference() })
    }
}

/// The refusal of an id reused for another request.
pub(crate) fn id_reused(id: &str, seq: u64) -> String {
    format!(
        "id {id:?} was already used for a different request (seq {seq}); a retry must repeat the request exactly, \
         and a new request needs a new id"
    )
}

/// Whether the event at `seq` is a publish: a repeated id is acknowledged only as a repeat of a
/// publish, never with the seq of a state change that used the same id.
async fn made_by_a_publish(cx: &Context<'_>, room: &str, seq: u64) -> Result<bool, StoreError> {
    match cx.store.get(&layout::event_key(room, seq)).await? {
        Some(item) => Ok(layout::event_from_item(&item)?.is_some_and(|event| event.kind.is_publish())),
        None => Ok(false),
    }
}
