//! Shared state changes, whatever the state: read it, decide, write the change and its event in
//! one transaction, and when another writer came first, read again and decide again.
//!
//! Every kind of state (documents, texts, stock levels) says how it is read, what a request
//! makes of it and how the outcome is replied; this module runs the loop once for all of them,
//! with the two guarantees every state write gives:
//!
//! * **No lost update.** The change's steps are conditional on the state that was read (its
//!   version), so a write decided on a state someone else has since changed is refused by the
//!   store, never applied over the other write.
//! * **Idempotent with an `id`.** The outcome is the event's data; a retry with the same client
//!   id finds the original event and is answered from it, applying nothing twice.

use crate::actions::Context;
use crate::engine::EngineError;
use crate::layout::{self, ClientId, IdRecord};
use crate::ordering::{self, Appended, Entry, PublishError};
use crate::protocol::{ErrorCode, EventKind, JsonData, ServerFrame};
use crate::store::{StoreError, TxOp};
use crate::tally;
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Refused writes in a row after which a request gives up. Each refusal means another write of
/// the same state succeeded, so the state is making progress.
const MAX_ATTEMPTS: usize = 256;

/// What a request makes of the state it read.
pub enum Decision<T> {
    /// Write these steps (conditional on the state read) and record `outcome` as the event.
    Change { steps: Vec<TxOp>, outcome: T },
    /// Answer without writing: a conflict, a missing document, too little stock.
    Reply(ServerFrame),
}

/// One kind of state write.
#[async_trait]
pub trait StateWrite: Send + Sync {
    type State: Send;
    /// The event's data and the reply's body.
    type Outcome: Serialize + DeserializeOwned + Send;
    const KIND: EventKind;

    async fn read(&self, cx: &Context<'_>) -> Result<Self::State, EngineError>;

    fn decide(&self, cx: &Context<'_>, state: Self::State) -> Result<Decision<Self::Outcome>, EngineError>;

    fn reply(&self, cx: &Context<'_>, outcome: Self::Outcome) -> ServerFrame;

    /// Whether an earlier outcome is this request's own: the same document, text or SKU. A client
    /// id reused for another target is refused rather than answered with someone else's result.
    fn is_outcome_of(&self, outcome: &Self::Outcome) -> bool;
}

/// Applies a state write to `room`, idempotently under the client's `id`.
pub async fn commit<W: StateWrite>(
    cx: &Context<'_>,
    room: &str,
    id: Option<&str>,
    write: &W,
) -> Result<ServerFrame, EngineError> {
    let client = id.map(|id| cx.client_id(id));
    if let Some(client) = client
        && let Some(record) = ordering::id_record(cx.store, room, client).await?
    {
        return replay(cx, room, client, record, write).await;
    }
    for _ in 0..MAX_ATTEMPTS {
        let state = write.read(cx).await?;
        let (steps, outcome) = match write.decide(cx, state)? {
            Decision::Change { steps, outcome } => (steps, outcome),
            Decision::Reply(frame) => {
                // A copy of this request sent concurrently (a retry while the original is still
                // in flight) may have been applied since the id was looked up: it changed the
                // state this refusal was decided on, so its outcome is the answer.
                if let Some(client) = client
                    && let Some(record) = ordering::id_record(cx.store, room, client).await?
                {
                    return replay(cx, room, client, record, write).await;
                }
                if let ServerFrame::Error { code: ErrorCode::Conflict, .. } = &frame {
                    // The day's report counts refusals; a refusal leaves nothing on the feed.
                    if let Err(error) = tally::count_conflict(cx.store, cx.clock.now_ms(), room).await {
                        tracing::warn!(room, error = %crate::engine::Chain(&error), "could not count a conflict");
                    }
                }
                return Ok(frame);
            }
        };
        // Straight to text, so the event's fields keep the reply's order.
        let data = serde_json::to_string(&outcome)
            .and_then(JsonData::from_json)
            .map_err(|e| StoreError::Invalid(format!("state outcome does not serialise: {e}")))?;
        let entry = Entry {
            room,
            client_id: client,
            fallback_id: cx.request_id,
            from: cx.caller.from(),
            kind: W::KIND,
            data: &data,
            now_ms: cx.clock.now_ms(),
            steps,
        };
        match ordering::append(cx.store, cx.clock, cx.heads, entry).await? {
            Appended::Stored(published) if published.repeat => {
                // A copy of this request won the race for the id: its outcome is the one.
                let client = client.expect("only a client id repeats");
                let record = IdRecord { seq: published.seq, digest: published.other_request.then(String::new) };
                return replay(cx, room, client, record, write).await;
            }
            Appended::Stored(_) => return Ok(write.reply(cx, outcome)),
            Appended::Refused(_) => continue,
        }
    }
    Err(PublishError::Contention { room: room.to_owned() }.into())
}

/// The reply to a repeated id: rebuilt from the event the id was first used for.
async fn replay<W: StateWrite>(
    cx: &Context<'_>,
    room: &str,
    client: ClientId<'_>,
    record: IdRecord,
    write: &W,
) -> Result<ServerFrame, EngineError> {
    let (id, seq) = (client.id, record.seq);
    let item = cx.store.get(&layout::event_key(room, seq)).await?.ok_or_else(|| StoreError::Malformed {
        key: layout::event_key(room, seq),
        reason: format!("the event of id {id:?} is missing"),
    })?;
    let event = layout::event_from_item(&item)?
        .ok_or_else(|| StoreError::Malformed { key: item.key.clone(), reason: "not an event".to_owned() })?;
    let reused = || {
        cx.error(
            ErrorCode::BadRequest,
            format!("id {id:?} was already used in this room for another write (seq {seq}); use a new id"),
        )
    };
    if event.kind != W::KIND {
        return Ok(reused());
    }
    let outcome = serde_json::from_str(event.data.as_json()).map_err(|e| StoreError::Malformed {
        key: item.key.clone(),
        reason: format!("the event's data is not a {} outcome: {e}", W::KIND.name()),
    })?;
    if !write.is_outcome_of(&outcome) {
        return Ok(reused());
    }
    if !record.made_by(client.digest) {
        return Ok(cx.error(ErrorCode::Conflict, crate::actions::publish::id_reused(id, seq)));
    }
    Ok(write.reply(cx, outcome))
}
