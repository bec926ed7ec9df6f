//! CloudWatch embedded metric format (EMF): one JSON log line per invocation that CloudWatch Logs
//! turns into metrics, with no API call, no agent and no added latency in the function.
//!
//! Every metric is in the namespace `LiveSync`, under one dimension that names what emitted it
//! (`Function` for the request and stream functions, `Job` for the scheduled jobs). The figures
//! are those the alarms in `template.yaml` watch, and those the local runner logs as structured
//! lines: the same names in both places.

use crate::authorizer::Refusal;
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerResponse;
use aws_lambda_events::iam::IamPolicyEffect;
use livesync_core::FanoutReport;
use livesync_core::protocol::{ErrorCode, ServerFrame};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

pub const NAMESPACE: &str = "LiveSync";

/// One EMF line being built: its dimension, then its metrics.
pub struct Emf {
    dimension: &'static str,
    line: serde_json::Map<String, Value>,
    metrics: Vec<Value>,
}

impl Emf {
    pub fn new(dimension: &'static str, value: &str) -> Self {
        let mut line = serde_json::Map::new();
        line.insert(dimension.to_owned(), json!(value));
        Emf { dimension, line, metrics: Vec::new() }
    }

    pub fn count(self, name: &str, value: impl Into<Value>) -> Self {
        self.metric(name, "Count", value.into())
    }

    pub fn millis(self, name: &str, value: impl Into<Value>) -> Self {
        self.metric(name, "Milliseconds", value.into())
    }

    pub fn bytes(self, name: &str, value: impl Into<Value>) -> Self {
        self.metric(name, "Bytes", value.into())
    }

    /// A metric whose value is missing (null) is left out, as CloudWatch requires every metric
    /// the directive names to be a member of the line.
    fn metric(mut self, name: &str, unit: &str, value: Value) -> Self {
        if !value.is_null() {
            self.metrics.push(json!({"Name": name, "Unit": unit}));
            self.line.insert(name.to_owned(), value);
        }
        self
    }

    pub fn line(mut self, now_ms: u64) -> String {
        self.line.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[self.dimension]],
                    "Metrics": self.metrics,
                }],
            }),
        );
        Value::Object(self.line).to_string()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The fanout function's figures for one stream batch.
pub fn fanout_line(records: usize, report: &FanoutReport, failed_records: usize, now_ms: u64) -> String {
    let emf = Emf::new("Function", "fanout")
        .count("BatchSize", records)
        .count("FailedRecords", failed_records)
        .count("Events", report.events)
        .count("Deliveries", report.deliveries)
        .count("Posts", report.posts)
        .count("RetriedPosts", report.retried_posts)
        .count("Gone", report.gone)
        .count("FailedPosts", report.failed_posts)
        .count("Unclosed", report.unclosed)
        .count("FailedRooms", report.failed_rooms.len());
    // A batch without events (subscriptions, documents' other items) has no lag to speak of.
    if report.events > 0 { emf.millis("FanoutLag", report.lag_ms) } else { emf }.line(now_ms)
}

/// The message function's figures for one request, read off its reply: a publish stored, a write
/// refused on a condition (a conflict: an outcome, not a failure), a refusal for the rate, or an
/// internal error.
pub fn message_line(reply: &ServerFrame, now_ms: u64) -> String {
    let (publishes, conflicts, errors, rate_limited) = match reply {
        ServerFrame::Error { code: ErrorCode::Conflict, .. } => (0, 1, 0, 0),
        ServerFrame::Error { code: ErrorCode::RateLimited, .. } => (0, 0, 0, 1),
        ServerFrame::Error { code: ErrorCode::Internal, .. } => (0, 0, 1, 0),
        ServerFrame::Error { .. } => (0, 0, 0, 0),
        ServerFrame::Ack { .. } => (1, 0, 0, 0),
        _ => (0, 0, 0, 0),
    };
    Emf::new("Function", "message")
        .count("Requests", 1)
        .count("Publishes", publishes)
        .count("Conflicts", conflicts)
        .count("RateLimited", rate_limited)
        .count("InternalErrors", errors)
        .line(now_ms)
}

/// The HTTP function's figures for one request, read off its response: a publish stored, a read
/// answered (at once or after a long poll), a write refused on a condition, a caller refused (no
/// valid token, or no grant), a refusal for the rate, or a server failure.
pub fn http_line(route: &str, status: i64, now_ms: u64) -> String {
    let ok = status == 200;
    let count = |holds: bool| u64::from(holds);
    Emf::new("Function", "http")
        .count("Requests", 1)
        .count("Publishes", count(ok && route == crate::http::PUBLISH_ROUTE))
        .count("Reads", count(ok && route == crate::http::READ_ROUTE))
        .count("Conflicts", count(status == 409))
        .count("Refused", count(status == 401 || status == 403))
        .count("RateLimited", count(status == 429))
        .count("InternalErrors", count(status >= 500))
        .line(now_ms)
}

/// The authorizer's figures for one `$connect`: let in, refused for its token (401), or denied
/// for its origin (403). A sudden rise of the refusals is someone trying tokens.
pub fn authorizer_line(outcome: &Result<ApiGatewayCustomAuthorizerResponse, Refusal>, now_ms: u64) -> String {
    let denied = |response: &ApiGatewayCustomAuthorizerResponse| {
        response.policy_document.statement.iter().any(|statement| statement.effect == IamPolicyEffect::Deny)
    };
    let (allowed, unauthorized, forbidden) = match outcome {
        Err(Refusal::Unauthorized(_)) => (0, 1, 0),
        Err(Refusal::Forbidden(_)) => (0, 0, 1),
        Ok(response) if denied(response) => (0, 0, 1),
        Ok(_) => (1, 0, 0),
    };
    Emf::new("Function", "authorizer")
        .count("Allowed", allowed)
        .count("Unauthorized", unauthorized)
        .count("Forbidden", forbidden)
        .line(now_ms)
}

/// The `$connect` and `$disconnect` functions' figures: one per connection opened or closed,
/// and whether handling it failed (a `$disconnect` that fails leaves the connection's
/// subscriptions for the fanout to find gone).
pub fn connection_line(function: &'static str, failed: bool, now_ms: u64) -> String {
    Emf::new("Function", function).count("Requests", 1).count("InternalErrors", u64::from(failed)).line(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livesync_core::fanout::RoomFailure;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    /// Every metric the directive names is a member of the line, under the one dimension.
    fn names(line: &Value, dimension: &str) -> Vec<String> {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([[dimension]]));
        let names: Vec<String> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap().to_owned()).collect();
        assert!(names.iter().all(|name| line.get(name).is_some()), "{names:?} in {line}");
        names
    }

    #[test]
    fn a_fanout_batch_reports_every_delivery_that_did_not_happen() {
        let report = FanoutReport {
            records: 5,
            events: 4,
            deliveries: 30,
            posts: 12,
            retried_posts: 3,
            gone: 2,
            failed_posts: 1,
            failed_rooms: vec![RoomFailure {
                room: "r".into(),
                first_seq: 1,
                last_seq: 2,
                records: vec![0, 1],
                error: "x".into(),
            }],
            lag_ms: 85,
            ..FanoutReport::default()
        };
        let line = parse(&fanout_line(5, &report, 2, 9));
        assert_eq!(line["Function"], "fanout");
        assert_eq!(line["_aws"]["Timestamp"], 9);
        for (name, value) in [
            ("BatchSize", 5),
            ("FailedRecords", 2),
            ("Events", 4),
            ("Deliveries", 30),
            ("RetriedPosts", 3),
            ("Gone", 2),
            ("FailedPosts", 1),
            ("FailedRooms", 1),
            ("FanoutLag", 85),
            ("Unclosed", 0),
        ] {
            assert_eq!(line[name], value, "{name}");
        }
        assert!(names(&line, "Function").contains(&"FanoutLag".to_owned()));
    }

    #[test]
    fn a_batch_without_events_has_no_lag() {
        let quiet = parse(&fanout_line(1, &FanoutReport { records: 1, ..FanoutReport::default() }, 0, 1));
        assert!(!names(&quiet, "Function").contains(&"FanoutLag".to_owned()));
    }

    #[test]
    fn a_request_counts_as_a_publish_a_conflict_a_refusal_or_an_internal_error() {
        let figures = |reply: &ServerFrame| {
            let line = parse(&message_line(reply, 1));
            names(&line, "Function");
            ["Publishes", "Conflicts", "RateLimited", "InternalErrors"].map(|name| line[name].as_u64().unwrap())
        };
        let ack: ServerFrame = serde_json::from_str(r#"{"type":"ack","ref":"1","room":"r","seq":3,"id":"a"}"#).unwrap();
        assert_eq!(figures(&ack), [1, 0, 0, 0]);
        assert_eq!(figures(&ServerFrame::error(ErrorCode::Conflict, "stale", None)), [0, 1, 0, 0]);
        assert_eq!(figures(&ServerFrame::error(ErrorCode::RateLimited, "slow down", None)), [0, 0, 1, 0]);
        assert_eq!(figures(&ServerFrame::error(ErrorCode::Internal, "store down", None)), [0, 0, 0, 1]);
        assert_eq!(figures(&ServerFrame::error(ErrorCode::BadRequest, "no", None)), [0, 0, 0, 0]);
    }

    #[test]
    fn an_http_request_counts_by_its_route_and_status() {
        use crate::http::{PUBLISH_ROUTE, READ_ROUTE};
        let figures = |route: &str, status: i64| {
            let line = parse(&http_line(route, status, 1));
            assert_eq!(line["Function"], "http");
            names(&line, "Function");
            ["Requests", "Publishes", "Reads", "Conflicts", "Refused", "RateLimited", "InternalErrors"]
                .map(|name| line[name].as_u64().unwrap())
        };
        assert_eq!(figures(PUBLISH_ROUTE, 200), [1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(figures(READ_ROUTE, 200), [1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(figures(PUBLISH_ROUTE, 409), [1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(figures(READ_ROUTE, 401), [1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(figures(PUBLISH_ROUTE, 403), [1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(figures(PUBLISH_ROUTE, 429), [1, 0, 0, 0, 0, 1, 0]);
        assert_eq!(figures(READ_ROUTE, 503), [1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(figures("GET /nowhere", 404), [1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_connect_counts_as_allowed_unauthorized_or_forbidden() {
        use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerPolicy;
        use aws_lambda_events::iam::IamPolicyStatement;
        let figures = |outcome: Result<ApiGatewayCustomAuthorizerResponse, Refusal>| {
            let line = parse(&authorizer_line(&outcome, 1));
            assert_eq!(line["Function"], "authorizer");
            names(&line, "Function");
            ["Allowed", "Unauthorized", "Forbidden"].map(|name| line[name].as_u64().unwrap())
        };
        let with = |effect: IamPolicyEffect| {
            let mut statement = IamPolicyStatement::default();
            statement.effect = effect;
            let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
            policy.statement = vec![statement];
            let mut response = ApiGatewayCustomAuthorizerResponse::default();
            response.policy_document = policy;
            response
        };
        assert_eq!(figures(Ok(with(IamPolicyEffect::Allow))), [1, 0, 0]);
        assert_eq!(figures(Ok(with(IamPolicyEffect::Deny))), [0, 0, 1]);
        assert_eq!(figures(Err(Refusal::Unauthorized("bad signature".into()))), [0, 1, 0]);
        assert_eq!(figures(Err(Refusal::Forbidden("origin".into()))), [0, 0, 1]);
    }

    #[test]
    fn a_connection_event_counts_once_and_its_failure_apart() {
        let failed = parse(&connection_line("disconnect", true, 1));
        assert_eq!(
            (failed["Function"].as_str(), failed["Requests"].as_u64(), failed["InternalErrors"].as_u64()),
            (Some("disconnect"), Some(1), Some(1))
        );
        names(&failed, "Function");
        assert_eq!(parse(&connection_line("connect", false, 1))["InternalErrors"], 0);
    }
}
