//! The store conformance suite: what every [`Store`] must do, written once.
//!
//! A store crate runs it with
//! `livesync_core::store_conformance_tests!(make_store);`, where `make_store` is an async fn
//! returning a [`StoreFixture`]: a fresh, empty store, and whatever must live as long as it (a
//! temporary directory, a table). Each check becomes one `#[tokio::test]`.
//!
//! Besides the store contract itself, the last checks run the engine over the store as several
//! Lambdas would (separate engines sharing only the store): the properties LiveSync promises
//! must hold on every store, not just the store's operations.
//!
//! Each check expects a fresh, empty store of its own: the change-feed checks count records.

use super::*;
use crate::access::Caller;
use crate::clock::{Clock, SystemClock};
use crate::engine::Engine;
use crate::layout;
use crate::protocol::ServerFrame;
use std::sync::Arc;
use std::time::Duration;

/// A fresh store for one check.
pub trait StoreFixture {
    fn store(&self) -> Arc<dyn Store>;
}

/// Stamps out one test per conformance check, against the stores `$make` creates.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@tests $make;
            a_put_item_is_read_back_whole,
            put_if_absent_conflicts_with_the_current_item,
            a_versioned_put_succeeds_only_on_the_expected_version,
            an_exists_condition_on_a_missing_item_conflicts_with_nothing,
            an_update_sets_and_removes_attributes_and_keeps_the_rest,
            an_update_of_the_key_or_of_one_attribute_twice_is_invalid,
            a_versioned_update_conflicts_with_the_current_item,
            deletes_are_conditional_and_absent_items_delete_cleanly,
            a_transaction_applies_all_of_its_steps,
            a_failed_transaction_changes_nothing_and_names_each_failed_step,
            a_transaction_check_step_guards_without_writing,
            invalid_transactions_are_errors_not_conflicts,
            a_query_reads_one_partition_in_sort_key_order,
            a_query_pages_with_limit_more_and_after,
            a_query_reads_backwards_from_the_end,
            a_query_selects_by_prefix_or_range,
            the_ttl_attribute_is_stored_like_any_other,
            the_change_feed_carries_every_change_in_commit_order,
            the_change_feed_starts_now_and_skips_failed_conditions,
            concurrent_conditional_puts_have_exactly_one_winner,
            separate_engines_sharing_the_store_never_share_or_skip_a_seq,
            an_engine_far_behind_the_head_still_takes_the_next_seq,
            the_same_client_id_through_two_engines_is_one_event,
            a_publish_whose_answer_was_lost_and_retried_is_stored_once,
            publishes_queued_in_one_process_are_written_in_groups_in_order_and_once,
            a_stale_version_in_a_transaction_fails_that_step_and_writes_nothing,
            sixteen_buyers_of_ten_units_sell_exactly_ten_and_retries_sell_once,
            concurrent_increments_all_count,
            of_two_writes_at_one_base_version_one_wins_and_one_conflicts_with_the_current_state,
            concurrent_text_edits_converge_on_the_server_text,
            every_state_change_is_an_event_of_its_room_in_version_order,
            a_member_who_disconnects_leaves_presence_once,
            copies_of_one_write_sent_at_once_all_get_its_outcome,
            a_lacks_condition_holds_only_on_an_item_without_the_attribute,
            a_below_condition_lets_a_marker_only_move_forward,
            an_expired_since_gets_expired_with_the_oldest_seq_still_held,
            a_room_whose_every_event_expired_goes_on_from_its_head,
            an_id_whose_record_expired_is_a_new_publish_even_before_ttl_deletes_it,
            each_user_has_its_own_ids_and_a_changed_repeat_is_a_conflict,
            a_room_outside_the_grant_is_forbidden_and_nothing_is_stored,
            concurrent_writes_of_one_connection_or_user_take_exactly_the_burst,
        );
    };
    (@tests $make:path; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $make().await;
                let store = $crate::store::conformance::StoreFixture::store(&fixture);
                $crate::store::conformance::$check(store).await;
            }
        )*
    };
}

/// Long enough for any healthy store; only a broken feed ever waits this long.
const FEED_PATIENCE: Duration = Duration::from_secs(20);

fn item(pk: &str, sk: &str) -> Item {
    Item::new(Key::new(pk, sk))
}

async fn put(store: &dyn Store, item: Item) {
    assert_eq!(store.put(item, Condition::Always).await.unwrap(), Write::Done);
}

fn sort_keys(page: &Page) -> Vec<&str> {
    page.items.iter().map(|i| i.key.sk.as_str()).collect()
}

pub async fn a_put_item_is_read_back_whole(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let written = item("P#read", "a").with("s", Attr::S("ünïcødé \"quoted\"".into())).with("n", Attr::N(-42));
    put(store, written.clone()).await;
    assert_eq!(store.get(&written.key).await.unwrap(), Some(written));
    assert_eq!(store.get(&Key::new("P#read", "b")).await.unwrap(), None);
}

pub async fn put_if_absent_conflicts_with_the_current_item(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let first = item("P#absent", "x").with("v", Attr::N(1));
    assert_eq!(store.put(first.clone(), Condition::NotExists).await.unwrap(), Write::Done);
    let second = item("P#absent", "x").with("v", Attr::N(2));
    assert_eq!(
        store.put(second, Condition::NotExists).await.unwrap(),
        Write::Conflict { current: Some(first.clone()) }
    );
    assert_eq!(store.get(&first.key).await.unwrap(), Some(first));
}

pub async fn a_versioned_put_succeeds_only_on_the_expected_version(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let v1 = item("P#version", "doc").with("version", Attr::N(1)).with("body", Attr::S("one".into()));
    put(store, v1.clone()).await;
    let v2 = item("P#version", "doc").with("version", Attr::N(2)).with("body", Attr::S("two".into()));
    let on_v1 = Condition::Equals { attr: "version".into(), value: Attr::N(1) };
    assert_eq!(store.put(v2.clone(), on_v1.clone()).await.unwrap(), Write::Done);
    // A second writer that also read version 1 loses, and learns what is there now.
    let stale = item("P#version", "doc").with("version", Attr::N(2)).with("body", Attr::S("other".into()));
    assert_eq!(store.put(stale, on_v1).await.unwrap(), Write::Conflict { current: Some(v2.clone()) });
    assert_eq!(store.get(&v2.key).await.unwrap(), Some(v2));
}

pub async fn an_exists_condition_on_a_missing_item_conflicts_with_nothing(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let ghost = item("P#exists", "ghost");
    assert_eq!(store.put(ghost.clone(), Condition::Exists).await.unwrap(), Write::Conflict { current: None });
    let equals = Condition::Equals { attr: "version".into(), value: Attr::N(1) };
    assert_eq!(store.put(ghost.clone(), equals).await.unwrap(), Write::Conflict { current: None });
    assert_eq!(store.get(&ghost.key).await.unwrap(), None);
}

pub async fn an_update_sets_and_removes_attributes_and_keeps_the_rest(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let key = Key::new("P#update", "doc");
    let created = store.update(&key, Update::default().set("a", Attr::N(1)), Condition::NotExists).await.unwrap();
    assert_eq!(created, Write::Done, "an update creates an absent item");
    let update = Update::default().set("b", Attr::S("two".into())).set("c", Attr::N(3));
    assert_eq!(store.update(&key, update, Condition::Exists).await.unwrap(), Write::Done);
    let update = Update::default().set("a", Attr::N(10)).remove("c").remove("never-there");
    assert_eq!(store.update(&key, update, Condition::Always).await.unwrap(), Write::Done);
    let expected = item("P#update", "doc").with("a", Attr::N(10)).with("b", Attr::S("two".into()));
    assert_eq!(store.get(&key).await.unwrap(), Some(expected));
}

pub async fn an_update_of_the_key_or_of_one_attribute_twice_is_invalid(store: Arc<dyn Store>) {
    let key = Key::new("P#update-invalid", "doc");
    for update in [
        Update::default().set("sk", Attr::S("moved".into())),
        Update::default().remove("pk"),
        Update::default().set("a", Attr::N(1)).remove("a"),
    ] {
        let outcome = store.update(&key, update.clone(), Condition::Always).await;
        assert!(matches!(outcome, Err(StoreError::Invalid(_))), "{update:?}: {outcome:?}");
    }
    assert_eq!(store.get(&key).await.unwrap(), None, "an invalid update writes nothing");
}

pub async fn a_versioned_update_conflicts_with_the_current_item(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let key = Key::new("P#update-version", "doc");
    put(store, item("P#update-version", "doc").with("version", Attr::N(5)).with("body", Attr::S("v5".into()))).await;
    let on_v4 = Condition::Equals { attr: "version".into(), value: Attr::N(4) };
    let stale = Update::default().set("version", Attr::N(5)).set("body", Attr::S("lost".into()));
    let current = item("P#update-version", "doc").with("version", Attr::N(5)).with("body", Attr::S("v5".into()));
    assert_eq!(store.update(&key, stale, on_v4).await.unwrap(), Write::Conflict { current: Some(current.clone()) });
    assert_eq!(store.get(&key).await.unwrap(), Some(current));
    let missing = Key::new("P#update-version", "missing");
    let outcome = store.update(&missing, Update::default().set("x", Attr::N(1)), Condition::Exists).await.unwrap();
    assert_eq!(outcome, Write::Conflict { current: None });
    assert_eq!(store.get(&missing).await.unwrap(), None);
}

pub async fn deletes_are_conditional_and_absent_items_delete_cleanly(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let kept = item("P#delete", "k").with("version", Attr::N(3));
    put(store, kept.clone()).await;
    let wrong_version = Condition::Equals { attr: "version".into(), value: Attr::N(2) };
    assert_eq!(store.delete(&kept.key, wrong_version).await.unwrap(), Write::Conflict { current: Some(kept.clone()) });
    assert_eq!(store.get(&kept.key).await.unwrap(), Some(kept.clone()));
    assert_eq!(store.delete(&kept.key, Condition::Exists).await.unwrap(), Write::Done);
    assert_eq!(store.get(&kept.key).await.unwrap(), None);
    assert_eq!(store.delete(&kept.key, Condition::Always).await.unwrap(), Write::Done);
    assert_eq!(store.delete(&kept.key, Condition::Exists).await.unwrap(), Write::Conflict { current: None });
}

pub async fn a_transaction_applies_all_of_its_steps(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let doomed = item("P#tx-all", "old");
    put(store, doomed.clone()).await;
    let a = item("P#tx-all", "a").with("n", Attr::N(1));
    let b = item("P#tx-all-other", "b").with("n", Attr::N(2));
    let outcome = store
        .transact(vec![
            TxOp::Put { item: a.clone(), condition: Condition::NotExists },
            TxOp::Put { item: b.clone(), condition: Condition::NotExists },
            TxOp::Delete { key: doomed.key.clone(), condition: Condition::Exists },
        ])
        .await
        .unwrap();
    assert_eq!(outcome, Transaction::Committed);
    assert_eq!(store.get(&a.key).await.unwrap(), Some(a));
    assert_eq!(store.get(&b.key).await.unwrap(), Some(b));
    assert_eq!(store.get(&doomed.key).await.unwrap(), None);
}

pub async fn a_failed_transaction_changes_nothing_and_names_each_failed_step(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let taken = item("P#tx-fail", "taken").with("owner", Attr::S("first".into()));
    put(store, taken.clone()).await;
    let fresh = item("P#tx-fail", "fresh");
    let outcome = store
        .transact(vec![
            TxOp::Put { item: fresh.clone(), condition: Condition::NotExists },
            TxOp::Put { item: item("P#tx-fail", "taken"), condition: Condition::NotExists },
            TxOp::Delete { key: Key::new("P#tx-fail", "missing"), condition: Condition::Exists },
        ])
        .await
        .unwrap();
    let Transaction::Conflict { failed } = outcome else { panic!("expected a conflict, got {outcome:?}") };
    let mut failed_steps: Vec<usize> = failed.iter().map(|f| f.index).collect();
    failed_steps.sort();
    assert_eq!(failed_steps, vec![1, 2]);
    let on_taken = failed.iter().find(|f| f.index == 1).unwrap();
    assert_eq!(on_taken.current, Some(taken.clone()));
    assert_eq!(store.get(&fresh.key).await.unwrap(), None, "the passing step must not apply");
    assert_eq!(store.get(&taken.key).await.unwrap(), Some(taken));
}

pub async fn a_transaction_check_step_guards_without_writing(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let guard = item("P#tx-check", "guard").with("open", Attr::N(1));
    put(store, guard.clone()).await;
    let entry = item("P#tx-check", "entry");
    let open = Condition::Equals { attr: "open".into(), value: Attr::N(1) };
    let outcome = store
        .transact(vec![
            TxOp::Check { key: guard.key.clone(), condition: open.clone() },
            TxOp::Put { item: entry.clone(), condition: Condition::Always },
        ])
        .await
        .unwrap();
    assert_eq!(outcome, Transaction::Committed);
    assert_eq!(store.get(&guard.key).await.unwrap(), Some(guard.clone()));
    assert_eq!(store.get(&entry.key).await.unwrap(), Some(entry));

    let closed = guard.clone().with("open", Attr::N(0));
    put(store, closed.clone()).await;
    let refused = store
        .transact(vec![
            TxOp::Check { key: guard.key.clone(), condition: open },
            TxOp::Put { item: item("P#tx-check", "late"), condition: Condition::Always },
        ])
        .await
        .unwrap();
    assert_eq!(refused, Transaction::Conflict { failed: vec![FailedCondition { index: 0, current: Some(closed) }] });
    assert_eq!(store.get(&Key::new("P#tx-check", "late")).await.unwrap(), None);
}

pub async fn invalid_transactions_are_errors_not_conflicts(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let twice = vec![
        TxOp::Put { item: item("P#tx-invalid", "same"), condition: Condition::Always },
        TxOp::Delete { key: Key::new("P#tx-invalid", "same"), condition: Condition::Always },
    ];
    assert!(matches!(store.transact(twice).await, Err(StoreError::Invalid(_))));
    let too_many = (0..=MAX_TRANSACTION_OPS)
        .map(|i| TxOp::Put { item: item("P#tx-invalid", &format!("{i:03}")), condition: Condition::Always })
        .collect();
    assert!(matches!(store.transact(too_many).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.transact(Vec::new()).await, Err(StoreError::Invalid(_))));
    let page = store.query(Query::new("P#tx-invalid", SortKeys::All, 10)).await.unwrap();
    assert!(page.items.is_empty(), "an invalid transaction must write nothing");
}

pub async fn a_query_reads_one_partition_in_sort_key_order(store: Arc<dyn Store>) {
    let store = store.as_ref();
    for sk in ["b", "a", "B", "c#1", "c", "é"] {
        put(store, item("P#query-order", sk)).await;
    }
    put(store, item("P#query-order-neighbour", "a")).await;
    put(store, item("P#query-orde", "z")).await;
    let page = store.query(Query::new("P#query-order", SortKeys::All, 100)).await.unwrap();
    // Byte-wise order, as DynamoDB compares string keys.
    assert_eq!(sort_keys(&page), vec!["B", "a", "b", "c", "c#1", "é"]);
    assert!(!page.more);
}

pub async fn a_query_pages_with_limit_more_and_after(store: Arc<dyn Store>) {
    let store = store.as_ref();
    for i in 0..7 {
        put(store, item("P#query-pages", &format!("k{i}"))).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = Query::new("P#query-pages", SortKeys::All, 3);
        if let Some(sk) = &after {
            query = query.after(sk.clone());
        }
        let page = store.query(query).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|i| i.key.sk.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|i| i.key.sk.clone());
    }
    assert_eq!(seen, (0..7).map(|i| format!("k{i}")).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    let exact = store.query(Query::new("P#query-pages", SortKeys::All, 7)).await.unwrap();
    assert_eq!(exact.items.len(), 7);
    assert!(!exact.more, "a page that reaches the end says so");
}

pub async fn a_query_reads_backwards_from_the_end(store: Arc<dyn Store>) {
    let store = store.as_ref();
    for sk in ["e1", "e2", "e3", "x"] {
        put(store, item("P#query-back", sk)).await;
    }
    let newest = store.query(Query::new("P#query-back", SortKeys::Prefix("e".into()), 1).descending()).await.unwrap();
    assert_eq!(sort_keys(&newest), vec!["e3"]);
    assert!(newest.more);
    let rest = store
        .query(Query::new("P#query-back", SortKeys::Prefix("e".into()), 5).descending().after("e3"))
        .await
        .unwrap();
    assert_eq!(sort_keys(&rest), vec!["e2", "e1"]);
    assert!(!rest.more);
}

pub async fn a_query_selects_by_prefix_or_range(store: Arc<dyn Store>) {
    let store = store.as_ref();
    for sk in ["EVT#01", "EVT#02", "EVT#03", "ID#x", "SUB#c1", "SUB#c2"] {
        put(store, item("P#query-select", sk)).await;
    }
    let subs = store.query(Query::new("P#query-select", SortKeys::Prefix("SUB#".into()), 10)).await.unwrap();
    assert_eq!(sort_keys(&subs), vec!["SUB#c1", "SUB#c2"]);
    let range = SortKeys::Between("EVT#02".into(), "EVT#03".into());
    let events = store.query(Query::new("P#query-select", range, 10)).await.unwrap();
    assert_eq!(sort_keys(&events), vec!["EVT#02", "EVT#03"]);
    let after =
        store.query(Query::new("P#query-select", SortKeys::Prefix("EVT#".into()), 10).after("EVT#01")).await.unwrap();
    assert_eq!(sort_keys(&after), vec!["EVT#02", "EVT#03"]);
    let none = store.query(Query::new("P#query-select", SortKeys::Prefix("NOPE#".into()), 10)).await.unwrap();
    assert_eq!(none, Page::default());
}

pub async fn the_ttl_attribute_is_stored_like_any_other(store: Arc<dyn Store>) {
    let store = store.as_ref();
    // Far in the future: no store may have expired it yet.
    let session = item("P#ttl", "session").with(TTL_ATTRIBUTE, Attr::N(4_102_444_800));
    put(store, session.clone()).await;
    let read = store.get(&session.key).await.unwrap().unwrap();
    assert_eq!(read.expires_at(), Some(4_102_444_800));
    assert_eq!(read, session);
}

async fn next_changes(feed: &mut Box<dyn ChangeFeed>, count: usize) -> Vec<Change> {
    let mut changes = Vec::new();
    while changes.len() < count {
        let batch = tokio::time::timeout(FEED_PATIENCE, feed.next_batch(count - changes.len()))
            .await
            .expect("the change feed delivered nothing")
            .unwrap();
        assert!(!batch.is_empty(), "a batch holds at least one change");
        changes.extend(batch);
    }
    changes
}

pub async fn the_change_feed_carries_every_change_in_commit_order(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let mut feed = store.change_feed().await.unwrap();
    let v1 = item("P#feed", "doc").with("v", Attr::N(1));
    let v2 = item("P#feed", "doc").with("v", Attr::N(2));
    put(store, v1.clone()).await;
    put(store, v2.clone()).await;
    store.delete(&v2.key, Condition::Always).await.unwrap();
    let e1 = item("P#feed", "e1");
    let e2 = item("P#feed", "e2");
    store
        .transact(vec![
            TxOp::Put { item: e1.clone(), condition: Condition::NotExists },
            TxOp::Put { item: e2.clone(), condition: Condition::NotExists },
        ])
        .await
        .unwrap();
    let changes: Vec<Change> = next_changes(&mut feed, 5).await.into_iter().filter(|c| c.key.pk == "P#feed").collect();
    let expected = [
        Change { kind: ChangeKind::Insert, key: v1.key.clone(), new: Some(v1.clone()) },
        Change { kind: ChangeKind::Modify, key: v1.key.clone(), new: Some(v2.clone()) },
        Change { kind: ChangeKind::Remove, key: v2.key.clone(), new: None },
    ];
    assert_eq!(changes[..3], expected[..]);
    // The two steps of a transaction may appear in either order, but both appear.
    let mut tx_keys: Vec<&Key> = changes[3..].iter().map(|c| &c.key).collect();
    tx_keys.sort();
    assert_eq!(tx_keys, vec![&e1.key, &e2.key]);
    assert!(changes[3..].iter().all(|c| c.kind == ChangeKind::Insert));
}

pub async fn the_change_feed_starts_now_and_skips_failed_conditions(store: Arc<dyn Store>) {
    let store = store.as_ref();
    put(store, item("P#feed-now", "before")).await;
    let mut feed = store.change_feed().await.unwrap();
    let refused = store.put(item("P#feed-now", "before"), Condition::NotExists).await.unwrap();
    assert!(matches!(refused, Write::Conflict { .. }));
    store.delete(&Key::new("P#feed-now", "never-was"), Condition::Exists).await.unwrap();
    put(store, item("P#feed-now", "after")).await;
    let changes = next_changes(&mut feed, 1).await;
    let keys: Vec<&str> = changes.iter().filter(|c| c.key.pk == "P#feed-now").map(|c| c.key.sk.as_str()).collect();
    assert_eq!(keys, vec!["after"]);
}

pub async fn concurrent_conditional_puts_have_exactly_one_winner(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let attempts = (0..8).map(|writer| {
        let claim = item("P#race", "seq-1").with("writer", Attr::N(writer));
        store.put(claim, Condition::NotExists)
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let winners: Vec<i64> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| matches!(outcome, Ok(Write::Done)))
        .map(|(writer, _)| writer as i64)
        .collect();
    assert_eq!(winners.len(), 1, "outcomes: {outcomes:?}");
    let stored = store.get(&Key::new("P#race", "seq-1")).await.unwrap().unwrap();
    assert_eq!(stored.number("writer"), Some(winners[0]));
    for outcome in outcomes {
        match outcome.unwrap() {
            Write::Done => {}
            Write::Conflict { current } => assert_eq!(current.as_ref(), Some(&stored)),
        }
    }
}

fn acked_seq(frame: ServerFrame) -> u64 {
    match frame {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn engine(store: &Arc<dyn Store>) -> Arc<Engine> {
    Arc::new(Engine::new(store.clone(), Arc::new(SystemClock)))
}

pub async fn separate_engines_sharing_the_store_never_share_or_skip_a_seq(store: Arc<dyn Store>) {
    const ENGINES: usize = 6;
    const EACH: usize = 40;
    let tasks: Vec<_> = (0..ENGINES)
        .map(|e| {
            let engine = engine(&store);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..EACH {
                    let body = format!(r#"{{"action":"publish","room":"hot","data":[{e},{n}]}}"#);
                    seqs.push(acked_seq(
                        engine
                            .handle(
                                &Caller::anonymous(&format!("conn-{e}")),
                                &format!("conn-{e}"),
                                &format!("req-{e}-{n}"),
                                &body,
                            )
                            .await,
                    ));
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=(ENGINES * EACH) as u64).collect::<Vec<_>>());
}

pub async fn an_engine_far_behind_the_head_still_takes_the_next_seq(store: Arc<dyn Store>) {
    let behind = engine(&store);
    let busy = engine(&store);
    let publish = r#"{"action":"publish","room":"r","data":1}"#;
    assert_eq!(acked_seq(behind.handle(&Caller::anonymous("a"), "a", "req-0", publish).await), 1);
    for n in 0..30 {
        busy.handle(&Caller::anonymous("b"), "b", &format!("req-b{n}"), publish).await;
    }
    assert_eq!(acked_seq(behind.handle(&Caller::anonymous("a"), "a", "req-1", publish).await), 32);
}

pub async fn the_same_client_id_through_two_engines_is_one_event(store: Arc<dyn Store>) {
    let (first, second) = (engine(&store), engine(&store));
    let body = r#"{"action":"publish","room":"r","id":"pay-1","data":{"amount":5}}"#;
    let (c1, c2) = (Caller::anonymous("c1"), Caller::anonymous("c2"));
    let (a, b) = tokio::join!(first.handle(&c1, "c1", "q1", body), second.handle(&c2, "c2", "q2", body));
    assert_eq!(acked_seq(a), 1);
    assert_eq!(acked_seq(b), 1);
    let next = first.handle(&Caller::anonymous("c1"), "c1", "q3", r#"{"action":"publish","room":"r","data":0}"#).await;
    assert_eq!(acked_seq(next), 2, "the repeat created no event");
}

/// A store whose every put reaches the table twice, as when an SDK retries a put whose answer
/// was lost: the second attempt finds the first one's item.
struct RetriedPuts(Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for RetriedPuts {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.0.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError> {
        match self.0.put(item.clone(), condition.clone()).await? {
            Write::Done => self.0.put(item, condition).await,
            conflict => Ok(conflict),
        }
    }
    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError> {
        self.0.update(key, update, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError> {
        self.0.delete(key, condition).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        self.0.transact(ops).await
    }
    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        self.0.query(query).await
    }
    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        self.0.change_feed().await
    }
}

pub async fn a_publish_whose_answer_was_lost_and_retried_is_stored_once(store: Arc<dyn Store>) {
    let retried: Arc<dyn Store> = Arc::new(RetriedPuts(store.clone()));
    let publisher = engine(&retried);
    let body = r#"{"action":"publish","room":"lost","data":"once"}"#;
    assert_eq!(acked_seq(publisher.handle(&Caller::anonymous("c1"), "c1", "req-1", body).await), 1);
    assert_eq!(acked_seq(publisher.handle(&Caller::anonymous("c1"), "c1", "req-2", body).await), 2);
    let page = store.query(crate::layout::events_after("lost", 0, 10)).await.unwrap();
    assert_eq!(page.items.len(), 2, "each publish stored exactly once");
}

/// A store that counts the writes it is asked for.
struct CountedWrites(Arc<dyn Store>, std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl Store for CountedWrites {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.0.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.put(item, condition).await
    }
    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError> {
        self.0.update(key, update, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError> {
        self.0.delete(key, condition).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.transact(ops).await
    }
    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        self.0.query(query).await
    }
    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        self.0.change_feed().await
    }
}

pub async fn publishes_queued_in_one_process_are_written_in_groups_in_order_and_once(store: Arc<dyn Store>) {
    use serde_json::json;
    // GIVEN one process (engine) over a store that counts its writes, and an id already used,
    let counted = Arc::new(CountedWrites(store.clone(), std::sync::atomic::AtomicUsize::new(0)));
    let process = engine(&(counted.clone() as Arc<dyn Store>));
    let first =
        ask(&process, "c0", "q-first", json!({"action": "publish", "room": "g", "id": "dup", "data": "first"})).await;
    assert_eq!(first["seq"], 1, "{first}");
    // WHEN 60 publishes arrive at once (two of them repeats of that id, two copies of a new
    // id, half of the others with ids of their own),
    let publishes = (0..60).map(|n| {
        let body = match n {
            0 | 30 => json!({"action": "publish", "room": "g", "id": "dup", "data": "first"}),
            11 | 41 => json!({"action": "publish", "room": "g", "id": "twin", "data": "twin"}),
            n if n % 2 == 0 => json!({"action": "publish", "room": "g", "id": format!("id-{n}"), "data": n}),
            n => json!({"action": "publish", "room": "g", "data": n}),
        };
        let process = &process;
        async move { ask(process, &format!("c{}", n % 7), &format!("q{n}"), body).await }
    });
    let writes_before = counted.1.load(std::sync::atomic::Ordering::Relaxed);
    let acks = futures_util::future::join_all(publishes).await;
    let writes = counted.1.load(std::sync::atomic::Ordering::Relaxed) - writes_before;
    // THEN the repeats get the original seq, the twins one seq, the others every other seq
    // from 2 to 58 once,
    let mut seqs: Vec<u64> = acks.iter().map(|ack| ack["seq"].as_u64().expect("an ack")).collect();
    assert_eq!((seqs[0], seqs[30]), (1, 1), "repeats answered with the original seq");
    assert_eq!(seqs[11], seqs[41], "copies of one id sent at once are one event");
    for n in [41, 30, 0] {
        seqs.remove(n);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=58).collect::<Vec<u64>>());
    // the log holds each publish once, in seq order, each acked seq holding its own data,
    let log = room_log(&store, "g").await;
    assert_eq!(log.len(), 58);
    for (n, ack) in acks.iter().enumerate() {
        let event = &log[ack["seq"].as_u64().unwrap() as usize - 1];
        let data = match n {
            0 | 30 => json!("first"),
            11 | 41 => json!("twin"),
            n => json!(n),
        };
        assert_eq!(event["data"], data, "{ack}");
    }
    // and they were written in groups: far fewer writes than publishes.
    assert!(writes <= 10, "{writes} writes for 60 publishes");
}

pub async fn a_stale_version_in_a_transaction_fails_that_step_and_writes_nothing(store: Arc<dyn Store>) {
    let doc = item("ROOM#r", "DOC#d").with("version", Attr::N(3));
    put(store.as_ref(), doc.clone()).await;
    let ops = vec![
        TxOp::Put {
            item: doc.clone().with("version", Attr::N(4)),
            condition: Condition::Equals { attr: "version".into(), value: Attr::N(2) },
        },
        TxOp::Put { item: item("ROOM#r", "EVT#1"), condition: Condition::NotExists },
        TxOp::Delete { key: Key::new("ROOM#r", "DOCV#pruned"), condition: Condition::Always },
    ];
    match store.transact(ops).await.unwrap() {
        Transaction::Conflict { failed } => {
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0].index, 0);
            assert_eq!(failed[0].current.as_ref().and_then(|c| c.number("version")), Some(3));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get(&Key::new("ROOM#r", "EVT#1")).await.unwrap(), None, "the event was not written");
    assert_eq!(store.get(&doc.key).await.unwrap(), Some(doc));
}

/// One request through an engine; the reply as JSON.
async fn ask(engine: &Engine, connection: &str, request_id: &str, body: serde_json::Value) -> serde_json::Value {
    let reply = engine.handle(&Caller::anonymous(connection), connection, request_id, &body.to_string()).await;
    serde_json::from_str(&reply.to_json()).expect("replies are JSON")
}

/// The room's whole log, oldest first, as JSON events.
async fn room_log(store: &Arc<dyn Store>, room: &str) -> Vec<serde_json::Value> {
    let crate::recovery::Recovered::Page(page) =
        crate::recovery::events_after(store.as_ref(), room, 0, 1000, None).await.unwrap()
    else {
        panic!("nothing expires in these tests");
    };
    assert!(!page.more);
    page.events.iter().map(|e| serde_json::to_value(e).unwrap()).collect()
}

pub async fn sixteen_buyers_of_ten_units_sell_exactly_ten_and_retries_sell_once(store: Arc<dyn Store>) {
    use serde_json::json;
    let engines = [engine(&store), engine(&store)];
    ask(&engines[0], "shop", "set", json!({"action": "stock.set", "room": "shop", "sku": "tee", "level": 10})).await;
    let sale = |n: usize| json!({"action": "stock.adjust", "room": "shop", "sku": "tee", "delta": -1, "id": format!("sale-{n}")});
    let buy_all = || {
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let engine = engines[n % 2].clone();
                let body = sale(n);
                tokio::spawn(async move { ask(&engine, &format!("buyer-{n}"), &format!("req-{n}"), body).await })
            })
            .collect();
        async move {
            let mut replies = Vec::new();
            for task in tasks {
                replies.push(task.await.unwrap());
            }
            replies
        }
    };
    let first = buy_all().await;
    let sold: Vec<_> = first.iter().filter(|r| r["type"] == "stock").collect();
    let refused: Vec<_> = first.iter().filter(|r| r["code"] == "insufficient_stock").collect();
    assert_eq!((sold.len(), refused.len()), (10, 6), "{first:?}");
    let mut levels: Vec<i64> = sold.iter().map(|r| r["level"].as_i64().unwrap()).collect();
    levels.sort();
    assert_eq!(levels, (0..10).collect::<Vec<_>>(), "each sale saw its own level");
    // Every buyer retries (a lost ack): the sold get their own sale back, nothing sells twice.
    let retried = buy_all().await;
    for (before, after) in first.iter().zip(&retried) {
        if before["type"] == "stock" {
            assert_eq!(after, before, "a retried sale answers as the sale did");
        } else {
            assert_eq!(after["code"], "insufficient_stock");
        }
    }
    let current = ask(&engines[1], "shop", "get", json!({"action": "stock.get", "room": "shop", "sku": "tee"})).await;
    assert_eq!((current["level"].as_i64(), current["version"].as_u64()), (Some(0), Some(11)), "{current}");
    let stock_events: Vec<_> = room_log(&store, "shop").await.into_iter().filter(|e| e["kind"] == "stock").collect();
    assert_eq!(stock_events.len(), 11, "the set and ten sales");
    assert!(stock_events.iter().all(|e| e["data"]["level"].as_i64().unwrap() >= 0));
}

pub async fn concurrent_increments_all_count(store: Arc<dyn Store>) {
    use serde_json::json;
    const WRITERS: usize = 4;
    const EACH: usize = 10;
    let engines = [engine(&store), engine(&store)];
    ask(
        &engines[0],
        "c",
        "new",
        json!({"action": "doc.put", "room": "r", "doc": "counter", "base": 0, "value": {"n": 0}}),
    )
    .await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engines[w % 2].clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let body = json!({"action": "doc.incr", "room": "r", "doc": "counter", "path": "/n", "by": 1});
                    let reply = ask(&engine, &format!("w{w}"), &format!("req-{w}-{n}"), body).await;
                    assert_eq!(reply["type"], "doc", "{reply}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counter = ask(&engines[1], "c", "get", json!({"action": "doc.get", "room": "r", "doc": "counter"})).await;
    assert_eq!(counter["value"], json!({"n": WRITERS * EACH}));
    assert_eq!(counter["version"], json!(WRITERS * EACH + 1));
}

pub async fn of_two_writes_at_one_base_version_one_wins_and_one_conflicts_with_the_current_state(
    store: Arc<dyn Store>,
) {
    use serde_json::json;
    let (a, b) = (engine(&store), engine(&store));
    ask(&a, "c1", "new", json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": "v1"})).await;
    let put = |value: &str| json!({"action": "doc.put", "room": "r", "doc": "d", "base": 1, "value": value});
    let (ra, rb) = tokio::join!(ask(&a, "c1", "qa", put("from a")), ask(&b, "c2", "qb", put("from b")));
    let (won, lost) = if ra["type"] == "doc" { (ra, rb) } else { (rb, ra) };
    assert_eq!(won["version"], 2, "{won}");
    assert_eq!(lost["code"], "conflict", "{lost}");
    assert_eq!(lost["current"]["version"], 2);
    assert_eq!(lost["current"]["value"], won["value"], "the conflict carries the winner's value");
}

pub async fn concurrent_text_edits_converge_on_the_server_text(store: Arc<dyn Store>) {
    use serde_json::json;
    let engines = [engine(&store), engine(&store)];
    let created =
        ask(&engines[0], "c0", "new", json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 0, "ops": ["ab"]}))
            .await;
    assert_eq!(created["rev"], 1, "{created}");
    // Four writers edit revision 1 at once, each inserting its own letter between a and b.
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let engine = engines[w % 2].clone();
            let body = json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 1, "ops": [1, format!("{w}"), 1]});
            tokio::spawn(async move { ask(&engine, &format!("c{w}"), &format!("q{w}"), body).await })
        })
        .collect();
    let mut revs = Vec::new();
    for task in tasks {
        let ack = task.await.unwrap();
        assert_eq!(ack["type"], "text.ack", "{ack}");
        revs.push(ack["rev"].as_u64().unwrap());
    }
    revs.sort();
    assert_eq!(revs, vec![2, 3, 4, 5]);
    let text = ask(&engines[1], "c", "get", json!({"action": "text.get", "room": "r", "doc": "t"})).await;
    let text = text["text"].as_str().unwrap().to_owned();
    assert_eq!(text.len(), 6);
    assert!(text.starts_with('a') && text.ends_with('b') && (0..4).all(|w| text.contains(&w.to_string())), "{text}");
    // A client that applies the events' edits in seq order ends on the server's text.
    let mut replica = String::new();
    for event in room_log(&store, "r").await {
        let ops: crate::text::Operation = serde_json::from_value(event["data"]["ops"].clone()).unwrap();
        replica = ops.apply(&replica).unwrap();
    }
    assert_eq!(replica, text);
}

pub async fn every_state_change_is_an_event_of_its_room_in_version_order(store: Arc<dyn Store>) {
    use serde_json::json;
    let e = engine(&store);
    ask(
        &e,
        "c",
        "1",
        json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": {"a": 1}, "strategy": "merge"}),
    )
    .await;
    ask(&e, "c", "2", json!({"action": "doc.patch", "room": "r", "doc": "d", "base": 1, "patch": {"b": 2}})).await;
    ask(&e, "c", "3", json!({"action": "publish", "room": "r", "data": "chat"})).await;
    ask(&e, "c", "4", json!({"action": "doc.delete", "room": "r", "doc": "d", "base": 2})).await;
    let log = room_log(&store, "r").await;
    let kinds: Vec<_> = log.iter().map(|e| e.get("kind").cloned().unwrap_or(json!("publish"))).collect();
    assert_eq!(kinds, vec![json!("doc"), json!("doc"), json!("publish"), json!("doc")]);
    assert_eq!(log[1]["data"], json!({"doc": "d", "version": 2, "value": {"a": 1, "b": 2}, "strategy": "merge"}));
    assert_eq!(log[3]["data"]["deleted"], json!(true));
    let gone = ask(&e, "c", "5", json!({"action": "doc.get", "room": "r", "doc": "d"})).await;
    assert_eq!(gone["code"], "not_found");
}

pub async fn a_member_who_disconnects_leaves_presence_once(store: Arc<dyn Store>) {
    use serde_json::json;
    let (a, b) = (engine(&store), engine(&store));
    for (engine, connection, user) in [(&a, "c1", "ann"), (&b, "c2", "bob")] {
        ask(engine, connection, "j", json!({"action": "join", "room": "r", "user": user})).await;
    }
    ask(&a, "c3", "j", json!({"action": "join", "room": "r"})).await;
    let (c1, c2) = (crate::access::session_of("c1"), crate::access::session_of("c2"));
    let members = ask(&a, "c3", "p", json!({"action": "presence", "room": "r"})).await;
    let mut listed = members["members"].as_array().unwrap().clone();
    listed.sort_by_key(|m| m["user"].as_str().unwrap().to_owned());
    assert_eq!(listed, vec![json!({"session": c1, "user": "ann"}), json!({"session": c2, "user": "bob"})]);
    // $disconnect and a gone-connection cleanup race; the leaving is announced once.
    let (x, y) = tokio::join!(a.disconnect("c1"), b.disconnect("c1"));
    x.unwrap();
    y.unwrap();
    let members = ask(&b, "c3", "p", json!({"action": "presence", "room": "r"})).await;
    assert_eq!(members["members"], json!([{"session": c2, "user": "bob"}]));
    let presence: Vec<_> = room_log(&store, "r").await.into_iter().map(|e| e["data"].clone()).collect();
    assert_eq!(
        presence,
        vec![
            json!({"joined": {"session": c1, "user": "ann"}}),
            json!({"joined": {"session": c2, "user": "bob"}}),
            json!({"left": {"session": c1, "user": "ann"}}),
        ]
    );
}

pub async fn copies_of_one_write_sent_at_once_all_get_its_outcome(store: Arc<dyn Store>) {
    use serde_json::json;
    let engines = [engine(&store), engine(&store)];
    ask(&engines[0], "shop", "set", json!({"action": "stock.set", "room": "shop", "sku": "k", "level": 3})).await;
    // A client retries its order while the first attempt is still in flight, several times.
    let order = json!({"action": "stock.adjust", "room": "shop", "sku": "k", "delta": -3, "id": "order-1"});
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let engine = engines[n % 2].clone();
            let body = order.clone();
            tokio::spawn(async move { ask(&engine, "buyer", &format!("copy-{n}"), body).await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply["type"].as_str(), reply["level"].as_i64()),
            (Some("stock"), Some(0)),
            "every copy is the sale: {reply}"
        );
    }
    let stock_events = room_log(&store, "shop").await.into_iter().filter(|e| e["kind"] == "stock").count();
    assert_eq!(stock_events, 2, "the set and one sale");
}

pub async fn a_lacks_condition_holds_only_on_an_item_without_the_attribute(store: Arc<dyn Store>) {
    let lacks = Condition::Lacks { attr: "tat".into() };
    let key = Key::new("CONN#x", "META");
    let set = |n| Update::default().set("tat", Attr::N(n));
    assert!(matches!(store.update(&key, set(1), lacks.clone()).await.unwrap(), Write::Conflict { .. }), "no item");
    put(store.as_ref(), item("CONN#x", "META").with("connected_at", Attr::N(5))).await;
    assert_eq!(store.update(&key, set(1), lacks.clone()).await.unwrap(), Write::Done);
    assert!(matches!(store.update(&key, set(2), lacks).await.unwrap(), Write::Conflict { .. }), "it has one now");
    assert_eq!(store.get(&key).await.unwrap().unwrap().number("tat"), Some(1));
}

pub async fn a_below_condition_lets_a_marker_only_move_forward(store: Arc<dyn Store>) {
    let below = |value| Condition::Below { attr: "seq".into(), value };
    let marker = |seq| item("ROOM#below", "HEAD").with("seq", Attr::N(seq));
    assert_eq!(store.put(marker(5), below(5)).await.unwrap(), Write::Done, "absent: any value");
    assert_eq!(store.put(marker(9), below(9)).await.unwrap(), Write::Done);
    assert!(matches!(store.put(marker(7), below(7)).await.unwrap(), Write::Conflict { .. }), "never back");
    assert!(matches!(store.put(marker(9), below(9)).await.unwrap(), Write::Conflict { .. }), "nor in place");
    assert_eq!(store.get(&Key::new("ROOM#below", "HEAD")).await.unwrap().unwrap().number("seq"), Some(9));
}

/// A poster with no connections behind it: every post finds its connection gone. For a fanout
/// run only for what it writes (the rooms' head markers, the day's figures).
pub struct NoConnections;

#[async_trait::async_trait]
impl crate::poster::Poster for NoConnections {
    async fn post(
        &self,
        _: &str,
        _: &crate::poster::Frame,
    ) -> Result<crate::poster::Delivery, crate::poster::PostError> {
        Ok(crate::poster::Delivery::Gone)
    }

    async fn delete_connection(&self, _: &str) -> Result<(), crate::poster::PostError> {
        Ok(())
    }
}

/// Publishes `count` events into `room`, fans them out (which marks the room's head), and
/// returns their items' TTLs.
async fn published_and_fanned_out(store: &Arc<dyn Store>, room: &str, count: u64) -> Vec<i64> {
    let e = engine(store);
    let mut feed = store.change_feed().await.unwrap();
    for n in 1..=count {
        let ack = ask(
            &e,
            "writer",
            &format!("p{n}"),
            serde_json::json!({"action": "publish", "room": room, "id": format!("{room}-{n}"), "data": n}),
        )
        .await;
        assert_eq!(ack["seq"], n, "{ack}");
    }
    let mut changes = Vec::new();
    while changes.iter().filter(|c: &&Change| c.key.pk == layout::room_pk(room) && c.key.sk.starts_with("EVT#")).count()
        < count as usize
    {
        changes.extend(next_changes(&mut feed, 1).await);
    }
    let report = crate::Fanout::new(store.clone(), Arc::new(NoConnections)).deliver(&changes).await;
    assert!(report.records_to_retry().is_empty(), "{report:?}");
    let events = store.query(layout::events_after(room, 0, 100)).await.unwrap();
    events.items.iter().map(|item| item.expires_at().expect("every event expires")).collect()
}

/// What TTL does once an event's time is up (DynamoDB deletes it, on its own schedule).
async fn expire(store: &Arc<dyn Store>, room: &str, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        assert_eq!(store.delete(&layout::event_key(room, seq), Condition::Exists).await.unwrap(), Write::Done);
    }
}

pub async fn an_expired_since_gets_expired_with_the_oldest_seq_still_held(store: Arc<dyn Store>) {
    use serde_json::json;
    let ttls = published_and_fanned_out(&store, "kept", 5).await;
    let now_secs = (crate::clock::SystemClock.now_ms() / 1000) as i64;
    let retention = crate::ordering::DEFAULT_RETENTION.as_secs() as i64;
    assert!(ttls.iter().all(|ttl| (ttl - now_secs - retention).abs() <= 60), "{ttls:?} is now + 7 days");
    let ids = store
        .get(&layout::event_id_key("kept", layout::ClientId { id: "kept-1", scope: None, digest: "" }))
        .await
        .unwrap();
    assert!(ids.unwrap().expires_at().is_some(), "idempotency records expire with their events");
    expire(&store, "kept", 1..=3).await;
    let e = engine(&store);

    for asked in
        [json!({"action": "join", "room": "kept", "since": 0}), json!({"action": "sync", "room": "kept", "since": 1})]
    {
        let refused = ask(&e, "reader", "r", asked.clone()).await;
        assert_eq!(
            (refused["code"].as_str(), refused["oldest"].as_u64()),
            (Some("expired"), Some(4)),
            "{asked}: {refused}"
        );
    }
    let held = ask(&e, "reader", "s", json!({"action": "sync", "room": "kept", "since": 3})).await;
    assert_eq!(
        held["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![4, 5]
    );
    let current = ask(&e, "reader", "c", json!({"action": "sync", "room": "kept", "since": 5})).await;
    assert_eq!(current["events"], json!([]), "up to date is not expired: {current}");
}

pub async fn a_room_whose_every_event_expired_goes_on_from_its_head(store: Arc<dyn Store>) {
    use serde_json::json;
    published_and_fanned_out(&store, "quiet", 3).await;
    expire(&store, "quiet", 1..=3).await;
    // A new process: no remembered head.
    let e = engine(&store);
    let joined = ask(&e, "reader", "j", json!({"action": "join", "room": "quiet", "since": 1})).await;
    assert_eq!((joined["code"].as_str(), joined["oldest"].as_u64()), (Some("expired"), Some(4)), "{joined}");
    let ack =
        ask(&e, "writer", "p", json!({"action": "publish", "room": "quiet", "data": "after a long silence"})).await;
    assert_eq!(ack["seq"], 4, "a seq is never given twice: {ack}");
}

pub async fn an_id_whose_record_expired_is_a_new_publish_even_before_ttl_deletes_it(store: Arc<dyn Store>) {
    use serde_json::json;
    let eight_days_ago = SystemClock.now_ms() - 8 * 24 * 3600 * 1000;
    let then = Engine::new(store.clone(), Arc::new(crate::clock::ManualClock::new(eight_days_ago)));
    let first = ask(&then, "w", "p1", json!({"action": "publish", "room": "ids", "id": "x", "data": 1})).await;
    assert_eq!(first["seq"], 1, "{first}");
    let e = engine(&store);
    let again = ask(&e, "w", "p2", json!({"action": "publish", "room": "ids", "id": "x", "data": 1})).await;
    assert_eq!(again["seq"], 2, "the record is past its time, though still stored: {again}");
    let repeat = ask(&e, "w", "p3", json!({"action": "publish", "room": "ids", "id": "x", "data": 1})).await;
    assert_eq!(repeat["seq"], 2, "and the new one makes repeats again: {repeat}");
}

/// One request as a given caller; the reply as JSON.
async fn ask_as(engine: &Engine, caller: &Caller, connection: &str, body: serde_json::Value) -> serde_json::Value {
    let reply = engine.handle(caller, connection, &format!("req-{}", rand::random::<u64>()), &body.to_string()).await;
    serde_json::from_str(&reply.to_json()).expect("replies are JSON")
}

pub async fn each_user_has_its_own_ids_and_a_changed_repeat_is_a_conflict(store: Arc<dyn Store>) {
    use crate::access::{Grants, RoomPatterns};
    use serde_json::json;
    let e = engine(&store);
    let grants = Grants { read: RoomPatterns::all(), write: RoomPatterns::all() };
    let (ann, bob) = (Caller::user("ann", "c1", grants.clone()), Caller::user("bob", "c2", grants));
    let publish = |data: i64| json!({"action": "publish", "room": "r", "id": "m1", "data": data});
    // Bob got there first with the id Ann will use: it does not pre-claim hers.
    assert_eq!(ask_as(&e, &bob, "c2", publish(666)).await["seq"], 1);
    let ack = ask_as(&e, &ann, "c1", publish(1)).await;
    assert_eq!((ack["type"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(2)), "{ack}");
    // Ann's retry, from a new connection, is her original; changed content is refused.
    assert_eq!(ask_as(&e, &Caller { session: "x".into(), ..ann.clone() }, "c9", publish(1)).await["seq"], 2);
    let changed = ask_as(&e, &ann, "c1", publish(2)).await;
    assert_eq!(changed["code"], "conflict", "{changed}");
    assert!(changed["message"].as_str().unwrap().contains("different request"), "{changed}");
    // The same holds for state writes.
    let sale = |delta: i64| json!({"action": "stock.adjust", "room": "r", "sku": "k", "delta": delta, "id": "o1"});
    assert_eq!(
        ask_as(&e, &ann, "c1", json!({"action": "stock.set", "room": "r", "sku": "k", "level": 5})).await["level"],
        5
    );
    assert_eq!(ask_as(&e, &ann, "c1", sale(-1)).await["level"], 4);
    assert_eq!(ask_as(&e, &ann, "c1", sale(-1)).await["level"], 4, "a retry sells once");
    assert_eq!(ask_as(&e, &ann, "c1", sale(-2)).await["code"], "conflict");
    assert_eq!(ask_as(&e, &bob, "c2", sale(-1)).await["level"], 3, "bob's o1 is bob's own");
    // Anonymous callers share the room's namespace: a retry from a new connection is recognised.
    let anonymous = json!({"action": "publish", "room": "open", "id": "a1", "data": 1});
    assert_eq!(ask(&e, "c5", "x", anonymous.clone()).await["seq"], 1);
    assert_eq!(ask(&e, "c6", "y", anonymous).await["seq"], 1);
    let log = room_log(&store, "r").await;
    assert_eq!(log.len(), 5, "two publishes, a set and two sales: {log:?}");
    assert_eq!(log[0]["from"], "bob");
    assert_eq!(log[1]["from"], "ann");
}

pub async fn a_room_outside_the_grant_is_forbidden_and_nothing_is_stored(store: Arc<dyn Store>) {
    use crate::access::{Grants, RoomPatterns};
    use serde_json::json;
    let e = engine(&store);
    let reader = Caller::user(
        "ann",
        "c1",
        Grants { read: RoomPatterns::new(["news", "doc-*"]), write: RoomPatterns::new(["doc-1"]) },
    );
    for (frame, verb) in [
        (json!({"action": "join", "room": "secret"}), "read"),
        (json!({"action": "sync", "room": "secret", "since": 0}), "read"),
        (json!({"action": "doc.get", "room": "secret", "doc": "d"}), "read"),
        (json!({"action": "publish", "room": "news", "data": 1}), "write"),
        (json!({"action": "doc.put", "room": "doc-2", "doc": "d", "base": 0, "value": 1}), "write"),
        (json!({"action": "stock.adjust", "room": "news", "sku": "k", "delta": 1}), "write"),
    ] {
        let reply = ask_as(&e, &reader, "c1", frame.clone()).await;
        assert_eq!(reply["code"], "forbidden", "{frame}: {reply}");
        let room = frame["room"].as_str().unwrap();
        assert!(reply["message"].as_str().unwrap().contains(&format!("{verb} access to room \"{room}\"")), "{reply}");
        assert!(room_log(&store, room).await.is_empty());
    }
    assert_eq!(ask_as(&e, &reader, "c1", json!({"action": "join", "room": "doc-9"})).await["type"], "joined");
    let put =
        ask_as(&e, &reader, "c1", json!({"action": "doc.put", "room": "doc-1", "doc": "d", "base": 0, "value": 1}))
            .await;
    assert_eq!(put["type"], "doc", "{put}");
    let impostor = ask_as(&e, &reader, "c1", json!({"action": "join", "room": "doc-1", "user": "bob"})).await;
    assert_eq!(impostor["code"], "forbidden", "a token for ann cannot be present as bob");
    // Being present writes `joined`/`left` events into the room: a read grant is not enough.
    let present = ask_as(&e, &reader, "c1", json!({"action": "join", "room": "news", "user": "ann"})).await;
    assert_eq!(present["code"], "forbidden", "{present}");
    assert!(room_log(&store, "news").await.is_empty());
    let member = ask_as(&e, &reader, "c1", json!({"action": "join", "room": "doc-1", "user": "ann"})).await;
    assert_eq!(member["type"], "joined", "{member}");
    let subscribers = store.query(crate::layout::subscribers_of("secret", 10)).await.unwrap();
    assert!(subscribers.items.is_empty(), "a refused join subscribes nothing");
}

pub async fn concurrent_writes_of_one_connection_or_user_take_exactly_the_burst(store: Arc<dyn Store>) {
    use crate::limits::{Admission, Bucket, StoreLimiter, WriteLimiter, WriteRate};
    // A slow bucket (one write a minute) so no token comes back while the test runs.
    let rate = WriteRate { per_second: 1.0 / 60.0, burst: 4 };
    let limiters: Vec<Arc<StoreLimiter<dyn Store>>> =
        (0..3).map(|_| Arc::new(StoreLimiter::new(store.clone(), rate))).collect();
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    // Ten writes of one connection at once, through three hosts (API Gateway may run a
    // connection's frames on several Lambda instances).
    let attempts = (0..10).map(|n| {
        let limiter = limiters[n % 3].clone();
        async move { limiter.admit(Bucket::Connection("c1"), now).await.unwrap() }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let admitted = outcomes.iter().filter(|o| matches!(o, Admission::Admitted(()))).count();
    assert_eq!(admitted, 4, "{outcomes:?}");
    for outcome in outcomes.iter().filter(|o| !matches!(o, Admission::Admitted(()))) {
        let Admission::Refused { retry_after_ms } = outcome else { unreachable!() };
        assert!(*retry_after_ms > 0 && *retry_after_ms <= 60_000, "{outcome:?}");
    }
    // Another connection has its own bucket.
    assert_eq!(limiters[0].admit(Bucket::Connection("c2"), now).await.unwrap(), Admission::Admitted(()));
    // A user's bucket is one item, whichever connections and hosts write: no item exists at
    // first, and racing first writes still take exactly the burst.
    let attempts = (0..8).map(|n| {
        let limiter = limiters[n % 3].clone();
        async move { limiter.admit(Bucket::User("ann"), now).await.unwrap() }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Admission::Admitted(()))).count(), 4, "{outcomes:?}");
}
