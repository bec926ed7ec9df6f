//! `doc.incr {room, doc, path, by, id?}`: add `by` to the number at a JSON pointer (RFC 6901).
//! Increments commute, so they need no `base`: concurrent ones all apply, whatever the
//! strategy. A missing member is created holding `by`; anything else but a number there is a
//! `bad_request`.

use super::{Action, Context};
use crate::access::Access;
use crate::documents::{self, DocState, DocWrite, Next};
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Invalid, JsonData, ServerFrame, check_write};
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
        check_write(&self.room, "doc", &self.doc, self.id.as_deref())?;
        if !self.path.starts_with('/') {
            return Err(Invalid::bad_request("\"path\" must be a JSON pointer to a member, such as \"/likes\""));
        }
        Ok(())
    }

    fn access(&self) -> Access<'_> {
        Access::Write(&self.room)
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

/// The reference tokens of a JSON pointer (RFC 6901), unescaped; `None` if it is not one.
fn tokens(path: &str) -> Option<Vec<String>> {
    path.strip_prefix('/')?
        .split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    },
                    (c, false) => out.push(c),
                }
            }
            Some(out)
        })
        .collect()
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    (digits && !token.is_empty() && (token == "0" || !token.starts_with('0'))).then(|| token.parse().ok()).flatten()
}

/// Adds `by` at `path`: integers stay exact integers while they fit in 64 bits.
fn add(value: &mut Value, path: &str, by: &Number) -> Result<(), String> {
    let tokens = tokens(path).ok_or_else(|| format!("{path:?} is not a JSON pointer (RFC 6901): \"~\" must be followed by 0 or 1"))?;
    let (name, parents) = tokens.split_last().expect("a pointer starting with / has a token");
    let mut parent = &mut *value;
    for token in parents {
        parent = match parent {
            Value::Object(members) => members.get_mut(token),
            Value::Array(items) => index(token).and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("nothing at {token:?} in {path:?}: the member's parent must exist"))?;
    }
    let target = match parent {
        Value::Object(members) => members.entry(name.clone()).or_insert(Value::from(0)),
        Value::Array(items) => {
            let at = index(name).ok_or_else(|| format!("{name:?} is not an index of the array at {path:?}"))?;
            items.get_mut(at).ok_or_else(|| format!("no item {at} in the array at {path:?}"))?
        }
        other => return Err(format!("the parent of {path:?} is {}, not an object", crate::protocol::json_kind(other))),
    };
    let Value::Number(number) = target else {
        return Err(format!("{path:?} holds {}, not a number", crate::protocol::json_kind(target)));
    };
    let exact = |n: &Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    let sum = match (exact(number), exact(by)) {
        (Some(a), Some(b)) => {
            let sum = a + b;
            i64::try_from(sum)
                .map(Number::from)
                .or_else(|_| u64::try_from(sum).map(Number::from))
                .map_err(|_| format!("{path:?} would overflow"))?
        }
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
        let mut big = json!({"n": i64::MAX, "u": u64::MAX});
        add(&mut big, "/n", &Number::from(1)).unwrap();
        assert_eq!(big["n"], json!(i64::MAX as u64 + 1), "exact past i64");
        assert!(add(&mut big, "/u", &Number::from(1)).unwrap_err().contains("overflow"));
    }

    #[test]
    fn pointers_are_read_as_rfc_6901_writes_them() {
        let mut doc = json!({"a/b": 1, "m~n": 1, "list": [1, 2]});
        add(&mut doc, "/a~1b", &Number::from(1)).unwrap();
        add(&mut doc, "/m~0n", &Number::from(1)).unwrap();
        assert_eq!((doc["a/b"].as_i64(), doc["m~n"].as_i64()), (Some(2), Some(2)));
        for bad in ["/~2", "/~", "/list/01", "/list/+1", "/list/-"] {
            assert!(add(&mut doc, bad, &Number::from(1)).is_err(), "{bad}");
        }
    }
}
