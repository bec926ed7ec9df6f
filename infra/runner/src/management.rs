//! API Gateway's connection management API on localhost: `POST`, `GET` and `DELETE`
//! `/@connections/{connectionId}` (also under a stage prefix, `/{stage}/@connections/...`), so
//! the real `aws-sdk-apigatewaymanagement` client, and the fanout function's code, work against
//! the runner. An unknown connection is `410 GoneException`, as on AWS.
//!
//! It is not for clients: whoever may use it can push any frame to, read, or drop any
//! connection. On AWS it needs IAM (`execute-api:ManageConnections`, a SigV4-signed request);
//! here it listens on its own address (loopback by default), never the client port, and every
//! request must carry a SigV4 signature made with the runner's configured credentials (the
//! standard `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, which the SDKs sign with too), dated
//! within 5 minutes. A missing or wrong signature is `403 ForbiddenException`, as on AWS.

use crate::App;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_types::date_time::{DateTime, Format};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use livesync_core::poster::{Delivery, Frame, Poster};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How far a request's `X-Amz-Date` may be from now (AWS allows 5 minutes).
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The largest body a post may carry (API Gateway's message limit).
const MAX_POST_BYTES: usize = livesync_core::protocol::MAX_MESSAGE_BYTES;

/// The credentials requests must be signed with; without them every request is refused.
#[derive(Clone)]
pub struct Credentials(Option<aws_credential_types::Credentials>);

impl Credentials {
    pub fn new(key_id: Option<String>, secret: Option<String>) -> Self {
        Credentials(match (key_id, secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Some(aws_credential_types::Credentials::new(id, secret, None, None, "livesync-runner"))
            }
            _ => None,
        })
    }
}

/// The management API, every route behind the signature check.
pub fn router(app: Arc<App>, credentials: Credentials) -> Router {
    let connection_api = axum::routing::post(post).get(get).delete(delete);
    Router::new()
        .route("/@connections/{connection}", connection_api.clone())
        .route("/{stage}/@connections/{connection}", connection_api)
        .with_state(app)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let credentials = credentials.clone();
            async move { signed(credentials, request, next).await }
        }))
}

/// Passes on requests signed with the configured credentials; refuses the rest as AWS does.
/// What can be checked without the body is checked first, so an unsigned request is refused
/// before any of its body is read; the body must then arrive within the read timeout.
async fn signed(credentials: Credentials, request: Request, next: Next) -> Response {
    let Some(credentials) = credentials.0 else {
        return forbidden(
            "the runner has no management credentials: start it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, and sign requests with the same",
        );
    };
    let (parts, body) = request.into_parts();
    let refused = |reason: &'static str| {
        tracing::warn!(method = %parts.method, uri = %parts.uri, reason, "management request refused");
        forbidden(reason)
    };
    let authorization = match Authorization::read(&credentials, &parts.headers, SystemTime::now()) {
        Ok(authorization) => authorization,
        Err(reason) => return refused(reason),
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_POST_BYTES)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", "the body is over 128 KB");
        }
        Err(_) => {
            return error(StatusCode::REQUEST_TIMEOUT, "RequestTimeoutException", "the body did not arrive in time");
        }
    };
    if let Err(reason) = authorization.verify(&credentials, &parts.method, &parts.uri, &parts.headers, &body) {
        return refused(reason);
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(body))).await
}

fn forbidden(reason: &str) -> Response {
    error(StatusCode::FORBIDDEN, "ForbiddenException", reason)
}

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SigV4 `Authorization` header, checked as far as it can be without the body.
struct Authorization<'h> {
    region: &'h str,
    signed_headers: Vec<&'h str>,
    signature: &'h str,
    signed_at: SystemTime,
}

impl<'h> Authorization<'h> {
    fn read(
        credentials: &aws_credential_types::Credentials,
        headers: &'h HeaderMap,
        now: SystemTime,
    ) -> Result<Self, &'static str> {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or("missing Authorization header: sign the request with SigV4")?;
        let fields =
            authorization.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not a SigV4 (AWS4-HMAC-SHA256) signature")?;
        let field = |name: &str| {
            fields.split(',').map(str::trim).find_map(|part| part.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (field("Credential"), field("SignedHeaders"), field("Signature"))
        else {
            return Err("malformed Authorization header");
        };
        // Credential=<key id>/<date>/<region>/<service>/aws4_request
        let scope: Vec<&str> = credential.split('/').collect();
        let [key_id, _date, region, service, "aws4_request"] = scope[..] else {
            return Err("malformed credential scope");
        };
        if key_id != credentials.access_key_id() {
            return Err("unknown access key id");
        }
        if service != SERVICE {
            return Err("not signed for execute-api (the connection management API's service)");
        }
        let date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or("missing X-Amz-Date")?;
        let signed_at = parse_amz_date(date).map_err(|()| "malformed X-Amz-Date")?;
        let signed_at = SystemTime::try_from(signed_at).map_err(|_| "malformed X-Amz-Date")?;
        let skew = now.duration_since(signed_at).unwrap_or_else(|e| e.duration());
        if skew > CLOCK_SKEW {
            return Err("the signature is more than 5 minutes from now");
        }
        // The signer always signs these; a request that claims to have signed fewer is not the
        // SDK's, and was perhaps altered.
        let signed_headers: Vec<&str> = signed_headers.split(';').collect();
        if !signed_headers.contains(&"host") || !signed_headers.contains(&"x-amz-date") {
            return Err("the signature must cover the host and x-amz-date headers");
        }
        Ok(Authorization { region, signed_headers, signature, signed_at })
    }

    /// Signs the request again, with the headers it says it signed and the time it says it was
    /// signed at, and compares.
    fn verify(
        &self,
        credentials: &aws_credential_types::Credentials,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), &'static str> {
        let mut signed = Vec::new();
        for name in &self.signed_headers {
            let value = headers.get(*name).and_then(|v| v.to_str().ok()).ok_or("a signed header is missing")?;
            signed.push((*name, value));
        }
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost");
        let full_uri = format!("http://{host}{path_and_query}");
        let request = SignableRequest::new(method.as_str(), full_uri, signed.into_iter(), SignableBody::Bytes(body))
            .map_err(|_| "the request cannot be signed")?;
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(SERVICE)
            .time(self.signed_at)
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| "the request cannot be signed")?
            .into();
        let expected = sign(request, &params).map_err(|_| "the request cannot be signed")?;
        if !constant_time_eq(expected.signature().as_bytes(), self.signature.as_bytes()) {
            return Err("the signature does not match: sign with the runner's credentials");
        }
        Ok(())
    }
}

/// The service the connection management API is signed for.
const SERVICE: &str = "execute-api";

/// `20261202T051500Z`, the form SigV4 dates take.
fn parse_amz_date(date: &str) -> Result<DateTime, ()> {
    let digits = |range: std::ops::Range<usize>| date.get(range).and_then(|d| d.parse::<u32>().ok()).ok_or(());
    if date.len() != 16 || &date[8..9] != "T" || !date.ends_with('Z') {
        return Err(());
    }
    let iso = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    DateTime::from_str(&iso, Format::DateTime).map_err(|_| ())
}

/// Compares without stopping at the first difference, so timing tells nothing about the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The error shape of a restJson1 service: the SDK reads the type from `x-amzn-errortype`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, [("x-amzn-errortype", kind)], Json(serde_json::json!({ "message": message }))).into_response()
}

fn gone(connection: &str) -> Response {
    error(StatusCode::GONE, "GoneException", &format!("connection {connection} is gone"))
}

fn iso8601(epoch_ms: i64) -> String {
    DateTime::from_millis(epoch_ms).fmt(Format::DateTime).unwrap_or_default()
}

/// The `{connectionId}` of either path form; `None` for a stage that is not this runner's.
fn connection_of(app: &App, path: Vec<String>) -> Option<String> {
    match <[String; 2]>::try_from(path) {
        Ok([stage, connection]) => (stage == app.stage.stage).then_some(connection),
        Err(path) => path.into_iter().next(),
    }
}

fn no_such_stage() -> Response {
    error(StatusCode::NOT_FOUND, "NotFoundException", "no such stage")
}

async fn post(State(app): State<Arc<App>>, Path(path): Path<Vec<String>>, body: Bytes) -> Response {
    let Some(connection) = connection_of(&app, path) else {
        return no_such_stage();
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "BadRequestException", "the local runner posts UTF-8 text only");
    };
    match app.connections.post(&connection, &Frame::new(text)).await {
        Ok(Delivery::Sent) => StatusCode::OK.into_response(),
        Ok(Delivery::Gone) | Err(_) => gone(&connection),
    }
}

async fn get(State(app): State<Arc<App>>, Path(path): Path<Vec<String>>) -> Response {
    let Some(connection) = connection_of(&app, path) else {
        return no_such_stage();
    };
    match app.connections.info(&connection) {
        Some(info) => Json(serde_json::json!({
            "connectedAt": iso8601(info.connected_at_ms),
            "lastActiveAt": iso8601(info.last_active_ms),
            "identity": { "sourceIp": info.source_ip, "userAgent": info.user_agent.unwrap_or_default() },
        }))
        .into_response(),
        None => gone(&connection),
    }
}

async fn delete(State(app): State<Arc<App>>, Path(path): Path<Vec<String>>) -> Response {
    let Some(connection) = connection_of(&app, path) else {
        return no_such_stage();
    };
    if app.connections.close(&connection) { StatusCode::NO_CONTENT.into_response() } else { gone(&connection) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigv4_dates_are_read_as_utc() {
        let date = parse_amz_date("20261202T051500Z").unwrap();
        assert_eq!(date.fmt(Format::DateTime).unwrap(), "2026-12-02T05:15:00Z");
        assert!(parse_amz_date("2026-12-02").is_err());
        assert!(parse_amz_date("20261302T051500Z").is_err());
    }

    #[test]
    fn an_unsigned_or_mis_signed_request_is_refused_with_the_reason() {
        let credentials = aws_credential_types::Credentials::new("AKID", "secret", None, None, "test");
        let mut headers = HeaderMap::new();
        let now = SystemTime::now();
        let read = |headers: &HeaderMap| Authorization::read(&credentials, headers, now).err();
        assert_eq!(read(&headers), Some("missing Authorization header: sign the request with SigV4"));
        headers.insert("authorization", "AWS4-HMAC-SHA256 Credential=OTHER/20261202/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".parse().unwrap());
        assert_eq!(read(&headers), Some("unknown access key id"));
        headers.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".parse().unwrap());
        assert_eq!(read(&headers), Some("not signed for execute-api (the connection management API's service)"));
        headers.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00".parse().unwrap());
        headers.insert("x-amz-date", "20261202T051500Z".parse().unwrap());
        let in_time = SystemTime::try_from(parse_amz_date("20261202T051600Z").unwrap()).unwrap();
        assert_eq!(
            Authorization::read(&credentials, &headers, in_time).err(),
            Some("the signature must cover the host and x-amz-date headers")
        );
        let late = SystemTime::try_from(parse_amz_date("20261202T052100Z").unwrap()).unwrap();
        assert_eq!(
            Authorization::read(&credentials, &headers, late).err(),
            Some("the signature is more than 5 minutes from now")
        );
    }
}
