//! Bad input gets a clear error to that client; the connection stays usable, other clients are
//! unaffected, and no acknowledged data is lost.

use livesync_tests::{Local, events_of, seqs};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn refused(client: &mut livesync_tests::Client, frame: &str) -> Value {
    let reply = client.request_unreferenced(frame.to_owned()).await;
    assert_eq!(reply["type"], "error", "{frame} -> {reply}");
    assert!(reply["message"].as_str().is_some_and(|m| m.len() > 10), "a readable message: {reply}");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_frame_gets_its_own_error_and_the_connection_still_answers_ping() {
    let local = Local::start().await;
    let mut bystander = local.client().await;
    bystander.join("safe", None).await;
    let mut client = local.client().await;
    client.publish("safe", Some("before"), json!("kept")).await;
    assert_eq!(bystander.pushed_seqs("safe", 1).await, vec![1]);

    let cases = [
        ("not json at all", "bad_request", "not valid JSON"),
        ("{\"action\":", "bad_request", "not valid JSON"),
        ("[\"publish\"]", "bad_request", "JSON object"),
        ("{\"room\":\"safe\"}", "bad_request", "no \"action\""),
        ("{\"action\":42}", "bad_request", "must be a string"),
        ("{\"action\":\"dance\",\"room\":\"safe\"}", "unknown_action", "unknown action \"dance\""),
        ("{\"action\":\"publish\",\"data\":1}", "bad_request", "missing field `room`"),
        ("{\"action\":\"publish\",\"room\":\"safe\"}", "bad_request", "missing field `data`"),
        ("{\"action\":\"join\",\"room\":[\"safe\"]}", "bad_request", "expected a string"),
        ("{\"action\":\"sync\",\"room\":\"safe\",\"since\":\"ten\"}", "bad_request", "expected u64"),
        ("{\"action\":\"sync\",\"room\":\"safe\",\"since\":-1}", "bad_request", "invalid value"),
        ("{\"action\":\"join\",\"room\":\"\"}", "bad_request", "\"room\" must be 1 to 256 bytes"),
    ];
    for (frame, code, words) in cases {
        let reply = refused(&mut client, frame).await;
        assert_eq!(reply["code"], code, "{frame} -> {reply}");
        assert!(reply["message"].as_str().unwrap().contains(words), "{frame} -> {reply}");
        let pong = client.request(json!({"action": "ping"})).await;
        assert_eq!(pong["type"], "pong", "after {frame}");
    }

    // Over 128 KB, in frames of 32 KB as API Gateway takes them.
    let too_large = format!(r#"{{"action":"publish","room":"safe","data":"{}"}}"#, "x".repeat(128 * 1024));
    client.send_fragmented(&too_large, 32 * 1024).await;
    let reply = client.next_frame().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "too_large");
    assert!(reply["message"].as_str().unwrap().contains("131072"), "{reply}");
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");

    // The refused frames stored nothing; what was acknowledged is all there, and the bystander
    // saw nothing but the one real event.
    let history = client.request(json!({"action": "sync", "room": "safe", "since": 0})).await;
    assert_eq!(seqs(&events_of(&history)), vec![1]);
    assert_eq!(events_of(&history)[0]["data"], "kept");
    assert_eq!(bystander.request(json!({"action": "ping"})).await["type"], "pong");
    assert_eq!(bystander.queued_pushes("safe"), 0, "a refused frame was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_echoes_the_ref_when_the_frame_had_one() {
    let local = Local::start().await;
    let mut client = local.client().await;
    let reply = client.request(json!({"action": "publish", "room": "r"})).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "bad_request");
    assert!(reply["ref"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_is_refused_and_the_connection_stays_open() {
    let local = Local::start().await;
    let mut client = local.client().await;
    client.send_message(livesync_client::Message::binary(vec![0u8, 159, 146, 150])).await;
    client.send_text(r#"{"action":"ping","ref":1}"#).await;
    let frames = [client.next_frame().await, client.next_frame().await];
    assert_eq!(frames[0]["code"], "bad_request");
    assert!(frames[0]["message"].as_str().unwrap().contains("binary"));
    assert_eq!(frames[1], json!({"type": "pong", "ref": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_too_large_to_even_read_closes_only_that_connection_with_1009() {
    let local = Local::start().await;
    let mut other = local.client().await;
    other.join("r", None).await;
    let mut client = local.client().await;

    // The server may close while the frame is still being written: the send itself may fail.
    let _ = client.try_send_text("x".repeat(livesync_runner::MAX_READ_BYTES + 1)).await;

    // 1009 when the close frame wins the race with the reset of the unread bytes; closed either way.
    let closed = client.closed().await;
    assert!(matches!(closed, Some(CloseCode::Size) | None), "{closed:?}");
    assert_eq!(other.request(json!({"action": "ping"})).await["type"], "pong");
    let mut fresh = local.client().await;
    assert_eq!(fresh.publish("r", None, json!("still up")).await["seq"], 1);
    assert_eq!(other.pushed_seqs("r", 1).await, vec![1]);
}
