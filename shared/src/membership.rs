//! Who is in which room: connections, subscriptions, and forgetting a connection that is gone.

use crate::layout;
use crate::store::{Condition, Store, StoreError, Transaction, TxOp};

/// Records a new connection. A repeated `$connect` for the same id just refreshes it.
pub async fn register(store: &dyn Store, connection: &str, now_ms: u64) -> Result<(), StoreError> {
    store.put(layout::connection_item(connection, now_ms), Condition::Always).await?;
    Ok(())
}

/// Subscribes a connection to a room: both sides of the subscription, or neither.
pub async fn subscribe(store: &dyn Store, room: &str, connection: &str, now_ms: u64) -> Result<(), StoreError> {
    let ops = layout::subscription_items(room, connection, now_ms)
        .into_iter()
        .map(|item| TxOp::Put { item, condition: Condition::Always })
        .collect();
    expect_committed(store.transact(ops).await?)
}

pub async fn unsubscribe(store: &dyn Store, room: &str, connection: &str) -> Result<(), StoreError> {
    let ops = vec![
        TxOp::Delete { key: layout::room_subscription_key(room, connection), condition: Condition::Always },
        TxOp::Delete { key: layout::connection_subscription_key(connection, room), condition: Condition::Always },
    ];
    expect_committed(store.transact(ops).await?)
}

/// Removes a connection and every subscription it holds; returns how many rooms it was in.
/// Called on `$disconnect` and when a post finds the connection gone; safe to repeat.
pub async fn forget(store: &dyn Store, connection: &str) -> Result<usize, StoreError> {
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
