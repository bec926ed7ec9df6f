//! What the embedded store does beyond the conformance suite: it is durable, and it sweeps.

use livesync_core::store::{Attr, ChangeKind, Condition, Item, Key, Query, SortKeys, Store, TTL_ATTRIBUTE, Write};
use livesync_embedded_store::{EmbeddedStore, Options};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store that trims its change log only when a test sweeps it, so what a sweep reports is
/// exact.
fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, Options { trim_every: Duration::from_secs(3600), ..Options::default() }).unwrap()
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..20 {
        let item = Item::new(Key::new("ROOM#a", format!("EVT#{i:03}"))).with("n", Attr::N(i));
        assert_eq!(store.put(item, Condition::NotExists).await.unwrap(), Write::Done);
    }
    drop(store);

    let reopened = open(dir.path());
    let page = reopened.query(Query::new("ROOM#a", SortKeys::All, 100)).await.unwrap();
    assert_eq!(page.items.len(), 20);
    assert_eq!(page.items[19].number("n"), Some(19));
    // Conditions still see what was written before the restart.
    let again = Item::new(Key::new("ROOM#a", "EVT#000"));
    assert!(matches!(reopened.put(again, Condition::NotExists).await.unwrap(), Write::Conflict { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_continues_with_fresh_ids_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put(Item::new(Key::new("P", "before")), Condition::Always).await.unwrap();
    store.sweep().await.unwrap(); // no feed is open: the log is pruned empty
    drop(store);

    let reopened = open(dir.path());
    let mut feed = reopened.change_feed().await.unwrap();
    reopened.put(Item::new(Key::new("P", "after")), Condition::Always).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(20), feed.next_batch(10)).await.unwrap().unwrap();
    let keys: Vec<&str> = batch.iter().map(|c| c.key.sk.as_str()).collect();
    assert_eq!(keys, vec!["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_expired_items_and_reports_each_removal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let expired = Item::new(Key::new("CONN#old", "META")).with(TTL_ATTRIBUTE, Attr::N(now_secs() - 5));
    let alive = Item::new(Key::new("CONN#new", "META")).with(TTL_ATTRIBUTE, Attr::N(now_secs() + 3600));
    let forever = Item::new(Key::new("ROOM#r", "EVT#1"));
    for item in [expired.clone(), alive.clone(), forever.clone()] {
        store.put(item, Condition::Always).await.unwrap();
    }
    let mut feed = store.change_feed().await.unwrap();

    let report = store.sweep().await.unwrap();

    assert_eq!(report.expired_items, 1);
    assert_eq!(store.get(&expired.key).await.unwrap(), None);
    assert_eq!(store.get(&alive.key).await.unwrap(), Some(alive));
    assert_eq!(store.get(&forever.key).await.unwrap(), Some(forever));
    let batch = tokio::time::timeout(Duration::from_secs(20), feed.next_batch(10)).await.unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].kind, ChangeKind::Remove);
    assert_eq!((batch[0].key.clone(), batch[0].new.clone()), (expired.key, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_keeps_changes_an_open_feed_has_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut feed = store.change_feed().await.unwrap();
    for i in 0..3 {
        store.put(Item::new(Key::new("P", format!("k{i}"))), Condition::Always).await.unwrap();
    }
    assert_eq!(store.sweep().await.unwrap().pruned_changes, 0, "nothing read yet");

    let batch = tokio::time::timeout(Duration::from_secs(20), feed.next_batch(2)).await.unwrap().unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(store.sweep().await.unwrap().pruned_changes, 2, "only what was read");

    let rest = tokio::time::timeout(Duration::from_secs(20), feed.next_batch(10)).await.unwrap().unwrap();
    assert_eq!(rest.iter().map(|c| c.key.sk.as_str()).collect::<Vec<_>>(), vec!["k2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_is_trimmed_to_what_the_slowest_feed_has_yet_to_read_without_a_sweep() {
    // GIVEN a store that sweeps once an hour, with two open feeds,
    let dir = tempfile::tempdir().unwrap();
    let store =
        EmbeddedStore::open(dir.path(), Options { sweep_every: Duration::from_secs(3600), ..Options::default() })
            .unwrap();
    let mut fast = store.change_feed().await.unwrap();
    let mut slow = store.change_feed().await.unwrap();
    // WHEN 100 items are written, one feed reads them all and the other the first 40,
    for i in 0..100 {
        store.put(Item::new(Key::new("P", format!("k{i:03}"))), Condition::Always).await.unwrap();
    }
    let mut read = 0;
    while read < 100 {
        read += tokio::time::timeout(Duration::from_secs(20), fast.next_batch(100)).await.unwrap().unwrap().len();
    }
    let first = tokio::time::timeout(Duration::from_secs(20), slow.next_batch(40)).await.unwrap().unwrap();
    assert_eq!(first.len(), 40);
    // THEN the log soon holds just the 60 the slow feed has yet to read (a trim that ignored it
    // would go from 100 to 0 and never hold 60),
    wait_for_log_len(&store, 60).await;
    // and once it has read them too, nothing.
    let rest = tokio::time::timeout(Duration::from_secs(20), slow.next_batch(100)).await.unwrap().unwrap();
    assert_eq!(rest.first().map(|c| c.key.sk.as_str()), Some("k040"));
    assert_eq!(rest.len(), 60);
    wait_for_log_len(&store, 0).await;
    assert_eq!(store.query(Query::new("P", SortKeys::All, 1000)).await.unwrap().items.len(), 100, "items stay");
}

async fn wait_for_log_len(store: &EmbeddedStore, expected: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let len = store.change_log_len().await.unwrap();
        if len == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the change log still holds {len} entries, not {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_a_newer_schema_is_refused_rather_than_misread() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let db = rusqlite::Connection::open(dir.path().join(livesync_embedded_store::DATABASE_FILE)).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let error = EmbeddedStore::open(dir.path(), Options::default()).err().unwrap();
    assert!(error.to_string().contains("newer LiveSync"), "{error}");
}

/// Writes `count` events into `room` as if 8 days ago (past the 7-day retention), fans them
/// out (which marks the room's head) if `fanned_out`, and sweeps: the store then holds the
/// room's head, no event.
async fn a_room_expired_long_ago(dir: &std::path::Path, room: &str, count: u64, fanned_out: bool) {
    use livesync_core::clock::ManualClock;
    use std::sync::Arc;
    let embedded = Arc::new(open(dir));
    let store: Arc<dyn Store> = embedded.clone();
    let eight_days_ago = (now_secs() as u64 - 8 * 86_400) * 1000;
    let engine = livesync_core::Engine::new(store.clone(), Arc::new(ManualClock::new(eight_days_ago)));
    let mut feed = store.change_feed().await.unwrap();
    let caller = livesync_core::access::Caller::anonymous("w");
    for n in 1..=count {
        let body = format!(r#"{{"action":"publish","room":"{room}","id":"old-{n}","data":{n}}}"#);
        engine.handle(&caller, "w", &format!("p{n}"), &body).await;
    }
    let mut changes = Vec::new();
    while changes.len() < 2 * count as usize {
        changes.extend(tokio::time::timeout(Duration::from_secs(20), feed.next_batch(100)).await.unwrap().unwrap());
    }
    if fanned_out {
        let report =
            livesync_core::Fanout::new(store.clone(), Arc::new(livesync_core::store::conformance::NoConnections))
                .deliver(&changes)
                .await;
        assert!(report.records_to_retry().is_empty());
    }
    let swept = embedded.sweep().await.unwrap();
    assert_eq!(swept.expired_items, 2 * count as usize, "each event and its idempotency record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_their_retention_are_swept_and_a_reader_is_told_expired_while_seqs_go_on() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    a_room_expired_long_ago(dir.path(), "old", 3, true).await;
    let store: Arc<dyn Store> = Arc::new(open(dir.path()));
    let engine = livesync_core::Engine::new(store, Arc::new(livesync_core::clock::SystemClock));
    let caller = livesync_core::access::Caller::anonymous("r");
    let ask = |body: &'static str| {
        let (engine, caller) = (&engine, &caller);
        async move {
            serde_json::from_str::<serde_json::Value>(&engine.handle(caller, "r", "q", body).await.to_json()).unwrap()
        }
    };

    let joined = ask(r#"{"action":"join","room":"old","since":0}"#).await;
    assert_eq!((joined["code"].as_str(), joined["oldest"].as_u64()), (Some("expired"), Some(4)), "{joined}");
    let ack = ask(r#"{"action":"publish","room":"old","id":"old-1","data":"new"}"#).await;
    assert_eq!(ack["seq"], 4, "a new seq, and the expired id is free again: {ack}");
    let rejoined = ask(r#"{"action":"join","room":"old","since":3}"#).await;
    assert_eq!(rejoined["events"].as_array().unwrap().len(), 1, "{rejoined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_events_expired_before_any_fanout_saw_them_still_goes_on_from_its_last_seq() {
    use std::sync::Arc;
    // GIVEN events whose fanout never ran (the process was killed first), swept at expiry,
    let dir = tempfile::tempdir().unwrap();
    a_room_expired_long_ago(dir.path(), "crashed", 3, false).await;
    let store: Arc<dyn Store> = Arc::new(open(dir.path()));
    let engine = livesync_core::Engine::new(store, Arc::new(livesync_core::clock::SystemClock));
    let caller = livesync_core::access::Caller::anonymous("w");
    // WHEN the room is published to again,
    let ack = engine.handle(&caller, "w", "q", r#"{"action":"publish","room":"crashed","data":"new"}"#).await;
    // THEN it takes the seq after the expired ones, never one of theirs.
    let ack: serde_json::Value = serde_json::from_str(&ack.to_json()).unwrap();
    assert_eq!(ack["seq"], 4, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_full_of_expired_items_sweeps_itself_free_and_takes_writes_again() {
    use livesync_core::store::StoreError;
    // GIVEN a store capped at 512 KB, filled with items past their time,
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Options { max_bytes: Some(512 * 1024), ..Options::default() }).unwrap();
    let item = |n: usize, expires: i64| {
        Item::new(Key::new(format!("X#{n}"), "x"))
            .with("pad", Attr::S("x".repeat(4096)))
            .with(TTL_ATTRIBUTE, Attr::N(expires))
    };
    let mut n = 0;
    loop {
        match store.put(item(n, now_secs() - 5), Condition::Always).await {
            Ok(_) => n += 1,
            Err(StoreError::Full) => break,
            Err(other) => panic!("{other}"),
        }
        assert!(n < 1000, "512 KB never filled");
    }
    assert!(matches!(store.put(item(n, now_secs() + 3600), Condition::Always).await, Err(StoreError::Full)));
    // WHEN the sweep runs,
    let swept = store.sweep().await.unwrap();
    // THEN it removed them, and a write goes through again.
    assert_eq!(swept.expired_items, n);
    assert!(store.put(item(n, now_secs() + 3600), Condition::Always).await.is_ok());
}
