//! `doc.put {room, doc, base, value, strategy?, id?}`: write a document's whole value.
//! `base: 0` creates it (with `strategy`, default `reject`); a `base` that is not the latest
//! version is a `conflict` carrying the current state, unless the strategy is `lww`.

use super::{Action, Context};
use crate::access::Access;
use crate::documents::{self, DocWrite, Next, Strategy};
use crate::engine::EngineError;
use crate::protocol::{Invalid, JsonData, ServerFrame, check_data, check_write};
use crate::state;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocPut {
    pub room: String,
    pub doc: String,
    pub base: u64,
    pub value: JsonData,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for DocPut {
    fn check(&self) -> Result<(), Invalid> {
        check_data("value", &self.value)?;
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
                let live = current.filter(|c| !c.deleted);
                if self.base == 0 {
                    return match live {
                        Some(current) => Next::Reply(documents::conflict(
                            cx,
                            &self.room,
                            current.clone(),
                            format!("document {:?} exists (version {}): base 0 only creates", self.doc, current.version),
                        )),
                        None => Next::Write {
                            value: self.value.clone(),
                            strategy: self.strategy.unwrap_or_default(),
                            deleted: false,
                        },
                    };
                }
                match documents::expect_base(cx, &self.room, &self.doc, current, self.base) {
                    Ok(current) => match self.strategy {
                        Some(strategy) if strategy != current.strategy => Next::Reply(cx.error(
                            crate::protocol::ErrorCode::BadRequest,
                            format!("document {:?} resolves conflicts by {}; a strategy is chosen only at creation", self.doc, current.strategy.name()),
                        )),
                        _ => Next::Write { value: self.value.clone(), strategy: current.strategy, deleted: false },
                    },
                    Err(reply) => Next::Reply(reply),
                }
            },
        };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
