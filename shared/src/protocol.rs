//! The wire protocol: every frame a client sends and every frame the server sends.
//!
//! Frames are JSON text. A client frame names its `action` (which is also what API Gateway routes
//! on, `$request.body.action`); a server frame names its `type`. These names are part of the
//! product's contract with clients, so they live here and nowhere else; `docs/PROTOCOL.md` is the
//! reader's version of this module.
//!
//! Parsing is done in two steps so that every failure gets its own error code: first the frame's
//! envelope (is it JSON, is it an object, which action, which `ref`), then the action's fields.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

/// API Gateway's WebSocket message limit. Larger client frames are answered with `too_large`.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// API Gateway's WebSocket frame limit. Pushed frames that batch events stay under it; one event
/// larger than this still goes out on its own (API Gateway splits a message into frames).
pub const MAX_FRAME_BYTES: usize = 32 * 1024;

/// Longest room name accepted, in bytes. Room names become store keys.
pub const MAX_ROOM_BYTES: usize = 256;

/// Longest client-chosen event id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Largest `ref` accepted, as JSON text. It is echoed in the reply, which must stay small.
pub const MAX_REF_BYTES: usize = 256;

/// Largest `data` of a publish, as compact JSON text: what is left of a 128 KB message once an
/// event frame's other fields are added, so every event can be pushed and replied as sent.
pub const MAX_DATA_BYTES: usize = MAX_MESSAGE_BYTES - 4 * 1024;

/// The actions a client may send; anything else is `unknown_action`.
pub const ACTIONS: [&str; 5] = ["join", "leave", "publish", "sync", "ping"];

/// A client's request, after its envelope has been checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Request {
    /// Subscribe to a room; with `since`, also receive the events after that seq.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Unsubscribe from a room.
    Leave {
        room: String,
    },
    /// Append an event to a room. A repeated `id` is acknowledged with the original seq.
    Publish {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        data: JsonData,
    },
    /// Fetch the events after `since`, one page at a time.
    Sync {
        room: String,
        since: u64,
    },
    Ping,
}

/// A client frame: the request and the client's `ref`, echoed in the direct reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub reference: Option<Reference>,
    pub request: Request,
}

/// A client's correlation value: any JSON value, returned untouched.
pub type Reference = JsonData;

/// One stored event, as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub room: String,
    pub seq: u64,
    pub id: String,
    /// The connection that published it.
    pub from: String,
    pub data: JsonData,
    /// Acceptance time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Everything the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// Reply to `join`: `seq` is the room's head; `events` are those after `since`, if asked.
    Joined {
        room: String,
        seq: u64,
        events: Vec<Event>,
        more: bool,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `leave`.
    Left {
        room: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `publish`: the event is stored with this seq.
    Ack {
        room: String,
        seq: u64,
        id: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// One event pushed to a subscriber.
    Event(Event),
    /// Several events of one room: a batched push (no `more`), or the reply to `sync`.
    Events {
        room: String,
        events: Vec<Event>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        more: Option<bool>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    Pong {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Reference>) -> Self {
        ServerFrame::Error { code, message: message.into(), reference }
    }

    /// The frame as JSON text. Serialising these types cannot fail: every map key is a string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// Why a client frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing or ill-typed field, an invalid value.
    BadRequest,
    /// An `action` this server does not know.
    UnknownAction,
    /// A frame over [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// The server failed; the request may or may not have been applied.
    Internal,
}

/// A refused client frame: the reply to send, with the client's `ref` when it could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<Reference>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>, reference: Option<Reference>) -> Self {
        Refusal { code, message: message.into(), reference }
    }

    pub fn into_frame(self) -> ServerFrame {
        ServerFrame::Error { code: self.code, message: self.message, reference: self.reference }
    }
}

/// Reads one client frame, or says precisely what is wrong with it.
pub fn parse_client_frame(body: &str) -> Result<ClientFrame, Refusal> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("frame is {} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (128 KB)", body.len()),
            None,
        ));
    }
    let envelope: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("frame is not valid JSON: {e}"), None))?;
    let serde_json::Value::Object(fields) = &envelope else {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "frame must be a JSON object such as {\"action\":\"ping\"}",
            None,
        ));
    };
    let reference = fields.get("ref").map(JsonData::from_value);
    if reference.as_ref().is_some_and(|r| r.as_json().len() > MAX_REF_BYTES) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("\"ref\" must be at most {MAX_REF_BYTES} bytes of JSON"),
            None,
        ));
    }
    let action = match fields.get("action") {
        None => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("frame has no \"action\"; expected one of {}", ACTIONS.join(", ")),
                reference,
            ));
        }
        Some(serde_json::Value::String(action)) => action.as_str(),
        Some(other) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("\"action\" must be a string, not {}", json_kind(other)),
                reference,
            ));
        }
    };
    if !ACTIONS.contains(&action) {
        return Err(Refusal::new(
            ErrorCode::UnknownAction,
            format!("unknown action \"{action}\"; expected one of {}", ACTIONS.join(", ")),
            reference,
        ));
    }
    let request: Request = serde_json::from_value(envelope.clone()).map_err(|e| {
        Refusal::new(ErrorCode::BadRequest, format!("invalid \"{action}\" frame: {e}"), reference.clone())
    })?;
    if let Request::Publish { data, .. } = &request
        && data.as_json().len() > MAX_DATA_BYTES
    {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("\"data\" is {} bytes; the limit is {MAX_DATA_BYTES} bytes", data.as_json().len()),
            reference,
        ));
    }
    validate(&request).map_err(|message| Refusal::new(ErrorCode::BadRequest, message, reference.clone()))?;
    Ok(ClientFrame { reference, request })
}

fn validate(request: &Request) -> Result<(), String> {
    let room = match request {
        Request::Join { room, .. }
        | Request::Leave { room }
        | Request::Publish { room, .. }
        | Request::Sync { room, .. } => room,
        Request::Ping => return Ok(()),
    };
    if room.is_empty() || room.len() > MAX_ROOM_BYTES {
        return Err(format!("\"room\" must be 1 to {MAX_ROOM_BYTES} bytes long"));
    }
    if room.chars().any(char::is_control) {
        return Err("\"room\" must not contain control characters".to_owned());
    }
    if let Request::Publish { id: Some(id), .. } = request
        && (id.is_empty() || id.len() > MAX_ID_BYTES)
    {
        return Err(format!("\"id\" must be 1 to {MAX_ID_BYTES} bytes long"));
    }
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Application data: any JSON value, kept as its compact text so that an event is stored and
/// pushed without being parsed again.
#[derive(Clone)]
pub struct JsonData(Box<RawValue>);

/// Equal when the texts are equal: data is compared as sent, not as JSON values.
impl PartialEq for JsonData {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for JsonData {}

impl JsonData {
    /// Wraps text already known to be one valid JSON value (as read back from the store).
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(JsonData)
    }

    pub fn from_value(value: &serde_json::Value) -> Self {
        JsonData(serde_json::value::to_raw_value(value).expect("a JSON value always serialises"))
    }

    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl fmt::Debug for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl Serialize for JsonData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonData {
    // Through `Value` rather than `RawValue`: tagged enums buffer their fields, which RawValue
    // cannot read from. Compact re-serialisation also normalises client whitespace once.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        serde_json::value::to_raw_value(&value).map(JsonData).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: serde_json::Value) -> JsonData {
        JsonData::from_value(&value)
    }

    fn round_trips(frame: ServerFrame) {
        let text = frame.to_json();
        let back: ServerFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back, frame, "{text}");
    }

    fn event(seq: u64) -> Event {
        Event {
            room: "lobby".into(),
            seq,
            id: format!("m{seq}"),
            from: "c1".into(),
            data: data(json!({"text": "hi", "n": [1, 2.5, null]})),
            ts: 1_764_000_000_000,
        }
    }

    #[test]
    fn every_server_frame_round_trips() {
        let reference = Some(data(json!("r1")));
        round_trips(ServerFrame::Joined {
            room: "lobby".into(),
            seq: 7,
            events: vec![event(6), event(7)],
            more: false,
            reference: reference.clone(),
        });
        round_trips(ServerFrame::Left { room: "lobby".into(), reference: None });
        round_trips(ServerFrame::Ack { room: "lobby".into(), seq: 3, id: "m3".into(), reference: reference.clone() });
        round_trips(ServerFrame::Event(event(1)));
        round_trips(ServerFrame::Events {
            room: "lobby".into(),
            events: vec![event(1)],
            more: Some(true),
            reference: None,
        });
        round_trips(ServerFrame::Events {
            room: "lobby".into(),
            events: vec![event(1), event(2)],
            more: None,
            reference: None,
        });
        round_trips(ServerFrame::Pong { reference: Some(data(json!(42))) });
        round_trips(ServerFrame::error(ErrorCode::TooLarge, "too big", None));
    }

    #[test]
    fn every_request_round_trips() {
        for request in [
            Request::Join { room: "a".into(), since: Some(4) },
            Request::Join { room: "a".into(), since: None },
            Request::Leave { room: "a".into() },
            Request::Publish { room: "a".into(), id: Some("x".into()), data: data(json!({"k": 1})) },
            Request::Publish { room: "a".into(), id: None, data: data(json!("text")) },
            Request::Sync { room: "a".into(), since: 0 },
            Request::Ping,
        ] {
            let text = serde_json::to_string(&request).unwrap();
            let frame = parse_client_frame(&text).unwrap();
            assert_eq!(frame.request, request, "{text}");
        }
    }

    #[test]
    fn the_wire_names_are_the_documented_ones() {
        let pushed = serde_json::to_value(ServerFrame::Event(event(5))).unwrap();
        assert_eq!(
            pushed,
            json!({"type": "event", "room": "lobby", "seq": 5, "id": "m5", "from": "c1",
                   "data": {"text": "hi", "n": [1, 2.5, null]}, "ts": 1_764_000_000_000u64})
        );
        let error = serde_json::to_value(ServerFrame::error(ErrorCode::UnknownAction, "no", None)).unwrap();
        assert_eq!(error, json!({"type": "error", "code": "unknown_action", "message": "no"}));
    }

    #[test]
    fn the_ref_is_read_from_any_frame_and_kept_as_sent() {
        let frame = parse_client_frame(r#"{"action":"ping","ref":{"n":1}}"#).unwrap();
        assert_eq!(frame.reference.unwrap().as_json(), r#"{"n":1}"#);
        let refused = parse_client_frame(r#"{"action":"dance","ref":"r9"}"#).unwrap_err();
        assert_eq!(refused.reference.unwrap().as_json(), r#""r9""#);
    }

    fn refusal(body: &str) -> Refusal {
        parse_client_frame(body).unwrap_err()
    }

    #[test]
    fn malformed_frames_are_refused_with_a_specific_code_and_message() {
        let r = refusal("hello");
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.starts_with("frame is not valid JSON"), "{}", r.message);

        let r = refusal("[1,2]");
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("JSON object"), "{}", r.message);

        let r = refusal(r#"{"room":"a"}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("no \"action\""), "{}", r.message);

        let r = refusal(r#"{"action":7}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("must be a string, not a number"), "{}", r.message);

        let r = refusal(r#"{"action":"dance"}"#);
        assert_eq!(r.code, ErrorCode::UnknownAction);
        assert!(r.message.contains("\"dance\""), "{}", r.message);

        let r = refusal(r#"{"action":"publish","data":1}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert_eq!(r.message, "invalid \"publish\" frame: missing field `room`");

        let r = refusal(r#"{"action":"sync","room":"a","since":-1}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("invalid value: integer `-1`"), "{}", r.message);

        let r = refusal(r#"{"action":"join","room":5}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("expected a string"), "{}", r.message);

        let r = refusal(r#"{"action":"join","room":""}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("\"room\" must be 1 to 256 bytes"), "{}", r.message);

        let r = refusal(r#"{"action":"publish","room":"a","id":"","data":1}"#);
        assert!(r.message.contains("\"id\" must be"), "{}", r.message);
    }

    #[test]
    fn a_frame_over_128_kb_is_too_large() {
        let body = format!(r#"{{"action":"publish","room":"a","data":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
        let r = refusal(&body);
        assert_eq!(r.code, ErrorCode::TooLarge);
        assert!(r.message.contains("131072"), "{}", r.message);
    }

    #[test]
    fn the_largest_data_is_accepted_and_one_byte_more_is_too_large() {
        let fits = format!(r#"{{"action":"publish","room":"a","data":"{}"}}"#, "x".repeat(MAX_DATA_BYTES - 2));
        assert!(parse_client_frame(&fits).is_ok());
        let over = format!(r#"{{"action":"publish","room":"a","data":"{}","ref":1}}"#, "x".repeat(MAX_DATA_BYTES - 1));
        let r = refusal(&over);
        assert_eq!(r.code, ErrorCode::TooLarge);
        assert!(r.message.starts_with("\"data\" is"), "{}", r.message);
        assert_eq!(r.reference.unwrap().as_json(), "1");
    }

    #[test]
    fn a_large_ref_is_refused_because_it_would_be_echoed() {
        let body = format!(r#"{{"action":"ping","ref":"{}"}}"#, "r".repeat(MAX_REF_BYTES));
        let r = refusal(&body);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("\"ref\" must be at most 256 bytes"), "{}", r.message);
    }
}
