//! HTTP as `curl` and an `EventSource` speak it, over a plain TCP socket: requests to the HTTP
//! API, and Server-Sent Events read as they arrive (chunked), field by field.

use super::PATIENCE;
use serde_json::Value;
use std::collections::HashMap;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a socket of its own (the runner answers each with `Connection: close`).
pub async fn request(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let (mut reader, status, headers) = send(base, method, path, headers, body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, reader.read_to_end(&mut raw)).await.expect("the response never ended").unwrap();
    let body =
        if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) { dechunk(&raw) } else { raw };
    Response { status, headers, body: String::from_utf8(body).unwrap() }
}

pub async fn post(base: &str, path: &str, body: &str) -> Response {
    request(base, "POST", path, &[("content-type", "application/json")], body).await
}

pub async fn get(base: &str, path: &str) -> Response {
    request(base, "GET", path, &[], "").await
}

async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (BufReader<TcpStream>, u16, HashMap<String, String>) {
    let host = base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(host).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    // A server may answer (413) before it has read the whole body, and close.
    let _ = socket.write_all(body.as_bytes()).await;
    let mut reader = BufReader::new(socket);
    let status_line = line(&mut reader).await;
    let status =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{status_line:?}"));
    let mut headers = HashMap::new();
    loop {
        let header = line(&mut reader).await;
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    (reader, status, headers)
}

async fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, reader.read_line(&mut line)).await.expect("no line came").unwrap();
    line.trim_end_matches(['\r', '\n']).to_owned()
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// One server-sent event, or a comment line (`comment` set, the rest empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl ServerSent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", self.data))
    }
}

/// An open event stream.
pub struct EventStream {
    pub status: u16,
    pub headers: HashMap<String, String>,
    reader: BufReader<TcpStream>,
    text: String,
}

impl EventStream {
    /// `GET path` with these headers (`last-event-id` to resume).
    pub async fn open(base: &str, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut all = vec![("accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let (reader, status, headers) = send(base, "GET", path, &all, "").await;
        EventStream { status, headers, reader, text: String::new() }
    }

    /// The next event or comment; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ServerSent> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut sent = ServerSent::default();
                for field in block.lines() {
                    let (name, value) = field.split_once(':').unwrap_or((field, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match name {
                        "" => sent.comment = Some(value.to_owned()),
                        "id" => sent.id = Some(value.to_owned()),
                        "event" => sent.event = Some(value.to_owned()),
                        "data" => sent.data.push_str(value),
                        _ => {}
                    }
                }
                if sent != ServerSent::default() {
                    return Some(sent);
                }
                continue;
            }
            // The body comes chunked: a size line, the bytes, a blank line.
            let size = line(&mut self.reader).await;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            tokio::time::timeout(PATIENCE, self.reader.read_exact(&mut chunk))
                .await
                .expect("a chunk never came")
                .ok()?;
            self.text.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }

    /// The next `count` events, skipping comments (and the `retry:` hint, which has no fields
    /// of an event).
    pub async fn events(&mut self, count: usize) -> Vec<ServerSent> {
        let mut events = Vec::new();
        while events.len() < count {
            let sent = self.next().await.expect("the stream ended early");
            if sent.event.is_some() {
                events.push(sent);
            }
        }
        events
    }
}
