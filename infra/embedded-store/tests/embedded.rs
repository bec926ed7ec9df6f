//! What the embedded store does beyond the conformance suite: it is durable, and it sweeps.

use livesync_core::store::{Attr, ChangeKind, Condition, Item, Key, Query, SortKeys, Store, TTL_ATTRIBUTE, Write};
use livesync_embedded_store::{EmbeddedStore, Options};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, Options::default()).unwrap()
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
async fn a_file_from_a_newer_schema_is_refused_rather_than_misread() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let db = rusqlite::Connection::open(dir.path().join(livesync_embedded_store::DATABASE_FILE)).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let error = EmbeddedStore::open(dir.path(), Options::default()).err().unwrap();
    assert!(error.to_string().contains("newer LiveSync"), "{error}");
}
