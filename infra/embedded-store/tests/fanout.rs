//! Fanout over a real store: every subscriber gets the batch, in order; a gone connection is
//! forgotten with all its subscriptions; a failing post is retried, and a connection whose posts
//! keep failing is closed and counted, without stopping the others.

use async_trait::async_trait;
use livesync_core::clock::SystemClock;
use livesync_core::faults::{Faults, FaultyStore};
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use livesync_core::store::{ChangeFeed, Store};
use livesync_core::{Engine, Fanout, layout};
use livesync_embedded_store::{EmbeddedStore, Options};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A poster for this test only: records frames, answers `Gone` for chosen connections, fails
/// for others (for good, or a number of times first), and records which it was asked to close.
#[derive(Default)]
struct Recording {
    frames: Mutex<HashMap<String, Vec<String>>>,
    gone: Vec<String>,
    failing: Vec<String>,
    /// Connections whose next posts fail, and how many of them.
    throttled: Mutex<HashMap<String, usize>>,
    closed: Mutex<Vec<String>>,
}

#[async_trait]
impl Poster for Recording {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError> {
        if self.gone.iter().any(|c| c == connection) {
            return Ok(Delivery::Gone);
        }
        let throttled = self.throttled.lock().unwrap().get_mut(connection).filter(|n| **n > 0).map(|n| *n -= 1);
        if self.failing.iter().any(|c| c == connection) || throttled.is_some() {
            return Err(PostError { connection: connection.into(), source: "throttled".into() });
        }
        let text = String::from_utf8(frame.bytes().to_vec()).unwrap();
        self.frames.lock().unwrap().entry(connection.to_owned()).or_default().push(text);
        Ok(Delivery::Sent)
    }

    async fn delete_connection(&self, connection: &str) -> Result<(), PostError> {
        self.closed.lock().unwrap().push(connection.to_owned());
        Ok(())
    }
}

/// Retries without waiting: what is tested is that they happen, not how long they wait.
fn quick_retries(fanout: Fanout) -> Fanout {
    fanout.with_retry_delays(vec![Duration::ZERO; 3])
}

async fn next_batch(feed: &mut Box<dyn ChangeFeed>) -> Vec<livesync_core::store::Change> {
    tokio::time::timeout(Duration::from_secs(20), feed.next_batch(1000)).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaches_every_subscriber_and_a_gone_connection_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));
    for connection in ["alive", "gone", "flaky"] {
        ask(&engine, connection, "j", r#"{"action":"join","room":"r"}"#).await;
        ask(&engine, connection, "j2", r#"{"action":"join","room":"other"}"#).await;
    }
    let mut feed = store.change_feed().await.unwrap();
    for n in 1..=3 {
        ask(&engine, "alive", &format!("p{n}"), &format!(r#"{{"action":"publish","room":"r","data":{n}}}"#)).await;
    }
    let mut changes = Vec::new();
    while changes.len() < 3 {
        changes.extend(next_batch(&mut feed).await);
    }
    let poster = Arc::new(Recording { gone: vec!["gone".into()], failing: vec!["flaky".into()], ..Default::default() });

    let report = quick_retries(Fanout::new(store.clone(), poster.clone())).deliver(&changes).await;

    assert_eq!(report.events, 3);
    assert_eq!(report.deliveries, 3, "three events to the one healthy subscriber");
    assert_eq!(report.gone, 1);
    assert_eq!((report.failed_posts, report.retried_posts, report.unclosed), (1, 3, 0));
    assert_eq!(*poster.closed.lock().unwrap(), vec!["flaky"], "a connection failing for good is closed");
    assert!(report.records_to_retry().is_empty(), "a failed post fails no record: its client recovers");
    let frames = poster.frames.lock().unwrap().clone();
    assert_eq!(frames.keys().collect::<Vec<_>>(), vec!["alive"]);
    let pushed: serde_json::Value = serde_json::from_str(&frames["alive"][0]).unwrap();
    assert_eq!(pushed["type"], "events");
    assert_eq!(
        pushed["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // The gone connection is forgotten everywhere, in both of its rooms; the flaky one is kept.
    let gone_items = store.query(layout::connection_items("gone", 10)).await.unwrap();
    assert!(gone_items.items.is_empty());
    for room in ["r", "other"] {
        let subscribers = store.query(layout::subscribers_of(room, 10)).await.unwrap();
        let names: Vec<&str> = subscribers.items.iter().filter_map(layout::subscriber).collect();
        assert_eq!(names, vec!["alive", "flaky"], "room {room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_more_subscribers_than_one_page_reaches_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));
    for n in 0..2500 {
        ask(&engine, &format!("c{n:04}"), "j", r#"{"action":"join","room":"crowd"}"#).await;
    }
    let mut feed = store.change_feed().await.unwrap();
    ask(&engine, "c0000", "p", r#"{"action":"publish","room":"crowd","data":"hi"}"#).await;
    let changes = next_batch(&mut feed).await;
    let poster = Arc::new(Recording::default());

    let report = Fanout::new(store, poster.clone()).deliver(&changes).await;

    assert_eq!(report.deliveries, 2500);
    assert_eq!(poster.frames.lock().unwrap().len(), 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_throttled_then_succeeding_is_delivered_once_and_counted_as_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));
    ask(&engine, "busy", "j", r#"{"action":"join","room":"r"}"#).await;
    let mut feed = store.change_feed().await.unwrap();
    ask(&engine, "busy", "p", r#"{"action":"publish","room":"r","data":1}"#).await;
    let changes = next_batch(&mut feed).await;
    let poster = Arc::new(Recording::default());
    poster.throttled.lock().unwrap().insert("busy".into(), 2);

    let report = quick_retries(Fanout::new(store, poster.clone())).deliver(&changes).await;

    assert_eq!((report.deliveries, report.retried_posts, report.failed_posts), (1, 2, 0));
    assert_eq!(poster.frames.lock().unwrap()["busy"].len(), 1);
    assert!(poster.closed.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_out_of_seq_order_in_a_batch_are_pushed_in_seq_order_and_a_redelivered_batch_repeats_the_same_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));
    ask(&engine, "reader", "j", r#"{"action":"join","room":"r"}"#).await;
    let mut feed = store.change_feed().await.unwrap();
    for n in 1..=3 {
        ask(&engine, "writer", &format!("p{n}"), &format!(r#"{{"action":"publish","room":"r","data":{n}}}"#)).await;
    }
    let mut changes = Vec::new();
    while changes.len() < 3 {
        changes.extend(next_batch(&mut feed).await);
    }
    // Records of transactions may interleave in a stream: the batch holds [3, 1, 2].
    changes.rotate_right(1);
    let poster = Arc::new(Recording::default());
    let fanout = Fanout::new(store, poster.clone());

    fanout.deliver(&changes).await;
    fanout.deliver(&changes).await;

    let frames = poster.frames.lock().unwrap()["reader"].clone();
    let seqs: Vec<Vec<u64>> = frames
        .iter()
        .map(|frame| {
            let pushed: serde_json::Value = serde_json::from_str(frame).unwrap();
            pushed["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
        })
        .collect();
    assert_eq!(seqs, vec![vec![1, 2, 3], vec![1, 2, 3]], "the repeat carries the same seqs, for clients to drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_whose_subscribers_cannot_be_read_fail_exactly_their_own_records() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));
    let mut feed = store.change_feed().await.unwrap();
    ask(&engine, "w", "j", r#"{"action":"join","room":"a"}"#).await;
    ask(&engine, "w", "p1", r#"{"action":"publish","room":"a","data":1}"#).await;
    ask(&engine, "w", "p2", r#"{"action":"publish","room":"b","data":2}"#).await;
    let mut changes: Vec<livesync_core::store::Change> = Vec::new();
    while changes.iter().filter(|c| c.key.sk.starts_with("EVT#")).count() < 2 {
        changes.extend(next_batch(&mut feed).await);
    }
    let events: std::collections::BTreeSet<usize> =
        changes.iter().enumerate().filter(|(_, c)| c.key.sk.starts_with("EVT#")).map(|(i, _)| i).collect();
    assert!(events.len() < changes.len(), "the batch also holds records that are not events");
    let faults = Faults::new(1);
    faults.set_rates(1.0, 0.0);
    let unreadable: Arc<dyn Store> = Arc::new(FaultyStore::new(store, faults));

    let report = Fanout::new(unreadable, Arc::new(Recording::default())).deliver(&changes).await;

    assert_eq!(report.failed_rooms.len(), 2);
    assert_eq!(report.records_to_retry(), events, "the event records, and only those, are retried");
}

/// One request from an anonymous client of an open host.
async fn ask(engine: &Engine, connection: &str, request_id: &str, body: &str) -> livesync_core::protocol::ServerFrame {
    engine.handle(&livesync_core::access::Caller::anonymous(connection), connection, request_id, body).await
}
