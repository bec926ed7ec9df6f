//! The Lambda handlers: API Gateway WebSocket events in, LiveSync core calls, responses out.
//!
//! These are the functions behind the `connect`, `disconnect` and `message` Lambdas, and the
//! local runner calls the very same ones with the events it builds, so whatever a client sees
//! locally it sees on AWS. They only adapt: read the event, call the [`Engine`], map the result.
//!
//! [`fanout`] is the stream function's handler: a DynamoDB stream batch in, frames posted,
//! failed records out as `batchItemFailures`. [`authorizer`] is the `$connect` authorizer's:
//! a token in, the caller's grants (or a 401) out. [`jobs`] is the backup and report functions':
//! a scheduled invocation in, one run of the job (exactly once in effect) out. [`http`] is the
//! HTTP API's: a publish with a POST, a read (or a long poll) with a GET.
//!
//! The `message` handler serves `$default` and every action route. Its response body is the
//! direct reply: API Gateway sends it back on the connection when the route has a route
//! response (`RouteResponseSelectionExpression: $default`), and the runner does the same.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use livesync_core::access::Caller;
use livesync_core::protocol::{ErrorCode, ServerFrame};
use livesync_core::{Engine, EngineError};

pub mod authorizer;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod metrics;
mod stream;
pub use stream::{change_from_record, fanout};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the event has no requestContext.{0}; is this an API Gateway WebSocket event?")]
    MissingContext(&'static str),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// `$connect`: the authorizer has already decided; nothing is stored. A connection's items are
/// written when it first joins a room (or is rate limited), so a connection costs no write, and
/// a store that refuses writes (a full disk) still lets clients connect and read. An error
/// refuses the connection (API Gateway answers the upgrade with 500).
pub fn connect(event: ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let connection = connection_id(&event)?;
    tracing::info!(connection, source_ip = event.request_context.identity.source_ip.as_deref(), "connect");
    Ok(response(None))
}

/// `$disconnect`: best effort on AWS, so the connection's items also carry a TTL.
pub async fn disconnect(
    engine: &Engine,
    event: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let connection = connection_id(&event)?;
    let rooms = engine.disconnect(connection).await?;
    tracing::info!(connection, rooms, status = event.request_context.disconnect_status_code, "disconnect");
    Ok(response(None))
}

/// `$default` and the action routes: one client frame in, its direct reply in the body.
pub async fn message(
    engine: &Engine,
    event: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    Ok(reply_response(&message_reply(engine, event).await?))
}

/// The direct reply to one client frame (the message function also logs its metrics).
pub async fn message_reply(
    engine: &Engine,
    event: ApiGatewayWebsocketProxyRequest,
) -> Result<ServerFrame, HandlerError> {
    let connection = connection_id(&event)?;
    let context = &event.request_context;
    let request_id = context
        .request_id
        .as_deref()
        .or(context.message_id.as_deref())
        .ok_or(HandlerError::MissingContext("requestId"))?;
    let route = context.route_key.as_deref().unwrap_or("$default");
    tracing::info!(connection, route, bytes = event.body.as_ref().map_or(0, String::len), "route");
    // API Gateway attaches what the `$connect` authorizer returned to every event of the
    // connection; without it (no authorizer ran), nothing is allowed.
    let caller = match Caller::from_context(connection, &context.authorizer.fields) {
        Ok(caller) => caller,
        Err(error) => {
            return Ok(ServerFrame::error(ErrorCode::Forbidden, error.to_string(), None));
        }
    };
    let reply = match (&event.body, event.is_base64_encoded) {
        (Some(body), false) => engine.handle(&caller, connection, request_id, body).await,
        (_, true) => {
            ServerFrame::error(ErrorCode::BadRequest, "binary frames are not supported; send JSON text frames", None)
        }
        (None, false) => {
            ServerFrame::error(ErrorCode::BadRequest, "empty frame; send a JSON object with an \"action\"", None)
        }
    };
    Ok(reply)
}

/// A reply as the route's response: API Gateway sends the body back on the connection.
pub fn reply_response(reply: &ServerFrame) -> ApiGatewayProxyResponse {
    response(Some(reply.to_json()))
}

fn connection_id(event: &ApiGatewayWebsocketProxyRequest) -> Result<&str, HandlerError> {
    event.request_context.connection_id.as_deref().ok_or(HandlerError::MissingContext("connectionId"))
}

fn response(body: Option<String>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = 200;
    response.body = body.map(Body::Text);
    response
}
