//! `ping`: a reply that proves the connection and the route work; keeps idle connections open.

use super::{Action, Context};
use crate::access::Access;
use crate::engine::EngineError;
use crate::protocol::{Invalid, ServerFrame};
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ping {}

#[async_trait]
impl Action for Ping {
    fn check(&self) -> Result<(), Invalid> {
        Ok(())
    }

    fn access(&self) -> Access<'_> {
        Access::Open
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        Ok(ServerFrame::Pong { reference: cx.reference() })
    }
}
