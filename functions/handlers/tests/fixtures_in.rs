//! Each handler, fed recorded API Gateway WebSocket events.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use livesync_core::clock::SystemClock;
use livesync_core::store::{Query, SortKeys};
use livesync_core::{Engine, layout};
use livesync_embedded_store::{EmbeddedStore, Options};
use serde_json::{Value, json};
use std::sync::Arc;

const CONNECTION: &str = "CpbWUd2JDoECJ5w=";

fn fixture(name: &str) -> ApiGatewayWebsocketProxyRequest {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn engine() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
    (Engine::new(Arc::new(store), Arc::new(SystemClock)), dir)
}

fn reply(response: &ApiGatewayProxyResponse) -> Value {
    assert_eq!(response.status_code, 200);
    match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("expected a text reply, got {other:?}"),
    }
}

async fn connection_items(engine: &Engine) -> Vec<String> {
    let page = engine.store().query(Query::new(layout::connection_pk(CONNECTION), SortKeys::All, 100)).await.unwrap();
    page.items.into_iter().map(|item| item.key.sk).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_accepts_a_real_connect_event_and_stores_nothing() {
    let (engine, _dir) = engine();

    let response = livesync_handlers::connect(fixture("connect")).unwrap();

    assert_eq!(response.status_code, 200);
    assert!(connection_items(&engine).await.is_empty(), "a connection costs no write until it joins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_publish_reply_in_the_body_with_the_ref_echoed() {
    let (engine, _dir) = engine();
    livesync_handlers::connect(fixture("connect")).unwrap();

    let joined = reply(&livesync_handlers::message(&engine, fixture("join")).await.unwrap());
    assert_eq!(joined, json!({"type": "joined", "room": "lobby", "seq": 0, "events": [], "more": false, "ref": "j1"}));

    let ack = reply(&livesync_handlers::message(&engine, fixture("publish")).await.unwrap());
    assert_eq!(ack, json!({"type": "ack", "room": "lobby", "seq": 1, "id": "msg-1", "ref": 7}));

    // API Gateway retries nothing, but clients do: the same event again is the same ack.
    let repeat = reply(&livesync_handlers::message(&engine, fixture("publish")).await.unwrap());
    assert_eq!(repeat, ack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_route_frame_that_is_not_json_gets_a_bad_request_reply() {
    let (engine, _dir) = engine();

    let error = reply(&livesync_handlers::message(&engine, fixture("default-not-json")).await.unwrap());

    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "bad_request");
    assert!(error["message"].as_str().unwrap().starts_with("frame is not valid JSON"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_is_refused_with_a_reason() {
    let (engine, _dir) = engine();
    let mut event = fixture("publish");
    event.is_base64_encoded = true;

    let error = reply(&livesync_handlers::message(&engine, event).await.unwrap());

    assert_eq!(error["code"], "bad_request");
    assert!(error["message"].as_str().unwrap().contains("binary frames"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_forgets_the_connection_and_its_rooms() {
    let (engine, _dir) = engine();
    livesync_handlers::connect(fixture("connect")).unwrap();
    livesync_handlers::message(&engine, fixture("join")).await.unwrap();
    assert_eq!(connection_items(&engine).await, vec!["SUB#lobby"]);

    livesync_handlers::disconnect(&engine, fixture("disconnect")).await.unwrap();

    assert!(connection_items(&engine).await.is_empty());
    let subscribers = engine.store().query(layout::subscribers_of("lobby", 10)).await.unwrap();
    assert!(subscribers.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_a_connection_id_is_an_error_not_a_guess() {
    let (engine, _dir) = engine();
    let mut event = fixture("publish");
    event.request_context.connection_id = None;

    let error = livesync_handlers::message(&engine, event).await.unwrap_err();

    assert!(error.to_string().contains("connectionId"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_written_through_its_route_replies_with_its_version_and_refuses_a_second_creation() {
    let (engine, _dir) = engine();
    livesync_handlers::connect(fixture("connect")).unwrap();

    let created = reply(&livesync_handlers::message(&engine, fixture("doc-put")).await.unwrap());
    assert_eq!(
        created,
        json!({"type": "doc", "room": "lobby", "doc": "agenda", "version": 1, "value": {"items": ["intro"]},
               "strategy": "reject", "ref": "d1"})
    );

    // The same frame again (another request id, no client id): base 0 on an existing document.
    let mut again = fixture("doc-put");
    again.request_context.request_id = Some("CpbWhC9XjoEFgAA=".to_owned());
    let conflict = reply(&livesync_handlers::message(&engine, again).await.unwrap());
    assert_eq!(conflict["code"], "conflict");
    assert_eq!(
        conflict["current"],
        json!({"type": "doc", "room": "lobby", "doc": "agenda", "version": 1,
                                           "value": {"items": ["intro"]}, "strategy": "reject"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_through_its_route_is_applied_once_however_often_it_arrives() {
    let (engine, _dir) = engine();
    livesync_handlers::connect(fixture("connect")).unwrap();
    let set = r#"{"action":"stock.set","room":"shop","sku":"tee-m","level":3}"#;
    engine.handle(&livesync_core::access::Caller::anonymous(CONNECTION), CONNECTION, "setup", set).await;

    let sold = reply(&livesync_handlers::message(&engine, fixture("stock-adjust")).await.unwrap());
    assert_eq!(
        sold,
        json!({"type": "stock", "room": "shop", "sku": "tee-m", "level": 2, "version": 2, "delta": -1, "ref": "s1"})
    );
    let mut retried = fixture("stock-adjust");
    retried.request_context.request_id = Some("CpbWkQ1JjoEFg1B=".to_owned());
    assert_eq!(reply(&livesync_handlers::message(&engine, retried).await.unwrap()), sold);

    let level = engine
        .handle(
            &livesync_core::access::Caller::anonymous(CONNECTION),
            CONNECTION,
            "check",
            r#"{"action":"stock.get","room":"shop","sku":"tee-m"}"#,
        )
        .await;
    assert_eq!(serde_json::to_value(level).unwrap()["level"], 2);
}

const FIXTURE_SECRET: &[u8] = b"the-fixture-secret-of-at-least-32-bytes";

fn authorizer_event(name: &str) -> aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn the_authorizer_allows_a_valid_token_with_the_callers_grants_in_its_context() {
    use livesync_handlers::authorizer::{Authorizer, Keyring, Origins, authorize};
    let keyring =
        Keyring::fixed(Authorizer::hs256(FIXTURE_SECRET).unwrap().with_origins(Origins::parse("https://app.example")));
    let response = serde_json::to_value(authorize(&keyring, &authorizer_event("authorize")).await.unwrap()).unwrap();
    assert_eq!(response["principalId"], "ann");
    let statement = &response["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Resource"][0], "arn:aws:execute-api:eu-west-1:123456789012:k3x9ab12cd/prod/$connect");
    assert_eq!(response["context"], json!({"sub": "ann", "read": "[\"lobby\",\"doc-*\"]", "write": "[\"lobby\"]"}));
    // The context comes back on every later event, from which the message handler reads the
    // caller: what the authorizer returned is what the message handler sees.
    let mut event = fixture("join");
    event.request_context.authorizer.fields = response["context"].as_object().unwrap().clone().into_iter().collect();
    let caller =
        livesync_core::access::Caller::from_context(CONNECTION, &event.request_context.authorizer.fields).unwrap();
    assert_eq!(caller.user.as_deref(), Some("ann"));
}

#[tokio::test]
async fn the_authorizer_refuses_an_expired_token_with_unauthorized_and_a_foreign_origin_with_deny() {
    use livesync_handlers::authorizer::{Authorizer, Keyring, Origins, authorize};
    let authorizer = Authorizer::hs256(FIXTURE_SECRET).unwrap();
    let keyring = Keyring::fixed(authorizer.clone());
    let refusal = authorize(&keyring, &authorizer_event("authorize-expired")).await.unwrap_err();
    // API Gateway answers 401 when the authorizer fails with exactly this message.
    assert_eq!(refusal.to_string(), "Unauthorized");
    let elsewhere = Keyring::fixed(authorizer.with_origins(Origins::parse("https://other.example")));
    let response = serde_json::to_value(authorize(&elsewhere, &authorizer_event("authorize")).await.unwrap()).unwrap();
    assert_eq!(response["policyDocument"]["Statement"][0]["Effect"], "Deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_the_authorizers_context_is_refused_and_changes_nothing() {
    let (engine, _dir) = engine();
    let mut event = fixture("publish");
    event.request_context.authorizer.fields.clear();
    let refused = reply(&livesync_handlers::message(&engine, event).await.unwrap());
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let head = livesync_core::ordering::head(engine.store().as_ref(), "lobby").await.unwrap();
    assert_eq!(head, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_outside_the_tokens_grant_is_forbidden() {
    let (engine, _dir) = engine();
    let mut event = fixture("publish");
    event.request_context.authorizer.fields.insert("write".into(), json!("[\"shop\"]"));
    let refused = reply(&livesync_handlers::message(&engine, event).await.unwrap());
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("\"lobby\""));
}
