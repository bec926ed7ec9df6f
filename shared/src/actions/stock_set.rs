//! `stock.set {room, sku, level, id?}`: set a SKU's level (a delivery counted, a correction);
//! creates the SKU.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::protocol::{Invalid, ServerFrame, check_write};
use crate::state;
use crate::stock::{Change, StockWrite};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StockSet {
    pub room: String,
    pub sku: String,
    pub level: u32,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for StockSet {
    fn check(&self) -> Result<(), Invalid> {
        check_write(&self.room, "sku", &self.sku, self.id.as_deref())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let write = StockWrite { room: &self.room, sku: &self.sku, change: Change::Set(i64::from(self.level)) };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}
