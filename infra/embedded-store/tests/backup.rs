//! Backups of the embedded store under attack and accident: a manifest pointing outside its
//! folder is not a backup (the retention never deletes through it, a restore never reads
//! through it), a restore never replaces a served store, and a failed restore leaves nothing.

use livesync_core::jobs::backup::{self as job, Backups};
use livesync_core::store::{Attr, Condition, Item, Key, Store};
use livesync_embedded_store::backup::{self, LocalBackups};
use livesync_embedded_store::{DATABASE_FILE, DataDirLock, EmbeddedStore, Options};
use std::path::Path;

async fn store_with_an_item(dir: &Path) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir, Options::default()).unwrap();
    let item = Item::new(Key::new("ROOM#r", "EVT#00000000000000000001")).with("seq", Attr::N(1));
    store.put(item, Condition::NotExists).await.unwrap();
    store
}

#[tokio::test]
async fn a_manifest_naming_a_file_outside_its_folder_is_never_deleted_through_nor_restored() {
    let dir = tempfile::tempdir().unwrap();
    let _store = store_with_an_item(dir.path()).await;
    let backups = LocalBackups::new(dir.path(), dir.path().join("backups"));
    backups.take("livesync-20261201T020000Z").await.unwrap();
    // GIVEN a planted manifest, old enough to be deleted, whose file is the live store
    let evil = serde_json::json!({
        "name": "livesync-old", "created_at": "1970-01-01T00:00:00Z", "created_ms": 0, "file": "../livesync.db",
        "items": 0, "events": 0, "rooms": 0, "last_change": 0, "database_bytes": 0, "compressed_bytes": 0, "sha256": "x",
    });
    let planted = dir.path().join("backups/livesync-old.json");
    std::fs::write(&planted, evil.to_string()).unwrap();
    // WHEN the backup job runs with a retention that deletes everything older than now
    let summary = job::run(&backups, "2026-12-02T02:00:00Z", u64::MAX / 2, 0).await.unwrap();
    // THEN the planted manifest was not a backup: nothing was deleted through it
    assert_eq!(summary.deleted, ["livesync-20261201T020000Z"]);
    assert!(dir.path().join(DATABASE_FILE).exists(), "the live store is still there");
    let names: Vec<String> = backups.list().await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["livesync-20261202T020000Z"]);
    // AND a restore refuses to read through it
    let target = tempfile::tempdir().unwrap();
    let refused = backup::restore(&planted, target.path(), false, &|_, _| {}).unwrap_err().to_string();
    assert!(refused.contains("is not a LiveSync manifest"), "{refused}");
}

#[tokio::test]
async fn a_restore_is_refused_while_a_runner_holds_the_directory_even_with_force() {
    let source = tempfile::tempdir().unwrap();
    let _store = store_with_an_item(source.path()).await;
    let manifest = backup::take(source.path(), &source.path().join("backups"), "b1", 1, &|_, _| {}).unwrap();
    let served = tempfile::tempdir().unwrap();
    let lock = DataDirLock::acquire(served.path()).unwrap();
    let file = source.path().join("backups").join(&manifest.file);
    let refused = backup::restore(&file, served.path(), true, &|_, _| {}).unwrap_err().to_string();
    assert!(refused.contains("is in use by another LiveSync runner or restore"), "{refused}");
    assert!(refused.contains(&format!("process {}", std::process::id())), "{refused}");
    drop(lock);
    backup::restore(&file, served.path(), true, &|_, _| {}).unwrap();
}

#[tokio::test]
async fn a_failed_restore_leaves_the_directory_as_it_was() {
    let source = tempfile::tempdir().unwrap();
    let _store = store_with_an_item(source.path()).await;
    let folder = source.path().join("backups");
    let manifest = backup::take(source.path(), &folder, "b1", 1, &|_, _| {}).unwrap();
    // A truncated copy whose manifest matches it: the checksum passes, decompressing fails.
    let file = folder.join(&manifest.file);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let mut damaged = manifest.clone();
    damaged.sha256 = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes[..bytes.len() / 2]).iter().map(|b| format!("{b:02x}")).collect()
    };
    std::fs::write(folder.join("b1.json"), serde_json::to_vec(&damaged).unwrap()).unwrap();
    let target = tempfile::tempdir().unwrap();
    assert!(backup::restore(&file, target.path(), false, &|_, _| {}).is_err());
    let left: Vec<String> = std::fs::read_dir(target.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != livesync_embedded_store::LOCK_FILE)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
