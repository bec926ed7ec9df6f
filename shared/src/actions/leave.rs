//! `leave {room}`: unsubscribe; a member leaves the room's presence.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::membership;
use crate::protocol::{Invalid, ServerFrame, check_name};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Leave {
    pub room: String,
}

#[async_trait]
impl Action for Leave {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)
    }

    fn access(&self) -> Access<'_> {
        Access::Open
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        membership::unsubscribe(cx.store, cx.clock, cx.heads, &self.room, cx.connection).await?;
        Ok(ServerFrame::Left { room: self.room, reference: cx.reference() })
    }
}
