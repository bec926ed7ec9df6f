//! `stock.get {room, sku?, after?}`: one SKU's level, or every SKU of the room (a page of up to
//! 300 in sku order; ask again with `after` = the last sku while `more` is true).

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Invalid, ServerFrame, check_name};
use crate::stock;
use async_trait::async_trait;
use serde::Deserialize;

/// SKUs in one `stocks` reply: each takes at most ~330 bytes (a 256-byte sku and its numbers),
/// so a page stays under 128 KB.
const PAGE: usize = 300;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StockGet {
    pub room: String,
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
}

#[async_trait]
impl Action for StockGet {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)?;
        if let Some(sku) = &self.sku {
            check_name("sku", sku)?;
        }
        if let Some(after) = &self.after {
            check_name("after", after)?;
        }
        Ok(())
    }

    fn access(&self) -> Access<'_> {
        Access::Read(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        if let Some(sku) = &self.sku {
            return Ok(match stock::read(cx.store, &self.room, sku).await? {
                Some(level) => stock::reply(cx, &self.room, level),
                None => cx.error(ErrorCode::NotFound, format!("no SKU {sku:?} in this room")),
            });
        }
        let (items, more) = stock::levels(cx.store, &self.room, self.after.as_deref(), PAGE).await?;
        Ok(ServerFrame::Stocks { room: self.room, items, more, reference: cx.reference() })
    }
}
