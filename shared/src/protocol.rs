//! The wire protocol: every frame a client sends and every frame the server sends.
//!
//! Frames are JSON text. A client frame names its `action` (which is also what API Gateway routes
//! on, `$request.body.action`); a server frame names its `type`. These names are part of the
//! product's contract with clients, so they live here and nowhere else; `docs/PROTOCOL.md` is the
//! reader's version of this module.
//!
//! Parsing is done in two steps so that every failure gets its own error code: first the frame's
//! envelope (is it JSON, is it an object, which action, which `ref`), then the action's fields.

use crate::actions::{self, Request};
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

/// A client frame: the request and the client's `ref`, echoed in the direct reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub reference: Option<Reference>,
    pub request: Request,
    /// What the request asks, whoever sends it and whatever its `ref`: a digest of the frame
    /// without `ref`, its members in a canonical order. An idempotency id is bound to it, so a
    /// repeat of the id with different content is told apart from a retry.
    pub digest: String,
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
    /// What the event records: a publish (the default, not written on the wire) or a change of
    /// shared state, whose `data` is then the state after it.
    #[serde(default, skip_serializing_if = "EventKind::is_publish")]
    pub kind: EventKind,
    pub data: JsonData,
    /// Acceptance time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// What an event of a room's log records. Clients tell state changes from application data by
/// this field, which only the server sets, so a publish can never pass for a state change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Application data sent with `publish`.
    #[default]
    Publish,
    /// A document's new version: `data` is its `doc` reply without `type` and `room`.
    Doc,
    /// An accepted text edit: `data` is its `text.ack` without `type` and `room`.
    Text,
    /// A stock level's new value: `data` is its `stock` reply without `type` and `room`.
    Stock,
    /// A member entered or left the room: `{"joined"|"left": {"connection", "user"}}`.
    Presence,
    /// An end-of-day report, in the `reports` room: `data` is the report.
    Report,
}

impl EventKind {
    pub fn is_publish(&self) -> bool {
        *self == EventKind::Publish
    }

    /// The name stored with the event and sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Publish => "publish",
            EventKind::Doc => "doc",
            EventKind::Text => "text",
            EventKind::Stock => "stock",
            EventKind::Presence => "presence",
            EventKind::Report => "report",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        [EventKind::Publish, EventKind::Doc, EventKind::Text, EventKind::Stock, EventKind::Presence, EventKind::Report]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
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
    /// A document at one version: the reply to every `doc.*` write and to `doc.get`.
    Doc {
        room: String,
        #[serde(flatten)]
        state: crate::documents::DocState,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `doc.history`: kept versions, newest first.
    History {
        room: String,
        doc: String,
        versions: Vec<crate::documents::Version>,
        more: bool,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `text.get`.
    Text {
        room: String,
        doc: String,
        rev: u64,
        text: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `text.edit`: the edit as applied (transformed past the edits accepted since the
    /// client's `rev`), and the text's revision after it.
    #[serde(rename = "text.ack")]
    TextAck {
        room: String,
        #[serde(flatten)]
        edit: crate::text::TextEdit,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// One SKU's stock level: the reply to `stock.set`, `stock.adjust` and `stock.get` with a sku.
    Stock {
        room: String,
        #[serde(flatten)]
        level: crate::stock::StockLevel,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `stock.get` without a sku: every SKU of the room, in sku order.
    Stocks {
        room: String,
        items: Vec<crate::stock::StockLevel>,
        more: bool,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    /// Reply to `presence`: the members of the room (connections that joined with a `user`).
    Presence {
        room: String,
        members: Vec<crate::membership::Member>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// With `conflict`: the document (or stock level) as it stands, to rebase on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<Box<ServerFrame>>,
        /// With `insufficient_stock`: the level that could not cover the sale.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<i64>,
        /// With `rate_limited`: how long to wait before the next write is accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// With `expired`: the oldest seq of the room still held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oldest: Option<u64>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Reference>,
    },
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Reference>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            current: None,
            level: None,
            retry_after_ms: None,
            oldest: None,
            reference,
        }
    }

    /// `expired`: the events of `room` after `since` are no longer held; `oldest` is the first
    /// seq that is.
    pub fn expired(room: &str, since: u64, oldest: u64, reference: Option<Reference>) -> Self {
        let message = format!(
            "events of room {room:?} after seq {since} have expired (kept for the retention period); \
             reload the room's state, then continue from seq {oldest}"
        );
        let mut frame = ServerFrame::error(ErrorCode::Expired, message, reference);
        if let ServerFrame::Error { oldest: field, .. } = &mut frame {
            *field = Some(oldest);
        }
        frame
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
    /// A frame over [`MAX_MESSAGE_BYTES`], or a value that would grow past what one message holds.
    TooLarge,
    /// No such document, text, SKU or version (a version older than the kept history).
    NotFound,
    /// A write based on a stale version; the error's `current` holds the state to rebase on.
    Conflict,
    /// A stock adjustment that would take the level below zero; the error's `level` says what is left.
    InsufficientStock,
    /// No token, or one that is not valid (HTTP requests only: a WebSocket without one is
    /// refused at the upgrade, with HTTP 401).
    Unauthorized,
    /// The caller's token does not grant this room (read or write, as the action needs).
    Forbidden,
    /// The connection sent writes faster than its limit; the error's `retry_after_ms` says when
    /// the next one is accepted. Nothing of the refused write was applied.
    RateLimited,
    /// `join` or `sync` with a `since` whose next events have expired (events are kept for the
    /// retention period, 7 days by default); the error's `oldest` is the first seq still held.
    Expired,
    /// The server cannot take writes for now (the runner's storage is full); the write was not
    /// applied. Reads still work.
    Unavailable,
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
    pub fn new(code: ErrorCode, message: impl Into<String>, reference: Option<Reference>) -> Self {
        Refusal { code, message: message.into(), reference }
    }

    pub fn into_frame(self) -> ServerFrame {
        ServerFrame::error(self.code, self.message, self.reference)
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
    let envelope = serde_json::from_str::<UniqueKeys>(body)
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("frame is not valid JSON: {e}"), None))?
        .0;
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
                format!("frame has no \"action\"; expected one of {}", actions::NAMES.join(", ")),
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
    let Some(parsed) = Request::parse(action, &envelope) else {
        return Err(Refusal::new(
            ErrorCode::UnknownAction,
            format!("unknown action \"{action}\"; expected one of {}", actions::NAMES.join(", ")),
            reference,
        ));
    };
    match parsed {
        Ok(request) => Ok(ClientFrame { reference, request, digest: digest_without_ref(fields) }),
        Err(Invalid { code, message }) => Err(Refusal { code, message, reference }),
    }
}

/// The request's digest: SHA-256 of the frame's members but `ref`, as compact JSON with sorted
/// keys (serde_json's map is ordered), so whitespace and member order do not change it.
fn digest_without_ref(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for (name, value) in fields.iter().filter(|(name, _)| name.as_str() != "ref") {
        hasher.update(serde_json::to_string(name).expect("a string serialises").as_bytes());
        hasher.update(b":");
        hasher.update(value.to_string().as_bytes());
        hasher.update(b",");
    }
    hasher.finalize().iter().take(16).map(|byte| format!("{byte:02x}")).collect()
}

/// A JSON value in which no object names a member twice. Parsers disagree on which of two
/// duplicates wins (serde keeps the last, others the first), so a frame such as
/// `{"action":"ping","action":"publish",...}` could mean one thing to a proxy or a log and
/// another here: it is refused instead.
struct UniqueKeys(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if members.contains_key(&name) {
                return Err(A::Error::custom(format!("duplicate key {name:?} (each member may appear once)")));
            }
            members.insert(name, value);
        }
        Ok(serde_json::Value::Object(members))
    }
}

/// Why an action's fields were refused, before the `ref` is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: ErrorCode,
    pub message: String,
}

impl Invalid {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Invalid { code: ErrorCode::BadRequest, message: message.into() }
    }
}

/// Checks a room, document, SKU or user name: it becomes part of a store key and is shown to
/// people, so it must not hide or reorder what is shown around it.
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_ROOM_BYTES {
        return Err(Invalid::bad_request(format!("\"{field}\" must be 1 to {MAX_ROOM_BYTES} bytes long")));
    }
    check_visible(field, name)
}

/// Refuses the characters that make a name show as something it is not: control characters
/// (C0, DEL, C1: NUL, newlines, escapes), bidirectional overrides, embeddings and isolates
/// (U+202A..U+202E, U+2066..U+2069) and marks (U+200E, U+200F, U+061C), the line and paragraph
/// separators (U+2028, U+2029), zero-width characters and the byte order mark (U+200B..U+200D,
/// U+2060, U+FEFF), and noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF).
fn check_visible(field: &str, text: &str) -> Result<(), Invalid> {
    match text.chars().find(|&c| is_hidden(c)) {
        None => Ok(()),
        Some(c) => Err(Invalid::bad_request(format!(
            "\"{field}\" must not contain control, invisible or bidirectional-override characters (found U+{:04X})",
            c as u32
        ))),
    }
}

fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{061C}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{2060}' | '\u{FEFF}' | '\u{FDD0}'..='\u{FDEF}')
        || (c as u32 & 0xFFFE) == 0xFFFE
}

/// Checks a client-chosen id of an idempotent write.
pub fn check_id(id: Option<&str>) -> Result<(), Invalid> {
    match id {
        Some(id) if id.is_empty() || id.len() > MAX_ID_BYTES => {
            Err(Invalid::bad_request(format!("\"id\" must be 1 to {MAX_ID_BYTES} bytes long")))
        }
        Some(id) => check_visible("id", id),
        None => Ok(()),
    }
}

/// Checks what every state write names: its room, its target (`field` is `doc` or `sku`) and its
/// optional client id.
pub fn check_write(room: &str, field: &str, target: &str, id: Option<&str>) -> Result<(), Invalid> {
    check_name("room", room)?;
    check_name(field, target)?;
    check_id(id)
}

/// Checks that a JSON value fits in one event and one reply.
pub fn check_data(field: &str, data: &JsonData) -> Result<(), Invalid> {
    let bytes = data.as_json().len();
    if bytes > MAX_DATA_BYTES {
        return Err(Invalid {
            code: ErrorCode::TooLarge,
            message: format!("\"{field}\" is {bytes} bytes; the limit is {MAX_DATA_BYTES} bytes"),
        });
    }
    Ok(())
}

pub fn json_kind(value: &serde_json::Value) -> &'static str {
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
            kind: EventKind::Publish,
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
        round_trips(ServerFrame::Event(Event { kind: EventKind::Stock, ..event(3) }));
        round_trips(ServerFrame::Stock {
            room: "shop".into(),
            level: crate::stock::StockLevel { sku: "tee".into(), level: 4, version: 7, delta: Some(-1) },
            reference: reference.clone(),
        });
        round_trips(ServerFrame::TextAck {
            room: "r".into(),
            edit: crate::text::TextEdit {
                doc: "t".into(),
                rev: 3,
                ops: serde_json::from_str(r#"[1,"a",-2]"#).unwrap(),
            },
            reference: None,
        });
        round_trips(ServerFrame::Presence {
            room: "r".into(),
            members: vec![crate::membership::Member { session: "s-1".into(), user: "ann".into() }],
            reference: None,
        });
        round_trips(ServerFrame::Error {
            code: ErrorCode::InsufficientStock,
            message: "no".into(),
            current: None,
            level: Some(0),
            retry_after_ms: None,
            oldest: None,
            reference: None,
        });
        round_trips(ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            current: None,
            level: None,
            retry_after_ms: Some(120),
            oldest: None,
            reference: None,
        });
        round_trips(ServerFrame::error(ErrorCode::TooLarge, "too big", None));
    }

    #[test]
    fn every_action_parses_from_its_documented_frame() {
        let frames = [
            json!({"action": "join", "room": "a", "since": 4, "user": "ann"}),
            json!({"action": "leave", "room": "a"}),
            json!({"action": "publish", "room": "a", "id": "x", "data": {"k": 1}}),
            json!({"action": "sync", "room": "a", "since": 0}),
            json!({"action": "ping"}),
            json!({"action": "presence", "room": "a"}),
            json!({"action": "doc.get", "room": "a", "doc": "d", "version": 2}),
            json!({"action": "doc.put", "room": "a", "doc": "d", "base": 0, "value": {"x": 1}, "strategy": "merge"}),
            json!({"action": "doc.patch", "room": "a", "doc": "d", "base": 1, "patch": {"x": null}}),
            json!({"action": "doc.incr", "room": "a", "doc": "d", "path": "/n", "by": 2.5}),
            json!({"action": "doc.delete", "room": "a", "doc": "d", "base": 3}),
            json!({"action": "doc.history", "room": "a", "doc": "d", "before": 9}),
            json!({"action": "doc.rollback", "room": "a", "doc": "d", "to": 1, "base": 3}),
            json!({"action": "text.get", "room": "a", "doc": "t"}),
            json!({"action": "text.edit", "room": "a", "doc": "t", "rev": 0, "ops": ["hi"]}),
            json!({"action": "stock.set", "room": "a", "sku": "s", "level": 10}),
            json!({"action": "stock.adjust", "room": "a", "sku": "s", "delta": -1, "id": "sale-1"}),
            json!({"action": "stock.get", "room": "a"}),
        ];
        let mut parsed: Vec<String> = Vec::new();
        for frame in frames {
            let text = frame.to_string();
            assert!(parse_client_frame(&text).is_ok(), "{text}: {:?}", parse_client_frame(&text));
            parsed.push(frame["action"].as_str().unwrap().to_owned());
        }
        assert_eq!(parsed, actions::NAMES, "every action has a documented frame here");
    }

    #[test]
    fn ill_typed_state_frames_are_bad_requests_that_name_the_field() {
        for (body, says) in [
            (json!({"action": "doc.put", "room": "a", "doc": "d", "value": 1}), "missing field `base`"),
            (
                json!({"action": "doc.put", "room": "a", "doc": "d", "base": 0, "value": 1, "strategy": "best"}),
                "unknown variant `best`",
            ),
            (json!({"action": "doc.incr", "room": "a", "doc": "d", "path": "n", "by": 1}), "JSON pointer"),
            (json!({"action": "doc.incr", "room": "a", "doc": "d", "path": "/n", "by": "1"}), "expected a JSON number"),
            (json!({"action": "text.edit", "room": "a", "doc": "t", "rev": 0, "ops": [0]}), "0 or \"\""),
            (json!({"action": "stock.set", "room": "a", "sku": "s", "level": -1}), "invalid value"),
            (json!({"action": "stock.adjust", "room": "a", "sku": "s", "delta": 0}), "must not be 0"),
            (json!({"action": "doc.get", "room": "a", "doc": ""}), "\"doc\" must be 1 to 256 bytes"),
            (json!({"action": "join", "room": "a", "user": "a\u{0}b"}), "\"user\" must not contain control"),
        ] {
            let r = refusal(&body.to_string());
            assert_eq!(r.code, ErrorCode::BadRequest, "{body}");
            assert!(r.message.contains(says), "{body}: {}", r.message);
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
    fn a_frame_naming_a_member_twice_is_refused_at_any_depth() {
        let r = refusal(r#"{"action":"ping","action":"publish","room":"a","data":1}"#);
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert!(r.message.contains("duplicate key \"action\""), "{}", r.message);
        let r = refusal(r#"{"action":"publish","room":"a","data":{"x":1,"y":[{"z":1,"z":2}]}}"#);
        assert!(r.message.contains("duplicate key \"z\""), "{}", r.message);
        let nested =
            parse_client_frame(r#"{"action":"publish","room":"a","data":{"x":[1,2.5,null,true,"s",{}]}}"#).unwrap();
        let ClientFrame { request: actions::Request::Publish(publish), .. } = nested else { panic!("a publish") };
        assert_eq!(publish.data.as_json(), r#"{"x":[1,2.5,null,true,"s",{}]}"#, "values read as before");
        let deep = format!(r#"{{"action":"publish","room":"a","data":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(refusal(&deep).message.contains("recursion limit"), "deep nesting is refused, not a stack overflow");
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
