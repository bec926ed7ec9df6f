//! Who is asking, and what they may do: the caller of a request and its room grants.
//!
//! The engine never sees a token. The `$connect` authorizer (a Lambda on AWS, the same code in
//! the runner) verifies the token and hands API Gateway a small context; API Gateway attaches it
//! to every later request of the connection, and the handlers turn it back into a [`Caller`]
//! here. The context is flat strings, as API Gateway requires of an authorizer's context:
//!
//! ```text
//! {"sub": "ann", "read": "[\"lobby\",\"doc-*\"]", "write": "[\"lobby\"]"}
//! ```
//!
//! A runner started without authentication vouches for everyone: its callers are *anonymous*,
//! may read and write every room, and are known to others only by an opaque session id.
//!
//! Grants are room patterns: a room name, or a prefix ending in `*` (`doc-*`; `*` alone is every
//! room). Reading (`join`, `sync`, every `*.get`, `presence`, `doc.history`) needs a read grant;
//! writing (`publish` and every state change) a write grant. A write's reply may carry the state
//! it was decided on (a `conflict` carries the current document), so a write grant also shows
//! what it writes.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;

/// Authorizer context keys.
pub const SUB: &str = "sub";
pub const READ: &str = "read";
pub const WRITE: &str = "write";
/// Present (`"true"`) when the runner runs open and vouched for an anonymous caller.
pub const ANONYMOUS: &str = "anonymous";

/// Room patterns, as a token's `rooms.read` or `rooms.write` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomPatterns(Vec<String>);

impl RoomPatterns {
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RoomPatterns(patterns.into_iter().map(Into::into).collect())
    }

    /// Every room.
    pub fn all() -> Self {
        RoomPatterns(vec!["*".to_owned()])
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    /// Whether a pattern covers `room`: equal to it, or a `prefix*` it starts with.
    pub fn covers(&self, room: &str) -> bool {
        self.0.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => pattern == room,
        })
    }

    /// Checks every pattern is a room name, or a prefix of one followed by `*`.
    pub fn check(&self) -> Result<(), String> {
        for pattern in &self.0 {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            if name.contains('*') {
                return Err(format!("room pattern {pattern:?} may hold `*` only at its end"));
            }
            if !name.is_empty() {
                crate::protocol::check_name("room pattern", name).map_err(|invalid| invalid.message)?;
            } else if pattern.is_empty() {
                return Err("a room pattern must not be empty".to_owned());
            }
        }
        Ok(())
    }
}

/// What a token grants: the rooms it may read and those it may write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub read: RoomPatterns,
    #[serde(default)]
    pub write: RoomPatterns,
}

impl Grants {
    pub fn all() -> Self {
        Grants { read: RoomPatterns::all(), write: RoomPatterns::all() }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Nothing (`ping`; `leave`, which only ever removes the caller's own subscription).
    Open,
    Read(&'a str),
    Write(&'a str),
    /// Both: a `join` as a member reads the room and writes its `joined` event into it.
    ReadWrite(&'a str),
}

impl Access<'_> {
    /// Whether the request writes to its room (and so takes from the write bucket).
    pub fn writes(&self) -> bool {
        matches!(self, Access::Write(_) | Access::ReadWrite(_))
    }
}

/// The caller of a request, as the authorizer vouched for it at `$connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`; `None` for an anonymous caller of an open runner.
    pub user: Option<String>,
    /// An opaque id of the connection that others may see (in presence, as `from`) without
    /// learning the connection id itself, which the connection management API is keyed by.
    pub session: String,
    pub grants: Grants,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("this connection carries no authorization (no \"sub\" in the authorizer context); reconnect with a token")]
    Missing,
    #[error("the authorizer context's {0:?} is not a JSON list of room patterns")]
    Malformed(&'static str),
}

impl Caller {
    /// The caller an open runner vouches for: anonymous, every room granted.
    pub fn anonymous(connection: &str) -> Self {
        Caller { user: None, session: session_of(connection), grants: Grants::all() }
    }

    /// An authenticated caller.
    pub fn user(user: impl Into<String>, connection: &str, grants: Grants) -> Self {
        Caller { user: Some(user.into()), session: session_of(connection), grants }
    }

    /// Whether the caller may do what `access` needs.
    pub fn may(&self, access: Access<'_>) -> bool {
        match access {
            Access::Open => true,
            Access::Read(room) => self.grants.read.covers(room),
            Access::Write(room) => self.grants.write.covers(room),
            Access::ReadWrite(room) => self.grants.read.covers(room) && self.grants.write.covers(room),
        }
    }

    /// Who the caller's events are from: its `sub`, or its session id when anonymous.
    pub fn from(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.session)
    }

    /// The namespace of the caller's idempotency ids: its `sub`, so that another user's id
    /// never collides with (or pre-claims) its own. Anonymous callers share the room's
    /// namespace, so that a retry from a new connection after a reconnect is still recognised.
    pub fn id_scope(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The authorizer context that stands for this caller (what the `$connect` authorizer
    /// returns, and API Gateway attaches to every later event of the connection).
    pub fn to_context(&self) -> HashMap<String, serde_json::Value> {
        let list =
            |patterns: &RoomPatterns| serde_json::Value::String(serde_json::to_string(patterns).expect("strings"));
        let mut context = HashMap::new();
        match &self.user {
            Some(user) => {
                context.insert(SUB.to_owned(), serde_json::Value::String(user.clone()));
            }
            None => {
                context.insert(SUB.to_owned(), serde_json::Value::String(self.session.clone()));
                context.insert(ANONYMOUS.to_owned(), serde_json::Value::String("true".to_owned()));
            }
        }
        context.insert(READ.to_owned(), list(&self.grants.read));
        context.insert(WRITE.to_owned(), list(&self.grants.write));
        context
    }

    /// The caller an authorizer context stands for (see [`Caller::to_context`]).
    pub fn from_context(connection: &str, context: &HashMap<String, serde_json::Value>) -> Result<Self, ContextError> {
        let Some(serde_json::Value::String(sub)) = context.get(SUB) else {
            return Err(ContextError::Missing);
        };
        let patterns = |key: &'static str| -> Result<RoomPatterns, ContextError> {
            match context.get(key) {
                None => Ok(RoomPatterns::default()),
                Some(serde_json::Value::String(json)) => {
                    serde_json::from_str(json).map_err(|_| ContextError::Malformed(key))
                }
                Some(_) => Err(ContextError::Malformed(key)),
            }
        };
        let grants = Grants { read: patterns(READ)?, write: patterns(WRITE)? };
        let anonymous = matches!(context.get(ANONYMOUS), Some(serde_json::Value::String(flag)) if flag == "true");
        Ok(Caller { user: (!anonymous).then(|| sub.clone()), session: session_of(connection), grants })
    }
}

/// A connection's session id: derived from the connection id by a one-way hash, so every host
/// (each Lambda, the runner) computes the same one without storing it, and nobody can go from
/// it back to the connection id.
pub fn session_of(connection: &str) -> String {
    let digest = sha2::Sha256::digest(format!("livesync-session:{connection}").as_bytes());
    let hex: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("s-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_covers_its_room_or_the_rooms_its_prefix_starts() {
        let patterns = RoomPatterns::new(["lobby", "doc-*"]);
        assert!(patterns.covers("lobby"));
        assert!(patterns.covers("doc-1"));
        assert!(patterns.covers("doc-"));
        assert!(!patterns.covers("lobby2"));
        assert!(!patterns.covers("doc"));
        assert!(!patterns.covers("Lobby"));
        assert!(RoomPatterns::all().covers("anything at all"));
        assert!(!RoomPatterns::default().covers("lobby"));
    }

    #[test]
    fn a_star_anywhere_but_the_end_is_refused() {
        assert!(RoomPatterns::new(["a*b"]).check().is_err());
        assert!(RoomPatterns::new(["**"]).check().is_err());
        assert!(RoomPatterns::new([""]).check().is_err());
        assert!(RoomPatterns::new(["a\u{202e}b"]).check().is_err());
        assert!(RoomPatterns::new(["*", "doc-*", "lobby"]).check().is_ok());
    }

    #[test]
    fn read_and_write_are_granted_separately() {
        let caller = Caller::user(
            "ann",
            "c1",
            Grants { read: RoomPatterns::new(["lobby", "news"]), write: RoomPatterns::new(["lobby"]) },
        );
        assert!(caller.may(Access::Read("news")));
        assert!(!caller.may(Access::Write("news")));
        assert!(caller.may(Access::Write("lobby")));
        assert!(!caller.may(Access::Read("secret")));
        assert!(caller.may(Access::Open));
        assert!(caller.may(Access::ReadWrite("lobby")));
        assert!(!caller.may(Access::ReadWrite("news")), "being present in a room writes to it");
    }

    #[test]
    fn a_caller_survives_the_trip_through_the_authorizer_context() {
        let caller =
            Caller::user("ann", "c1", Grants { read: RoomPatterns::new(["a*"]), write: RoomPatterns::default() });
        assert_eq!(Caller::from_context("c1", &caller.to_context()).unwrap(), caller);
        let anonymous = Caller::anonymous("c2");
        let back = Caller::from_context("c2", &anonymous.to_context()).unwrap();
        assert_eq!(back, anonymous);
        assert_eq!(back.id_scope(), None);
        assert_eq!(caller.id_scope(), Some("ann"));
    }

    #[test]
    fn a_missing_or_damaged_context_is_refused() {
        assert_eq!(Caller::from_context("c", &HashMap::new()), Err(ContextError::Missing));
        let mut context = Caller::anonymous("c").to_context();
        context.insert(READ.to_owned(), serde_json::Value::String("lobby".to_owned()));
        assert_eq!(Caller::from_context("c", &context), Err(ContextError::Malformed("read")));
    }

    #[test]
    fn the_session_id_is_stable_and_does_not_reveal_the_connection() {
        assert_eq!(session_of("abc="), session_of("abc="));
        assert_ne!(session_of("abc="), session_of("abd="));
        assert!(!session_of("abc=").contains("abc"));
        assert_eq!(session_of("x").len(), 18);
        let anonymous = Caller::anonymous("conn-1");
        assert_eq!(anonymous.from(), anonymous.session);
        assert_ne!(anonymous.from(), "conn-1");
    }
}
