//! API Gateway's connection management API on localhost: `POST`, `GET` and `DELETE`
//! `/@connections/{connectionId}` (also under a stage prefix, `/{stage}/@connections/...`), so
//! the real `aws-sdk-apigatewaymanagement` client, and the fanout function's code, work against
//! the runner. An unknown connection is `410 GoneException`, as on AWS.

use crate::App;
use aws_smithy_types::date_time::{DateTime, Format};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use livesync_core::poster::{Delivery, Frame, Poster};
use std::sync::Arc;

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

/// The `{connectionId}` of either path form.
fn connection_of(path: Vec<String>) -> String {
    path.into_iter().last().unwrap_or_default()
}

pub async fn post(State(app): State<Arc<App>>, Path(path): Path<Vec<String>>, body: Bytes) -> Response {
    let connection = connection_of(path);
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "BadRequestException", "the local runner posts UTF-8 text only");
    };
    match app.connections.post(&connection, &Frame::new(text)).await {
        Ok(Delivery::Sent) => StatusCode::OK.into_response(),
        Ok(Delivery::Gone) | Err(_) => gone(&connection),
    }
}

pub async fn get(State(app): State<Arc<App>>, Path(path): Path<Vec<String>>) -> Response {
    let connection = connection_of(path);
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

pub async fn delete(State(app): State<Arc<App>>, Path(path): Path<Vec<String>>) -> Response {
    let connection = connection_of(path);
    if app.connections.close(&connection) { StatusCode::NO_CONTENT.into_response() } else { gone(&connection) }
}
