//! The `livesync` binary, as a user runs it: it stops cleanly on SIGTERM and SIGINT and loses
//! nothing it acknowledged.

mod common;

use common::{call, connect, signal, start, wait_for_exit};
use livesync_client::Message;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_runner_cleanly_and_every_acknowledged_publish_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let mut socket = connect(&url).await;
    for n in 1..=20 {
        let ack =
            call(&mut socket, json!({"action": "publish", "room": "r", "id": format!("m{n}"), "data": n, "ref": n}))
                .await;
        assert_eq!(ack["seq"], n);
    }

    signal(&child, "TERM");
    let close = tokio::time::timeout(Duration::from_secs(30), socket.next_message()).await.unwrap();
    assert!(matches!(close, Ok(Some(Message::Close(Some(ref frame)))) if u16::from(frame.code) == 1001), "{close:?}");
    assert!(wait_for_exit(child).success(), "a clean exit");

    let (child, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let mut socket = connect(&url).await;
    let history = call(&mut socket, json!({"action": "sync", "room": "r", "since": 0, "ref": "s"})).await;
    let seqs: Vec<u64> = history["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let repeat =
        call(&mut socket, json!({"action": "publish", "room": "r", "id": "m7", "data": 7, "ref": "again"})).await;
    assert_eq!(repeat["seq"], 7, "ids stay idempotent across the restart");

    signal(&child, "INT");
    assert!(wait_for_exit(child).success(), "a clean exit on Ctrl-C too");
}
