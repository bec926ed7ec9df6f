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

/// Reads a socket to its close frame; returns the close code and the text frames before it.
async fn read_to_close(mut socket: common::Socket) -> (Option<u16>, Vec<serde_json::Value>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next_message()).await.expect("no close frame") {
            Ok(Some(Message::Close(frame))) => return (frame.map(|f| u16::from(f.code)), frames),
            Ok(Some(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return (None, frames),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_closes_every_socket_with_1001_and_answers_every_request_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let mut subscribers = Vec::new();
    for _ in 0..200 {
        let mut socket = connect(&url).await;
        call(&mut socket, json!({"action": "join", "room": "burst", "ref": "j"})).await;
        subscribers.push(socket);
    }
    // Four publishers send 100 publishes each without waiting for answers: most are still
    // unread by the runner when it is told to stop.
    let mut publishers = Vec::new();
    for p in 0..4 {
        let mut socket = connect(&url).await;
        for n in 0..100 {
            let frame = json!({"action": "publish", "room": "burst", "id": format!("p{p}-{n}"), "data": n});
            socket.send_text(&frame.to_string()).await.unwrap();
        }
        publishers.push(socket);
    }
    let mut first = publishers.remove(0);
    let early = tokio::time::timeout(Duration::from_secs(30), first.next_frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(early["type"], "ack", "{early}");
    publishers.insert(0, first);

    signal(&child, "TERM");

    let readers: Vec<_> = subscribers.into_iter().map(|s| tokio::spawn(read_to_close(s))).collect();
    let writers: Vec<_> = publishers.into_iter().map(|s| tokio::spawn(read_to_close(s))).collect();
    for reader in readers {
        let (code, _) = reader.await.unwrap();
        assert_eq!(code, Some(1001), "every subscriber gets its close frame");
    }
    let mut acked: Vec<String> = vec![early["id"].as_str().unwrap().to_owned()];
    for writer in writers {
        let (code, frames) = writer.await.unwrap();
        assert_eq!(code, Some(1001), "every publisher gets its close frame");
        for frame in frames {
            assert_eq!(frame["type"], "ack", "a publish read at shutdown is answered: {frame}");
            acked.push(frame["id"].as_str().unwrap().to_owned());
        }
    }
    assert!(wait_for_exit(child).success(), "a clean exit");
    assert!(acked.len() < 400, "the burst was cut short (all {} were answered)", acked.len());

    // What was stored is exactly what was answered: nothing applied without its answer.
    let (child, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let mut socket = connect(&url).await;
    let mut stored: Vec<String> = Vec::new();
    loop {
        let page =
            call(&mut socket, json!({"action": "sync", "room": "burst", "since": stored.len(), "ref": "s"})).await;
        stored.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        if page["more"] != true {
            break;
        }
    }
    acked.sort();
    stored.sort();
    assert_eq!(stored, acked);
    signal(&child, "TERM");
    assert!(wait_for_exit(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_a_restart_forgets_the_dead_processs_connections_subscriptions_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = ["--data-dir", dir.path().to_str().unwrap()];
    let (child, url) = start(&data_dir, &[]);
    let mut sockets = Vec::new();
    for n in 0..5 {
        let mut socket = connect(&url).await;
        call(&mut socket, json!({"action": "join", "room": "k", "user": format!("u{n}"), "ref": "j"})).await;
        sockets.push(socket);
    }
    signal(&child, "KILL");
    wait_for_exit(child);
    drop(sockets);

    let (child, url) = start(&data_dir, &[]);
    let mut socket = connect(&url).await;
    let presence = call(&mut socket, json!({"action": "presence", "room": "k", "ref": "p"})).await;
    assert_eq!(presence["members"], json!([]), "{presence}");
    // In the store, no connection is left (the new one has joined nothing, so stored nothing),
    // and the room has no subscriber.
    let store = livesync_embedded_store::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
    let connections = store.partitions(livesync_core::layout::CONNECTION_PARTITIONS).await.unwrap();
    assert!(connections.is_empty(), "{connections:?}");
    let subscribers = livesync_core::store::Store::query(&store, livesync_core::layout::subscribers_of("k", 10)).await;
    assert!(subscribers.unwrap().items.is_empty());
    // The members left: their `left` events are in the room's log, after their `joined` ones.
    let log = call(&mut socket, json!({"action": "sync", "room": "k", "since": 0, "ref": "s"})).await;
    let kinds: Vec<&str> = log["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(log["events"].as_array().unwrap().len(), 10, "5 joined, 5 left: {kinds:?}");
    signal(&child, "TERM");
    assert!(wait_for_exit(child).success());
}
