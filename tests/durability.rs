//! What is acknowledged stays: across a restart of the runner, publishes keep their seqs, ids
//! stay idempotent, and history stays complete.

use livesync_tests::{Local, events_of, seqs};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_publish_id_is_acknowledged_with_the_original_seq_before_and_after_a_restart() {
    let mut local = Local::start().await;
    let mut reader = local.client().await;
    reader.join("orders", None).await;
    let mut client = local.client().await;

    let first = client.publish("orders", Some("order-17"), json!({"qty": 1})).await;
    client.publish("orders", Some("order-18"), json!({"qty": 2})).await;
    let again = client.publish("orders", Some("order-17"), json!({"qty": 1})).await;
    assert_eq!(first["seq"], 1);
    assert_eq!(again["seq"], 1, "the original seq");
    assert_eq!(again["id"], "order-17");
    assert_eq!(reader.pushed_seqs("orders", 2).await, vec![1, 2], "no second event was pushed");

    local.restart().await;

    let mut client = local.client().await;
    let after_restart = client.publish("orders", Some("order-17"), json!({"qty": 1})).await;
    assert_eq!(after_restart["seq"], 1);
    let next = client.publish("orders", Some("order-19"), json!({"qty": 3})).await;
    assert_eq!(next["seq"], 3, "numbering continues where it stopped");
    let history = client.request(json!({"action": "sync", "room": "orders", "since": 0})).await;
    assert_eq!(seqs(&events_of(&history)), vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_keeps_its_data_across_a_restart() {
    let mut local = Local::start().await;
    let mut client = local.client().await;
    for n in 1..=25 {
        client.publish("notes", None, json!({"n": n})).await;
    }
    client.publish("other", None, json!("x")).await;

    local.restart().await;

    let mut client = local.client().await;
    let joined = client.join("notes", Some(0)).await;
    assert_eq!(joined["seq"], 25);
    let events = events_of(&joined);
    assert_eq!(seqs(&events), (1..=25).collect::<Vec<_>>());
    assert_eq!(events[24]["data"], json!({"n": 25}));
    assert_eq!(client.join("other", None).await["seq"], 1);
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_going_away() {
    let local = Local::start().await;
    let mut client = local.client().await;
    client.join("r", None).await;
    let closing = tokio::spawn(async move { client.closed().await });
    local.stop().await;
    assert_eq!(closing.await.unwrap(), Some(tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Away));
}
