//! `text.edit {room, doc, rev, ops, id?}`: apply an ot.js TextOperation made at revision `rev`.
//! The server transforms it past the edits accepted since `rev`, applies it, and replies with
//! the edit as applied and the new revision; the first edit, at `rev: 0`, creates the text.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::protocol::{Invalid, ServerFrame, check_write};
use crate::text::Operation;
use crate::{state, texts};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextEdit {
    pub room: String,
    pub doc: String,
    pub rev: u64,
    pub ops: Operation,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for TextEdit {
    fn check(&self) -> Result<(), Invalid> {
        check_write(&self.room, "doc", &self.doc, self.id.as_deref())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let write = texts::TextWrite { room: &self.room, doc: &self.doc, rev: self.rev, ops: &self.ops };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
