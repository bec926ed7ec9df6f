//! Who is in which room: connections, subscriptions, presence, and forgetting a connection that
//! is gone.
//!
//! Every subscriber of a room receives its events. A subscriber that joined with a `user` label
//! is also a *member*: it is listed by `presence`, and its joining and leaving are events of
//! the room (kind `presence`), appended in the same transaction as the subscription change, so
//! the log and the member list never disagree.

use crate::access::session_of;
use crate::clock::Clock;
use crate::engine::EngineError;
use crate::layout;
use crate::ordering::{self, Appended, Entry, RoomHeads};
use crate::protocol::{EventKind, JsonData, MAX_MESSAGE_BYTES};
use crate::store::{Condition, Item, Store, StoreError, Transaction, TxOp};
use serde::{Deserialize, Serialize};

/// A member of a room's presence: its user, and the session (one per connection, opaque: see
/// [`crate::access::session_of`]) that tells two tabs of one user apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub session: String,
    pub user: String,
}

impl Member {
    fn of(connection: &str, user: &str) -> Self {
        Member { session: session_of(connection), user: user.to_owned() }
    }
}

/// Subscribes a connection to a room: both sides of the subscription, or neither. With a `user`,
/// a connection not yet subscribed enters the room's presence with a `joined` event. Joining
/// again only refreshes the subscription, and keeps what it was: a member stays the member it
/// joined as (its `joined` event said so), a silent subscriber stays silent.
pub async fn subscribe(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    room: &str,
    connection: &str,
    user: Option<&str>,
) -> Result<(), EngineError> {
    let now_ms = clock.now_ms();
    let existing = store.get(&layout::room_subscription_key(room, connection)).await?;
    if existing.is_none()
        && let Some(user) = user
    {
        let [room_side, connection_side] = layout::subscription_items(room, connection, Some(user), now_ms);
        let member = Member::of(connection, user);
        let steps = vec![
            TxOp::Put { item: room_side, condition: Condition::NotExists },
            TxOp::Put { item: connection_side, condition: Condition::Always },
        ];
        // Refused only if a concurrent join of the same connection subscribed it meanwhile, and
        // that one announced it.
        announce(store, clock, heads, room, "joined", &member, steps).await?;
        return Ok(());
    }
    let user = match &existing {
        Some(subscription) => subscription.string("user"),
        None => None,
    };
    let ops = layout::subscription_items(room, connection, user, now_ms)
        .map(|item| TxOp::Put { item, condition: Condition::Always });
    Ok(expect_committed(store.transact(ops.into()).await?)?)
}

/// Unsubscribes a connection from a room; a member leaves its presence with a `left` event.
pub async fn unsubscribe(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    room: &str,
    connection: &str,
) -> Result<(), EngineError> {
    let room_side = layout::room_subscription_key(room, connection);
    if let Some(subscription) = store.get(&room_side).await? {
        leave(store, clock, heads, room, connection, &subscription).await?;
    }
    let ops = vec![
        TxOp::Delete { key: room_side, condition: Condition::Always },
        TxOp::Delete { key: layout::connection_subscription_key(connection, room), condition: Condition::Always },
    ];
    Ok(expect_committed(store.transact(ops).await?)?)
}

/// A member's leaving: its subscription deleted with the `left` event, if it is still there (a
/// `$disconnect` racing a gone-connection cleanup announces the leaving once).
async fn leave(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    room: &str,
    connection: &str,
    subscription: &Item,
) -> Result<(), EngineError> {
    let Some(user) = subscription.string("user") else {
        return Ok(());
    };
    let member = Member::of(connection, user);
    let steps = vec![
        TxOp::Delete { key: layout::room_subscription_key(room, connection), condition: Condition::Exists },
        TxOp::Delete { key: layout::connection_subscription_key(connection, room), condition: Condition::Always },
    ];
    announce(store, clock, heads, room, "left", &member, steps).await?;
    Ok(())
}

/// Appends a presence event with the subscription change it reports.
async fn announce(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    room: &str,
    what: &str,
    member: &Member,
    steps: Vec<TxOp>,
) -> Result<Appended, EngineError> {
    let data = JsonData::from_value(&serde_json::json!({ what: member }));
    // The event's id says what happened to whom, so that a retried announcement is recognisable.
    let id = format!("presence:{what}:{}", member.session);
    Ok(ordering::append(
        store,
        clock,
        heads,
        Entry {
            room,
            client_id: None,
            fallback_id: &id,
            from: &member.session,
            kind: EventKind::Presence,
            data: &data,
            now_ms: clock.now_ms(),
            steps,
        },
    )
    .await?)
}

/// Removes a connection and every subscription it holds; returns how many rooms it was in.
/// Members leave each room's presence. Called on `$disconnect` and when a post finds the
/// connection gone; safe to repeat.
pub async fn forget(
    store: &dyn Store,
    clock: &dyn Clock,
    heads: &RoomHeads,
    connection: &str,
) -> Result<usize, EngineError> {
    // 49 items per page: each subscription costs two deletes, and with the META item that stays
    // within one 100-step transaction.
    const PAGE: usize = 49;
    let mut rooms = 0;
    loop {
        let page = store.query(layout::connection_items(connection, PAGE)).await?;
        if page.items.is_empty() {
            return Ok(rooms);
        }
        let mut ops = Vec::with_capacity(page.items.len() * 2);
        for item in &page.items {
            if let Some(room) = layout::subscribed_room(item) {
                rooms += 1;
                leave(store, clock, heads, room, connection, item).await?;
                ops.push(TxOp::Delete {
                    key: layout::room_subscription_key(room, connection),
                    condition: Condition::Always,
                });
            }
            ops.push(TxOp::Delete { key: item.key.clone(), condition: Condition::Always });
        }
        expect_committed(store.transact(ops).await?)?;
    }
}

/// A page of a room's subscribers, resuming after `after`.
pub async fn subscribers(
    store: &dyn Store,
    room: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, Option<String>), StoreError> {
    let mut query = layout::subscribers_of(room, limit);
    if let Some(after) = after {
        query = query.after(after);
    }
    let page = store.query(query).await?;
    let resume = if page.more { page.items.last().map(|item| item.key.sk.clone()) } else { None };
    let connections = page.items.iter().filter_map(layout::subscriber).map(str::to_owned).collect();
    Ok((connections, resume))
}

/// The members of a room, in connection order: as many as one reply holds.
pub async fn members(store: &dyn Store, room: &str) -> Result<Vec<Member>, StoreError> {
    const PAGE: usize = 1000;
    let budget = MAX_MESSAGE_BYTES - 4 * 1024;
    let (mut members, mut bytes) = (Vec::new(), 0);
    let mut query = layout::subscribers_of(room, PAGE);
    loop {
        let page = store.query(query.clone()).await?;
        for item in &page.items {
            let (Some(connection), Some(user)) = (layout::subscriber(item), item.string("user")) else {
                continue;
            };
            let member = Member::of(connection, user);
            // As JSON, escapes included: what the reply will carry.
            bytes += serde_json::to_string(&member).map_or(0, |json| json.len()) + 1;
            if bytes > budget {
                return Ok(members);
            }
            members.push(member);
        }
        match (page.more, page.items.last()) {
            (true, Some(last)) => query = query.after(last.key.sk.clone()),
            _ => return Ok(members),
        }
    }
}

fn expect_committed(outcome: Transaction) -> Result<(), StoreError> {
    match outcome {
        Transaction::Committed => Ok(()),
        // Every step above is unconditional, so a conflict means the store broke its contract.
        Transaction::Conflict { failed } => Err(StoreError::Invalid(format!(
            "unconditional transaction reported failed conditions at steps {:?}",
            failed.iter().map(|f| f.index).collect::<Vec<_>>()
        ))),
    }
}
