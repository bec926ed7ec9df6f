//! Fanout over a real store: every subscriber gets the batch, in order; a gone connection is
//! forgotten with all its subscriptions; a failing post does not stop the others.

use async_trait::async_trait;
use livesync_core::clock::SystemClock;
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use livesync_core::store::{ChangeFeed, Store};
use livesync_core::{Engine, Fanout, layout};
use livesync_embedded_store::{EmbeddedStore, Options};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A poster for this test only: records frames, answers `Gone` or fails for chosen connections.
#[derive(Default)]
struct Recording {
    frames: Mutex<HashMap<String, Vec<String>>>,
    gone: Vec<String>,
    failing: Vec<String>,
}

#[async_trait]
impl Poster for Recording {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError> {
        if self.gone.iter().any(|c| c == connection) {
            return Ok(Delivery::Gone);
        }
        if self.failing.iter().any(|c| c == connection) {
            return Err(PostError { connection: connection.into(), source: "throttled".into() });
        }
        let text = String::from_utf8(frame.bytes().to_vec()).unwrap();
        self.frames.lock().unwrap().entry(connection.to_owned()).or_default().push(text);
        Ok(Delivery::Sent)
    }
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
        engine.connect(connection).await.unwrap();
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

    let report = Fanout::new(store.clone(), poster.clone()).deliver(&changes).await.unwrap();

    assert_eq!(report.events, 3);
    assert_eq!(report.deliveries, 3, "three events to the one healthy subscriber");
    assert_eq!(report.gone, 1);
    assert_eq!(report.failed_posts, 1);
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

    let report = Fanout::new(store, poster.clone()).deliver(&changes).await.unwrap();

    assert_eq!(report.deliveries, 2500);
    assert_eq!(poster.frames.lock().unwrap().len(), 2500);
}

/// One request from an anonymous client of an open host.
async fn ask(engine: &Engine, connection: &str, request_id: &str, body: &str) -> livesync_core::protocol::ServerFrame {
    engine.handle(&livesync_core::access::Caller::anonymous(connection), connection, request_id, body).await
}
