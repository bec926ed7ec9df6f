//! The floor the runner is measured against: a bare WebSocket broadcast server that speaks just
//! enough of the protocol (`join`, `publish`) for the same clients, and does none of LiveSync's
//! work: nothing stored, no idempotency, no limits, no recovery. A publish is acknowledged and
//! copied to the room's subscribers from memory. What the runner reaches of its throughput is the
//! price of durability and guarantees.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Outbox = mpsc::UnboundedSender<Message>;

#[derive(Default)]
struct Room {
    seq: u64,
    subscribers: Vec<Outbox>,
}

/// Serves until stdin closes, announcing its address on stdout (as the runner does for the bench).
pub async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("ws://{}", listener.local_addr()?);
    let rooms: Arc<Mutex<HashMap<String, Room>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, rooms.clone()));
        }
    });
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    Ok(())
}

async fn connection(stream: tokio::net::TcpStream, rooms: Arc<Mutex<HashMap<String, Room>>>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut sink, mut source) = socket.split();
    let (outbox, mut queue) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = queue.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = source.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        let room_name = frame["room"].as_str().unwrap_or_default().to_owned();
        let mut rooms = rooms.lock().expect("rooms lock");
        let room = rooms.entry(room_name.clone()).or_default();
        let reply = match frame["action"].as_str() {
            Some("join") => {
                room.subscribers.push(outbox.clone());
                json!({"type": "joined", "room": room_name, "seq": room.seq, "events": [], "more": false, "ref": frame["ref"]})
            }
            Some("publish") => {
                room.seq += 1;
                let event =
                    json!({"type": "event", "room": room_name, "seq": room.seq, "data": frame["data"]}).to_string();
                let _ = outbox.send(Message::text(
                    json!({"type": "ack", "room": room_name, "seq": room.seq, "ref": frame["ref"]}).to_string(),
                ));
                room.subscribers.retain(|subscriber| subscriber.send(Message::text(event.clone())).is_ok());
                continue;
            }
            _ => json!({"type": "error", "code": "unknown_action", "ref": frame["ref"]}),
        };
        let _ = outbox.send(Message::text(reply.to_string()));
    }
}
