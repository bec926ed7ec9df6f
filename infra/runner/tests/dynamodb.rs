//! The runner on DynamoDB instead of the embedded store (`--store dynamodb --create-tables`),
//! against moto through the real SDK, configured only by the SDK's standard environment.

mod common;

use common::{call, connect, next_push, signal, start, wait_for_exit};
use serde_json::json;

/// A table of its own on the moto server `scripts/test` starts, for a runner configured only by
/// the SDK's standard environment.
struct OnMoto {
    endpoint: String,
    table: String,
}

impl OnMoto {
    fn new(name: &str) -> OnMoto {
        let endpoint =
            std::env::var("LIVESYNC_MOTO_ENDPOINT").expect("LIVESYNC_MOTO_ENDPOINT (scripts/test starts moto)");
        OnMoto { endpoint, table: format!("{name}-{}", std::process::id()) }
    }

    /// Starts the runner on the table, creating it if missing.
    fn start(&self) -> (std::process::Child, String) {
        let env = [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ];
        start(&["--store", "dynamodb", "--table", &self.table, "--create-tables"], &env)
    }

    /// The same, with only the table's own endpoint variable set, as `--help` suggests: the
    /// stream is read at that endpoint too.
    fn start_with_table_endpoint(&self) -> (std::process::Child, String) {
        let env = [
            ("AWS_ENDPOINT_URL_DYNAMODB", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ];
        start(&["--store", "dynamodb", "--table", &self.table, "--create-tables"], &env)
    }
}

/// The seqs of a push, in the order they came.
fn pushed_seqs(frame: &serde_json::Value) -> Vec<u64> {
    let events = match frame["type"].as_str() {
        Some("event") => vec![frame.clone()],
        Some("events") => frame["events"].as_array().unwrap().clone(),
        _ => panic!("not a push: {frame}"),
    };
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_concurrent_publishes_with_ids_all_reach_the_subscriber_in_order_and_later_rooms_still_get_theirs()
{
    let moto = OnMoto::new("runner-race");
    let (runner, url) = moto.start_with_table_endpoint();
    let mut watcher = connect(&url).await;
    call(&mut watcher, json!({"action": "join", "room": "race", "ref": "j"})).await;

    // Three clients publish 20 events each with ids, at once: racing transactions.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut writer = connect(&url).await;
                for n in 0..20 {
                    let ack = call(
                        &mut writer,
                        json!({"action": "publish", "room": "race", "id": format!("w{w}-{n}"), "data": n, "ref": n}),
                    )
                    .await;
                    assert_eq!(ack["type"], "ack", "{ack}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 60 {
        seqs.extend(pushed_seqs(&next_push(&mut watcher).await));
    }
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>(), "every event, in order, once");

    // The feed goes on: a later room is delivered too.
    let mut later = connect(&url).await;
    call(&mut later, json!({"action": "join", "room": "later", "ref": "j"})).await;
    call(&mut watcher, json!({"action": "publish", "room": "later", "data": "still here", "ref": "p"})).await;
    assert_eq!(pushed_seqs(&next_push(&mut later).await), vec![1]);

    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_creates_its_table_serves_rooms_from_dynamodb_and_keeps_them_across_restarts() {
    let moto = OnMoto::new("runner");
    let (runner, url) = moto.start();

    let mut reader = connect(&url).await;
    let joined = call(&mut reader, json!({"action": "join", "room": "dyn", "ref": "j"})).await;
    assert_eq!(joined["seq"], 0);
    let mut writer = connect(&url).await;
    for n in 1..=3 {
        let ack =
            call(&mut writer, json!({"action": "publish", "room": "dyn", "id": format!("d{n}"), "data": n, "ref": n}))
                .await;
        assert_eq!(ack["seq"], n);
    }
    // Pushed through DynamoDB's stream, read by the runner as the event source mapping would.
    let mut pushed = Vec::new();
    while pushed.len() < 3 {
        let frame = next_push(&mut reader).await;
        let events = match frame["type"].as_str() {
            Some("event") => vec![frame.clone()],
            Some("events") => frame["events"].as_array().unwrap().clone(),
            _ => panic!("not a push: {frame}"),
        };
        pushed.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
    }
    assert_eq!(pushed, vec![1, 2, 3]);

    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());

    // The data is in the table, not in the runner.
    let (runner, url) = moto.start();
    let mut client = connect(&url).await;
    let history = call(&mut client, json!({"action": "sync", "room": "dyn", "since": 0, "ref": "s"})).await;
    let seqs: Vec<u64> = history["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let repeat =
        call(&mut client, json!({"action": "publish", "room": "dyn", "id": "d2", "data": 2, "ref": "r"})).await;
    assert_eq!(repeat["seq"], 2);

    // The table is the template's: stream with both images, TTL on expires_at.
    let sdk = livesync_dynamodb::emulator_config(&moto.endpoint).await;
    let tables = aws_sdk_dynamodb::Client::new(&sdk);
    let described = tables.describe_table().table_name(&moto.table).send().await.unwrap();
    let stream = described.table().unwrap().stream_specification().unwrap();
    assert_eq!(stream.stream_view_type().map(|v| v.as_str()), Some("NEW_IMAGE"));
    let ttl = tables.describe_time_to_live().table_name(&moto.table).send().await.unwrap();
    assert_eq!(ttl.time_to_live_description().and_then(|d| d.attribute_name()), Some("expires_at"));
    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_concurrent_buyers_never_oversell_and_the_dashboard_sees_every_level() {
    let moto = OnMoto::new("runner-stock");
    let (runner, url) = moto.start();

    let mut dashboard = connect(&url).await;
    call(&mut dashboard, json!({"action": "join", "room": "shop", "ref": "j"})).await;
    let set =
        call(&mut dashboard, json!({"action": "stock.set", "room": "shop", "sku": "mug", "level": 5, "ref": "s"}))
            .await;
    assert_eq!(set["level"], 5, "{set}");

    // Eight buyers at once, each sending its sale twice (a retry after a lost ack).
    let buyers: Vec<_> = (0..8)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut buyer = connect(&url).await;
                let sale = json!({"action": "stock.adjust", "room": "shop", "sku": "mug", "delta": -1, "id": format!("order-{n}")});
                let mut first = sale.clone();
                first["ref"] = json!("first");
                let mut again = sale;
                again["ref"] = json!("again");
                (call(&mut buyer, first).await, call(&mut buyer, again).await)
            })
        })
        .collect();
    let mut sold = 0;
    for buyer in buyers {
        let (first, again) = buyer.await.unwrap();
        if first["type"] == "stock" {
            sold += 1;
            assert_eq!(again["version"], first["version"], "the retry is the same sale: {again}");
        } else {
            assert_eq!(
                (first["code"].as_str(), again["code"].as_str()),
                (Some("insufficient_stock"), Some("insufficient_stock"))
            );
        }
    }
    assert_eq!(sold, 5);

    // Pushed through DynamoDB's stream: the set and five sales, levels 5 down to 0, in order.
    let mut levels = Vec::new();
    while levels.len() < 6 {
        let frame = next_push(&mut dashboard).await;
        let events = match frame["type"].as_str() {
            Some("event") => vec![frame.clone()],
            Some("events") => frame["events"].as_array().unwrap().clone(),
            _ => panic!("not a push: {frame}"),
        };
        levels.extend(events.iter().map(|e| e["data"]["level"].as_i64().unwrap()));
    }
    assert_eq!(levels, vec![5, 4, 3, 2, 1, 0]);
    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_http_publishes_racing_with_retries_store_each_id_once_and_wake_a_long_poll() {
    let moto = OnMoto::new("http");
    let (runner, url) = moto.start();
    // A long poll waits for the room's first event, woken through the table's stream.
    let poll = {
        let url = url.clone();
        tokio::spawn(async move { common::http(&url, "GET", "/rooms/race/events?since=0&wait=25", "").await })
    };

    // Three backends POST 10 events each with ids, at once, and send every one of them twice
    // (a retry after a timeout), also at once.
    let posts: Vec<_> = (0..3)
        .flat_map(|w| (0..10).flat_map(move |n| [(w, n), (w, n)]))
        .map(|(w, n)| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = json!({ "id": format!("b{w}-{n}"), "data": n }).to_string();
                let (status, ack) = common::http(&url, "POST", "/rooms/race/events", &body).await;
                assert_eq!(status, 200, "{ack}");
                (ack["id"].as_str().unwrap().to_owned(), ack["seq"].as_u64().unwrap())
            })
        })
        .collect();
    let mut acks = std::collections::BTreeMap::new();
    for post in posts {
        let (id, seq) = post.await.unwrap();
        assert_eq!(*acks.entry(id).or_insert(seq), seq, "a retry gets the seq of the first");
    }
    let mut seqs: Vec<u64> = acks.values().copied().collect();
    seqs.sort();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "30 ids, 30 events, no gap");

    let (status, woken) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(woken["events"][0]["seq"], 1, "{woken}");
    let (_, page) = common::http(&url, "GET", "/rooms/race/events?since=0", "").await;
    let stored: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(stored, (1..=30).collect::<Vec<_>>());

    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}
