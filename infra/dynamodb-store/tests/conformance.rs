//! The DynamoDB store passes the store conformance suite against a real DynamoDB wire peer
//! (`moto_server`), through the real SDK. `scripts/test` starts moto and sets
//! `LIVESYNC_MOTO_ENDPOINT`; each check gets a table of its own.

use livesync_core::store::Store;
use livesync_core::store::conformance::StoreFixture;
use livesync_dynamodb::{DynamoStore, create_table};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

struct Fixture {
    store: Arc<DynamoStore>,
}

impl StoreFixture for Fixture {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

async fn moto_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("LIVESYNC_MOTO_ENDPOINT").expect(
        "LIVESYNC_MOTO_ENDPOINT is not set: run scripts/test, which starts moto_server, \
         or start one yourself and point this variable at it (e.g. http://127.0.0.1:5005)",
    );
    livesync_dynamodb::emulator_config(&endpoint).await
}

async fn fresh_table() -> Fixture {
    static TABLES: AtomicU32 = AtomicU32::new(0);
    let config = moto_config().await;
    let table = format!("conformance-{}-{}", std::process::id(), TABLES.fetch_add(1, Ordering::Relaxed));
    create_table(&aws_sdk_dynamodb::Client::new(&config), &table).await.unwrap();
    Fixture { store: Arc::new(DynamoStore::new(&config, table)) }
}

livesync_core::store_conformance_tests!(fresh_table);
