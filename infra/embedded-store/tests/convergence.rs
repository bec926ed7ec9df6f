//! Property tests: random interleavings of clients editing one document or text through the
//! engine on the embedded store. Each client keeps a replica it updates only from replies and
//! the room's events, as a real client does; whatever the interleaving, every replica ends on
//! the server's state, and what the server accepted is what the log and history hold.

use livesync_core::Engine;
use livesync_core::clock::SystemClock;
use livesync_core::store::{
    ChangeFeed, Condition, Item, Key, Page, Query, SortKeys, Store, StoreError, Transaction, TxOp, Update,
    Write as Written,
};
use livesync_core::text::Operation;
use livesync_embedded_store::{EmbeddedStore, Options};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

const CLIENTS: usize = 3;

/// One step of a schedule: which client acts, what it does, and a small payload.
#[derive(Debug, Clone)]
struct Step {
    client: usize,
    /// 0..=2: write (put/patch); 3: catch up with the room's events.
    what: u8,
    payload: u8,
}

fn schedule() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0..CLIENTS, 0..4u8, any::<u8>()).prop_map(|(client, what, payload)| Step { client, what, payload }),
        1..40,
    )
}

struct World {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
        World { engine: Engine::new(store, Arc::new(SystemClock)), _dir: dir }
    }

    async fn ask(&self, client: usize, body: Value) -> Value {
        let reply =
            anonymous(&self.engine, &format!("client-{client}"), &format!("req-{}", rand_id()), &body.to_string())
                .await;
        serde_json::from_str(&reply.to_json()).unwrap()
    }

    /// The room's events after `since`, following `more`.
    async fn events_after(&self, mut since: u64) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let page = self.ask(0, json!({"action": "sync", "room": "r", "since": since})).await;
            let events = page["events"].as_array().unwrap().clone();
            if let Some(last) = events.last() {
                since = last["seq"].as_u64().unwrap();
            }
            all.extend(events);
            if page["more"] != json!(true) {
                return all;
            }
        }
    }
}

fn rand_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// A client's copy of the document, and the last seq of the room it has applied.
#[derive(Debug, Clone, Default)]
struct DocReplica {
    seen: u64,
    version: u64,
    value: Value,
}

impl DocReplica {
    async fn catch_up(&mut self, world: &World) {
        for event in world.events_after(self.seen).await {
            self.seen = event["seq"].as_u64().unwrap();
            self.version = event["data"]["version"].as_u64().unwrap();
            self.value = event["data"]["value"].clone();
        }
    }
}

/// What a schedule did: the replicas, the server's document, every accepted reply in order,
/// and each write made.
struct Run {
    world: World,
    replicas: Vec<DocReplica>,
    server: Value,
    accepted: Vec<Value>,
    writes: Vec<DocWriteMade>,
}

#[derive(Debug)]
struct DocWriteMade {
    field: String,
    payload: u8,
    base: u64,
    /// The version it became, if accepted.
    version: Option<u64>,
}

impl Run {
    fn conflicts(&self) -> usize {
        self.writes.iter().filter(|w| w.version.is_none()).count()
    }

    /// The value of `field` at `version`, from the accepted replies.
    fn field_at(&self, field: &str, version: u64) -> Value {
        self.accepted[version as usize - 1]["value"].get(field).cloned().unwrap_or(Value::Null)
    }

    /// The last accepted write of each field stands in the server's document.
    fn last_accepted_writes_stand(&self) {
        for write in &self.writes {
            let last = self.writes.iter().rev().find(|w| w.field == write.field && w.version.is_some()).unwrap();
            assert_eq!(self.server["value"][&write.field], json!(last.payload), "{}", write.field);
        }
    }
}

/// Runs a schedule of writes on a document of `strategy`.
async fn run_documents(strategy: &str, steps: &[Step]) -> Run {
    let world = World::new();
    let created = world
        .ask(0, json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": {}, "strategy": strategy}))
        .await;
    assert_eq!(created["version"], 1, "{created}");
    let mut replicas = vec![DocReplica::default(); CLIENTS];
    let (mut accepted, mut writes) = (vec![created], Vec::new());
    for step in steps {
        let replica = &mut replicas[step.client];
        if step.what == 3 || replica.version == 0 {
            replica.catch_up(&world).await;
            continue;
        }
        // Each client owns one field (merge must never conflict on it) and also writes a
        // shared one now and then (where reject and merge must conflict when stale).
        let field = if step.what == 2 { "shared".to_owned() } else { format!("f{}", step.client) };
        let body = if step.what == 0 && strategy != "merge" {
            let mut value = replica.value.clone();
            value[&field] = json!(step.payload);
            json!({"action": "doc.put", "room": "r", "doc": "d", "base": replica.version, "value": value})
        } else {
            json!({"action": "doc.patch", "room": "r", "doc": "d", "base": replica.version, "patch": {(field.clone()): step.payload}})
        };
        let base = replica.version;
        let reply = world.ask(step.client, body).await;
        match reply["type"].as_str() {
            Some("doc") => {
                replica.version = reply["version"].as_u64().unwrap();
                replica.value = reply["value"].clone();
                writes.push(DocWriteMade { field, payload: step.payload, base, version: reply["version"].as_u64() });
                accepted.push(reply);
            }
            Some("error") if reply["code"] == "conflict" => {
                writes.push(DocWriteMade { field, payload: step.payload, base, version: None });
                // Rebase: the conflict carries the current state.
                replica.version = reply["current"]["version"].as_u64().unwrap();
                replica.value = reply["current"]["value"].clone();
            }
            _ => panic!("unexpected reply {reply}"),
        }
    }
    for replica in &mut replicas {
        replica.catch_up(&world).await;
    }
    let server = world.ask(0, json!({"action": "doc.get", "room": "r", "doc": "d"})).await;
    Run { world, replicas, server, accepted, writes }
}

/// Every accepted write is in the log, at its version, with its value: none was lost.
async fn no_accepted_write_is_lost(world: &World, accepted: &[Value]) {
    let log = world.events_after(0).await;
    let versions: Vec<u64> = accepted.iter().map(|a| a["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, (1..=accepted.len() as u64).collect::<Vec<_>>(), "versions are consecutive");
    assert_eq!(log.len(), accepted.len());
    for (event, reply) in log.iter().zip(accepted) {
        assert_eq!(event["data"]["version"], reply["version"]);
        assert_eq!(event["data"]["value"], reply["value"]);
    }
}

fn converged(replicas: &[DocReplica], server: &Value) {
    for replica in replicas {
        assert_eq!(replica.version, server["version"].as_u64().unwrap());
        assert_eq!(&replica.value, &server["value"]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn with_reject_every_client_converges_and_no_accepted_write_is_lost(steps in schedule()) {
        block_on(async {
            let run = run_documents("reject", &steps).await;
            converged(&run.replicas, &run.server);
            no_accepted_write_is_lost(&run.world, &run.accepted).await;
            for write in &run.writes {
                if let Some(version) = write.version {
                    assert_eq!(write.base + 1, version, "only a write made on the latest version is accepted");
                }
            }
        });
    }

    #[test]
    fn with_lww_every_client_converges_on_the_last_accepted_write(steps in schedule()) {
        block_on(async {
            let run = run_documents("lww", &steps).await;
            assert_eq!(run.conflicts(), 0, "last writer wins never conflicts");
            converged(&run.replicas, &run.server);
            assert_eq!(&run.server["value"], &run.accepted.last().unwrap()["value"]);
            no_accepted_write_is_lost(&run.world, &run.accepted).await;
        });
    }

    #[test]
    fn with_merge_edits_to_different_fields_never_conflict(steps in schedule()) {
        block_on(async {
            // Only the clients' own fields: never the shared one.
            let own: Vec<Step> = steps.into_iter().map(|s| Step { what: if s.what == 2 { 1 } else { s.what }, ..s }).collect();
            let run = run_documents("merge", &own).await;
            assert_eq!(run.conflicts(), 0);
            converged(&run.replicas, &run.server);
            no_accepted_write_is_lost(&run.world, &run.accepted).await;
            // Others' changes were kept: each field holds the last value written to it.
            run.last_accepted_writes_stand();
        });
    }

    #[test]
    fn with_merge_a_stale_patch_of_a_field_changed_since_conflicts(steps in schedule()) {
        block_on(async {
            let run = run_documents("merge", &steps).await;
            converged(&run.replicas, &run.server);
            no_accepted_write_is_lost(&run.world, &run.accepted).await;
            run.last_accepted_writes_stand();
            for write in &run.writes {
                // A patch made on a stale base is accepted exactly when nobody changed its field
                // after that base.
                let latest = match write.version {
                    Some(version) => version - 1,
                    None => continue,
                };
                assert_eq!(run.field_at(&write.field, write.base), run.field_at(&write.field, latest), "{write:?}");
            }
            let stale_conflicts = run.writes.iter().filter(|w| w.version.is_none()).count();
            let shared_writes = run.writes.iter().filter(|w| w.field == "shared").count();
            assert!(stale_conflicts <= shared_writes, "only writes of the shared field can conflict");
        });
    }

    /// Clients edit the text they last caught up with, however stale: the server transforms
    /// each edit past the ones accepted since. Every client that catches up ends on the
    /// server's text.
    #[test]
    fn with_ot_every_client_text_equals_the_server_text(steps in schedule()) {
        block_on(async {
            let world = World::new();
            let mut replicas = vec![TextReplica::default(); CLIENTS];
            for step in &steps {
                let replica = &mut replicas[step.client];
                if step.what == 3 {
                    replica.catch_up(&world).await;
                    continue;
                }
                let edit = replica.random_edit(step.what == 1, step.payload);
                let body = json!({"action": "text.edit", "room": "r", "doc": "t", "rev": replica.rev, "ops": edit});
                let reply = world.ask(step.client, body).await;
                assert_eq!(reply["type"], "text.ack", "{reply}");
            }
            let server = world.ask(0, json!({"action": "text.get", "room": "r", "doc": "t"})).await;
            // A schedule of catch-ups only never creates the text.
            let (rev, text) = match server["type"].as_str() {
                Some("text") => (server["rev"].as_u64().unwrap(), server["text"].as_str().unwrap().to_owned()),
                _ => (0, String::new()),
            };
            for replica in &mut replicas {
                replica.catch_up(&world).await;
                assert_eq!((replica.rev, &replica.text), (rev, &text));
            }
        });
    }
}

/// A client's copy of a text: as of revision `rev`, caught up to seq `seen` of the room.
#[derive(Debug, Clone, Default)]
struct TextReplica {
    seen: u64,
    rev: u64,
    text: String,
}

impl TextReplica {
    async fn catch_up(&mut self, world: &World) {
        for event in world.events_after(self.seen).await {
            self.seen = event["seq"].as_u64().unwrap();
            let ops: Operation = serde_json::from_value(event["data"]["ops"].clone()).unwrap();
            self.text = ops.apply(&self.text).unwrap();
            self.rev = event["data"]["rev"].as_u64().unwrap();
        }
    }

    /// An insert or a one-character delete somewhere in the text, counted in UTF-16 units and
    /// never splitting a surrogate pair.
    fn random_edit(&self, delete: bool, payload: u8) -> Operation {
        let units: Vec<u16> = self.text.encode_utf16().collect();
        let len = units.len() as u64;
        let is_low = |at: u64| units.get(at as usize).is_some_and(|u| (0xDC00..=0xDFFF).contains(u));
        let mut at = u64::from(payload) % (len + 1);
        if is_low(at) {
            at -= 1;
        }
        let mut edit = Operation::default();
        edit.retain(at);
        if delete && at < len {
            let width = if is_low(at + 1) { 2 } else { 1 };
            edit.delete(width);
            edit.retain(len - at - width);
        } else {
            edit.insert(["x", "yz", "\u{1F600}"][usize::from(payload) % 3]);
            edit.retain(len - at);
        }
        edit
    }
}

/// A store on which other writers' edits land between a text's read and the read of its edits,
/// as they may on a busy text.
struct EditsLandBetweenReads {
    inner: Arc<dyn Store>,
    others: Engine,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for EditsLandBetweenReads {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<Written, StoreError> {
        self.inner.put(item, condition).await
    }
    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Written, StoreError> {
        self.inner.update(key, update, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<Written, StoreError> {
        self.inner.delete(key, condition).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        self.inner.transact(ops).await
    }
    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        let reads_edits = matches!(&query.sort_keys, SortKeys::Prefix(prefix) if prefix.starts_with("TEXTOP#"));
        if reads_edits && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            for rev in 3..5 {
                let edit = json!({"action": "text.edit", "room": "r", "doc": "t", "rev": rev, "ops": [rev, "+"]});
                let reply = anonymous(&self.others, "other", &format!("o{rev}"), &edit.to_string()).await;
                assert!(matches!(reply, livesync_core::protocol::ServerFrame::TextAck { .. }), "{reply:?}");
            }
        }
        self.inner.query(query).await
    }
    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        self.inner.change_feed().await
    }
}

#[test]
fn an_edit_whose_base_is_pruned_while_it_is_decided_is_a_conflict_not_a_bad_request() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Options::default()).unwrap());
        let others = Engine::new(inner.clone(), Arc::new(SystemClock)).with_history(2);
        // Revisions 1..3: "a", then "+" appended twice; the last two edits are kept.
        for (rev, ops) in [(0, json!(["a"])), (1, json!([1, "+"])), (2, json!([2, "+"]))] {
            let edit = json!({"action": "text.edit", "room": "r", "doc": "t", "rev": rev, "ops": ops});
            anonymous(&others, "other", &format!("setup{rev}"), &edit.to_string()).await;
        }
        let store = Arc::new(EditsLandBetweenReads { inner, others, armed: true.into() });
        let client = Engine::new(store, Arc::new(SystemClock)).with_history(2);
        // An edit at rev 1 needs edits 2 and 3; while it reads them, two more land and prune them.
        let late = json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 1, "ops": ["<", 1]});
        let reply = serde_json::to_value(anonymous(&client, "me", "late", &late.to_string()).await).unwrap();
        assert_eq!(reply["code"], "conflict", "{reply}");
        // `current` is a text and its own revision (each revision here added one character).
        let current = &reply["current"];
        assert_eq!(current["text"].as_str().unwrap().len() as u64, current["rev"].as_u64().unwrap(), "{current}");
    });
}

/// One request from an anonymous client of an open host.
async fn anonymous(
    engine: &Engine,
    connection: &str,
    request_id: &str,
    body: &str,
) -> livesync_core::protocol::ServerFrame {
    engine.handle(&livesync_core::access::Caller::anonymous(connection), connection, request_id, body).await
}
