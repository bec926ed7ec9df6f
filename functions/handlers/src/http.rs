//! The HTTP API, beside the WebSocket: a backend publishes with a POST, a reader with no
//! WebSocket reads with a GET, and waits for the next event with `wait` (long polling).
//!
//! * `POST /rooms/{room}/events` `{"id"?, "data"}` -> `200 {"room","seq","id"}`. It is a
//!   `publish` frame, handled by the same engine: the same ordering, idempotency (an anonymous
//!   caller's ids share the room's namespace, so a retried POST is recognised), rate limit and
//!   limits; every subscriber of the room gets it through the same fanout.
//! * `GET /rooms/{room}/events?since=N&wait=S` -> `200 {"room","seq","events","more"}`, `seq`
//!   being the room's head; with `wait`, held until an event after `since` exists or S seconds
//!   (at most 25) pass.
//!
//! Errors are the WebSocket's error frames, `{"type":"error","code","message",...}`, with the
//! HTTP status that fits the code. The caller is who its token says (`Authorization: Bearer`,
//! or `?token=`), checked with the same keys as the WebSocket's `$connect`; on AWS, a backend
//! may instead sign its requests with SigV4 on the IAM API (`BackendHttpApi`), whose every
//! route API Gateway authorizes with IAM: such a caller may read and write every room.
//!
//! The events are API Gateway HTTP API (payload 2.0) events: the HTTP Lambda receives them, and
//! the runner builds them, as it builds WebSocket events.

use crate::authorizer::{Keyring, Refusal, TOKEN_PARAMETER};
use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizerIamDescription, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use livesync_core::Engine;
use livesync_core::access::{Access, Caller, Grants};
use livesync_core::engine::Chain;
use livesync_core::protocol::{ErrorCode, Event, MAX_MESSAGE_BYTES, ServerFrame, check_name};
use livesync_core::reading::{self, Arrivals, MAX_WAIT, Polled};
use serde::Serialize;
use std::time::Duration;

/// The publish route, as the template declares it (a test holds the two equal).
pub const PUBLISH_ROUTE: &str = "POST /rooms/{room}/events";
/// The read (long poll) route.
pub const READ_ROUTE: &str = "GET /rooms/{room}/events";

/// The largest body a POST may carry: a WebSocket message's limit, so a publish is refused the
/// same way whichever way it comes.
pub const MAX_BODY_BYTES: usize = MAX_MESSAGE_BYTES;

/// How often a long poll on a Lambda, which sees no change feed, reads the room again: each
/// look is two small queries (the head, the events after `since`).
pub const LOOK_AGAIN_EVERY: Duration = Duration::from_secs(1);

/// Everything an HTTP request needs, whoever hosts it.
pub struct HttpApi<'a> {
    pub engine: &'a Engine,
    pub keyring: &'a Keyring,
    pub arrivals: &'a dyn Arrivals,
}

impl HttpApi<'_> {
    /// One HTTP API request in, its response out. Never fails: every refusal is a response.
    pub async fn handle(&self, event: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let answer = match event.route_key.as_deref().unwrap_or_default() {
            PUBLISH_ROUTE => self.publish(event).await,
            READ_ROUTE => self.read(event).await,
            route => Err(refuse(ErrorCode::NotFound, format!("no such route: {route}; see docs/PROTOCOL.md (HTTP)"))),
        };
        answer.unwrap_or_else(|refused| *refused)
    }

    /// What every read of a room needs, a GET's or (in the runner) an event stream's: a valid
    /// room name, a caller its token lets read it, and the seq to read after: `resume` (a
    /// stream's `Last-Event-ID`) if given, else `?since=` (0 if absent).
    pub async fn start_reading<'e>(
        &self,
        event: &'e ApiGatewayV2httpRequest,
        resume: Option<&str>,
    ) -> Result<(&'e str, u64), Box<ApiGatewayV2httpResponse>> {
        let room = room(event)?;
        let caller = self.caller(event).await.map_err(|refusal| Box::new(refused(&refusal)))?;
        if !caller.may(Access::Read(room)) {
            let message = format!("your token does not grant read access to room {room:?}");
            return Err(refuse(ErrorCode::Forbidden, message));
        }
        let since = match resume.or(event.query_string_parameters.first("since")).map(str::parse::<u64>) {
            None => 0,
            Some(Ok(since)) => since,
            Some(Err(_)) => {
                let message = "since (or Last-Event-ID) must be a seq: a whole number, 0 or more";
                return Err(refuse(ErrorCode::BadRequest, message));
            }
        };
        Ok((room, since))
    }

    /// Who is asking: a backend whose SigV4 signature API Gateway checked (the IAM API's
    /// routes), or the token of `Authorization: Bearer` or of `?token=` (what an `EventSource`
    /// can send), checked as `$connect` checks it.
    pub async fn caller(&self, event: &ApiGatewayV2httpRequest) -> Result<Caller, Refusal> {
        // Only API Gateway writes `authorizer.iam`, and only on a route whose authorizer is
        // AWS_IAM: the runner builds its events without it.
        if let Some(iam) = event.request_context.authorizer.as_ref().and_then(|a| a.iam.as_ref()) {
            return Ok(Caller::user(iam_principal(iam), &session(event), Grants::all()));
        }
        let token = bearer(&event.headers).or_else(|| event.query_string_parameters.first(TOKEN_PARAMETER));
        let origin = event.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        // An anonymous caller's `from` is derived from this: the request's own id, never its
        // address, which a hash of would give away to every reader of the room.
        let request = event.request_context.request_id.as_deref().unwrap_or("unknown");
        self.keyring.authorize(token, origin, &format!("http-request:{request}")).await
    }

    async fn publish(&self, event: &ApiGatewayV2httpRequest) -> Answer {
        let room = room(event)?;
        let caller = self.caller(event).await.map_err(|refusal| Box::new(refused(&refusal)))?;
        let body = body(event)?;
        let shape = "the body is a JSON object: {\"data\": ..., \"id\"?: \"...\"}";
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(fields)) if fields.contains_key("data") => {}
            Ok(serde_json::Value::Object(_)) => {
                return Err(refuse(ErrorCode::BadRequest, format!("missing field \"data\": {shape}")));
            }
            Ok(_) => return Err(refuse(ErrorCode::BadRequest, format!("not an object: {shape}"))),
            Err(e) => return Err(refuse(ErrorCode::BadRequest, format!("the body is not JSON: {e}"))),
        }
        // The body's own text goes into the frame, so the engine's parser sees it as sent: a
        // member named twice is refused there (parsers disagree on which one wins), as over a
        // WebSocket; so is an `action` or `room` in the body, which the route names.
        let text = String::from_utf8_lossy(&body);
        let members = text.trim_start().strip_prefix('{').unwrap_or_default();
        let frame = format!(r#"{{"action":"publish","room":{},{members}"#, serde_json::Value::from(room));
        let request_id = event.request_context.request_id.clone().unwrap_or_else(|| session(event));
        Ok(match self.engine.handle(&caller, &session(event), &request_id, &frame).await {
            ServerFrame::Ack { room, seq, id, .. } => json(200, &Acked { room, seq, id }),
            refusal => refusal_response(&refusal),
        })
    }

    async fn read(&self, event: &ApiGatewayV2httpRequest) -> Answer {
        let (room, since) = self.start_reading(event, None).await?;
        let wait = match event.query_string_parameters.first("wait").map(str::parse::<u64>) {
            None => Duration::ZERO,
            Some(Ok(secs)) if Duration::from_secs(secs) <= MAX_WAIT => Duration::from_secs(secs),
            Some(_) => {
                let message = format!("wait must be a whole number of seconds, at most {}", MAX_WAIT.as_secs());
                return Err(refuse(ErrorCode::BadRequest, message));
            }
        };
        let mut watch = self.arrivals.watch(room);
        Ok(match reading::poll(self.engine.store().as_ref(), watch.as_mut(), room, since, wait).await {
            Ok(Polled::Page { head, page }) => {
                json(200, &RoomPage { room, seq: head, events: &page.events, more: page.more })
            }
            Ok(Polled::Expired { oldest }) => refusal_response(&ServerFrame::expired(room, since, oldest, None)),
            Err(e) => {
                tracing::error!(room, error = %Chain(&e), "HTTP read failed");
                error(ErrorCode::Internal, "the server failed to read the room; try again")
            }
        })
    }
}

/// A handler's answer; a refusal is boxed (a response is large) and answered as it is.
type Answer = Result<ApiGatewayV2httpResponse, Box<ApiGatewayV2httpResponse>>;

fn refuse(code: ErrorCode, message: impl Into<String>) -> Box<ApiGatewayV2httpResponse> {
    Box::new(error(code, message))
}

/// The room a request's path names, if its name is valid.
fn room(event: &ApiGatewayV2httpRequest) -> Result<&str, Box<ApiGatewayV2httpResponse>> {
    let room = event.path_parameters.get("room").map(String::as_str).unwrap_or_default();
    check_name("room", room).map_err(|invalid| refuse(invalid.code, invalid.message))?;
    Ok(room)
}

/// The rate-limit bucket of an anonymous HTTP caller: its address, as a connection's is its
/// connection (a caller with a token has its user's bucket).
pub fn session(event: &ApiGatewayV2httpRequest) -> String {
    format!("http:{}", event.request_context.http.source_ip.as_deref().unwrap_or("unknown"))
}

/// Who an IAM-signed request is from, as room members see it: `iam:` and the principal's
/// resource (`iam:assumed-role/inventory/i-0abc`), without the account in the ARN.
fn iam_principal(iam: &ApiGatewayRequestAuthorizerIamDescription) -> String {
    let principal = iam.user_arn.as_deref().or(iam.caller_id.as_deref()).unwrap_or("unknown");
    format!("iam:{}", principal.splitn(6, ':').last().unwrap_or(principal))
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The request body as bytes, or the refusal of one too large or badly encoded.
fn body(event: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, Box<ApiGatewayV2httpResponse>> {
    let text = event.body.as_deref().unwrap_or_default();
    let bytes = if event.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| Box::new(error(ErrorCode::BadRequest, "the body is not valid base64")))?
    } else {
        text.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Box::new(too_large(bytes.len())));
    }
    Ok(bytes)
}

/// The refusal of a body over [`MAX_BODY_BYTES`] (the runner refuses a longer one before it
/// has read it all).
pub fn too_large(bytes: usize) -> ApiGatewayV2httpResponse {
    error(
        ErrorCode::TooLarge,
        format!(
            "the body is {bytes} bytes or more; at most {MAX_BODY_BYTES} bytes are taken, as for a WebSocket message"
        ),
    )
}

/// An authorizer's refusal as a response: 401 with no valid token, 403 for an origin.
pub fn refused(refusal: &Refusal) -> ApiGatewayV2httpResponse {
    // The reason is for the logs: telling a caller why its token failed helps an attacker more
    // than a user.
    tracing::info!(reason = refusal.reason(), status = refusal.status(), "HTTP request refused");
    match refusal {
        Refusal::Unauthorized(_) => error(
            ErrorCode::Unauthorized,
            "a valid token is required: send Authorization: Bearer <token> (or ?token=<token>)",
        ),
        Refusal::Forbidden(_) => error(ErrorCode::Forbidden, "requests from this page's origin are not allowed"),
    }
}

/// An error of this code, as a response.
pub fn error(code: ErrorCode, message: impl Into<String>) -> ApiGatewayV2httpResponse {
    refusal_response(&ServerFrame::error(code, message, None))
}

/// An error frame as a response, with the status that fits its code (and `Retry-After` when it
/// says when to retry).
pub fn refusal_response(frame: &ServerFrame) -> ApiGatewayV2httpResponse {
    let (status, retry_after_ms) = match frame {
        ServerFrame::Error { code, retry_after_ms, .. } => (status_of(*code), *retry_after_ms),
        _ => (500, None),
    };
    let mut response = json(status, frame);
    if let Some(ms) = retry_after_ms
        && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers.insert(header::RETRY_AFTER, value);
    }
    response
}

/// The HTTP status of an error code.
pub fn status_of(code: ErrorCode) -> i64 {
    match code {
        ErrorCode::BadRequest | ErrorCode::UnknownAction => 400,
        ErrorCode::Unauthorized => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::Conflict | ErrorCode::InsufficientStock => 409,
        ErrorCode::Expired => 410,
        ErrorCode::TooLarge => 413,
        ErrorCode::RateLimited => 429,
        ErrorCode::Internal => 500,
        ErrorCode::Unavailable => 503,
    }
}

/// The answer to a publish.
#[derive(Serialize)]
struct Acked {
    room: String,
    seq: u64,
    id: String,
}

/// The answer to a read: the room's head, and the events after `since`.
#[derive(Serialize)]
struct RoomPage<'a> {
    room: &'a str,
    seq: u64,
    events: &'a [Event],
    more: bool,
}

fn json(status: i64, body: &impl Serialize) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Serialising these types cannot fail: every map key is a string.
    response.body = Some(Body::Text(serde_json::to_string(body).expect("answers always serialise")));
    response
}
