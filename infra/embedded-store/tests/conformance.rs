//! The embedded store passes the store conformance suite.

use livesync_core::store::Store;
use livesync_embedded_store::{EmbeddedStore, Options};

/// A fresh store in its own temporary directory, removed when the test ends.
struct Fixture {
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Fixture {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

async fn fresh_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
    Fixture { store, _dir: dir }
}

livesync_core::store_conformance_tests!(fresh_store);
