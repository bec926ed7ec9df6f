//! Every subscriber of a room receives the same events in the same order, none missing, however
//! many publishers race.

use livesync_tests::{Client, Local};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_publishers_get_acks_1_to_1600_and_every_subscriber_receives_them_in_order() {
    const PUBLISHERS: u64 = 8;
    const EACH: u64 = 200;
    let local = Local::start().await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut subscriber = local.client().await;
        subscriber.join("race", None).await;
        subscribers.push(subscriber);
    }

    let publishers = (0..PUBLISHERS).map(|p| {
        let url = local.url();
        tokio::spawn(async move {
            let mut publisher = Client::connect(&url).await;
            let mut acks = Vec::new();
            for n in 0..EACH {
                let ack = publisher.publish("race", None, json!({"publisher": p, "n": n})).await;
                acks.push(ack["seq"].as_u64().unwrap());
            }
            acks
        })
    });
    let mut acks: Vec<u64> = Vec::new();
    for publisher in publishers.collect::<Vec<_>>() {
        let mine = publisher.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "one publisher's acks rise: {mine:?}");
        acks.extend(mine);
    }
    acks.sort();
    let all: Vec<u64> = (1..=PUBLISHERS * EACH).collect();
    assert_eq!(acks, all, "every seq given exactly once, none skipped");

    for subscriber in &mut subscribers {
        assert_eq!(subscriber.pushed_seqs("race", all.len()).await, all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_event_carries_what_was_published_and_who_published_it() {
    let local = Local::start().await;
    let mut reader = local.client().await;
    reader.join("doc", None).await;
    let mut writer = local.client().await;

    let ack = writer.publish("doc", Some("edit-1"), json!({"op": "insert", "at": 3, "text": "héllo"})).await;

    let mut event = reader.next_frame().await;
    assert_eq!(event["type"], "event");
    assert_eq!(event["seq"], ack["seq"]);
    assert_eq!(event["id"], "edit-1");
    assert_eq!(event["data"], json!({"op": "insert", "at": 3, "text": "héllo"}));
    assert!(event["from"].as_str().is_some_and(|from| !from.is_empty()));
    assert!(event["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000_000));
    event.as_object_mut().unwrap().retain(|k, _| !["data", "from", "ts", "seq", "id"].contains(&k.as_str()));
    assert_eq!(event, json!({"type": "event", "room": "doc"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_independent_and_leaving_stops_the_pushes() {
    let local = Local::start().await;
    let mut both = local.client().await;
    both.join("a", None).await;
    both.join("b", None).await;
    let mut writer = local.client().await;

    assert_eq!(writer.publish("a", None, json!(1)).await["seq"], 1);
    assert_eq!(writer.publish("b", None, json!(1)).await["seq"], 1);
    assert_eq!(writer.publish("a", None, json!(2)).await["seq"], 2);
    assert_eq!(both.pushed_seqs("a", 2).await, vec![1, 2]);

    let left = both.request(json!({"action": "leave", "room": "a"})).await;
    assert_eq!(left["type"], "left");
    writer.publish("a", None, json!(3)).await;
    writer.publish("b", None, json!(2)).await;
    // Only room b's events arrive now; a's third event does not.
    let pushed = both.pushed_seqs("b", 2).await;
    assert_eq!(pushed, vec![1, 2]);
    // Everything pushed before the pong has been read: none of it may be room a's.
    let pong = both.request(json!({"action": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(both.queued_pushes("a"), 0, "room a's third event reached a client that left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_and_nobody_else_waits_for_it() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let local = Local::start_with(|config| config.limits.send_queue_bytes = 512 * 1024).await;
    let mut healthy = local.client().await;
    healthy.join("firehose", None).await;
    // A raw socket that joins and then never reads again.
    let mut stalled = local.client().await;
    stalled.join("firehose", None).await;

    let published = 400;
    let reading = tokio::spawn(async move { healthy.pushed_seqs("firehose", published).await });
    let mut writer = local.client().await;
    // Under API Gateway's 32 KB frame, 12 MB in all: more than loopback's socket buffers hold.
    let blob = "z".repeat(30 * 1024);
    for _ in 0..published {
        writer.publish("firehose", None, json!(blob)).await;
    }

    // The healthy subscriber gets everything, in order, while the stalled one holds nothing up.
    assert_eq!(reading.await.unwrap(), (1..=published as u64).collect::<Vec<_>>());
    // The stalled socket was closed without its client reading a byte: only the healthy
    // subscriber and the writer remain.
    local.wait_for_open_connections(2).await;
    let code = loop {
        match stalled.next_message().await {
            Some(tokio_tungstenite::tungstenite::Message::Close(close)) => {
                break close.map(|c| c.code);
            }
            Some(_) => continue,
            None => break None,
        }
    };
    // With its socket buffers full the close frame usually cannot be written; it is dropped then.
    assert!(matches!(code, Some(CloseCode::Policy) | None), "{code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_at_its_maximum_age_as_api_gateway_does() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let local = Local::start_with(|config| config.max_connection_secs = 1).await;
    let mut client = local.client().await;
    client.join("r", None).await;
    assert_eq!(client.closed().await, Some(CloseCode::Away));
    local.wait_for_open_connections(0).await;
}
