//! The cost model, measured: every DynamoDB request that one published event causes (with its
//! capacity units, by DynamoDB's sizing rules, see `support/metered.rs`) and every post to a
//! connection, through the deployed functions' own code over the DynamoDB store on moto: the
//! message function's engine (with its write bucket in the table) and the fanout function's
//! fanout (counting the day's figures, marking the room's head). Stream records reach the
//! fanout Lambda for free; they are read here without being counted.
//!
//! `a_published_event_costs_exactly_these_requests` keeps the counts from growing unnoticed.
//! The table in docs/COST.md comes from
//! `scripts/test -p livesync-tests --test cost -- --ignored --nocapture`.

use async_trait::async_trait;
use livesync_core::access::{Caller, Grants};
use livesync_core::clock::SystemClock;
use livesync_core::limits::{StoreLimiter, WriteRate};
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use livesync_core::store::{Change, ChangeKind, Store};
use livesync_core::{Engine, Fanout, layout};
use livesync_dynamodb::DynamoStore;
use livesync_tests::metered::{Bill, Metered};
use livesync_tests::{moto_config, moto_table};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts PostToConnection calls and the WebSocket messages they are billed as (per 32 KB).
#[derive(Default)]
struct CountingPoster {
    posts: AtomicU64,
    messages: AtomicU64,
}

#[async_trait]
impl Poster for CountingPoster {
    async fn post(&self, _: &str, frame: &Frame) -> Result<Delivery, PostError> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(frame.len().div_ceil(32 * 1024).max(1) as u64, Ordering::Relaxed);
        Ok(Delivery::Sent)
    }

    async fn delete_connection(&self, _: &str) -> Result<(), PostError> {
        Ok(())
    }
}

/// What `events` publishes into a room of `subscribers`, fanned out in batches of `batch`, cost.
struct Measured {
    events: u64,
    batch: u64,
    subscribers: u64,
    publish: Bill,
    fanout: Bill,
    posts: u64,
    post_messages: u64,
}

async fn measure(subscribers: u64, batch: u64, events: u64, with_ids: bool) -> Measured {
    let config = moto_config().await;
    let table = moto_table(&config, "cost").await;
    let dynamo: Arc<dyn Store> = Arc::new(DynamoStore::new(&config, &table));
    let metered = Arc::new(Metered::new(dynamo.clone()));
    let store: Arc<dyn Store> = metered.clone();
    let engine = Engine::new(store.clone(), Arc::new(SystemClock))
        .with_limiter(Arc::new(StoreLimiter::new(store.clone(), WriteRate { per_second: 1e9, burst: 1_000_000_000 })));
    let ask = |user: String, connection: String, body: String| {
        let engine = &engine;
        async move {
            let reply = engine.handle(&Caller::user(user, &connection, Grants::all()), &connection, "r", &body).await;
            serde_json::from_str::<serde_json::Value>(&reply.to_json()).unwrap()
        }
    };
    for n in 0..subscribers {
        ask(format!("u{n}"), format!("sub{n}"), r#"{"action":"join","room":"room"}"#.to_owned()).await;
    }
    metered.take_bill();

    for n in 0..events {
        let id = if with_ids { format!(r#","id":"e{n}""#) } else { String::new() };
        let body = format!(
            r#"{{"action":"publish","room":"room","data":{{"n":{n},"text":"an event of about a hundred bytes, as a chat line is"}}{id}}}"#
        );
        let ack = ask("writer".into(), "writer".into(), body).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let publish = metered.take_bill();

    let page = dynamo.query(layout::events_after("room", 0, 1000)).await.unwrap();
    let changes: Vec<Change> = page
        .items
        .into_iter()
        .map(|item| Change { kind: ChangeKind::Insert, key: item.key.clone(), new: Some(item) })
        .collect();
    assert_eq!(changes.len() as u64, events);
    let poster = Arc::new(CountingPoster::default());
    let fanout = Fanout::new(store, poster.clone()).counting();
    for records in changes.chunks(batch as usize) {
        let report = fanout.deliver(records).await;
        assert!(!report.has_failures(), "{report:?}");
    }
    let fanout = metered.take_bill();
    // moto copies every table it holds for each transaction, and keeps each table's stream
    // records in memory: a table left behind makes every later row slower and bigger.
    aws_sdk_dynamodb::Client::new(&config).delete_table().table_name(&table).send().await.unwrap();
    Measured {
        events,
        batch,
        subscribers,
        publish,
        fanout,
        posts: poster.posts.load(Ordering::Relaxed),
        post_messages: poster.messages.load(Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_costs_exactly_these_requests() {
    // GIVEN a room of 10 subscribers, WHEN a message function takes 10 publishes without ids
    // and the fanout delivers them in one batch,
    let plain = measure(10, 10, 10, false).await;
    println!("{:?}\n{:?}", plain.publish, plain.fanout);
    // THEN each publish is one bucket read and update and one conditional put, and the first
    // one in the room also reads its head (the newest event and the head marker);
    let publishes: Vec<(&str, u64)> = plain.publish.requests.iter().map(|(op, n)| (*op, *n)).collect();
    assert_eq!(publishes, [("GetItem", 11), ("PutItem", 10), ("Query", 1), ("UpdateItem", 10)]);
    // and the batch is one subscriber query, the day's figures (read and written) and the
    // room's head marker, with one post per subscriber.
    let fanout: Vec<(&str, u64)> = plain.fanout.requests.iter().map(|(op, n)| (*op, *n)).collect();
    assert_eq!(fanout, [("GetItem", 1), ("PutItem", 2), ("Query", 1)]);
    assert_eq!((plain.posts, plain.post_messages), (10, 10));

    // With ids, the put becomes a transaction with the idempotency record.
    let with_ids = measure(10, 10, 10, true).await;
    let publishes: Vec<(&str, u64)> = with_ids.publish.requests.iter().map(|(op, n)| (*op, *n)).collect();
    assert_eq!(publishes, [("GetItem", 11), ("Query", 1), ("TransactWriteItems", 10), ("UpdateItem", 10)]);
}

async fn ask(engine: &Engine, connection: &str, body: serde_json::Value) -> serde_json::Value {
    // Each request its own id, as API Gateway gives (the fallback event id).
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    let request = format!("q{}", REQUESTS.fetch_add(1, Ordering::Relaxed));
    let caller = Caller::user(connection, connection, Grants::all());
    let reply = engine.handle(&caller, connection, &request, &body.to_string()).await;
    serde_json::from_str(&reply.to_json()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_head_is_stale_reads_the_head_once_instead_of_walking_up_to_it() {
    // GIVEN two message function instances, the first of which last saw the room at seq 1,
    let config = moto_config().await;
    let table = moto_table(&config, "stale").await;
    let dynamo: Arc<dyn Store> = Arc::new(DynamoStore::new(&config, &table));
    let metered = Arc::new(Metered::new(dynamo.clone()));
    let stale = Engine::new(metered.clone(), Arc::new(SystemClock));
    let other = Engine::new(dynamo, Arc::new(SystemClock));
    assert_eq!(ask(&stale, "a", serde_json::json!({"action": "publish", "room": "r", "data": 0})).await["seq"], 1);
    // WHEN the other instance publishes 20 events, then the first publishes again,
    for n in 0..20 {
        assert_eq!(
            ask(&other, "b", serde_json::json!({"action": "publish", "room": "r", "data": n})).await["type"],
            "ack"
        );
    }
    metered.take_bill();
    let ack = ask(&stale, "a", serde_json::json!({"action": "publish", "room": "r", "data": 21})).await;
    // THEN it loses one race, reads the head (its newest event and its marker), and wins the
    // next seq: two billed puts, not one per event it missed.
    assert_eq!(ack["seq"], 22, "{ack}");
    let requests: Vec<(&str, u64)> = metered.take_bill().requests.into_iter().collect();
    assert_eq!(requests, [("GetItem", 1), ("PutItem", 2), ("Query", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_of_large_events_reads_little_more_than_its_reply_carries() {
    // GIVEN a room of 40 events of 24 KB each,
    let config = moto_config().await;
    let table = moto_table(&config, "large").await;
    let dynamo: Arc<dyn Store> = Arc::new(DynamoStore::new(&config, &table));
    let metered = Arc::new(Metered::new(dynamo.clone()));
    let engine = Engine::new(metered.clone(), Arc::new(SystemClock));
    let large = "x".repeat(24 * 1024);
    for _ in 0..40 {
        assert_eq!(
            ask(&engine, "a", serde_json::json!({"action": "publish", "room": "r", "data": large})).await["type"],
            "ack"
        );
    }
    metered.take_bill();
    // WHEN a client syncs from the start,
    let page = ask(&engine, "b", serde_json::json!({"action": "sync", "room": "r", "since": 0})).await;
    // THEN the reply holds what fits in one message, and the reads cost about that much (the
    // first read's 10 events, ~61 read units), not the 40 events a 100-event page would read.
    assert_eq!((page["events"].as_array().unwrap().len(), page["more"].clone()), (5, serde_json::json!(true)));
    let bill = metered.take_bill();
    assert_eq!(bill.requests.get("Query"), Some(&1), "{bill:?}");
    assert!(bill.read_units <= 70.0, "{bill:?}");
}

// AWS's public us-east-1 prices (docs/COST.md names the sources).
const WRU_PER_MILLION: f64 = 0.625;
const RRU_PER_MILLION: f64 = 0.125;
const WEBSOCKET_MESSAGES_PER_MILLION: f64 = 1.00;
const LAMBDA_REQUESTS_PER_MILLION: f64 = 0.20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints docs/COST.md's table: scripts/test -p livesync-tests --test cost -- --ignored --nocapture"]
async fn the_cost_table() {
    println!(
        "| subscribers | batch | DynamoDB requests/event | WRU/event | RRU/event | posts/event | Lambda invocations/event | $ per million events: DynamoDB | API Gateway messages | Lambda requests | total |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let rows =
        [1u64, 10, 100, 1000].into_iter().flat_map(|subscribers| [1u64, 10, 100].map(|batch| (subscribers, batch)));
    for (subscribers, batch) in rows {
        let m = measure(subscribers, batch, 100, true).await;
        let per = |n: f64| n / m.events as f64;
        let requests = per((m.publish.total_requests() + m.fanout.total_requests()) as f64);
        let wru = per(m.publish.write_units + m.fanout.write_units);
        let rru = per(m.publish.read_units + m.fanout.read_units);
        let invocations = 1.0 + 1.0 / m.batch as f64;
        // Billed messages: the publish received, its reply, and each post.
        let messages = 2.0 + per(m.post_messages as f64);
        let dynamodb = wru * WRU_PER_MILLION + rru * RRU_PER_MILLION;
        let api = messages * WEBSOCKET_MESSAGES_PER_MILLION;
        let lambda = invocations * LAMBDA_REQUESTS_PER_MILLION;
        println!(
            "| {} | {} | {requests:.2} | {wru:.2} | {rru:.2} | {:.2} | {invocations:.2} | {dynamodb:.2} | {api:.2} | {lambda:.2} | {:.2} |",
            m.subscribers,
            m.batch,
            per(m.posts as f64),
            dynamodb + api + lambda
        );
    }
    println!(
        "\nAWS's simple-websockets-chat-app, per message (a Scan of every ~60-byte connection item, eventually consistent, then a post each):"
    );
    println!(
        "| connections | RRU/message | posts/message | $ per million messages: DynamoDB | API Gateway messages | Lambda requests | total |"
    );
    println!("|---|---|---|---|---|---|---|");
    for connections in [1u64, 10, 100, 1000] {
        let rru = ((connections * 60).div_ceil(4096).max(1)) as f64 * 0.5;
        let messages = 1.0 + connections as f64;
        let dynamodb = rru * RRU_PER_MILLION;
        let api = messages * WEBSOCKET_MESSAGES_PER_MILLION;
        println!(
            "| {connections} | {rru:.1} | {connections} | {dynamodb:.2} | {api:.2} | {LAMBDA_REQUESTS_PER_MILLION:.2} | {:.2} |",
            dynamodb + api + LAMBDA_REQUESTS_PER_MILLION
        );
    }
}
