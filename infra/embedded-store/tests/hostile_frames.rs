//! What fuzzing does at length (`fuzz/`, nightly), in a short run on stable for CI: frames built
//! to be almost right (real actions, wrong fields, odd values, odd characters) and plain noise,
//! through the engine on the embedded store, as anonymous and as token-bound callers. Every
//! frame gets exactly one reply that is JSON, the engine keeps serving, refusals store nothing,
//! and each room's log stays gap-free.

use livesync_core::Engine;
use livesync_core::access::{Caller, Grants, RoomPatterns};
use livesync_core::clock::SystemClock;
use livesync_core::store::Store;
use livesync_embedded_store::{EmbeddedStore, Options};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

/// Values that break things: wrong types, extremes, odd characters.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!("")),
        Just(json!("a\u{0}b")),
        Just(json!("\u{202e}evil")),
        Just(json!("doc-1")),
        Just(json!("r")),
        Just(json!([1, "two", null])),
        Just(json!({"x": {"y": [true]}})),
        "[ -~\u{80}-\u{10ffff}]{0,12}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
}

const FIELDS: &[&str] = &[
    "room", "id", "data", "since", "user", "doc", "base", "value", "patch", "path", "by", "ops", "rev", "sku", "level",
    "delta", "to", "before", "after", "version", "strategy", "ref",
];

fn frame() -> impl Strategy<Value = String> {
    let almost = (
        prop::sample::select(livesync_core::actions::NAMES),
        prop::collection::vec((prop::sample::select(FIELDS), odd_value()), 0..8),
    )
        .prop_map(|(action, fields)| {
            let mut frame = serde_json::Map::new();
            frame.insert("action".into(), json!(action));
            // Mostly a room the callers may use, so the frame reaches the action's checks.
            frame.insert("room".into(), json!("r"));
            for (name, value) in fields {
                frame.insert(name.to_owned(), value);
            }
            Value::Object(frame).to_string()
        });
    prop_oneof![4 => almost, 1 => ".{0,64}", 1 => "[{}\\[\\]\":,a-z0-9 ]{0,64}"]
}

fn callers() -> [Caller; 2] {
    let reader = Grants { read: RoomPatterns::new(["r"]), write: RoomPatterns::default() };
    [Caller::anonymous("c1"), Caller::user("ann", "c2", reader)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_hostile_frame_gets_one_json_reply_and_the_log_stays_gap_free(frames in prop::collection::vec(frame(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
            let engine = Engine::new(store.clone(), Arc::new(SystemClock));
            let [anonymous, reader] = callers();
            for (n, body) in frames.iter().enumerate() {
                let caller = if n % 2 == 0 { &anonymous } else { &reader };
                let reply = engine.handle(caller, "c", &format!("q{n}"), body).await;
                let json: Value = serde_json::from_str(&reply.to_json()).expect("a reply is JSON");
                prop_assert!(json["type"].is_string(), "{body} -> {json}");
                if caller.user.is_some() && json["type"] == "ack" {
                    prop_assert!(false, "a read-only caller's write was acknowledged: {body}");
                }
            }
            let livesync_core::recovery::Recovered::Page(log) =
                livesync_core::recovery::events_after(store.as_ref(), "r", 0, 1000, None).await.unwrap()
            else {
                panic!("nothing expires here");
            };
            let seqs: Vec<u64> = log.events.iter().map(|e| e.seq).collect();
            prop_assert_eq!(seqs, (1..=log.events.len() as u64).collect::<Vec<_>>());
            prop_assert!(log.events.iter().all(|e| e.from != "ann"), "nothing written by the read-only caller");
            Ok(())
        })?;
    }
}
