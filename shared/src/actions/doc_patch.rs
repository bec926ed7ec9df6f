//! `doc.patch {room, doc, base, patch, id?}`: change part of a document with an RFC 7386 JSON
//! merge patch. Under `reject` a stale `base` is a `conflict`; under `merge` only a change
//! after `base` of a field the patch touches is, and others' changes are kept; under `lww` the
//! patch applies to whatever is there.

use super::{Action, Context};
use crate::access::Access;
use crate::documents::{self, DocState, DocWrite, Next, Strategy};
use crate::engine::EngineError;
use crate::protocol::{Invalid, JsonData, ServerFrame, check_data, check_write};
use crate::state;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocPatch {
    pub room: String,
    pub doc: String,
    pub base: u64,
    pub patch: JsonData,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for DocPatch {
    fn check(&self) -> Result<(), Invalid> {
        check_data("patch", &self.patch)?;
        check_write(&self.room, "doc", &self.doc, self.id.as_deref())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let patch: serde_json::Value = serde_json::from_str(self.patch.as_json()).expect("JsonData holds JSON");
        // The value the client patched, to tell (under `merge`) which fields others changed since.
        // A kept version never changes, so it is read once, outside the write's retry loop.
        let base = match self.base {
            0 => None,
            version => documents::read_version(cx.store, &self.room, &self.doc, version).await?,
        };
        let base_value = base.map(|b| serde_json::from_str::<serde_json::Value>(b.value.as_json()).expect("stored JSON"));
        let write = DocWrite {
            room: &self.room,
            doc: &self.doc,
            decide: |cx: &Context<'_>, current: Option<&DocState>| {
                let merging = current.is_some_and(|c| c.strategy == Strategy::Merge && !c.deleted);
                let current = if merging {
                    current.cloned().expect("merging needs a document")
                } else {
                    match documents::expect_base(cx, &self.room, &self.doc, current, self.base) {
                        Ok(current) => current,
                        Err(reply) => return Next::Reply(reply),
                    }
                };
                let mut value: serde_json::Value = serde_json::from_str(current.value.as_json()).expect("stored JSON");
                if merging && current.version != self.base {
                    let stale = match &base_value {
                        // The base is no longer kept (or never existed): nothing says what changed.
                        None => true,
                        Some(base_value) => documents::patch_conflicts(&patch, base_value, &value),
                    };
                    if stale {
                        let message = format!(
                            "a field this patch changes was changed after version {} (document {:?} is at {}): rebase on `current`",
                            self.base, self.doc, current.version
                        );
                        return Next::Reply(documents::conflict(cx, &self.room, current, message));
                    }
                }
                json_patch::merge(&mut value, &patch);
                Next::Write { value: JsonData::from_value(&value), strategy: current.strategy, deleted: false }
            },
        };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
