//! Running the `livesync` binary as a user does, for the tests of this directory.
// Each test file uses the part it needs.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A client connection: the `livesync-client` crate's.
pub type Socket = livesync_client::Connection;

pub async fn connect(url: &str) -> Socket {
    Socket::open(url, None).await.unwrap()
}

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
    socket.call(frame).await.unwrap()
}

/// The next pushed frame.
pub async fn next_push(socket: &mut Socket) -> Value {
    tokio::time::timeout(Duration::from_secs(30), socket.next_push()).await.expect("no push arrived").unwrap()
}

/// One HTTP request to the runner at `url` (its `ws://` address), as curl sends it; returns
/// the status and the JSON body (the runner answers each request and closes the socket).
pub async fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(60), socket.read_to_string(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{answer}"));
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}")))
}
