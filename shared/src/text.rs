//! Collaborative text by operational transformation, in the JSON form of ot.js's TextOperation:
//! a list where a positive number retains that many characters, a string inserts itself and a
//! negative number deletes that many characters. Browser clients use the `ot` npm package.
//!
//! Lengths count UTF-16 code units, as JavaScript strings do, so that an op built by ot.js over
//! "a😀b" (length 4 there) applies here unchanged. The Rust port of ot.js
//! (`operational-transform`) counts Unicode scalar values instead (length 3), so any text with
//! a character outside the Basic Multilingual Plane (emoji among them) would diverge between
//! the browser and the server; hence this small implementation of the same algorithm.
//!
//! The server keeps a text's current value and revision (`rev`, the number of edits accepted)
//! and its last edits. An edit made at an older revision is transformed past every edit
//! accepted since, in order, exactly as ot.js's server does (`transform(edit, accepted)[0]`, so
//! where both insert at one place the incoming edit's insert comes first), then applied.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One component of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Retain(u64),
    Insert(String),
    Delete(u64),
}

/// A sequence of components covering a whole text, kept in ot.js's canonical form: no empty
/// components, no two of one kind in a row, an insert before a delete at the same place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    ops: Vec<Op>,
    /// Length of the text it applies to, in UTF-16 code units.
    base_len: u64,
    /// Length of the text it produces.
    target_len: u64,
}

/// Why an operation cannot be applied or transformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtError {
    #[error("the edit covers {covers} characters (UTF-16 code units) but the text at that revision has {len}")]
    WrongLength { covers: u64, len: u64 },
    #[error("the edit splits a character in two (a surrogate pair)")]
    SplitCharacter,
}

fn utf16_len(s: &str) -> u64 {
    s.encode_utf16().count() as u64
}

impl Operation {
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn base_len(&self) -> u64 {
        self.base_len
    }

    pub fn retain(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        self.target_len += n;
        match self.ops.last_mut() {
            Some(Op::Retain(last)) => *last += n,
            _ => self.ops.push(Op::Retain(n)),
        }
        self
    }

    pub fn insert(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self;
        }
        self.target_len += utf16_len(s);
        // Canonical order: an insert goes before a delete at the same place.
        let len = self.ops.len();
        match self.ops.as_mut_slice() {
            [.., Op::Insert(last)] => last.push_str(s),
            [.., Op::Insert(before), Op::Delete(_)] => before.push_str(s),
            [.., Op::Delete(_)] => self.ops.insert(len - 1, Op::Insert(s.to_owned())),
            _ => self.ops.push(Op::Insert(s.to_owned())),
        }
        self
    }

    pub fn delete(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        match self.ops.last_mut() {
            Some(Op::Delete(last)) => *last += n,
            _ => self.ops.push(Op::Delete(n)),
        }
        self
    }

    /// Whether the operation changes nothing.
    pub fn is_noop(&self) -> bool {
        self.ops.iter().all(|op| matches!(op, Op::Retain(_)))
    }

    /// The text after this operation.
    pub fn apply(&self, text: &str) -> Result<String, OtError> {
        let units: Vec<u16> = text.encode_utf16().collect();
        if units.len() as u64 != self.base_len {
            return Err(OtError::WrongLength { covers: self.base_len, len: units.len() as u64 });
        }
        let mut out: Vec<u16> = Vec::with_capacity(self.target_len as usize);
        let mut at = 0usize;
        for op in &self.ops {
            match op {
                Op::Retain(n) => {
                    out.extend_from_slice(&units[at..at + *n as usize]);
                    at += *n as usize;
                }
                Op::Insert(s) => out.extend(s.encode_utf16()),
                Op::Delete(n) => at += *n as usize,
            }
        }
        String::from_utf16(&out).map_err(|_| OtError::SplitCharacter)
    }

    /// ot.js's `transform(a, b)`: for two operations on the same text, the pair `(a', b')` with
    /// `apply(apply(s, a), b') == apply(apply(s, b), a')`. Where both insert at one place, `a`'s
    /// insert comes first.
    pub fn transform(a: &Operation, b: &Operation) -> Result<(Operation, Operation), OtError> {
        if a.base_len != b.base_len {
            return Err(OtError::WrongLength { covers: a.base_len, len: b.base_len });
        }
        let (mut a_prime, mut b_prime) = (Operation::default(), Operation::default());
        let (mut ops_a, mut ops_b) = (a.ops.iter().cloned(), b.ops.iter().cloned());
        let (mut op_a, mut op_b) = (ops_a.next(), ops_b.next());
        loop {
            match (op_a.take(), op_b.take()) {
                (None, None) => break,
                (Some(Op::Insert(s)), other) => {
                    b_prime.retain(utf16_len(&s));
                    a_prime.insert(&s);
                    op_a = ops_a.next();
                    op_b = other;
                }
                (other, Some(Op::Insert(s))) => {
                    a_prime.retain(utf16_len(&s));
                    b_prime.insert(&s);
                    op_a = other;
                    op_b = ops_b.next();
                }
                (Some(x), Some(y)) => {
                    let (n, m) = (len_of(&x), len_of(&y));
                    let step = n.min(m);
                    match (&x, &y) {
                        (Op::Retain(_), Op::Retain(_)) => {
                            a_prime.retain(step);
                            b_prime.retain(step);
                        }
                        (Op::Delete(_), Op::Retain(_)) => {
                            a_prime.delete(step);
                        }
                        (Op::Retain(_), Op::Delete(_)) => {
                            b_prime.delete(step);
                        }
                        // Both deleted the same characters: neither needs to again.
                        _ => {}
                    }
                    op_a = if n > step { Some(shorten(x, step)) } else { ops_a.next() };
                    op_b = if m > step { Some(shorten(y, step)) } else { ops_b.next() };
                }
                // Equal base lengths make both run out together; anything else is a broken op.
                (Some(_), None) | (None, Some(_)) => {
                    return Err(OtError::WrongLength { covers: a.base_len, len: b.base_len });
                }
            }
        }
        Ok((a_prime, b_prime))
    }
}

fn len_of(op: &Op) -> u64 {
    match op {
        Op::Retain(n) | Op::Delete(n) => *n,
        Op::Insert(s) => utf16_len(s),
    }
}

fn shorten(op: Op, by: u64) -> Op {
    match op {
        Op::Retain(n) => Op::Retain(n - by),
        Op::Delete(n) => Op::Delete(n - by),
        Op::Insert(s) => Op::Insert(s),
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.ops.len()))?;
        for op in &self.ops {
            match op {
                Op::Retain(n) => seq.serialize_element(n)?,
                Op::Insert(s) => seq.serialize_element(s)?,
                Op::Delete(n) => seq.serialize_element(&-(*n as i64))?,
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ops;
        impl<'de> Visitor<'de> for Ops {
            type Value = Operation;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of positive integers (retain), strings (insert) and negative integers (delete)")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Operation, A::Error> {
                let mut operation = Operation::default();
                while let Some(component) = seq.next_element::<Component>()? {
                    // Bounded so that no sum of lengths can overflow: a frame holds at most
                    // 64 Ki components, each at most 2^32 units long.
                    match component {
                        Component::Count(n) if n.unsigned_abs() > MAX_COUNT => {
                            return Err(de::Error::custom(format!(
                                "an edit component counts {n}; at most {MAX_COUNT}"
                            )));
                        }
                        Component::Count(n) if n > 0 => operation.retain(n as u64),
                        Component::Count(n) if n < 0 => operation.delete(n.unsigned_abs()),
                        Component::Text(s) if !s.is_empty() => operation.insert(&s),
                        _ => return Err(de::Error::custom("an edit component is 0 or \"\"; ot.js never sends those")),
                    };
                }
                Ok(operation)
            }
        }
        deserializer.deserialize_seq(Ops)
    }
}

/// The largest retain or delete count accepted in an edit.
const MAX_COUNT: u64 = u32::MAX as u64;

#[derive(Deserialize)]
#[serde(untagged)]
enum Component {
    Count(i64),
    Text(String),
}

/// An accepted edit: the body of a `text.ack` reply and the data of its event. `rev` is the
/// text's revision after it, `ops` the edit as applied to revision `rev - 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEdit {
    pub doc: String,
    pub rev: u64,
    pub ops: Operation,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(json: &str) -> Operation {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_json_form_is_ot_js_s() {
        let o = op(r#"[2, "xy", -1, 3]"#);
        assert_eq!(o.ops(), &[Op::Retain(2), Op::Insert("xy".into()), Op::Delete(1), Op::Retain(3)]);
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"[2,"xy",-1,3]"#);
        assert_eq!(o.apply("abcdef").unwrap(), "abxydef");
        assert!(serde_json::from_str::<Operation>("[0]").is_err());
        assert!(serde_json::from_str::<Operation>(r#"[""]"#).is_err());
        assert!(serde_json::from_str::<Operation>("[1.5]").is_err());
        assert!(serde_json::from_str::<Operation>(r#"{"a":1}"#).is_err());
        let huge = format!("[{}, -{}, 2]", i64::MAX, i64::MAX);
        assert!(serde_json::from_str::<Operation>(&huge).unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn lengths_count_utf16_code_units_as_javascript_does() {
        // "a😀b" is 4 units long in JavaScript: the emoji is a surrogate pair.
        let text = "a\u{1F600}b";
        assert_eq!(op(r#"[3, "!", 1]"#).apply(text).unwrap(), "a\u{1F600}!b");
        assert_eq!(op(r#"[1, -2, 1]"#).apply(text).unwrap(), "ab");
        assert_eq!(op(r#"[3, "!"]"#).apply(text), Err(OtError::WrongLength { covers: 3, len: 4 }));
        assert_eq!(op(r#"[2, "!", 2]"#).apply(text), Err(OtError::SplitCharacter));
    }

    #[test]
    fn concurrent_inserts_at_one_place_put_the_first_operation_s_first() {
        let a = op(r#"[1, "A", 1]"#);
        let b = op(r#"[1, "B", 1]"#);
        let (a_prime, b_prime) = Operation::transform(&a, &b).unwrap();
        let via_a = b_prime.apply(&a.apply("xy").unwrap()).unwrap();
        let via_b = a_prime.apply(&b.apply("xy").unwrap()).unwrap();
        assert_eq!(via_a, "xABy");
        assert_eq!(via_b, via_a);
    }

    /// A random operation over `text`, in UTF-16 units that never split a character.
    fn operation_over(text: String) -> impl Strategy<Value = (String, Operation)> {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len();
        proptest::collection::vec((0..3u8, 0..4usize, "[a-z\u{e9}\u{1F600}]{1,3}"), 0..8).prop_map(move |steps| {
            let mut operation = Operation::default();
            let mut at = 0;
            for (kind, count, insert) in steps {
                let count = count.min(n - at);
                let covered: String = chars[at..at + count].iter().collect();
                match kind {
                    0 => operation.retain(utf16_len(&covered)),
                    1 => operation.delete(utf16_len(&covered)),
                    _ => operation.insert(&insert),
                };
                if kind != 2 {
                    at += count;
                }
            }
            let rest: String = chars[at..].iter().collect();
            operation.retain(utf16_len(&rest));
            (text.clone(), operation)
        })
    }

    fn text_and_two_operations() -> impl Strategy<Value = (String, Operation, Operation)> {
        "[a-c\u{e9}\u{1F600} ]{0,12}".prop_flat_map(|text| {
            (operation_over(text.clone()), operation_over(text)).prop_map(|((t, a), (_, b))| (t, a, b))
        })
    }

    proptest! {
        /// ot.js's TP1: both orders of applying two concurrent edits end in the same text.
        #[test]
        fn transformed_edits_converge((text, a, b) in text_and_two_operations()) {
            let (a_prime, b_prime) = Operation::transform(&a, &b).unwrap();
            let via_a = b_prime.apply(&a.apply(&text).unwrap()).unwrap();
            let via_b = a_prime.apply(&b.apply(&text).unwrap()).unwrap();
            prop_assert_eq!(via_a, via_b);
        }

        #[test]
        fn operations_survive_their_json_form((_, a, _) in text_and_two_operations()) {
            let back: Operation = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            prop_assert_eq!(back, a);
        }
    }
}
