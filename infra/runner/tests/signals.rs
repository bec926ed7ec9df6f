//! The `livesync` binary, as a user runs it: it stops cleanly on SIGTERM and SIGINT and loses
//! nothing it acknowledged.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Starts the binary on a free port; returns it and the URL it announced.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_livesync"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let url = loop {
        let line = lines.next().expect("the runner exited before announcing its address").unwrap();
        if let Some(rest) = line.split("local runner on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the runner never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_for_exit(mut child: Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the runner did not stop within 15 s of the signal");
}

async fn call(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    frame: Value,
) -> Value {
    socket.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(text.as_str()).unwrap();
                if reply.get("ref") == frame.get("ref") {
                    return reply;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_runner_cleanly_and_every_acknowledged_publish_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start(dir.path());
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    for n in 1..=20 {
        let ack =
            call(&mut socket, json!({"action": "publish", "room": "r", "id": format!("m{n}"), "data": n, "ref": n}))
                .await;
        assert_eq!(ack["seq"], n);
    }

    signal(&child, "TERM");
    let close = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.unwrap();
    assert!(matches!(close, Some(Ok(Message::Close(Some(ref frame)))) if u16::from(frame.code) == 1001), "{close:?}");
    assert!(wait_for_exit(child).success(), "a clean exit");

    let (child, url) = start(dir.path());
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let history = call(&mut socket, json!({"action": "sync", "room": "r", "since": 0, "ref": "s"})).await;
    let seqs: Vec<u64> = history["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let repeat =
        call(&mut socket, json!({"action": "publish", "room": "r", "id": "m7", "data": 7, "ref": "again"})).await;
    assert_eq!(repeat["seq"], 7, "ids stay idempotent across the restart");

    signal(&child, "INT");
    assert!(wait_for_exit(child).success(), "a clean exit on Ctrl-C too");
}
