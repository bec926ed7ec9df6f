//! HTTP beside the WebSocket, against a real runner: a backend publishes with a POST, readers
//! follow a room with long polling or Server-Sent Events, and all of them see one order.

use livesync_core::access::{Grants, RoomPatterns};
use livesync_handlers::authorizer::{Claims, mint};
use livesync_tests::http::{EventStream, get, post, request};
use livesync_tests::{Local, seqs};
use serde_json::{Value, json};
use std::time::Duration;

const SECRET: &str = "an-end-to-end-test-secret-of-32-bytes+";

fn token(read: &[&str], write: &[&str]) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let rooms =
        Grants { read: RoomPatterns::new(read.iter().copied()), write: RoomPatterns::new(write.iter().copied()) };
    mint(SECRET.as_bytes(), &Claims { sub: "inventory".into(), exp, rooms }).unwrap()
}

fn ids(events: &[livesync_tests::http::ServerSent]) -> Vec<u64> {
    events.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_publish_reaches_websocket_subscribers_and_event_streams_in_order() {
    let local = Local::start().await;
    let base = local.http_url();
    let mut subscriber = local.client().await;
    subscriber.join("shop", None).await;
    let mut stream = EventStream::open(&base, "/rooms/shop/stream", &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");

    for n in 1..=5 {
        let ack = post(
            &base,
            "/rooms/shop/events",
            &json!({ "id": format!("stock-{n}"), "data": { "level": n } }).to_string(),
        )
        .await;
        assert_eq!(ack.status, 200, "{}", ack.body);
        assert_eq!(ack.json(), json!({ "room": "shop", "seq": n, "id": format!("stock-{n}") }));
    }
    // A backend whose request timed out sends it again: the same seq, nothing stored twice.
    let retry =
        post(&base, "/rooms/shop/events", &json!({ "id": "stock-3", "data": { "level": 3 } }).to_string()).await;
    assert_eq!(retry.json()["seq"], 3);

    assert_eq!(subscriber.pushed_seqs("shop", 5).await, vec![1, 2, 3, 4, 5]);
    let streamed = stream.events(5).await;
    assert_eq!(ids(&streamed), vec![1, 2, 3, 4, 5]);
    for (sent, level) in streamed.iter().zip(1..) {
        assert_eq!(sent.event.as_deref(), Some("event"));
        let frame = sent.json();
        assert_eq!((frame["type"].clone(), frame["room"].clone()), (json!("event"), json!("shop")));
        assert_eq!(frame["data"], json!({ "level": level }));
    }
    let page = get(&base, "/rooms/shop/events?since=0").await.json();
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![1, 2, 3, 4, 5]);
    assert_eq!((page["seq"].clone(), page["more"].clone()), (json!(5), json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_when_an_event_is_published_during_its_wait() {
    let local = Local::start().await;
    let base = local.http_url();
    let poll = {
        let base = base.clone();
        tokio::spawn(async move { get(&base, "/rooms/lobby/events?since=0&wait=25").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "a poll of an empty room waits");

    let mut writer = local.client().await;
    writer.publish("lobby", Some("m-1"), json!("over the WebSocket")).await;

    let answer = poll.await.unwrap();
    assert_eq!(answer.status, 200);
    let page = answer.json();
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![1]);
    assert_eq!(page["events"][0]["data"], "over the WebSocket");
    // Events already there: answered at once, whatever the wait.
    let at_once = get(&base, "/rooms/lobby/events?since=0&wait=25").await.json();
    assert_eq!(at_once["events"], page["events"]);
    // Nothing after the head: answered empty once the wait runs out.
    let quiet = get(&base, "/rooms/lobby/events?since=1&wait=1").await.json();
    assert_eq!(quiet, json!({ "room": "lobby", "seq": 1, "events": [], "more": false }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sends_the_backlog_then_live_events_and_resumes_after_a_cut_with_last_event_id() {
    let local = Local::start().await;
    let base = local.http_url();
    let publish = |n: u64| {
        let base = base.clone();
        async move {
            let ack = post(&base, "/rooms/notes/events", &json!({ "data": n }).to_string()).await;
            assert_eq!(ack.json()["seq"], n);
        }
    };
    for n in 1..=3 {
        publish(n).await;
    }
    let mut stream = EventStream::open(&base, "/rooms/notes/stream?since=1", &[]).await;
    assert_eq!(ids(&stream.events(2).await), vec![2, 3], "the backlog after since");
    publish(4).await;
    assert_eq!(ids(&stream.events(1).await), vec![4], "then live");
    drop(stream);

    // Events published while the reader was cut off.
    for n in 5..=7 {
        publish(n).await;
    }
    let mut resumed = EventStream::open(&base, "/rooms/notes/stream", &[("last-event-id", "4")]).await;
    let backlog = resumed.events(3).await;
    assert_eq!(ids(&backlog), vec![5, 6, 7], "nothing missed, nothing repeated");
    assert_eq!(backlog.iter().map(|e| e.json()["data"].as_u64().unwrap()).collect::<Vec<_>>(), vec![5, 6, 7]);
    publish(8).await;
    assert_eq!(ids(&resumed.events(1).await), vec![8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_keep_alive_comments() {
    let local = Local::start_with(|config| config.limits.stream_keepalive_secs = 1).await;
    let mut stream = EventStream::open(&local.http_url(), "/rooms/quiet/stream", &[]).await;

    let mut comments = 0;
    while comments < 2 {
        let sent = stream.next().await.expect("the stream stays open");
        assert_eq!(sent.event, None, "no event in a quiet room: {sent:?}");
        if sent.comment.is_some() {
            comments += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_code_and_status_and_the_server_goes_on() {
    let local = Local::start().await;
    let base = local.http_url();
    let refused = |response: livesync_tests::http::Response, status: u16, code: &str| {
        assert_eq!(response.status, status, "{}", response.body);
        let error: Value = response.json();
        assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some(code)), "{error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    };

    refused(post(&base, "/rooms/shop/events", "{\"data\": ").await, 400, "bad_request");
    refused(post(&base, "/rooms/shop/events", r#"{"id": "no-data"}"#).await, 400, "bad_request");
    refused(post(&base, "/rooms/shop/events", &"x".repeat(300 * 1024)).await, 413, "too_large");
    refused(get(&base, "/rooms/shop/events?since=last").await, 400, "bad_request");
    refused(get(&base, "/rooms/shop/events?wait=60").await, 400, "bad_request");
    refused(get(&base, "/rooms/shop/stream?since=-2").await, 400, "bad_request");
    refused(request(&base, "DELETE", "/rooms/shop/events", &[], "").await, 404, "not_found");
    // A member named twice is refused, as over a WebSocket (parsers disagree on which wins).
    refused(post(&base, "/rooms/shop/events", r#"{"data": 1, "data": 2}"#).await, 400, "bad_request");
    refused(post(&base, "/rooms/shop/events", r#"{"id": "a", "id": "b", "data": 1}"#).await, 400, "bad_request");
    refused(post(&base, "/rooms/shop/events", r#"{"data": {"x": 1, "x": 2}}"#).await, 400, "bad_request");

    let ack = post(&base, "/rooms/shop/events", r#"{"data": "still here"}"#).await;
    assert_eq!(ack.json()["seq"], 1, "nothing refused was stored, and the server goes on");
    // An anonymous caller's `from` says nothing of its address: two POSTs from one address
    // are from two different sessions.
    post(&base, "/rooms/shop/events", r#"{"data": "again"}"#).await;
    let page = get(&base, "/rooms/shop/events?since=0").await.json();
    assert_ne!(page["events"][0]["from"], page["events"][1]["from"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_on_a_request_needs_a_token_that_grants_the_room() {
    let local = Local::start_with(|config| config.auth.auth_secret = Some(SECRET.to_owned())).await;
    let base = local.http_url();
    let writer = token(&["shop"], &["shop"]);
    let reader = token(&["shop"], &[]);
    let bearer = |token: &str| format!("Bearer {token}");

    let none = post(&base, "/rooms/shop/events", r#"{"data": 1}"#).await;
    assert_eq!((none.status, none.json()["code"].clone()), (401, json!("unauthorized")));
    let read_only =
        request(&base, "POST", "/rooms/shop/events", &[("authorization", &bearer(&reader))], r#"{"data": 1}"#).await;
    assert_eq!((read_only.status, read_only.json()["code"].clone()), (403, json!("forbidden")));
    let written =
        request(&base, "POST", "/rooms/shop/events", &[("authorization", &bearer(&writer))], r#"{"data": 1}"#).await;
    assert_eq!(written.status, 200, "{}", written.body);

    assert_eq!(EventStream::open(&base, "/rooms/shop/stream", &[]).await.status, 401);
    let elsewhere = EventStream::open(&base, &format!("/rooms/lobby/stream?token={reader}"), &[]).await;
    assert_eq!(elsewhere.status, 403);
    // An EventSource cannot set headers: its token comes in the query.
    let mut stream = EventStream::open(&base, &format!("/rooms/shop/stream?token={reader}"), &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(ids(&stream.events(1).await), vec![1]);
    let page = request(&base, "GET", "/rooms/shop/events?since=0", &[("authorization", &bearer(&reader))], "").await;
    assert_eq!(page.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_may_call_the_http_routes_and_one_on_another_may_not() {
    // GIVEN a runner that lets pages on http://app.example connect,
    let local = Local::start_with(|config| config.auth.allow_origins = Some("http://app.example".to_owned())).await;
    let base = local.http_url();
    let preflight = |origin: &'static str| {
        let base = base.clone();
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ];
            request(&base, "OPTIONS", "/rooms/shop/events", &headers, "").await
        }
    };
    // WHEN such a page's browser asks before a POST, THEN it is told what it may send;
    let allowed = preflight("http://app.example").await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.headers.get("access-control-allow-origin").map(String::as_str), Some("http://app.example"));
    assert!(allowed.headers["access-control-allow-methods"].contains("POST"), "{allowed:?}");
    assert!(allowed.headers["access-control-allow-headers"].contains("content-type"), "{allowed:?}");
    assert_eq!(allowed.headers.get("access-control-max-age").map(String::as_str), Some("600"));
    // and its POST and GET are answered with the header that lets the page read them.
    let origin = [("origin", "http://app.example"), ("content-type", "application/json")];
    let posted = request(&base, "POST", "/rooms/shop/events", &origin, r#"{"data": 1}"#).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(posted.headers.get("access-control-allow-origin").map(String::as_str), Some("http://app.example"));
    let read = request(&base, "GET", "/rooms/shop/events?since=0", &origin[..1], "").await;
    assert_eq!(read.json()["seq"], 1);
    assert_eq!(read.headers.get("access-control-allow-origin").map(String::as_str), Some("http://app.example"));

    // WHEN a page on another origin tries, THEN its browser gets no permission to read, and
    // the write itself is refused.
    let elsewhere = preflight("http://evil.example").await;
    assert_eq!(elsewhere.headers.get("access-control-allow-origin"), None, "{elsewhere:?}");
    let evil = [("origin", "http://evil.example"), ("content-type", "application/json")];
    let refused = request(&base, "POST", "/rooms/shop/events", &evil, r#"{"data": 2}"#).await;
    assert_eq!((refused.status, refused.json()["code"].clone()), (403, json!("forbidden")));
    assert_eq!(refused.headers.get("access-control-allow-origin"), None);
    assert_eq!(get(&base, "/rooms/shop/events?since=0").await.json()["seq"], 1, "nothing stored from there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_takes_nothing_is_ended_and_the_server_goes_on() {
    // A budget smaller than two events: a stream behind by one more is cut at once.
    let local = Local::start_with(|config| config.limits.send_budget_bytes = 150 * 1024).await;
    let base = local.http_url();
    let stuck = EventStream::open(&base, "/rooms/big/stream", &[]).await;
    assert_eq!(stuck.status, 200);
    // Far more than the sockets' buffers hold, while the stream's reader reads nothing.
    let event = json!({ "data": "x".repeat(100 * 1024) }).to_string();
    for _ in 0..120 {
        assert_eq!(post(&base, "/rooms/big/events", &event).await.status, 200);
    }

    // Now it reads: what the buffers held, then the end of the stream, well short of 120.
    let mut stuck = stuck;
    let mut received = Vec::new();
    while let Some(sent) = stuck.next().await {
        if let Some(id) = sent.id {
            received.push(id.parse::<u64>().unwrap());
        }
    }
    assert!(received.len() < 120, "the stream was ended, not kept ({} events)", received.len());
    assert_eq!(received, (1..=received.len() as u64).collect::<Vec<_>>(), "what it got is in order, no gap");
    // Its reader resumes where it was cut, and the server serves others meanwhile.
    let last = received.last().map_or(0, |seq| *seq).to_string();
    let mut resumed = EventStream::open(&base, "/rooms/big/stream", &[("last-event-id", &last)]).await;
    assert_eq!(ids(&resumed.events(1).await), vec![received.len() as u64 + 1]);
    assert_eq!(post(&base, "/rooms/other/events", r#"{"data": 1}"#).await.status, 200);
}
