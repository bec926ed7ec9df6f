//! `text.get {room, doc}`: a text's current value and revision.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Invalid, ServerFrame, check_name};
use crate::texts;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextGet {
    pub room: String,
    pub doc: String,
}

#[async_trait]
impl Action for TextGet {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)?;
        check_name("doc", &self.doc)
    }

    fn access(&self) -> Access<'_> {
        Access::Read(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        match texts::read(cx.store, &self.room, &self.doc).await? {
            Some(current) => {
                Ok(ServerFrame::Text { room: self.room, doc: self.doc, rev: current.rev, text: current.text, reference: cx.reference() })
            }
            None => Ok(cx.error(ErrorCode::NotFound, format!("no text {:?} in this room", self.doc))),
        }
    }
}
