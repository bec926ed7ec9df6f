//! The HTTP API handler (the HTTP Lambda's, and the runner's), fed recorded API Gateway HTTP API
//! (payload 2.0) events.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;
use livesync_core::Engine;
use livesync_core::access::{Grants, RoomPatterns};
use livesync_core::clock::SystemClock;
use livesync_core::limits::{MemoryLimiter, WriteRate};
use livesync_core::reading::LookAgain;
use livesync_embedded_store::{EmbeddedStore, Options};
use livesync_handlers::authorizer::{Authorizer, Claims, Keyring, mint};
use livesync_handlers::http::{HttpApi, MAX_BODY_BYTES};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

/// A long poll here looks again often: the tests wait for outcomes, never for a time.
const LOOK: LookAgain = LookAgain { every: Duration::from_millis(50) };

fn fixture(name: &str) -> ApiGatewayV2httpRequest {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A recorded event, sent with this token (or none) and this query.
fn with(mut event: ApiGatewayV2httpRequest, token: Option<&str>, query: &[(&str, &str)]) -> ApiGatewayV2httpRequest {
    event.headers.remove("authorization");
    if let Some(token) = token {
        event.headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    }
    let query: std::collections::HashMap<String, String> =
        query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    event.query_string_parameters = query.into();
    event
}

fn with_body(mut event: ApiGatewayV2httpRequest, body: &str) -> ApiGatewayV2httpRequest {
    event.body = Some(body.to_owned());
    event
}

fn token(read: &[&str], write: &[&str]) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let rooms =
        Grants { read: RoomPatterns::new(read.iter().copied()), write: RoomPatterns::new(write.iter().copied()) };
    mint(SECRET, &Claims { sub: "inventory".into(), exp, rooms }).unwrap()
}

struct Api {
    engine: Engine,
    keyring: Keyring,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new(rate: Option<WriteRate>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
        let mut engine = Engine::new(Arc::new(store), Arc::new(SystemClock));
        if let Some(rate) = rate {
            engine = engine.with_limiter(Arc::new(MemoryLimiter::new(rate)));
        }
        Api { engine, keyring: Keyring::fixed(Authorizer::hs256(SECRET).unwrap()), _dir: dir }
    }

    async fn send(&self, event: &ApiGatewayV2httpRequest) -> (i64, Value) {
        let response: ApiGatewayV2httpResponse =
            HttpApi { engine: &self.engine, keyring: &self.keyring, arrivals: &LOOK }.handle(event).await;
        let body = match &response.body {
            Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
            other => panic!("expected a JSON body, got {other:?}"),
        };
        assert_eq!(response.headers["content-type"], "application/json");
        (response.status_code, body)
    }

    async fn publish(&self, token: &str, body: &str) -> (i64, Value) {
        self.send(&with_body(with(fixture("http-publish"), Some(token), &[]), body)).await
    }

    async fn read(&self, token: &str, query: &[(&str, &str)]) -> (i64, Value) {
        self.send(&with(fixture("http-read"), Some(token), query)).await
    }
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn refused(outcome: (i64, Value), status: i64, code: &str) -> String {
    assert_eq!(outcome.0, status, "{}", outcome.1);
    assert_eq!(outcome.1["type"], "error");
    assert_eq!(outcome.1["code"], code, "{}", outcome.1);
    outcome.1["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_publish_is_acknowledged_with_its_seq_and_a_retried_post_stores_once() {
    let api = Api::new(None);
    let token = token(&["lobby"], &["lobby"]);

    let ack = api.send(&with(fixture("http-publish"), Some(&token), &[])).await;
    assert_eq!(ack, (200, json!({"room": "lobby", "seq": 1, "id": "stock-42"})));
    // The backend's request timed out and it sends the same POST again.
    let retry = api.send(&with(fixture("http-publish"), Some(&token), &[])).await;
    assert_eq!(retry, ack);

    let (status, page) = api.send(&with(fixture("http-read"), Some(&token), &[("since", "0")])).await;
    assert_eq!(status, 200);
    assert_eq!(
        (page["room"].clone(), page["seq"].clone(), page["more"].clone()),
        (json!("lobby"), json!(1), json!(false))
    );
    assert_eq!(seqs(&page), vec![1]);
    assert_eq!(page["events"][0]["data"], json!({"sku": "tea", "level": 7}));
    assert_eq!(page["events"][0]["from"], "inventory", "the token's subject published it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_returns_at_once_the_events_after_since_with_the_rooms_head() {
    let api = Api::new(None);
    let token = token(&["lobby"], &["lobby"]);
    for n in 0..3 {
        assert_eq!(api.publish(&token, &json!({ "data": n }).to_string()).await.0, 200);
    }

    let (status, page) = api.read(&token, &[("since", "1"), ("wait", "25")]).await;

    assert_eq!(status, 200);
    assert_eq!(seqs(&page), vec![2, 3]);
    assert_eq!(page["seq"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_and_returns_the_event_published_during_its_wait() {
    let api = Arc::new(Api::new(None));
    let token = token(&["lobby"], &["lobby"]);
    let reader = {
        let (api, token) = (api.clone(), token.clone());
        tokio::spawn(async move { api.read(&token, &[("since", "0"), ("wait", "25")]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reader.is_finished(), "a poll of an empty room waits");

    api.publish(&token, r#"{"data": "arrived"}"#).await;

    let (status, page) = reader.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(seqs(&page), vec![1]);
    assert_eq!(page["events"][0]["data"], "arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_of_a_quiet_room_returns_empty_when_its_wait_runs_out() {
    let api = Api::new(None);
    let token = token(&["lobby"], &["lobby"]);
    api.publish(&token, r#"{"data": 1}"#).await;

    let (status, page) = api.read(&token, &[("since", "1"), ("wait", "1")]).await;

    assert_eq!((status, page), (200, json!({"room": "lobby", "seq": 1, "events": [], "more": false})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_their_code_and_status_and_store_nothing() {
    let api = Api::new(None);
    let token = token(&["lobby"], &["lobby"]);

    let message = refused(api.publish(&token, "{\"data\": ").await, 400, "bad_request");
    assert!(message.contains("not JSON"), "{message}");
    let message = refused(api.publish(&token, r#"{"id": "x"}"#).await, 400, "bad_request");
    assert!(message.contains("data"), "{message}");
    refused(api.publish(&token, r#"[1, 2]"#).await, 400, "bad_request");
    refused(api.publish(&token, r#"{"data": 1, "id": 7}"#).await, 400, "bad_request");
    let oversized = json!({ "data": "x".repeat(MAX_BODY_BYTES) }).to_string();
    refused(api.publish(&token, &oversized).await, 413, "too_large");
    let message = refused(api.read(&token, &[("since", "-1")]).await, 400, "bad_request");
    assert!(message.contains("since"), "{message}");
    refused(api.read(&token, &[("since", "abc")]).await, 400, "bad_request");
    let message = refused(api.read(&token, &[("since", "0"), ("wait", "26")]).await, 400, "bad_request");
    assert!(message.contains("25"), "{message}");
    let mut bad_room = fixture("http-read");
    bad_room.path_parameters.insert("room".into(), "bad\u{202e}room".into());
    refused(api.send(&with(bad_room, Some(&token), &[])).await, 400, "bad_request");

    let (_, page) = api.read(&token, &[("since", "0")]).await;
    assert_eq!(seqs(&page), Vec::<u64>::new(), "nothing refused was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_or_outside_its_grant_a_request_is_refused() {
    let api = Api::new(None);

    refused(api.send(&with(fixture("http-publish"), None, &[])).await, 401, "unauthorized");
    refused(api.send(&with(fixture("http-publish"), Some("not.a.token"), &[])).await, 401, "unauthorized");
    let reader = token(&["lobby"], &[]);
    let message = refused(api.publish(&reader, r#"{"data": 1}"#).await, 403, "forbidden");
    assert!(message.contains("write"), "{message}");
    let elsewhere = token(&["shop"], &["shop"]);
    refused(api.read(&elsewhere, &[("since", "0")]).await, 403, "forbidden");
    // An EventSource cannot set headers: the token may come as ?token= instead.
    let (status, _) = api.send(&with(fixture("http-read"), None, &[("since", "0"), ("token", &reader)])).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_write_rate_gets_429_with_retry_after() {
    let api = Api::new(Some(WriteRate { per_second: 1.0, burst: 2 }));
    let token = token(&["lobby"], &["lobby"]);
    let mut statuses = Vec::new();
    for n in 0..3 {
        let event = with_body(with(fixture("http-publish"), Some(&token), &[]), &json!({ "data": n }).to_string());
        let response = HttpApi { engine: &api.engine, keyring: &api.keyring, arrivals: &LOOK }.handle(&event).await;
        statuses.push((response.status_code, response.headers.get("retry-after").cloned()));
    }
    assert_eq!(statuses[..2], [(200, None), (200, None)]);
    assert_eq!(statuses[2].0, 429);
    assert_eq!(statuses[2].1.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_signed_with_iam_publishes_without_a_token_as_its_role() {
    let api = Api::new(None);

    let ack = api.send(&fixture("http-publish-iam")).await;

    assert_eq!(ack, (200, json!({"room": "shop", "seq": 1, "id": "restock-7"})));
    let reader = token(&["shop"], &[]);
    let mut read = fixture("http-read");
    read.path_parameters.insert("room".into(), "shop".into());
    let (_, page) = api.send(&with(read, Some(&reader), &[("since", "0")])).await;
    assert_eq!(page["events"][0]["from"], "iam:assumed-role/inventory-service/i-0abc12de34f56a789");
    // Without API Gateway's IAM context the same request needs a token.
    let mut unsigned = fixture("http-publish-iam");
    unsigned.request_context.authorizer = None;
    refused(api.send(&unsigned).await, 401, "unauthorized");
}
