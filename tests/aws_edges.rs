//! The AWS-facing edges against real peers: the real `aws-sdk-apigatewaymanagement` client
//! against the runner's `/@connections` API, and the fanout function's code fed DynamoDB stream
//! batches (a recorded one, and real records read off moto's stream) posting through the SDK to
//! the runner, whose WebSocket clients receive the frames. Needs moto (`scripts/test` starts it).

use aws_lambda_events::dynamodb::Event;
use livesync_core::clock::SystemClock;
use livesync_core::ordering::RoomHeads;
use livesync_core::{Engine, Fanout, layout, membership};
use livesync_dynamodb::DynamoStore;
use livesync_lambdas::ApiGatewayPoster;
use livesync_tests::{Local, events_of, moto_config, moto_table, seqs};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The management client, pointed at the runner as the fanout function is pointed at the stage.
async fn management_client(local: &Local) -> aws_sdk_apigatewaymanagement::Client {
    let sdk = livesync_dynamodb::emulator_config(&local.management_url()).await;
    aws_sdk_apigatewaymanagement::Client::new(&sdk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_management_client_posts_to_reads_and_deletes_a_runner_connection() {
    let local = Local::start().await;
    let (mut client, id) = local.client_with_id().await;
    let api = management_client(&local).await;

    api.post_to_connection().connection_id(&id).data(br#"{"type":"hello"}"#.to_vec().into()).send().await.unwrap();
    assert_eq!(client.next_frame().await, json!({"type": "hello"}));

    let info = api.get_connection().connection_id(&id).send().await.unwrap();
    assert!(info.connected_at().is_some_and(|t| t.secs() > 1_700_000_000));
    assert!(info.last_active_at().is_some());
    assert_eq!(info.identity().and_then(|i| i.source_ip()), Some("127.0.0.1"));

    let unknown = api.post_to_connection().connection_id("no-such-connection").data(b"x".to_vec().into()).send().await;
    assert!(unknown.unwrap_err().into_service_error().is_gone_exception());

    api.delete_connection().connection_id(&id).send().await.unwrap();
    assert_eq!(client.closed().await, Some(CloseCode::Normal));
    local.wait_for_open_connections(0).await;
    let after = api.post_to_connection().connection_id(&id).data(b"x".to_vec().into()).send().await;
    assert!(after.unwrap_err().into_service_error().is_gone_exception());
}

/// The fanout function as it runs on AWS: DynamoDB for subscribers, the SDK for posts.
async fn fanout_function(local: &Local, table: &str) -> (Fanout, Arc<DynamoStore>) {
    let sdk = moto_config().await;
    let store = Arc::new(DynamoStore::new(&sdk, table));
    let poster = ApiGatewayPoster::new(&sdk, &local.management_url());
    (Fanout::new(store.clone(), Arc::new(poster)), store)
}

async fn subscribers(store: &DynamoStore, room: &str) -> Vec<String> {
    use livesync_core::store::Store;
    let page = store.query(layout::subscribers_of(room, 100)).await.unwrap();
    page.items.iter().filter_map(layout::subscriber).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_function_delivers_a_recorded_batch_and_reports_only_the_damaged_record() {
    let local = Local::start().await;
    let (mut client, id) = local.client_with_id().await;
    let table = moto_table(&moto_config().await, "fanout-fixture").await;
    let (fanout, store) = fanout_function(&local, &table).await;
    membership::subscribe(store.as_ref(), &SystemClock, &RoomHeads::default(), "fixture", &id, None).await.unwrap();
    membership::subscribe(store.as_ref(), &SystemClock, &RoomHeads::default(), "fixture", "gone-connection", None)
        .await
        .unwrap();
    let batch = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/stream-batch.json")).unwrap();
    let event: Event = serde_json::from_str(&batch).unwrap();

    let response = livesync_handlers::fanout(&fanout, event).await;

    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone().unwrap()).collect();
    assert_eq!(failed, vec!["111000000000000000002"], "only the record whose seq is not a number");
    let pushed = client.next_frame().await;
    assert_eq!(pushed["type"], "events", "the batch's events for one connection come as one post: {pushed}");
    assert_eq!(seqs(&events_of(&pushed)), vec![1, 3]);
    assert_eq!(events_of(&pushed)[1]["data"], json!({"text": "third"}));
    assert_eq!(subscribers(&store, "fixture").await, vec![id], "the gone connection was forgotten");
}

/// A stream record as the event source mapping hands it to Lambda (DynamoDB JSON images).
fn lambda_record(record: &aws_sdk_dynamodbstreams::types::Record, arn: &str) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue;
    let image = |image: Option<&std::collections::HashMap<String, AttributeValue>>| -> Value {
        let mut json = serde_json::Map::new();
        for (name, value) in image.into_iter().flatten() {
            let value = match value {
                AttributeValue::S(s) => json!({"S": s}),
                AttributeValue::N(n) => json!({"N": n}),
                other => panic!("LiveSync writes only S and N, found {other:?}"),
            };
            json.insert(name.clone(), value);
        }
        Value::Object(json)
    };
    let data = record.dynamodb().unwrap();
    let mut change = json!({
        "ApproximateCreationDateTime": data.approximate_creation_date_time().map_or(0, |t| t.secs()),
        "Keys": image(data.keys()),
        "SequenceNumber": data.sequence_number(),
        "SizeBytes": data.size_bytes(),
        "StreamViewType": "NEW_IMAGE",
    });
    if data.new_image().is_some() {
        change["NewImage"] = image(data.new_image());
    }
    if data.old_image().is_some() {
        panic!("the stream is NEW_IMAGE, yet a record carries an old image");
    }
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().unwrap().as_str(),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": change,
        "eventSourceARN": arn,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_function_delivers_records_read_off_motos_stream() {
    let local = Local::start().await;
    let (mut client, id) = local.client_with_id().await;
    let sdk = moto_config().await;
    let table = moto_table(&sdk, "fanout-stream").await;
    let (fanout, store) = fanout_function(&local, &table).await;

    // The stream, from its start.
    let tables = aws_sdk_dynamodb::Client::new(&sdk);
    let described = tables.describe_table().table_name(&table).send().await.unwrap();
    let arn = described.table().unwrap().latest_stream_arn().unwrap().to_owned();
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let stream = streams.describe_stream().stream_arn(&arn).send().await.unwrap();
    let shard = stream.stream_description().unwrap().shards()[0].shard_id().unwrap().to_owned();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();

    // The message function's work, on DynamoDB: the client's subscription, then two publishes.
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));
    membership::subscribe(store.as_ref(), &SystemClock, &RoomHeads::default(), "live", &id, None).await.unwrap();
    for text in ["one", "two"] {
        let body = json!({"action": "publish", "room": "live", "data": text}).to_string();
        let ack = engine
            .handle(&livesync_core::access::Caller::anonymous("publisher"), "publisher", &format!("req-{text}"), &body)
            .await;
        assert!(matches!(ack, livesync_core::protocol::ServerFrame::Ack { .. }), "{ack:?}");
    }

    let records = streams.get_records().shard_iterator(iterator.shard_iterator().unwrap()).send().await.unwrap();
    let lambda_event = json!({"Records": records.records().iter().map(|r| lambda_record(r, &arn)).collect::<Vec<_>>()});
    let event: Event = serde_json::from_value(lambda_event).unwrap();
    assert!(event.records.len() >= 4, "subscription items and events: {}", event.records.len());

    let response = livesync_handlers::fanout(&fanout, event).await;

    assert!(response.batch_item_failures.is_empty());
    let pushed = client.next_frame().await;
    assert_eq!(seqs(&events_of(&pushed)), vec![1, 2]);
    assert_eq!(
        events_of(&pushed).iter().map(|e| e["data"].clone()).collect::<Vec<_>>(),
        vec![json!("one"), json!("two")]
    );
}
