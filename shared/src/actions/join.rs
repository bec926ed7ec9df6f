//! `join {room, since?, user?}`: subscribe to a room; with `since`, also get the events after it.
//! With `user`, the connection also enters the room's presence (an event every member sees);
//! without it, it listens silently (a dashboard, a backend). A caller with a token may only be
//! present as the user its token names.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::{EngineError, PAGE_EVENTS};
use crate::protocol::{ErrorCode, Invalid, ServerFrame, check_name};
use crate::recovery::Recovered;
use crate::{membership, ordering, recovery};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Join {
    pub room: String,
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
}

#[async_trait]
impl Action for Join {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)?;
        match &self.user {
            Some(user) => check_name("user", user),
            None => Ok(()),
        }
    }

    /// A silent subscriber only reads; a member's `joined` event is a write into the room.
    fn access(&self) -> Access<'_> {
        match self.user {
            Some(_) => Access::ReadWrite(&self.room),
            None => Access::Read(&self.room),
        }
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        if let (Some(user), Some(own)) = (&self.user, &cx.caller.user)
            && user != own
        {
            return Ok(cx.error(
                ErrorCode::Forbidden,
                format!("your token is for user {own:?}: you may join as {own:?}, not as {user:?}"),
            ));
        }
        membership::subscribe(cx.store, cx.clock, cx.heads, &self.room, cx.connection, self.user.as_deref()).await?;
        // The page is read after subscribing: an event committed before the subscription is in
        // the page (or a later one), one committed after it is pushed; a client may see an event
        // both ways and drops the repeat by its seq.
        let head = ordering::head(cx.store, &self.room).await?;
        let page = match self.since {
            Some(since) => match recovery::events_after(cx.store, &self.room, since, PAGE_EVENTS, Some(head)).await? {
                Recovered::Page(page) => page,
                // Still subscribed: the client reloads its state, then syncs from `oldest - 1`.
                Recovered::Expired { oldest } => return Ok(cx.expired(&self.room, since, oldest)),
            },
            None => recovery::EventPage { events: Vec::new(), more: false },
        };
        Ok(ServerFrame::Joined { room: self.room, seq: head, events: page.events, more: page.more, reference: cx.reference() })
    }
}
