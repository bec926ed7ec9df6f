//! Running the `livesync` binary as a user does, for the tests of this directory.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts the binary on a free port (unless `args` give a `--listen`); returns it and the URL it
/// announced.
pub fn start(args: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let listen: &[&str] = if args.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
    let mut child = Command::new(env!("CARGO_BIN_EXE_livesync"))
        .args(listen)
        .args(["--management-listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
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

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

pub fn wait_for_exit(mut child: Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the runner did not stop within 15 s of the signal");
}

pub async fn call(socket: &mut Socket, frame: Value) -> Value {
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
