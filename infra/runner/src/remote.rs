//! The commands that talk to a running LiveSync over its WebSocket, as any client does:
//! `livesync connect` (interactive, like wscat), `publish` and `tail` (a room, followed
//! gap-free across reconnects). The local runner or a deployed stack, the same way.

use crate::cli::{ConnectArgs, PublishArgs, TailArgs};
use livesync_client::{ClientError, Connection, Follower};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

pub type CommandError = Box<dyn std::error::Error>;

/// Reads frames from standard input, a line each, and prints what the server sends: `> ` for
/// what went out, `< ` for what came in. A line that is not JSON is refused here, with why.
pub async fn connect(args: &ConnectArgs) -> Result<(), CommandError> {
    let mut connection = Connection::open(&args.url, args.token.as_deref()).await?;
    eprintln!(
        "connected to {}; type a frame a line, e.g. {{\"action\":\"join\",\"room\":\"lobby\"}} (Ctrl-D to quit)",
        args.url
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                None => return Ok(()),
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(frame) if frame.is_object() => {
                        connection.send_text(&frame.to_string()).await?;
                        sent += 1;
                        println!("> {frame}");
                    }
                    Ok(_) | Err(_) => eprintln!("not sent: a frame is a JSON object, e.g. {{\"action\":\"ping\"}}"),
                },
            },
            frame = connection.next_frame() => match frame? {
                Some(frame) => println!("< {frame}"),
                None => return Err(format!("the server closed the connection (after {sent} frames sent)").into()),
            },
        }
    }
}

/// Publishes one event and prints its seq.
pub async fn publish(args: &PublishArgs) -> Result<(), CommandError> {
    let data: Value = serde_json::from_str(&args.data).unwrap_or_else(|_| Value::String(args.data.clone()));
    let mut connection = Connection::open(&args.url, args.token.as_deref()).await?;
    match connection.publish(&args.room, data, args.id.as_deref()).await {
        Ok(ack) => {
            println!("{} seq {} id {}", args.room, ack["seq"], ack["id"].as_str().unwrap_or_default());
            Ok(())
        }
        Err(ClientError::Refused { code, message, .. }) => Err(format!("refused ({code}): {message}").into()),
        Err(error) => Err(error.into()),
    }
}

/// Prints the room's events after `--since`, one JSON line each, and follows it.
pub async fn tail(args: &TailArgs) -> Result<(), CommandError> {
    let mut follower = Follower::new(&args.url, &args.room, args.since, args.token.as_deref());
    let mut reconnects = 0;
    loop {
        let event = match follower.next().await {
            Ok(event) => event,
            Err(ClientError::Expired { after, oldest }) => {
                eprintln!("events after seq {after} have expired on the server; continuing from seq {oldest}");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if follower.reconnects > reconnects {
            reconnects = follower.reconnects;
            eprintln!("reconnected; continuing after seq {}", event["seq"].as_u64().unwrap_or(0).saturating_sub(1));
        }
        println!("{event}");
    }
}
