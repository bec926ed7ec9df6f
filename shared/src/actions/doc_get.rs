//! `doc.get {room, doc, version?}`: a document's latest version, or a kept older one.

use super::{Action, Context};
use crate::access::Access;
use crate::documents::{self, DocState};
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Invalid, ServerFrame, check_name};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocGet {
    pub room: String,
    pub doc: String,
    #[serde(default)]
    pub version: Option<u64>,
}

#[async_trait]
impl Action for DocGet {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)?;
        check_name("doc", &self.doc)
    }

    fn access(&self) -> Access<'_> {
        Access::Read(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let Some(latest) = documents::read(cx.store, &self.room, &self.doc).await? else {
            return Ok(documents::not_found(cx, &self.doc));
        };
        let state = match self.version {
            None | Some(0) if latest.deleted => return Ok(documents::not_found(cx, &self.doc)),
            None => latest,
            Some(version) if version == latest.version => latest,
            Some(version) => match documents::read_version(cx.store, &self.room, &self.doc, version).await? {
                Some(kept) => DocState {
                    doc: self.doc.clone(),
                    version,
                    value: kept.value,
                    strategy: kept.strategy.unwrap_or(latest.strategy),
                    deleted: kept.deleted,
                },
                None => {
                    return Ok(cx.error(
                        ErrorCode::NotFound,
                        format!(
                            "document {:?} has no version {version} (it is at {}; only the last versions are kept)",
                            self.doc, latest.version
                        ),
                    ));
                }
            },
        };
        Ok(documents::reply(cx, &self.room, state))
    }
}
