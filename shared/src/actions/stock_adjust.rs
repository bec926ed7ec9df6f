//! `stock.adjust {room, sku, delta, id?}`: add `delta` (negative for a sale) to a SKU's level.
//! A level below zero is refused with `insufficient_stock` and the level left; a sale with an
//! `id` is never applied twice.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::protocol::{Invalid, ServerFrame, check_write};
use crate::state;
use crate::stock::{Change, StockWrite};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StockAdjust {
    pub room: String,
    pub sku: String,
    pub delta: i32,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for StockAdjust {
    fn check(&self) -> Result<(), Invalid> {
        check_write(&self.room, "sku", &self.sku, self.id.as_deref())?;
        if self.delta == 0 {
            return Err(Invalid::bad_request("\"delta\" must not be 0"));
        }
        Ok(())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let write = StockWrite { room: &self.room, sku: &self.sku, change: Change::Adjust(i64::from(self.delta)) };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
