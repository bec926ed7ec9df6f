//! One client's WebSocket, from upgrade to close: the only place frames meet the network.
//!
//! The socket reads frames and hands each, as an API Gateway event, to the same `message`
//! handler the Lambda runs; the reply goes back through the socket's queue. Pushed frames arrive
//! in the same queue from the fanout. The writer drains whatever is queued and flushes once, so a
//! burst costs one write, not one per frame. Frames from one client are handled one at a time,
//! in order, and the next is read only once the socket's queue has room: a client that sends
//! and never reads stops being read, instead of growing its queue.
//!
//! At shutdown the socket stops reading between frames, never in the middle of one: a request
//! being handled is finished and answered, what is queued (replies and pushes) is written, and
//! then the close frame (1001) goes out. A frame the server never read was not applied; client
//! libraries send unanswered requests again once they reconnect.
//!
//! API Gateway's connection limits hold here too: a frame over 32 KB is closed with 1009, text
//! that is not UTF-8 with 1007, a connection with no data message either way for the idle
//! timeout (10 minutes) and every connection at its maximum age (2 hours) with 1001.

use crate::App;
use crate::connections::Queue;
use crate::connections::{ConnectionInfo, Registration};
use crate::gateway::Peer;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use livesync_core::poster::Frame;
use livesync_core::protocol::{ErrorCode, ServerFrame};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How long a close frame may take to write.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// Why a socket ended: the close code and reason sent to the client (when it can still hear
/// them) and reported to `$disconnect`.
struct Ending {
    code: u16,
    reason: &'static str,
    /// Whether to send a close frame: not when the client closed or vanished.
    tell_client: bool,
    /// The client closed: flush the close frame the WebSocket layer queued in reply (the code
    /// echoed, or 1002 for a code no peer may send), completing the closing handshake.
    answer_close: bool,
    /// Write what is still queued before the close frame (shutdown).
    drain: bool,
}

impl Ending {
    fn by_server(code: u16, reason: &'static str) -> Self {
        Ending { code, reason, tell_client: true, answer_close: false, drain: false }
    }

    fn by_client(code: u16, reason: &'static str) -> Self {
        Ending { code, reason, tell_client: false, answer_close: false, drain: false }
    }

    /// The client sent a close frame.
    fn client_closed(code: u16) -> Self {
        Ending { code, reason: "Client closed", tell_client: false, answer_close: true, drain: false }
    }

    /// Closed by the server in the middle of a write: no close frame can follow.
    fn abandoned(code: u16, reason: &'static str) -> Self {
        Ending { code, reason, tell_client: false, answer_close: false, drain: false }
    }

    /// The runner is stopping: the queue is written, then the close frame.
    fn shutdown() -> Self {
        Ending {
            code: close_code::AWAY,
            reason: "server shutting down",
            tell_client: true,
            answer_close: false,
            drain: true,
        }
    }
}

pub async fn serve(app: Arc<App>, socket: WebSocket, peer: Peer) {
    let info = ConnectionInfo {
        connected_at_ms: peer.connected_at_ms,
        last_active_ms: peer.connected_at_ms,
        source_ip: peer.source_ip.clone(),
        user_agent: peer.user_agent.clone(),
    };
    let Registration { mut outbox, replies, queue, too_slow, close, last_active_ms } =
        app.connections.register(&peer.connection_id, info);
    // The last data message either way, for the idle timeout.
    let last_data_ms = AtomicI64::new(app.clock.now_ms() as i64);
    let (mut sink, stream) = socket.split();
    let finish = Notify::new();
    // The writer borrows the sink until it is done; the close frame comes after.
    let ending = {
        let writer = write_frames(&app, &mut sink, &mut outbox, (&queue, &too_slow, &finish), &last_data_ms);
        tokio::pin!(writer);
        let mut ending = tokio::select! {
            ending = &mut writer => ending,
            ending = read_frames(&app, stream, &peer, (&replies, &queue), &last_active_ms, &last_data_ms) => ending,
            () = idle(&app, &last_data_ms) => Ending::by_server(close_code::AWAY, "Idle timeout: send a ping message more often"),
            // DeleteConnection through the management API.
            () = close.notified() => Ending::by_server(close_code::NORMAL, "Connection deleted"),
            // API Gateway closes every connection after 2 hours; the connection's items expire
            // soon after, so a socket must not outlive them.
            () = tokio::time::sleep(app.max_connection) => Ending::by_server(close_code::AWAY, "Going away"),
        };
        // The reader stopped for shutdown after answering what it had read: the writer finishes
        // the batch it may be writing, then writes the rest of the queue, in order.
        if ending.drain {
            finish.notify_one();
            match tokio::time::timeout(CLOSE_WRITE, &mut writer).await {
                Ok(written) if written.drain => {}
                Ok(other) => ending = other,
                Err(_) => ending = Ending::abandoned(close_code::AWAY, "server shutting down"),
            }
        }
        ending
    };
    // A peer that stopped reading cannot take a close frame: do not wait on it for long.
    if ending.tell_client {
        let close = CloseFrame { code: ending.code, reason: Utf8Bytes::from_static(ending.reason) };
        let _ = tokio::time::timeout(CLOSE_WRITE, sink.send(Message::Close(Some(close)))).await;
    } else if ending.answer_close {
        let _ = tokio::time::timeout(CLOSE_WRITE, sink.flush()).await;
    }
    let event = app.stage.disconnect_event(&peer, ending.code, ending.reason, app.clock.now_ms() as i64);
    // Boxed: its store calls make this the largest state of the socket's task by far (about
    // 5 KB), and every idle connection would carry it from its first moment otherwise.
    if let Err(error) = Box::pin(livesync_handlers::disconnect(&app.engine, event)).await {
        tracing::error!(connection = peer.connection_id, %error, "$disconnect failed");
    }
    // Last: shutdown waits for every socket to deregister, so `$disconnect` has run by then.
    app.connections.remove(&peer.connection_id);
}

/// Returns once no data message has gone either way for the idle timeout. Control frames (ping,
/// pong) do not count: browsers cannot send them, and API Gateway is reported not to count them.
async fn idle(app: &App, last_data_ms: &AtomicI64) {
    let timeout = Duration::from_secs(app.limits.idle_timeout_secs);
    loop {
        let quiet =
            Duration::from_millis((app.clock.now_ms() as i64 - last_data_ms.load(Ordering::Relaxed)).max(0) as u64);
        if quiet >= timeout {
            return;
        }
        tokio::time::sleep(timeout - quiet).await;
    }
}

async fn read_frames(
    app: &Arc<App>,
    mut stream: SplitStream<WebSocket>,
    peer: &Peer,
    (replies, queue): (&mpsc::UnboundedSender<Frame>, &Queue),
    last_active_ms: &AtomicI64,
    last_data_ms: &AtomicI64,
) -> Ending {
    let queue_limit = app.connections.queue_limit();
    let mut stopping = app.stopping.clone();
    loop {
        // Room for the reply first: a client that does not read its replies is not read either.
        // Shutdown stops the reading here, between frames, never while one is handled.
        let message = tokio::select! {
            // Shutdown first: a client sending back to back must not keep being read.
            biased;
            () = crate::stopped(&mut stopping) => return Ending::shutdown(),
            message = async {
                queue.below(queue_limit).await;
                stream.next().await
            } => message,
        };
        let Some(message) = message else { break };
        let now = app.clock.now_ms() as i64;
        last_active_ms.store(now, Ordering::Relaxed);
        let (body, binary) = match message {
            Ok(Message::Text(text)) => (text.as_str().to_owned(), false),
            Ok(Message::Binary(bytes)) => {
                use base64::Engine as _;
                (base64::engine::general_purpose::STANDARD.encode(&bytes), true)
            }
            Ok(Message::Close(frame)) => {
                return Ending::client_closed(frame.map_or(close_code::NORMAL, |frame| frame.code));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Err(error) => return read_failed(peer, error),
        };
        last_data_ms.store(now, Ordering::Relaxed);
        let event = app.stage.message_event(peer, body, binary, app.clock.now_ms() as i64);
        // Each frame is handled to its end in a task of its own, as a Lambda invocation is: the
        // connection closing meanwhile must not cancel a write that other clients' publishes
        // share (the room's group commit).
        let handled = {
            let app = app.clone();
            tokio::spawn(async move { livesync_handlers::message(&app.engine, event).await })
        };
        let reply = match handled.await {
            Ok(Ok(response)) => match response.body {
                Some(aws_lambda_events::encodings::Body::Text(text)) => text,
                _ => continue,
            },
            Ok(Err(error)) => {
                tracing::error!(connection = peer.connection_id, %error, "message handler failed");
                ServerFrame::error(ErrorCode::Internal, "the server failed to handle this frame", None).to_json()
            }
            Err(error) => {
                tracing::error!(connection = peer.connection_id, %error, "message handler panicked");
                ServerFrame::error(ErrorCode::Internal, "the server failed to handle this frame", None).to_json()
            }
        };
        // A reply is never refused for a full queue: the reader waited for room above.
        let reply = Frame::new(reply);
        queue.add(reply.bytes().len());
        if replies.send(reply).is_err() {
            break;
        }
    }
    Ending::by_client(close_code::AWAY, "Client went away")
}

fn read_failed(peer: &Peer, error: axum::Error) -> Ending {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    let inner = error.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
            tracing::info!(connection = peer.connection_id, size, max_size, "frame over the read limit");
            Ending::by_server(close_code::SIZE, "Message too big")
        }
        Some(Error::Protocol(violation)) => {
            tracing::info!(connection = peer.connection_id, %violation, "WebSocket protocol violation");
            Ending::by_server(close_code::PROTOCOL, "Protocol error")
        }
        Some(Error::Utf8(_)) => {
            tracing::info!(connection = peer.connection_id, "text frame that is not UTF-8");
            Ending::by_server(close_code::INVALID, "Invalid UTF-8 in a text frame")
        }
        _ => {
            tracing::info!(connection = peer.connection_id, error = %inner, "socket read failed");
            Ending::by_client(close_code::ABNORMAL, "Connection lost")
        }
    }
}

async fn write_frames(
    app: &App,
    sink: &mut SplitSink<WebSocket, Message>,
    outbox: &mut mpsc::UnboundedReceiver<Frame>,
    (queue, too_slow, finish): (&Queue, &Notify, &Notify),
    last_data_ms: &AtomicI64,
) -> Ending {
    const TOO_SLOW: &str = "too slow: send queue full; reconnect and join with since";
    // Shutdown is the reader's to notice (between frames); the writer keeps writing meanwhile,
    // and what is left when the reader stops is written before the close frame.
    loop {
        let mut batch = tokio::select! {
            frame = outbox.recv() => match frame {
                Some(frame) => vec![frame],
                None => return Ending::by_server(close_code::AWAY, "Going away"),
            },
            () = too_slow.notified() => return Ending::by_server(close_code::POLICY, TOO_SLOW),
            () = finish.notified() => {
                let mut rest = Vec::new();
                while let Ok(frame) = outbox.try_recv() {
                    rest.push(frame);
                }
                return match write_batch(sink, rest).await {
                    Ok(()) => Ending::shutdown(),
                    Err(_) => Ending::by_client(close_code::ABNORMAL, "Connection lost"),
                };
            }
        };
        while let Ok(frame) = outbox.try_recv() {
            batch.push(frame);
        }
        let bytes = batch.iter().map(|frame| frame.bytes().len()).sum();
        // A peer that stops reading blocks the write itself; closing and shutdown must not wait
        // for it. Abandoned mid-write, the socket can take no close frame: it is just dropped.
        tokio::select! {
            written = write_batch(sink, batch) => {
                if written.is_err() {
                    return Ending::by_client(close_code::ABNORMAL, "Connection lost");
                }
                queue.written(bytes);
                last_data_ms.store(app.clock.now_ms() as i64, Ordering::Relaxed);
            }
            () = too_slow.notified() => return Ending::abandoned(close_code::POLICY, TOO_SLOW),
        }
    }
}

/// Writes the frames and flushes once: a burst costs one write to the socket.
async fn write_batch(sink: &mut SplitSink<WebSocket, Message>, batch: Vec<Frame>) -> Result<(), axum::Error> {
    for frame in batch {
        let Ok(text) = Utf8Bytes::try_from(frame.bytes().clone()) else {
            continue;
        };
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await
}
