//! HTTP beside the WebSocket: what API Gateway's HTTP API does before the HTTP Lambda runs
//! (route match, path parameters, the payload 2.0 event), and Server-Sent Events, which only
//! the runner serves (docs/PROTOCOL.md says why a deployed stack offers long polling instead).
//!
//! * `POST|GET /rooms/{room}/events`: the event is built and handed to the same
//!   [`livesync_handlers::http::HttpApi`] the Lambda runs; its response goes back as is.
//! * `GET /rooms/{room}/stream?since=N`: `text/event-stream`. The backlog after `N` (or after the
//!   `Last-Event-ID` a reconnecting `EventSource` sends), then each event as it is committed,
//!   as `id: <seq>`, `event: event`, `data: <the event frame>`; a comment line when the room
//!   has been quiet for the keep-alive period, so proxies keep the stream open. The stream
//!   reads the store after the last seq it sent whenever the fanout says the room moved, so it
//!   has no gap and no repeat, and a reader that does not keep up only falls behind: nothing
//!   is queued for it but one page.

use crate::App;
use crate::connections::StreamBytes;
use crate::gateway;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use livesync_core::engine::Chain;
use livesync_core::protocol::{ErrorCode, ServerFrame};
use livesync_core::reading::{self, Arrivals, Polled};
use livesync_handlers::authorizer::Origins;
use livesync_handlers::http::{self as api, HttpApi, MAX_BODY_BYTES};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The stream route (runner only).
pub const STREAM_ROUTE: &str = "GET /rooms/{room}/stream";

/// Chunks (events) written ahead of a stream's reader: beyond it the stream waits for it.
const STREAM_AHEAD: usize = 1;

/// How long a stream waits for its reader to take a chunk before it ends as too slow.
const STALLED: Duration = Duration::from_secs(10);

/// How long a request's body may take to arrive: a body that stalls must not hold its socket.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// How much of a refused (too large) body is read before the answer.
const DRAIN_BYTES: usize = 1024 * 1024;

/// How long a disconnected `EventSource` waits before it reconnects (the `retry:` field).
const RECONNECT_MS: u64 = 1_000;

/// What a browser page on another origin may send, as the template's `HttpApi`
/// `CorsConfiguration` lets it (a test holds the two equal).
pub const CORS_METHODS: [&str; 2] = ["GET", "POST"];
pub const CORS_HEADERS: [&str; 2] = ["authorization", "content-type"];
pub const CORS_MAX_AGE_SECS: u64 = 600;

/// Cross-origin requests to the HTTP routes, answered as API Gateway answers them for the HTTP
/// API: a preflight from an allowed origin gets the methods and headers above; a request from
/// one gets `Access-Control-Allow-Origin`. The origins are those allowed to open a WebSocket
/// (`--allow-origins`); from any other, the browser withholds the answer (and the handler
/// refuses the request with 403 as well).
pub fn cors(origins: Origins) -> CorsLayer {
    let methods = CORS_METHODS.map(|method| Method::from_bytes(method.as_bytes()).expect("a method"));
    let headers = CORS_HEADERS.map(HeaderName::from_static);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| origin.to_str().is_ok_and(|o| origins.allows(Some(o)))))
        .allow_methods(methods)
        .allow_headers(headers)
        .max_age(Duration::from_secs(CORS_MAX_AGE_SECS))
}

/// `POST|GET /rooms/{room}/events`, through the HTTP Lambda's handler.
pub(crate) async fn events(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let route = format!("{} /rooms/{{room}}/events", request.method());
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(BODY_DEADLINE, read_body(body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(refused)) => return response(*refused),
        Err(_) => {
            let message = format!("the request body did not arrive within {} s", BODY_DEADLINE.as_secs());
            return response(api::error(ErrorCode::BadRequest, message));
        }
    };
    let event = http_event(&parts, remote, &route, &room, &app, Some(body));
    // A read (a long poll) ends with its client: nothing of it outlives the socket.
    if route != api::PUBLISH_ROUTE {
        return response(
            HttpApi { engine: &app.engine, keyring: &app.authorizer, arrivals: &app.readers }.handle(&event).await,
        );
    }
    // A publish is handled to its end in a task of its own, as a WebSocket frame is: a client
    // that goes away must not cancel a write that other clients' publishes share (the room's
    // group commit).
    let handled = tokio::spawn(async move {
        HttpApi { engine: &app.engine, keyring: &app.authorizer, arrivals: &app.readers }.handle(&event).await
    });
    match handled.await {
        Ok(answer) => response(answer),
        Err(error) => {
            tracing::error!(%error, "HTTP handler panicked");
            response(api::error(ErrorCode::Internal, "the server failed to handle this request"))
        }
    }
}

/// A request body, up to [`MAX_BODY_BYTES`]. A longer one is read on (and dropped) up to
/// [`DRAIN_BYTES`] before it is refused: a socket closed with unread data is reset, and the
/// client would see a reset instead of its 413.
async fn read_body(body: Body) -> Result<Bytes, Box<ApiGatewayV2httpResponse>> {
    use futures_util::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0;
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return Err(Box::new(api::error(ErrorCode::BadRequest, "the request body could not be read")));
        };
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_BYTES {
            break;
        }
    }
    if seen > MAX_BODY_BYTES { Err(Box::new(api::too_large(seen))) } else { Ok(Bytes::from(kept)) }
}

/// `GET /rooms/{room}/stream`: Server-Sent Events.
pub(crate) async fn stream(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let event = http_event(&parts, remote, STREAM_ROUTE, &room, &app, None);
    // A reconnecting EventSource says where it was; a new one may say `since`.
    let resume =
        parts.headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|id| !id.is_empty());
    let http = HttpApi { engine: &app.engine, keyring: &app.authorizer, arrivals: &app.readers };
    let since = match http.start_reading(&event, resume).await {
        Ok((_, since)) => since,
        Err(refused) => return response(*refused),
    };
    let (chunks, body) = mpsc::channel::<Bytes>(STREAM_AHEAD);
    tokio::spawn(follow(app.clone(), room, since, chunks));
    let body = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), body))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Writes the room's events after `since` to a stream until its reader goes, falls behind,
/// reaches the connection's maximum age, or the runner stops. An ending stream is resumed by
/// the `EventSource` (after `retry`) from its last id: nothing is lost by ending one.
async fn follow(app: Arc<App>, room: String, since: u64, chunks: mpsc::Sender<Bytes>) {
    let keep_alive = Duration::from_secs(app.limits.stream_keepalive_secs.max(1));
    let mut stopping = app.stopping.clone();
    let mut watch = app.readers.watch(&room);
    let mut last = since;
    let mut stream = Stream { chunks, on_its_way: None, app: app.clone() };
    let too_old = tokio::time::sleep(app.max_connection);
    tokio::pin!(too_old);
    if stream.send(format!("retry: {RECONNECT_MS}\n\n")).await.is_err() {
        return;
    }
    loop {
        let polled = tokio::select! {
            polled = reading::poll(app.engine.store().as_ref(), watch.as_mut(), &room, last, keep_alive) => polled,
            () = stream.chunks.closed() => return,
            () = crate::stopped(&mut stopping) => return,
            () = &mut too_old => return,
        };
        let sent = match polled {
            Ok(Polled::Page { page, .. }) if page.events.is_empty() => stream.send(": keep-alive\n\n".to_owned()).await,
            // One chunk per event: what waits for a slow reader is one event, not a page.
            Ok(Polled::Page { page, .. }) => {
                let mut sent = Ok(());
                for event in page.events {
                    let seq = event.seq;
                    let frame = ServerFrame::Event(event).to_json();
                    sent = stream.send(format!("id: {seq}\nevent: event\ndata: {frame}\n\n")).await;
                    if sent.is_err() {
                        break;
                    }
                    last = seq;
                }
                sent
            }
            // The reader must reload the room's state; reconnecting would only be told again.
            Ok(Polled::Expired { oldest }) => {
                let frame = ServerFrame::expired(&room, last, oldest, None);
                let _ = stream.send(format!("event: error\ndata: {}\n\n", frame.to_json())).await;
                return;
            }
            Err(error) => {
                tracing::error!(room, error = %Chain(&error), "event stream read failed");
                return;
            }
        };
        if let Err(ended) = sent {
            if let StreamEnded::TooSlow(why) = ended {
                tracing::info!(room, last, why, "event stream ended: its reader is too slow");
            }
            return;
        }
    }
}

/// Why a stream stopped taking chunks.
enum StreamEnded {
    /// The reader went away.
    Gone,
    TooSlow(&'static str),
}

/// A stream's side of its body: at most one chunk waits for the reader, counted in the
/// runner's send budget with the WebSocket queues until the next one is taken.
struct Stream {
    chunks: mpsc::Sender<Bytes>,
    on_its_way: Option<StreamBytes>,
    app: Arc<App>,
}

impl Stream {
    async fn send(&mut self, text: String) -> Result<(), StreamEnded> {
        // The chunk before has been taken by the socket when the channel has room again: only a
        // reader that is behind has two chunks counted, and is cut when the budget is spent.
        let behind = self.chunks.capacity() == 0;
        if !behind {
            self.on_its_way = None;
        }
        // As a WebSocket's queue: only a stream that is behind is cut for a spent budget.
        let Some(counted) = self.app.connections.stream_bytes(text.len(), behind) else {
            return Err(StreamEnded::TooSlow("the runner's send budget is spent"));
        };
        match tokio::time::timeout(STALLED, self.chunks.send(Bytes::from(text))).await {
            Ok(Ok(())) => {
                self.on_its_way = Some(counted);
                Ok(())
            }
            Ok(Err(_)) => Err(StreamEnded::Gone),
            Err(_) => Err(StreamEnded::TooSlow("it took nothing for the stall timeout")),
        }
    }
}

/// The HTTP API event API Gateway would hand the HTTP Lambda for this request.
fn http_event(
    parts: &axum::http::request::Parts,
    remote: SocketAddr,
    route: &str,
    room: &str,
    app: &App,
    body: Option<Bytes>,
) -> ApiGatewayV2httpRequest {
    let now = app.clock.now_ms() as i64;
    // A query string that does not parse is taken as none: `since` then reads 0, as if absent.
    let pairs =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in pairs {
        query.entry(name).or_default().push(value);
    }
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some(route.to_owned());
    event.raw_path = Some(parts.uri.path().to_owned());
    event.raw_query_string = Some(parts.uri.query().unwrap_or_default().to_owned());
    event.headers = parts.headers.clone();
    event.query_string_parameters = query.into();
    event.path_parameters = HashMap::from([("room".to_owned(), room.to_owned())]);
    // As API Gateway passes a body: text as is, anything else in base64.
    if let Some(body) = body {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => event.body = Some(text),
            Err(not_text) => {
                use base64::Engine as _;
                event.body = Some(base64::engine::general_purpose::STANDARD.encode(not_text.as_bytes()));
                event.is_base64_encoded = true;
            }
        }
    }
    let context = &mut event.request_context;
    context.route_key = Some(route.to_owned());
    context.stage = Some("$default".to_owned());
    context.request_id = Some(gateway::new_id());
    context.apiid = Some(app.stage.api_id.clone());
    context.domain_name = Some(app.stage.domain_name.clone());
    context.time_epoch = now;
    context.http.method = parts.method.clone();
    context.http.path = Some(parts.uri.path().to_owned());
    context.http.protocol = Some("HTTP/1.1".to_owned());
    context.http.source_ip = Some(gateway::source_ip(&remote));
    context.http.user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    event
}

/// The handler's response as the runner's.
fn response(lambda: ApiGatewayV2httpResponse) -> Response {
    let status = StatusCode::from_u16(lambda.status_code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match lambda.body {
        Some(LambdaBody::Text(text)) => Body::from(text),
        Some(LambdaBody::Binary(bytes)) => Body::from(bytes),
        _ => Body::empty(),
    };
    let mut response = (status, body).into_response();
    response.headers_mut().extend(lambda.headers);
    response
}
