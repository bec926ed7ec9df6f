//! Collaborative texts in the store: the current value and revision in one item, the last edits
//! (as applied) in one item each, so that an edit made a few revisions ago can be transformed
//! past the ones accepted since. Each accepted edit is a transaction: the text, conditional on
//! the revision it was read at; the edit's item; the edit's event.

use crate::actions::Context;
use crate::engine::EngineError;
use crate::layout;
use crate::protocol::{ErrorCode, EventKind, MAX_DATA_BYTES, ServerFrame};
use crate::state::{Decision, StateWrite};
use crate::store::{Attr, Condition, Item, Store, StoreError, TxOp};
use crate::text::{Operation, TextEdit};
use async_trait::async_trait;

/// A text as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentText {
    pub rev: u64,
    pub text: String,
}

pub async fn read(store: &dyn Store, room: &str, doc: &str) -> Result<Option<CurrentText>, StoreError> {
    let Some(item) = store.get(&layout::text_key(room, doc)).await? else {
        return Ok(None);
    };
    let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
    Ok(Some(CurrentText {
        rev: item.number("rev").and_then(|r| u64::try_from(r).ok()).ok_or_else(|| malformed("no rev"))?,
        text: item.string("text").ok_or_else(|| malformed("no text"))?.to_owned(),
    }))
}

/// The kept edits after revision `since`, oldest first, up to `until` (fewer if older ones were
/// pruned).
async fn edits_between(
    store: &dyn Store,
    room: &str,
    doc: &str,
    since: u64,
    until: u64,
) -> Result<Vec<(u64, Operation)>, StoreError> {
    let mut edits = Vec::new();
    let mut after = since;
    while after < until {
        let page = store.query(layout::text_edits_after(room, doc, after, (until - after) as usize)).await?;
        for item in &page.items {
            let malformed = |reason: String| StoreError::Malformed { key: item.key.clone(), reason };
            let rev =
                item.number("rev").and_then(|r| u64::try_from(r).ok()).ok_or_else(|| malformed("no rev".into()))?;
            let ops = item.string("ops").ok_or_else(|| malformed("no ops".into()))?;
            edits.push((rev, serde_json::from_str(ops).map_err(|e| malformed(format!("ops: {e}")))?));
            after = rev;
        }
        if !page.more {
            break;
        }
    }
    Ok(edits)
}

/// One `text.edit`.
pub struct TextWrite<'a> {
    pub room: &'a str,
    pub doc: &'a str,
    pub rev: u64,
    pub ops: &'a Operation,
}

#[async_trait]
impl StateWrite for TextWrite<'_> {
    type State = (Option<CurrentText>, Vec<(u64, Operation)>);
    type Outcome = TextEdit;
    const KIND: EventKind = EventKind::Text;

    async fn read(&self, cx: &Context<'_>) -> Result<Self::State, EngineError> {
        let current = read(cx.store, self.room, self.doc).await?;
        let head = current.as_ref().map_or(0, |c| c.rev);
        let since = if head > self.rev {
            edits_between(cx.store, self.room, self.doc, self.rev, head).await?
        } else {
            Vec::new()
        };
        Ok((current, since))
    }

    fn decide(&self, cx: &Context<'_>, (current, since): Self::State) -> Result<Decision<TextEdit>, EngineError> {
        let (head, text) = current.as_ref().map_or((0, ""), |c| (c.rev, c.text.as_str()));
        if self.rev > head {
            return Ok(Decision::Reply(cx.error(
                ErrorCode::BadRequest,
                format!("rev {} is ahead of text {:?}, which is at rev {head}", self.rev, self.doc),
            )));
        }
        // Exactly the edits rev+1..=head: one pruned meanwhile (the text moved on by a whole
        // history since `rev`) makes the edit too old to transform.
        let complete =
            since.len() as u64 == head - self.rev && since.iter().zip(self.rev + 1..).all(|((rev, _), n)| *rev == n);
        if !complete {
            let current = current.expect("a text with edits exists");
            return Ok(Decision::Reply(ServerFrame::Error {
                code: ErrorCode::Conflict,
                message: format!(
                    "rev {} is older than the edits kept for text {:?} (at rev {head}): start again from `current`",
                    self.rev, self.doc
                ),
                current: Some(Box::new(ServerFrame::Text {
                    room: self.room.to_owned(),
                    doc: self.doc.to_owned(),
                    rev: current.rev,
                    text: current.text,
                    reference: None,
                })),
                level: None,
                retry_after_ms: None,
                oldest: None,
                reference: cx.reference(),
            }));
        }
        let mut ops = self.ops.clone();
        let mut applied = Ok(());
        for (_, accepted) in &since {
            match Operation::transform(&ops, accepted) {
                Ok((transformed, _)) => ops = transformed,
                Err(error) => {
                    applied = Err(error);
                    break;
                }
            }
        }
        let new_text = match applied.and_then(|()| ops.apply(text)) {
            Ok(new_text) => new_text,
            Err(error) => {
                return Ok(Decision::Reply(cx.error(
                    ErrorCode::BadRequest,
                    format!("the edit does not fit text {:?} at rev {}: {error}", self.doc, self.rev),
                )));
            }
        };
        // Measured as JSON, escapes included: that is what a `text` reply carries.
        let json_len = serde_json::to_string(&new_text).map_or(usize::MAX, |json| json.len());
        if json_len > MAX_DATA_BYTES {
            return Ok(Decision::Reply(cx.error(
                ErrorCode::TooLarge,
                format!("the text would be {json_len} bytes as JSON; the limit is {MAX_DATA_BYTES} bytes"),
            )));
        }
        let rev = head + 1;
        let condition = match current {
            None => Condition::NotExists,
            Some(_) => Condition::Equals { attr: "rev".to_owned(), value: Attr::N(layout::seq_attr(head)) },
        };
        let ops_json = serde_json::to_string(&ops).expect("operations serialise");
        let mut steps = vec![
            TxOp::Put {
                item: Item::new(layout::text_key(self.room, self.doc))
                    .with("rev", Attr::N(layout::seq_attr(rev)))
                    .with("text", Attr::S(new_text)),
                condition,
            },
            TxOp::Put {
                item: Item::new(layout::text_edit_key(self.room, self.doc, rev))
                    .with("rev", Attr::N(layout::seq_attr(rev)))
                    .with("ops", Attr::S(ops_json))
                    .with("from", Attr::S(cx.caller.from().to_owned())),
                condition: Condition::Always,
            },
        ];
        if rev > cx.history {
            steps.push(TxOp::Delete {
                key: layout::text_edit_key(self.room, self.doc, rev - cx.history),
                condition: Condition::Always,
            });
        }
        Ok(Decision::Change { steps, outcome: TextEdit { doc: self.doc.to_owned(), rev, ops } })
    }

    fn reply(&self, cx: &Context<'_>, edit: TextEdit) -> ServerFrame {
        ServerFrame::TextAck { room: self.room.to_owned(), edit, reference: cx.reference() }
    }

    fn is_outcome_of(&self, edit: &TextEdit) -> bool {
        edit.doc == self.doc
    }
}
