//! The core engine over a real store, as several Lambdas would run it: separate engines, each
//! with its own memory, sharing only the store.

use livesync_core::Engine;
use livesync_core::clock::SystemClock;
use livesync_core::protocol::ServerFrame;
use livesync_embedded_store::{EmbeddedStore, Options};
use std::sync::Arc;

fn ack_seq(frame: ServerFrame) -> u64 {
    match frame {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_engines_sharing_a_store_never_share_or_skip_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let engines: Vec<Arc<Engine>> = (0..6)
        .map(|_| Arc::new(Engine::new(store.clone(), Arc::new(SystemClock))))
        .collect();

    let tasks: Vec<_> = engines
        .iter()
        .enumerate()
        .map(|(e, engine)| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..100 {
                    let body = format!(r#"{{"action":"publish","room":"hot","data":[{e},{n}]}}"#);
                    seqs.push(ack_seq(
                        engine
                            .handle(&format!("conn-{e}"), &format!("req-{e}-{n}"), &body)
                            .await,
                    ));
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=600).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_idea_of_the_head_is_far_behind_still_takes_the_next_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let behind = Engine::new(store.clone(), Arc::new(SystemClock));
    let busy = Engine::new(store.clone(), Arc::new(SystemClock));
    let publish = r#"{"action":"publish","room":"r","data":1}"#;
    assert_eq!(ack_seq(behind.handle("a", "req-0", publish).await), 1);
    for n in 0..100 {
        busy.handle("b", &format!("req-b{n}"), publish).await;
    }

    assert_eq!(ack_seq(behind.handle("a", "req-1", publish).await), 102);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_id_through_two_engines_is_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
    let first = Engine::new(store.clone(), Arc::new(SystemClock));
    let second = Engine::new(store.clone(), Arc::new(SystemClock));
    let body = r#"{"action":"publish","room":"r","id":"pay-1","data":{"amount":5}}"#;
    let (a, b) = tokio::join!(
        first.handle("c1", "q1", body),
        second.handle("c2", "q2", body)
    );
    assert_eq!(ack_seq(a), 1);
    assert_eq!(ack_seq(b), 1);
    let next = first
        .handle("c1", "q3", r#"{"action":"publish","room":"r","data":0}"#)
        .await;
    assert_eq!(ack_seq(next), 2, "the repeat created no event");
}
