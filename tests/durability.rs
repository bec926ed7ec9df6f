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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_writes_with_unavailable_while_connects_pings_and_reads_go_on() {
    // GIVEN a runner whose store may grow to 1 MB (as a full disk would stop it),
    let mut local = Local::start_with(|config| config.max_store_mb = Some(1)).await;
    let mut writer = local.client().await;
    let blob = "x".repeat(20 * 1024);
    // WHEN a client publishes 20 KB events until the store is full,
    let mut acked = Vec::new();
    let refusal = loop {
        let id = format!("e{}", acked.len());
        let reply = writer.request(json!({"action": "publish", "room": "big", "id": id, "data": blob})).await;
        if reply["type"] != "ack" {
            break reply;
        }
        acked.push(reply["seq"].as_u64().unwrap());
        assert!(acked.len() < 200, "1 MB never filled");
    };
    // THEN the write is refused with a reason, and the writer's connection stays usable;
    assert_eq!(refusal["code"], "unavailable", "{refusal}");
    assert!(refusal["message"].as_str().unwrap().contains("storage is full"), "{refusal}");
    assert!(acked.len() > 5, "the store filled at once: {acked:?}");
    assert_eq!(writer.request(json!({"action": "ping"})).await["type"], "pong");
    // a new client connects, pings and reads every acknowledged event;
    let mut reader = local.client().await;
    assert_eq!(reader.request(json!({"action": "ping"})).await["type"], "pong");
    let mut held = Vec::new();
    loop {
        let since = held.last().copied().unwrap_or(0);
        let page = reader.request(json!({"action": "sync", "room": "big", "since": since})).await;
        assert_eq!(page["type"], "events", "{page}");
        held.extend(seqs(&events_of(&page)));
        if page["more"] != json!(true) {
            break;
        }
    }
    assert_eq!(held, acked, "everything acknowledged is readable, nothing more");

    // WHEN space is back (here: the runner restarted without the limit),
    local.restart().await;
    let mut client = local.client().await;
    // THEN the refused publish was never applied: its id is new, and takes the next seq.
    let id = format!("e{}", acked.len());
    let retried = client.publish("big", Some(&id), json!("small")).await;
    assert_eq!(retried["seq"], acked.len() as u64 + 1, "{retried}");
}
