//! LiveSync's Rust client.
//!
//! * [`Connection`]: one WebSocket to a LiveSync endpoint (the local runner, or an API Gateway
//!   `wss://` URL with a token). Requests get a `ref` and their reply is matched by it; events
//!   pushed meanwhile are kept, in arrival order, for [`Connection::next_push`].
//! * [`Follower`]: one room, followed for good: every event once, in seq order, none missing,
//!   across reconnects (rejoin with `since`, gaps filled with `sync`, repeats dropped).
//!
//! It is what the `livesync connect`, `publish` and `tail` commands are built on.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// WebSocket messages, for callers that send or read them raw (tests of hostile input).
pub use tokio_tungstenite::tungstenite::Message;

/// A reply that has not come after this long is not coming.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "{url:?} is not a LiveSync URL: {reason} (e.g. ws://127.0.0.1:3001 or wss://<api>.execute-api.<region>.amazonaws.com/prod)"
    )]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot connect to {url}: is the runner running (`cargo run`), and the address right?")]
    Connect {
        url: String,
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("the connection ended")]
    Closed,
    #[error("the connection failed")]
    Socket(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("no reply in {0:?}")]
    Timeout(Duration),
    #[error("the server sent something that is not a LiveSync frame: {0}")]
    Protocol(String),
    #[error("refused ({code}): {message}")]
    Refused { code: String, message: String, frame: Value },
    /// The events after `after` have expired on the server (kept for its retention period):
    /// reload the room's state. A [`Follower`] goes on from `oldest` on its next call.
    #[error(
        "the events after seq {after} have expired; the oldest still held is seq {oldest}: reload the room's state"
    )]
    Expired { after: u64, oldest: u64 },
}

/// The oldest seq an `expired` refusal names; `None` for any other error. A refusal without
/// one breaks the protocol (following it would ask for the same events forever).
fn expired_oldest(error: &ClientError, after: u64) -> Option<Result<u64, ClientError>> {
    match error {
        ClientError::Refused { code, frame, .. } if code == "expired" => Some(
            frame["oldest"]
                .as_u64()
                .filter(|oldest| *oldest > after)
                .ok_or_else(|| ClientError::Protocol(format!("an expired error without a usable oldest: {frame}"))),
        ),
        _ => None,
    }
}

/// What a [`Follower`] hands out next: an event, or the news that events before it expired.
enum Next {
    Event(Value),
    Expired { after: u64, oldest: u64 },
}

/// Checks a URL before dialling it, so that a typo gets a message, not a socket error.
pub fn check_url(url: &str) -> Result<(), ClientError> {
    let bad = |reason| ClientError::BadUrl { url: url.to_owned(), reason };
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| bad("it must start with ws:// or wss://"))?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    Ok(())
}

/// `url` with `?token=` added, as the `$connect` authorizer reads it.
pub fn with_token(url: &str, token: Option<&str>) -> String {
    match token {
        None => url.to_owned(),
        Some(token) => {
            // `ws://host:3001?token=` has no path, which a server refuses: `ws://host:3001/?token=`.
            let authority_end = url.find("://").map_or(0, |i| i + 3);
            let has_path = url[authority_end..].contains(['/', '?']);
            let url = if has_path { url.to_owned() } else { format!("{url}/") };
            let separator = if url.contains('?') { '&' } else { '?' };
            let encoded: String = token
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{url}{separator}token={encoded}")
        }
    }
}

/// One connection.
pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pushed: VecDeque<Value>,
    next_ref: u64,
}

impl Connection {
    pub async fn open(url: &str, token: Option<&str>) -> Result<Connection, ClientError> {
        check_url(url)?;
        // No Nagle: a frame goes out as it is written, not held for the ack of the one before
        // (a request right after another would wait for the server's delayed ACK, ~40 ms).
        let (socket, _) = tokio_tungstenite::connect_async_with_config(with_token(url, token), None, true)
            .await
            .map_err(|source| ClientError::Connect { url: url.to_owned(), source })?;
        Ok(Connection { socket, pushed: VecDeque::new(), next_ref: 0 })
    }

    /// Sends a text frame as it is.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.socket.send(Message::text(text)).await.map_err(ClientError::Socket)
    }

    /// The next frame from the server, pushed or not; `None` once the connection has ended.
    pub async fn next_frame(&mut self) -> Result<Option<Value>, ClientError> {
        if let Some(frame) = self.pushed.pop_front() {
            return Ok(Some(frame));
        }
        self.read().await
    }

    async fn read(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|_| ClientError::Protocol(text.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(ClientError::Socket(error)),
            }
        }
    }

    /// Sends `frame` (with its own `ref`, or a fresh one) and returns the frame that answers
    /// it, an `error` included. Pushes that arrive first are kept for [`Connection::next_push`].
    pub async fn call(&mut self, mut frame: Value) -> Result<Value, ClientError> {
        if frame.get("ref").is_none() {
            self.next_ref += 1;
            frame["ref"] = json!(format!("c{}", self.next_ref));
        }
        let reference = frame["ref"].clone();
        self.send_text(&frame.to_string()).await?;
        loop {
            let reply = tokio::time::timeout(REPLY_TIMEOUT, self.read())
                .await
                .map_err(|_| ClientError::Timeout(REPLY_TIMEOUT))??
                .ok_or(ClientError::Closed)?;
            if reply["ref"] == reference {
                return Ok(reply);
            }
            self.pushed.push_back(reply);
        }
    }

    /// As [`Connection::call`], with an `error` reply as [`ClientError::Refused`].
    pub async fn request(&mut self, frame: Value) -> Result<Value, ClientError> {
        let reply = self.call(frame).await?;
        if reply["type"] == "error" {
            return Err(ClientError::Refused {
                code: reply["code"].as_str().unwrap_or_default().to_owned(),
                message: reply["message"].as_str().unwrap_or_default().to_owned(),
                frame: reply,
            });
        }
        Ok(reply)
    }

    /// Sends any message as it is: a fragment, a frame too large, bytes that are not UTF-8.
    pub async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        self.socket.send(message).await.map_err(ClientError::Socket)
    }

    /// The next message as it comes off the socket (a close included), past what was kept;
    /// `None` once the connection has ended.
    pub async fn next_message(&mut self) -> Result<Option<Message>, ClientError> {
        if let Some(frame) = self.pushed.pop_front() {
            return Ok(Some(Message::text(frame.to_string())));
        }
        match self.socket.next().await {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(error)) => Err(ClientError::Socket(error)),
        }
    }

    /// Closes the connection (a close frame, then the socket).
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    pub async fn join(&mut self, room: &str, since: Option<u64>) -> Result<Value, ClientError> {
        let mut frame = json!({"action": "join", "room": room});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        self.request(frame).await
    }

    pub async fn publish(&mut self, room: &str, data: Value, id: Option<&str>) -> Result<Value, ClientError> {
        let mut frame = json!({"action": "publish", "room": room, "data": data});
        if let Some(id) = id {
            frame["id"] = json!(id);
        }
        self.request(frame).await
    }

    /// The next pushed frame (`event`, or `events` for several of one room).
    pub async fn next_push(&mut self) -> Result<Value, ClientError> {
        loop {
            let frame = self.next_frame().await?.ok_or(ClientError::Closed)?;
            if frame.get("ref").is_none() && matches!(frame["type"].as_str(), Some("event" | "events")) {
                return Ok(frame);
            }
        }
    }
}

/// The events a pushed frame carries, in order.
pub fn events_of(frame: &Value) -> Vec<Value> {
    match frame["type"].as_str() {
        Some("event") => vec![frame.clone()],
        Some("events") | Some("joined") => frame["events"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn seq_of(event: &Value) -> u64 {
    event["seq"].as_u64().unwrap_or(0)
}

/// One room, followed across reconnects: [`Follower::next`] returns each event once, in order.
/// If events it has not returned yet have expired on the server, `next` returns
/// [`ClientError::Expired`] once, and the call after it goes on from the oldest event held.
pub struct Follower {
    url: String,
    token: Option<String>,
    room: String,
    last: u64,
    connection: Option<Connection>,
    /// In order: events, and where events expired between them.
    ready: VecDeque<Next>,
    connected_once: bool,
    /// Reconnections so far (for the caller to say so).
    pub reconnects: u64,
}

impl Follower {
    /// Follows `room` from after `since` (0: from its first event).
    pub fn new(url: &str, room: &str, since: u64, token: Option<&str>) -> Follower {
        Follower {
            url: url.to_owned(),
            token: token.map(str::to_owned),
            room: room.to_owned(),
            last: since,
            connection: None,
            ready: VecDeque::new(),
            connected_once: false,
            reconnects: 0,
        }
    }

    /// The last seq returned.
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The next event. The first connection's failure is returned (a wrong URL, a runner that is
    /// down); later ones are retried, with a growing pause, until the room is back.
    pub async fn next(&mut self) -> Result<Value, ClientError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.ready.pop_front() {
                Some(Next::Event(event)) => return Ok(event),
                Some(Next::Expired { after, oldest }) => return Err(ClientError::Expired { after, oldest }),
                None => {}
            }
            if self.connection.is_none() {
                match self.rejoin().await {
                    Ok(()) => pause = Duration::from_millis(100),
                    Err(
                        error @ (ClientError::BadUrl { .. } | ClientError::Refused { .. } | ClientError::Protocol(_)),
                    ) => {
                        return Err(error);
                    }
                    Err(error) if !self.connected_once => return Err(error),
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            }
            let connection = self.connection.as_mut().expect("connected");
            match connection.next_push().await {
                Ok(frame) if frame["room"] == json!(self.room) => {
                    let events = events_of(&frame);
                    match self.take(events).await {
                        Ok(()) => {}
                        Err(error @ ClientError::Protocol(_)) => return Err(error),
                        Err(error) => self.lost(error),
                    }
                }
                Ok(_) => {}
                Err(error) => self.lost(error),
            }
        }
    }

    fn lost(&mut self, _error: ClientError) {
        self.connection = None;
        self.reconnects += 1;
    }

    /// Connects and joins with `since` = the last seq taken, paging in what was missed. A join
    /// answered `expired` has still subscribed: the rest is paged in from the oldest held.
    async fn rejoin(&mut self) -> Result<(), ClientError> {
        let mut connection = Connection::open(&self.url, self.token.as_deref()).await?;
        let joined = connection.join(&self.room, Some(self.last)).await;
        self.connection = Some(connection);
        self.connected_once = true;
        match joined {
            Ok(joined) => {
                self.accept(events_of(&joined));
                if joined["more"] == true {
                    self.fill().await?;
                }
                Ok(())
            }
            Err(error) => match expired_oldest(&error, self.last) {
                Some(oldest) => {
                    self.skip_to(oldest?);
                    self.fill().await
                }
                None => {
                    self.connection = None;
                    Err(error)
                }
            },
        }
    }

    /// Pages in everything after the last seq taken with `sync`, past any expired stretch.
    async fn fill(&mut self) -> Result<(), ClientError> {
        loop {
            let connection = self.connection.as_mut().ok_or(ClientError::Closed)?;
            let page = match connection.request(json!({"action": "sync", "room": self.room, "since": self.last})).await
            {
                Ok(page) => page,
                Err(error) => match expired_oldest(&error, self.last) {
                    Some(oldest) => {
                        self.skip_to(oldest?);
                        continue;
                    }
                    None => return Err(error),
                },
            };
            self.accept(events_of(&page));
            if page["more"] != true {
                return Ok(());
            }
        }
    }

    /// The events before `oldest` expired: say so in turn, and go on from there.
    fn skip_to(&mut self, oldest: u64) {
        self.ready.push_back(Next::Expired { after: self.last, oldest });
        self.last = oldest - 1;
    }

    /// Pushed events: in order they are taken; a gap is filled first; repeats are dropped.
    async fn take(&mut self, events: Vec<Value>) -> Result<(), ClientError> {
        for event in events {
            let seq = seq_of(&event);
            if seq <= self.last {
                continue;
            }
            if seq > self.last + 1 {
                self.fill().await?;
                if seq <= self.last {
                    continue;
                }
            }
            self.accept(vec![event]);
        }
        Ok(())
    }

    fn accept(&mut self, events: Vec<Value>) {
        for event in events {
            if seq_of(&event) == self.last + 1 {
                self.last += 1;
                self.ready.push_back(Next::Event(event));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_in_the_query_with_a_path_before_it() {
        assert_eq!(with_token("ws://h:1", Some("a.b")), "ws://h:1/?token=a.b");
        assert_eq!(with_token("wss://h/prod", Some("a+b")), "wss://h/prod?token=a%2Bb");
        assert_eq!(with_token("ws://h/?x=1", Some("t")), "ws://h/?x=1&token=t");
        assert_eq!(with_token("ws://h", None), "ws://h");
    }

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused_before_dialling() {
        assert!(matches!(check_url("http://h"), Err(ClientError::BadUrl { .. })));
        assert!(matches!(check_url("ws://"), Err(ClientError::BadUrl { .. })));
        assert!(check_url("wss://abc.execute-api.eu-west-1.amazonaws.com/prod").is_ok());
    }
}
