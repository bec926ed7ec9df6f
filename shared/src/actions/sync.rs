//! `sync {room, since}`: the events after `since`, one page at a time.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::{EngineError, PAGE_EVENTS};
use crate::protocol::{Invalid, ServerFrame, check_name};
use crate::recovery::{self, Recovered};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sync {
    pub room: String,
    pub since: u64,
}

#[async_trait]
impl Action for Sync {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)
    }

    fn access(&self) -> Access<'_> {
        Access::Read(&self.room)
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        match recovery::events_after(cx.store, &self.room, self.since, PAGE_EVENTS, None).await? {
            Recovered::Page(page) => Ok(ServerFrame::Events {
                room: self.room,
                events: page.events,
                more: Some(page.more),
                reference: cx.reference(),
            }),
            Recovered::Expired { oldest } => Ok(cx.expired(&self.room, self.since, oldest)),
        }
    }
}
