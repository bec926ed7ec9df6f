//! `doc.delete {room, doc, base, id?}`: delete a document at `base`. Its history stays; the
//! reply and the event carry `"deleted": true`, and the document can be created again.

use super::{Action, Context};
use crate::access::Access;
use crate::documents::{self, DocWrite, Next};
use crate::engine::EngineError;
use crate::protocol::{Invalid, JsonData, ServerFrame, check_write};
use crate::state;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocDelete {
    pub room: String,
    pub doc: String,
    pub base: u64,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for DocDelete {
    fn check(&self) -> Result<(), Invalid> {
        check_write(&self.room, "doc", &self.doc, self.id.as_deref())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let write = DocWrite {
            room: &self.room,
            doc: &self.doc,
            decide: |cx: &Context<'_>, current: Option<&documents::DocState>| {
                match documents::expect_base(cx, &self.room, &self.doc, current, self.base) {
                    Ok(current) => Next::Write { value: JsonData::from_value(&serde_json::Value::Null), strategy: current.strategy, deleted: true },
                    Err(reply) => Next::Reply(reply),
                }
            },
        };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
