//! The embedded store passes the store conformance suite.

use livesync_core::store::Store;
use livesync_core::store::conformance::StoreFixture;
use livesync_embedded_store::{EmbeddedStore, Options};
use std::sync::Arc;

/// A fresh store in its own temporary directory, removed when the test ends.
struct Fixture {
    store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

impl StoreFixture for Fixture {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

async fn fresh_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    Fixture { store, _dir: dir }
}

livesync_core::store_conformance_tests!(fresh_store);
