//! Versioned JSON documents: one item per document holding its latest version, one history item
//! per kept version, and every accepted write an event of the room carrying the whole new state.
//!
//! A document's `version` counts its accepted writes (1 after creation). A write names the
//! `base` version it was made from; the document's *strategy*, chosen when it is created, says
//! what happens when `base` is not the latest:
//!
//! * `reject` (default): the write is a `conflict` carrying the current version and value, and
//!   the client rebases on it.
//! * `lww` (last writer wins): the write applies whatever its base. Simple and lossy: a write
//!   made without seeing another one overwrites it (its old value stays in the history).
//! * `merge`: a `doc.patch` conflicts only if a field it touches changed after `base`; fields
//!   that others changed meanwhile are kept. Writes of the whole value behave as `reject`.
//!
//! Every write is conditional on the version it read (`version = :read`, or `attribute_not_exists`
//! for a new document), in one transaction with its history item and its event, so two writers
//! can never both build on the same version: the loser reads again and the strategy decides.
//! A deleted document is a tombstone: its history stays, `doc.get` answers `not_found`, and
//! `doc.put` with `base: 0` creates it again under the next version.

use crate::actions::Context;
use crate::engine::EngineError;
use crate::layout;
use crate::protocol::{ErrorCode, JsonData, MAX_DATA_BYTES, MAX_MESSAGE_BYTES, ServerFrame};
use crate::state::{Decision, StateWrite};
use crate::store::{Attr, Condition, Item, Store, StoreError, TxOp};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// How conflicting writes of a document resolve; chosen at creation and kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Reject,
    Lww,
    Merge,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Reject => "reject",
            Strategy::Lww => "lww",
            Strategy::Merge => "merge",
        }
    }

    fn from_name(name: &str) -> Option<Strategy> {
        [Strategy::Reject, Strategy::Lww, Strategy::Merge].into_iter().find(|s| s.name() == name)
    }
}

/// A document at one version: the body of a `doc` reply and the data of its event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocState {
    pub doc: String,
    pub version: u64,
    pub value: JsonData,
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One kept version, as `doc.history` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub value: JsonData,
    pub ts: u64,
    pub from: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The strategy the document had at this version (a deleted document may be created again
    /// with another); not part of a history reply.
    #[serde(skip)]
    pub strategy: Option<Strategy>,
}

/// The reply for a document state.
pub fn reply(cx: &Context<'_>, room: &str, state: DocState) -> ServerFrame {
    ServerFrame::Doc { room: room.to_owned(), state, reference: cx.reference() }
}

/// `not_found` for a document that does not exist (or was deleted).
pub fn not_found(cx: &Context<'_>, doc: &str) -> ServerFrame {
    cx.error(ErrorCode::NotFound, format!("no document {doc:?} in this room"))
}

/// `conflict`, with the document as it stands to rebase on.
pub fn conflict(cx: &Context<'_>, room: &str, current: DocState, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error {
        code: ErrorCode::Conflict,
        message: message.into(),
        current: Some(Box::new(ServerFrame::Doc { room: room.to_owned(), state: current, reference: None })),
        level: None,
        retry_after_ms: None,
        oldest: None,
        reference: cx.reference(),
    }
}

/// The document's latest version, tombstones included.
pub async fn read(store: &dyn Store, room: &str, doc: &str) -> Result<Option<DocState>, StoreError> {
    let Some(item) = store.get(&layout::doc_key(room, doc)).await? else {
        return Ok(None);
    };
    let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
    Ok(Some(DocState {
        doc: doc.to_owned(),
        version: item.number("version").and_then(|v| u64::try_from(v).ok()).ok_or_else(|| malformed("no version"))?,
        value: json_attr(&item, "value")?,
        strategy: item.string("strategy").and_then(Strategy::from_name).ok_or_else(|| malformed("no strategy"))?,
        deleted: item.number("deleted") == Some(1),
    }))
}

/// One kept version of a document, if it is still kept.
pub async fn read_version(
    store: &dyn Store,
    room: &str,
    doc: &str,
    version: u64,
) -> Result<Option<Version>, StoreError> {
    match store.get(&layout::doc_version_key(room, doc, version)).await? {
        Some(item) => version_from(&item).map(Some),
        None => Ok(None),
    }
}

/// Kept versions before `before` (all if `None`), newest first: at most `limit`, and no more
/// than one reply holds. Whether older ones are kept too.
pub async fn history(
    store: &dyn Store,
    room: &str,
    doc: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<Version>, bool), StoreError> {
    let page = store.query(layout::doc_versions(room, doc, before, limit)).await?;
    let mut more = page.more;
    let (mut versions, mut bytes) = (Vec::with_capacity(page.items.len()), 0);
    for item in &page.items {
        let version = version_from(item)?;
        let size = version.value.as_json().len() + version.from.len() + 64;
        if !versions.is_empty() && bytes + size > MAX_MESSAGE_BYTES - 2 * 1024 {
            more = true;
            break;
        }
        bytes += size;
        versions.push(version);
    }
    Ok((versions, more))
}

fn version_from(item: &Item) -> Result<Version, StoreError> {
    let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
    Ok(Version {
        version: item.number("version").and_then(|v| u64::try_from(v).ok()).ok_or_else(|| malformed("no version"))?,
        value: json_attr(item, "value")?,
        ts: item.number("ts").and_then(|ts| u64::try_from(ts).ok()).ok_or_else(|| malformed("no ts"))?,
        from: item.string("from").ok_or_else(|| malformed("no from"))?.to_owned(),
        deleted: item.number("deleted") == Some(1),
        strategy: item.string("strategy").and_then(Strategy::from_name),
    })
}

fn json_attr(item: &Item, name: &str) -> Result<JsonData, StoreError> {
    let text = item
        .string(name)
        .ok_or_else(|| StoreError::Malformed { key: item.key.clone(), reason: format!("no {name}") })?;
    JsonData::from_json(text.to_owned())
        .map_err(|_| StoreError::Malformed { key: item.key.clone(), reason: format!("{name} is not JSON") })
}

/// The next state a request asks for, given the latest one (tombstones included).
pub enum Next {
    Write { value: JsonData, strategy: Strategy, deleted: bool },
    Reply(ServerFrame),
}

/// A write of one document: `decide` turns the latest state into the next one.
pub struct DocWrite<'a, F> {
    pub room: &'a str,
    pub doc: &'a str,
    pub decide: F,
}

#[async_trait]
impl<F> StateWrite for DocWrite<'_, F>
where
    F: Fn(&Context<'_>, Option<&DocState>) -> Next + Send + Sync,
{
    type State = Option<DocState>;
    type Outcome = DocState;
    const KIND: crate::protocol::EventKind = crate::protocol::EventKind::Doc;

    async fn read(&self, cx: &Context<'_>) -> Result<Option<DocState>, EngineError> {
        Ok(read(cx.store, self.room, self.doc).await?)
    }

    fn decide(&self, cx: &Context<'_>, current: Option<DocState>) -> Result<Decision<DocState>, EngineError> {
        let (value, strategy, deleted) = match (self.decide)(cx, current.as_ref()) {
            Next::Write { value, strategy, deleted } => (value, strategy, deleted),
            Next::Reply(frame) => return Ok(Decision::Reply(frame)),
        };
        if value.as_json().len() > MAX_DATA_BYTES {
            return Ok(Decision::Reply(cx.error(
                ErrorCode::TooLarge,
                format!("the document would be {} bytes; the limit is {MAX_DATA_BYTES} bytes", value.as_json().len()),
            )));
        }
        let version = current.as_ref().map_or(0, |c| c.version) + 1;
        let condition = match &current {
            None => Condition::NotExists,
            Some(current) => {
                Condition::Equals { attr: "version".to_owned(), value: Attr::N(version_attr(current.version)) }
            }
        };
        let now = cx.clock.now_ms() as i64;
        let mark = |item: Item| if deleted { item.with("deleted", Attr::N(1)) } else { item };
        let document = mark(
            Item::new(layout::doc_key(self.room, self.doc))
                .with("version", Attr::N(version_attr(version)))
                .with("value", Attr::S(value.as_json().to_owned()))
                .with("strategy", Attr::S(strategy.name().to_owned()))
                .with("ts", Attr::N(now))
                .with("from", Attr::S(cx.caller.from().to_owned())),
        );
        let kept = mark(
            Item::new(layout::doc_version_key(self.room, self.doc, version))
                .with("version", Attr::N(version_attr(version)))
                .with("value", Attr::S(value.as_json().to_owned()))
                .with("strategy", Attr::S(strategy.name().to_owned()))
                .with("ts", Attr::N(now))
                .with("from", Attr::S(cx.caller.from().to_owned())),
        );
        let mut steps =
            vec![TxOp::Put { item: document, condition }, TxOp::Put { item: kept, condition: Condition::Always }];
        if version > cx.history {
            let pruned = layout::doc_version_key(self.room, self.doc, version - cx.history);
            steps.push(TxOp::Delete { key: pruned, condition: Condition::Always });
        }
        Ok(Decision::Change {
            steps,
            outcome: DocState { doc: self.doc.to_owned(), version, value, strategy, deleted },
        })
    }

    fn reply(&self, cx: &Context<'_>, outcome: DocState) -> ServerFrame {
        reply(cx, self.room, outcome)
    }

    fn is_outcome_of(&self, outcome: &DocState) -> bool {
        outcome.doc == self.doc
    }
}

fn version_attr(version: u64) -> i64 {
    layout::seq_attr(version)
}

/// The usual rule of a write at `base`: the document must exist (not deleted) and, unless it
/// is last-writer-wins, be at `base`. Otherwise the reply to send.
pub fn expect_base(
    cx: &Context<'_>,
    room: &str,
    doc: &str,
    current: Option<&DocState>,
    base: u64,
) -> Result<DocState, ServerFrame> {
    let current = match current {
        Some(current) if !current.deleted => current.clone(),
        _ => return Err(not_found(cx, doc)),
    };
    if current.version != base && current.strategy != Strategy::Lww {
        let message = format!("document {doc:?} is at version {}, not {base}: rebase on `current`", current.version);
        return Err(conflict(cx, room, current, message));
    }
    Ok(current)
}

/// How a merge patch touches a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Replaced or removed (`null`): any change there since the base conflicts.
    Value,
    /// Merged into (the patch holds an object there): a conflict only if what is there is, or
    /// was, not an object, since the patch then replaces it whole.
    Object,
}

/// The paths a merge patch touches (RFC 7386: an object merges member by member, anything
/// else, `null` included, replaces or removes the member), parents before their members.
pub fn touched_paths(patch: &serde_json::Value) -> Vec<(Vec<String>, Touch)> {
    fn walk(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Touch)>) {
        let serde_json::Value::Object(members) = value else {
            out.push((path.clone(), Touch::Value));
            return;
        };
        out.push((path.clone(), Touch::Object));
        for (name, member) in members {
            path.push(name.clone());
            walk(member, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(patch, &mut Vec::new(), &mut out);
    out
}

/// Whether a merge patch made on `base` would overwrite a change made since, in `current`.
pub fn patch_conflicts(patch: &serde_json::Value, base: &serde_json::Value, current: &serde_json::Value) -> bool {
    touched_paths(patch).iter().any(|(path, touch)| {
        let (then, now) = (value_at(base, path), value_at(current, path));
        match touch {
            Touch::Value => then != now,
            Touch::Object => {
                then != now && !(then.is_some_and(|v| v.is_object()) && now.is_some_and(|v| v.is_object()))
            }
        }
    })
}

/// The value at a path, if every step of it is an object member.
pub fn value_at<'v>(value: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(value, |value, name| value.as_object()?.get(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_conflicts_only_where_it_would_overwrite_a_change() {
        let base = json!({"a": {"b": 1}, "n": 1, "list": [1], "s": "x"});
        // Someone else changed n and list since the base.
        let current = json!({"a": {"b": 1}, "n": 2, "list": [1, 2], "s": "x"});
        assert!(!patch_conflicts(&json!({"s": "y", "a": {"c": 3}}), &base, &current), "untouched by others");
        assert!(patch_conflicts(&json!({"n": 5}), &base, &current));
        assert!(patch_conflicts(&json!({"n": null}), &base, &current), "removing a changed field");
        assert!(patch_conflicts(&json!({"list": {"x": 1}}), &base, &current), "merging into what became an array");
        // A parent that stopped being an object: merging into it would replace the change.
        let scalar = json!({"a": 5, "n": 1, "list": [1], "s": "x"});
        assert!(patch_conflicts(&json!({"a": {"c": 2}}), &base, &scalar));
        assert!(patch_conflicts(&json!({"a": {}}), &base, &scalar));
        assert!(patch_conflicts(&json!([1]), &base, &current), "a non-object patch replaces the whole");
        assert!(!patch_conflicts(&json!({}), &base, &current));
    }

    #[test]
    fn values_are_found_only_through_objects() {
        let doc = json!({"a": {"b": 2}, "l": [1]});
        assert_eq!(value_at(&doc, &["a".into(), "b".into()]), Some(&json!(2)));
        assert_eq!(value_at(&doc, &["l".into(), "0".into()]), None);
        assert_eq!(value_at(&doc, &[]), Some(&doc));
    }

    #[test]
    fn a_document_reply_has_the_documented_fields() {
        let frame = ServerFrame::Doc {
            room: "r".into(),
            state: DocState {
                doc: "d".into(),
                version: 2,
                value: JsonData::from_value(&json!({"x": 1})),
                strategy: Strategy::Merge,
                deleted: false,
            },
            reference: None,
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type": "doc", "room": "r", "doc": "d", "version": 2, "value": {"x": 1}, "strategy": "merge"})
        );
        let back: ServerFrame = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(back, frame);
    }
}
