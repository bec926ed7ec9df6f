//! `presence {room}`: who is in the room (the connections that joined it with a `user`).

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::membership;
use crate::protocol::{Invalid, ServerFrame, check_name};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Presence {
    pub room: String,
}

#[async_trait]
impl Action for Presence {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)
    }

    fn access(&self) -> Access<'_> {
        Access::Read(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let members = membership::members(cx.store, &self.room).await?;
        Ok(ServerFrame::Presence { room: self.room, members, reference: cx.reference() })
    }
}
