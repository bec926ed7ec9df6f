//! `doc.history {room, doc, before?}`: kept versions, newest first, a page at a time; ask again
//! with `before` = the oldest version received while `more` is true.

use super::{Action, Context};
use crate::access::Access;
use crate::documents;
use crate::engine::{EngineError, PAGE_EVENTS};
use crate::protocol::{Invalid, ServerFrame, check_name};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocHistory {
    pub room: String,
    pub doc: String,
    #[serde(default)]
    pub before: Option<u64>,
}

#[async_trait]
impl Action for DocHistory {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)?;
        check_name("doc", &self.doc)
    }

    fn access(&self) -> Access<'_> {
        Access::Read(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        if documents::read(cx.store, &self.room, &self.doc).await?.is_none() {
            return Ok(documents::not_found(cx, &self.doc));
        }
        let (versions, more) = documents::history(cx.store, &self.room, &self.doc, self.before, PAGE_EVENTS).await?;
        Ok(ServerFrame::History { room: self.room, doc: self.doc, versions, more, reference: cx.reference() })
    }
}
