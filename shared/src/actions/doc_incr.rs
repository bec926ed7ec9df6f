//! `doc.incr {room, doc, path, by, id?}`: add `by` to the number at a JSON pointer (RFC 6901).
//! Increments commute, so they need no `base`: concurrent ones all apply, whatever the
//! strategy. A missing member is created holding `by`; anything else but a number there is a
//! `bad_request`.

use super::{Action, Context};
use crate::documents::{self, DocState, DocWrite, Next};
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Invalid, JsonData, ServerFrame, check_id, check_name};
use crate::state;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Number, Value};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocIncr {
    pub room: String,
    pub doc: String,
    pub path: String,
    pub by: Number,
    #[serde(default)]
    pub id: Option<String>,
}

#[async_trait]
impl Action for DocIncr {
    fn check(&self) -> Result<(), Invalid> {
        check_name("room", &self.room)?;
        check_name("doc", &self.doc)?;
        check_id(self.id.as_deref())?;
        if !self.path.starts_with('/') {
            return Err(Invalid::bad_request("\"path\" must be a JSON pointer to a member, such as \"/likes\""));
        }
        Ok(())
    }

    async fn apply(self, cx: &Context<'_>) -> Result<ServerFrame, EngineError> {
        let write = DocWrite {
            room: &self.room,
            doc: &self.doc,
            decide: |cx: &Context<'_>, current: Option<&DocState>| {
                let current = match current {
                    Some(current) if !current.deleted => current,
                    _ => return Next::Reply(documents::not_found(cx, &self.doc)),
                };
                let mut value: Value = serde_json::from_str(current.value.as_json()).expect("stored JSON");
                match add(&mut value, &self.path, &self.by) {
                    Ok(()) => Next::Write { value: JsonData::from_value(&value), strategy: current.strategy, deleted: false },
                    Err(message) => Next::Reply(cx.error(ErrorCode::BadRequest, message)),
                }
            },
        };
        state::commit(cx, &self.room, self.id.as_deref(), &write).await
    }
}

/// Adds `by` at `path`: integers stay integers while they fit in 64 bits.
fn add(value: &mut Value, path: &str, by: &Number) -> Result<(), String> {
    let (parent, name) = path.rsplit_once('/').expect("checked: the path starts with /");
    let name = name.replace("~1", "/").replace("~0", "~");
    let Some(parent) = value.pointer_mut(parent) else {
        return Err(format!("nothing at {parent:?}: the member's parent must exist"));
    };
    let target = match parent {
        Value::Object(members) => members.entry(name).or_insert(Value::from(0)),
        Value::Array(items) => {
            let index: usize = name.parse().map_err(|_| format!("{name:?} is not an index of the array at {path:?}"))?;
            items.get_mut(index).ok_or_else(|| format!("no item {index} in the array at {path:?}"))?
        }
        other => return Err(format!("the parent of {path:?} is {}, not an object", crate::protocol::json_kind(other))),
    };
    let Value::Number(number) = target else {
        return Err(format!("{path:?} holds {}, not a number", crate::protocol::json_kind(target)));
    };
    let sum = match (number.as_i64(), by.as_i64()) {
        (Some(a), Some(b)) => a.checked_add(b).map(Number::from).ok_or_else(|| format!("{path:?} would overflow"))?,
        _ => {
            let sum = number.as_f64().unwrap_or(0.0) + by.as_f64().unwrap_or(0.0);
            Number::from_f64(sum).ok_or_else(|| format!("{path:?} would not be a finite number"))?
        }
    };
    *target = Value::Number(sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn increments_add_create_and_refuse_what_is_not_a_number() {
        let mut doc = json!({"likes": 2, "stats": {"views": 1.5}, "list": [1, 2], "name": "x"});
        add(&mut doc, "/likes", &Number::from(3)).unwrap();
        add(&mut doc, "/stats/views", &Number::from(1)).unwrap();
        add(&mut doc, "/stats/new", &Number::from(-4)).unwrap();
        add(&mut doc, "/list/1", &Number::from(10)).unwrap();
        assert_eq!(doc, json!({"likes": 5, "stats": {"views": 2.5, "new": -4}, "list": [1, 12], "name": "x"}));
        assert!(add(&mut doc, "/name", &Number::from(1)).unwrap_err().contains("a string, not a number"));
        assert!(add(&mut doc, "/missing/x", &Number::from(1)).unwrap_err().contains("parent must exist"));
        assert!(add(&mut doc, "/list/9", &Number::from(1)).is_err());
        let mut big = json!({"n": i64::MAX});
        assert!(add(&mut big, "/n", &Number::from(1)).unwrap_err().contains("overflow"));
    }
}
