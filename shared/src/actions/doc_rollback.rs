//! `doc.rollback {room, doc, to, base, id?}`: a new version whose value is version `to`'s.
//! Nothing is rewritten: history only grows. `not_found` if `to` is no longer kept.

use super::{Action, Context};
use crate::access::Access;
use crate::documents::{self, DocWrite, Next};
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Invalid, ServerFrame, check_write};
use crate::state;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocRollback {
    pub room: String,
    pub doc: String,
    pub to: u64,
    pub base: u64,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for DocRollback {
    fn check(&self) -> Result<(), Invalid> {
        check_write(&self.room, "doc", &self.doc, self.id.as_deref())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        // A kept version never changes, so it is read once, outside the write's retry loop.
        let target = match documents::read_version(cx.store, &self.room, &self.doc, self.to).await? {
            Some(target) if !target.deleted => target,
            Some(_) => {
                return Ok(cx.error(ErrorCode::BadRequest, format!("version {} is a deletion; roll back to a version with a value", self.to)));
            }
            None => {
                return Ok(cx.error(
                    ErrorCode::NotFound,
                    format!("document {:?} has no version {} (only the last versions are kept)", self.doc, self.to),
                ));
            }
        };
        let write = DocWrite {
            room: &self.room,
            doc: &self.doc,
            decide: |cx: &Context<'_>, current: Option<&documents::DocState>| {
                match documents::expect_base(cx, &self.room, &self.doc, current, self.base) {
                    Ok(current) => Next::Write { value: target.value.clone(), strategy: current.strategy, deleted: false },
                    Err(reply) => Next::Reply(reply),
                }
            },
        };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
