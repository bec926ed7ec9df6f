//! Any bytes as a client frame: parsed, checked against a reader's grants and dispatched by the
//! engine over the embedded store. It must answer with one JSON frame and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livesync_core::Engine;
use livesync_core::access::{Caller, Grants, RoomPatterns};
use livesync_core::clock::SystemClock;
use livesync_embedded_store::{EmbeddedStore, Options};
use std::sync::{Arc, OnceLock};

struct World {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    callers: [Caller; 2],
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
        let reader = Grants { read: RoomPatterns::new(["r", "doc-*"]), write: RoomPatterns::new(["r"]) };
        World {
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            engine: Engine::new(store, Arc::new(SystemClock)),
            callers: [Caller::anonymous("c1"), Caller::user("ann", "c2", reader)],
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let world = world();
    let caller = &world.callers[data.len() % 2];
    let reply = world.runtime.block_on(world.engine.handle(caller, "c", "fuzz", body));
    assert!(reply.to_json().starts_with('{'));
});
