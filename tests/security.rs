//! Who may do what, and what one client may take, against a real runner: tokens on connect,
//! room grants, the management API kept from clients, write limits, and API Gateway's limits
//! on frames, messages, idle and half-open connections.

use livesync_core::access::{Grants, RoomPatterns};
use livesync_handlers::authorizer::{Claims, mint};
use livesync_tests::{Client, Local, PATIENCE};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const SECRET: &str = "an-end-to-end-test-secret-of-32-bytes+";

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn token(sub: &str, read: &[&str], write: &[&str], exp: u64) -> String {
    let rooms =
        Grants { read: RoomPatterns::new(read.iter().copied()), write: RoomPatterns::new(write.iter().copied()) };
    mint(SECRET.as_bytes(), &Claims { sub: sub.into(), exp, rooms }).unwrap()
}

async fn with_auth() -> Local {
    Local::start_with(|config| config.auth.auth_secret = Some(SECRET.to_owned())).await
}

/// The HTTP status the upgrade was refused with, or `None` if it was accepted.
async fn upgrade_status(url: &str, origin: Option<&str>) -> Option<u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("unexpected failure: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_the_upgrade_is_refused_with_401_and_nothing_is_stored() {
    let local = with_auth().await;
    let url = local.url();
    let expired = token("ann", &["*"], &["*"], now() - 120);
    let forged = mint(
        b"somebody-elses-secret-of-32-bytes!!!",
        &Claims { sub: "ann".into(), exp: now() + 60, rooms: Grants::all() },
    )
    .unwrap();
    let none = {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&format!(r#"{{"sub":"ann","exp":{}}}"#, now() + 60)))
    };
    for (what, query) in [
        ("no token", String::new()),
        ("an empty token", "?token=".to_owned()),
        ("an expired token", format!("?token={expired}")),
        ("a bad signature", format!("?token={forged}")),
        ("alg none", format!("?token={none}")),
        ("garbage", "?token=abc".to_owned()),
    ] {
        assert_eq!(upgrade_status(&format!("{url}/{query}"), None).await, Some(401), "{what}");
    }
    assert_eq!(local.open_connections(), 0);
    let good = token("ann", &["lobby"], &["lobby"], now() + 60);
    assert_eq!(upgrade_status(&format!("{url}/?token={good}"), None).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_keeps_its_user_to_its_rooms_and_events_are_from_its_sub() {
    let local = with_auth().await;
    let ann = token("ann", &["lobby", "doc-*"], &["lobby"], now() + 600);
    let mut client = Client::connect(&format!("{}/?token={ann}", local.url())).await;
    for frame in [
        json!({"action": "join", "room": "secret"}),
        json!({"action": "sync", "room": "secret", "since": 0}),
        json!({"action": "publish", "room": "secret", "data": 1}),
        json!({"action": "publish", "room": "doc-1", "data": 1}),
    ] {
        let reply = client.request(frame.clone()).await;
        assert_eq!(reply["code"], "forbidden", "{frame}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains(frame["room"].as_str().unwrap()), "{reply}");
    }
    // The connection stays open and what the token grants works.
    client.join("lobby", None).await;
    client.publish("lobby", Some("m1"), json!("hi")).await;
    let event = &client.pushed_events("lobby", 1).await[0];
    assert_eq!(event["from"], "ann", "an event is from the token's sub");
    let mut bob =
        Client::connect(&format!("{}/?token={}", local.url(), token("bob", &["lobby"], &["lobby"], now() + 600))).await;
    let ack = bob.publish("lobby", Some("m1"), json!("bob's own m1")).await;
    assert_eq!(ack["seq"], 2, "another user's id does not collide");
    let changed = client.request(json!({"action": "publish", "room": "lobby", "id": "m1", "data": "changed"})).await;
    assert_eq!(changed["code"], "conflict", "{changed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_from_another_origin_is_refused_and_clients_without_origin_are_not() {
    let local = Local::start().await;
    let url = local.url();
    let own = local.http_url();
    assert_eq!(upgrade_status(&url, Some("https://evil.example")).await, Some(403));
    assert_eq!(upgrade_status(&url, Some(&own)).await, None);
    assert_eq!(upgrade_status(&url, None).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_is_not_on_the_client_port_and_refuses_unsigned_requests() {
    let local = Local::start().await;
    let (mut client, id) = local.client_with_id().await;
    let http = |url: String| {
        let id = id.clone();
        async move {
            let addr = url.trim_start_matches("http://").to_owned();
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let forged = r#"{"type":"event","room":"lobby","seq":99,"from":"admin","data":"forged"}"#;
            let request = format!(
                "POST /@connections/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{forged}",
                forged.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    let on_client_port = http(local.http_url()).await;
    assert!(on_client_port.starts_with("HTTP/1.1 404"), "{on_client_port}");
    let unsigned = http(local.management_url()).await;
    assert!(unsigned.starts_with("HTTP/1.1 403"), "{unsigned}");
    assert!(unsigned.contains("ForbiddenException"), "{unsigned}");
    // Signed with other credentials: refused too.
    let sdk = livesync_dynamodb::emulator_config(&local.management_url()).await;
    let wrong = aws_sdk_apigatewaymanagement::config::Builder::from(&sdk)
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "testing", "wrong", None, None, "t",
        ))
        .build();
    let refused = aws_sdk_apigatewaymanagement::Client::from_conf(wrong)
        .post_to_connection()
        .connection_id(&id)
        .data(b"{}".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert!(refused.into_service_error().is_forbidden_exception());
    // The client received nothing of it.
    let pong = client.request(json!({"action": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(client.queued_pushes("lobby"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_the_rate_are_refused_with_a_retry_time_and_nothing_refused_is_stored() {
    let local = Local::start_with(|config| {
        config.limits.write_rate = 2.0;
        config.limits.write_burst = 3;
    })
    .await;
    let mut flooder = local.client().await;
    let mut refusal = None;
    for n in 0..6 {
        let reply = flooder.request(json!({"action": "publish", "room": "r", "data": n})).await;
        if reply["type"] == "error" {
            refusal = Some(reply);
            break;
        }
    }
    let refusal = refusal.expect("a refusal within six writes");
    assert_eq!(refusal["code"], "rate_limited", "{refusal}");
    let wait = refusal["retry_after_ms"].as_u64().expect("a retry time");
    assert!(wait > 0 && wait <= 500, "{refusal}");
    // Another client is unaffected, and reads are not limited.
    let mut other = local.client().await;
    assert_eq!(other.publish("r", None, json!("other")).await["type"], "ack");
    let log = other.request(json!({"action": "sync", "room": "r", "since": 0})).await;
    let stored = log["events"].as_array().unwrap().len();
    // The refused write stored nothing: the flooder's admitted writes and the other one.
    assert!((4..=5).contains(&stored), "{log}");
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(flooder.publish("r", None, json!("later")).await["type"], "ack", "a later write succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_messages_are_limited_as_api_gateway_limits_them() {
    let local = Local::start().await;
    // A message of 100 KB in 32 KB frames, as API Gateway takes it: accepted.
    let mut client = local.client().await;
    let frame = json!({"action": "publish", "room": "r", "data": "x".repeat(100 * 1024), "ref": "big"}).to_string();
    client.send_fragmented(&frame, 32 * 1024).await;
    assert_eq!(client.reply_to("big").await["type"], "ack");
    // 130 KB in frames: too large, answered, and the connection stays open.
    let frame = json!({"action": "publish", "room": "r", "data": "x".repeat(130 * 1024)}).to_string();
    client.send_fragmented(&frame, 32 * 1024).await;
    assert_eq!(client.next_frame().await["code"], "too_large");
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    // One frame over 32 KB: closed with 1009.
    let mut client = local.client().await;
    let _ = client
        .try_send_text(json!({"action": "publish", "room": "r", "data": "y".repeat(40 * 1024)}).to_string())
        .await;
    assert_eq!(client.closed().await, Some(CloseCode::Size));
    // A text frame that is not UTF-8: closed with 1007.
    let mut client = local.client().await;
    let header = FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() };
    client.send_message(Message::Frame(Frame::from_payload(header, Bytes::from_static(b"{\"a\":\"\xff\xfe\"}")))).await;
    assert_eq!(client.closed().await, Some(CloseCode::Invalid));
    // Nothing of it was stored but the one accepted message.
    let mut reader = local.client().await;
    let log = reader.request(json!({"action": "sync", "room": "r", "since": 0})).await;
    assert_eq!(log["events"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upgrade_and_an_idle_connection_are_closed() {
    let local = Local::start_with(|config| {
        config.limits.handshake_timeout_secs = 1;
        config.limits.idle_timeout_secs = 1;
    })
    .await;
    // Half an upgrade request, then silence: the socket is closed, not kept.
    let addr = local.http_url().trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stalled socket was never closed");
    // An idle connection is closed with 1001, as API Gateway closes it after 10 minutes.
    let mut idle = local.client().await;
    assert_eq!(idle.closed().await, Some(CloseCode::Away));
    local.wait_for_open_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_connections_share_one_write_bucket() {
    let local = Local::start_with(|config| {
        config.auth.auth_secret = Some(SECRET.to_owned());
        config.limits.write_rate = 0.1;
        config.limits.write_burst = 4;
    })
    .await;
    let ann = token("ann", &["r"], &["r"], now() + 600);
    let mut admitted = 0;
    let mut refused = 0;
    // Four connections (or reconnects) of one user get one user's burst, not four.
    for _ in 0..4 {
        let mut client = Client::connect(&format!("{}/?token={ann}", local.url())).await;
        for n in 0..3 {
            let reply = client.request(json!({"action": "publish", "room": "r", "data": n})).await;
            match reply["type"].as_str() {
                Some("ack") => admitted += 1,
                _ => {
                    assert_eq!(reply["code"], "rate_limited", "{reply}");
                    refused += 1;
                }
            }
        }
        client.close().await;
    }
    assert_eq!((admitted, refused), (4, 8));
    let bob = token("bob", &["r"], &["r"], now() + 600);
    let mut other = Client::connect(&format!("{}/?token={bob}", local.url())).await;
    assert_eq!(other.publish("r", None, json!("bob")).await["type"], "ack", "another user is unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_one_address_cannot_lock_out_its_next_client() {
    let local = Local::start_with(|config| config.limits.max_handshakes_per_ip = 2).await;
    let addr = local.http_url().trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        stalled.push(socket);
    }
    // A real client from the same address gets in: it takes the oldest stalled one's place.
    let mut client = local.client().await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    let mut evicted = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stalled[0].read_to_end(&mut evicted)).await;
    assert!(read.is_ok(), "the oldest stalled socket was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_breaks_the_websocket_protocol_is_closed_with_1002() {
    let local = Local::start().await;
    let addr = local.http_url().trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(upgrade.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        socket.read_exact(&mut byte).await.unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&response));
    // A client's frame must be masked (RFC 6455 5.1): this one is not.
    socket.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut close = [0u8; 4];
    tokio::time::timeout(PATIENCE, socket.read_exact(&mut close)).await.unwrap().unwrap();
    assert_eq!(close[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_is_answered_and_an_invalid_close_code_is_a_protocol_error() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let local = Local::start().await;
    for (sent, answered) in
        [(CloseCode::Library(4000), CloseCode::Library(4000)), (CloseCode::Bad(999), CloseCode::Protocol)]
    {
        let mut client = local.client().await;
        client.send_message(Message::Close(Some(CloseFrame { code: sent, reason: "bye".into() }))).await;
        assert_eq!(client.closed().await, Some(answered), "after a close with {sent}");
    }
    local.wait_for_open_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_answered_without_an_upgrade_are_closed_not_kept() {
    let local = Local::start().await;
    for addr in [local.http_url(), local.management_url()] {
        let addr = addr.trim_start_matches("http://").to_owned();
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(format!("GET /x HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = Vec::new();
        // The whole response, then the end of the stream: no keep-alive for a socket to linger on.
        tokio::time::timeout(PATIENCE, socket.read_to_end(&mut response)).await.unwrap().unwrap();
        assert!(response.starts_with(b"HTTP/1.1 4"), "{}", String::from_utf8_lossy(&response));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_management_request_is_refused_before_its_body_is_read() {
    let local = Local::start().await;
    let addr = local.management_url().trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Announces 128 KB and sends none of it: the refusal comes anyway.
    let head = format!("POST /@connections/x HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 131072\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&response));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_without_auth_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = livesync_runner::Config::for_tests(dir.path());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let refused = livesync_runner::Runner::start(config.clone()).await.err().expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("0.0.0.0:0") && message.contains("--auth-secret") && message.contains("--insecure"),
        "{message}"
    );
    config.auth.auth_secret = Some(SECRET.to_owned());
    let runner = livesync_runner::Runner::start(config).await.expect("with auth it may");
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_subscribers_that_never_read_big_events_are_closed_and_memory_stays_bounded() {
    const SUBSCRIBERS: usize = 10;
    const EVENTS: usize = 200;
    let local = Local::start_with(|config| config.limits.send_queue_bytes = 2 * 1024 * 1024).await;
    let mut stalled = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = local.client().await;
        client.join("firehose", None).await;
        stalled.push(client);
    }
    let before = resident_bytes();
    let mut writer = local.client().await;
    let blob = "z".repeat(120 * 1024);
    for _ in 0..EVENTS {
        writer.publish("firehose", None, json!(blob)).await;
    }
    // 200 events of 120 KB to 10 subscribers would be 240 MB queued; each is closed instead.
    local.wait_for_open_connections(1).await;
    let grown = resident_bytes().saturating_sub(before);
    println!("resident memory grew by {} MB", grown / (1024 * 1024));
    assert!(grown < 150 * 1024 * 1024, "grew by {grown} bytes");
    // A closed subscriber recovers everything with `since`.
    let mut back = local.client().await;
    let joined = back.join("firehose", Some(0)).await;
    assert_eq!(joined["seq"], EVENTS as u64);
    drop(stalled);
}

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_management_client_still_posts_with_the_configured_credentials() {
    let local = Local::start().await;
    let (mut client, id) = local.client_with_id().await;
    let sdk = livesync_dynamodb::emulator_config(&local.management_url()).await;
    let api = aws_sdk_apigatewaymanagement::Client::new(&sdk);
    api.post_to_connection().connection_id(&id).data(br#"{"type":"hello"}"#.to_vec().into()).send().await.unwrap();
    assert_eq!(client.next_frame().await, json!({"type": "hello"}));
}
