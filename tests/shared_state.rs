//! Shared state through the local runner, as applications use it: real WebSocket clients
//! editing the same documents, texts and stock levels at once. Every client ends on the
//! server's state, conflicts come back with the current state, and nothing is applied twice.

use livesync_core::text::Operation;
use livesync_tests::{Client, Local};
use serde_json::{Value, json};

/// A client joined to `room`, its pushes queued from the join on.
async fn joined(local: &Local, room: &str) -> Client {
    let mut client = local.client().await;
    client.join(room, None).await;
    client
}

/// Runs one task per client at once; their results in client order.
async fn all_at_once<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_writing_one_document_at_once_end_in_the_same_state() {
    let local = Local::start().await;
    let mut ann = joined(&local, "notes").await;
    let mut bob = joined(&local, "notes").await;
    let created = ann
        .request(json!({"action": "doc.put", "room": "notes", "doc": "plan", "base": 0, "value": {"title": "v1"}}))
        .await;
    assert_eq!((created["type"].as_str(), created["version"].as_u64()), (Some("doc"), Some(1)), "{created}");

    // GIVEN both saw version 1, WHEN both write on it at once,
    let put = |title: &str| json!({"action": "doc.put", "room": "notes", "doc": "plan", "base": 1, "value": {"title": title}});
    let (a, b) = tokio::join!(ann.request(put("ann's")), bob.request(put("bob's")));
    // THEN one wins and the other gets a conflict carrying the winner's state,
    let (won, lost, loser) = if a["type"] == "doc" { (a, b, &mut bob) } else { (b, a, &mut ann) };
    assert_eq!(won["version"], 2);
    assert_eq!(lost["code"], "conflict", "{lost}");
    assert_eq!(lost["current"]["value"], won["value"]);
    // AND the loser rebases on it and succeeds.
    let mut rebased = lost["current"]["value"].clone();
    rebased["note"] = json!("merged by hand");
    let retried =
        loser.request(json!({"action": "doc.put", "room": "notes", "doc": "plan", "base": 2, "value": rebased})).await;
    assert_eq!(retried["version"], 3, "{retried}");

    // Both see every version pushed, in order, and end on the server's state.
    let server = ann.request(json!({"action": "doc.get", "room": "notes", "doc": "plan"})).await;
    for client in [&mut ann, &mut bob] {
        let pushed = client.pushed_events("notes", 3).await;
        assert!(pushed.iter().all(|e| e["kind"] == "doc"));
        let versions: Vec<_> = pushed.iter().map(|e| e["data"]["version"].as_u64().unwrap()).collect();
        assert_eq!(versions, vec![1, 2, 3]);
        assert_eq!(pushed[2]["data"]["value"], server["value"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_incrementing_fifty_times_each_count_exactly_four_hundred() {
    let local = Local::start().await;
    let mut watcher = joined(&local, "likes").await;
    watcher
        .request(json!({"action": "doc.put", "room": "likes", "doc": "post", "base": 0, "value": {"likes": 0}}))
        .await;
    let tasks = (0..8)
        .map(|_| {
            let url = local.url();
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await;
                for _ in 0..50 {
                    let reply = client
                        .request(
                            json!({"action": "doc.incr", "room": "likes", "doc": "post", "path": "/likes", "by": 1}),
                        )
                        .await;
                    assert_eq!(reply["type"], "doc", "{reply}");
                }
            })
        })
        .collect();
    all_at_once(tasks).await;
    let post = watcher.request(json!({"action": "doc.get", "room": "likes", "doc": "post"})).await;
    assert_eq!((post["value"]["likes"].as_u64(), post["version"].as_u64()), (Some(400), Some(401)), "{post}");
    // The watcher saw every count, in order, from 0 to 400.
    let counts: Vec<u64> = watcher
        .pushed_events("likes", 401)
        .await
        .iter()
        .map(|e| e["data"]["value"]["likes"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, (0..=400).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_buyers_of_ten_units_sell_ten_and_a_retried_sale_sells_once() {
    let local = Local::start().await;
    let mut dashboard = joined(&local, "shop").await;
    let set = dashboard.request(json!({"action": "stock.set", "room": "shop", "sku": "tee-m", "level": 10})).await;
    assert_eq!(
        set,
        json!({"type": "stock", "room": "shop", "sku": "tee-m", "level": 10, "version": 1, "ref": set["ref"]})
    );
    let tasks = (0..16)
        .map(|n| {
            let url = local.url();
            tokio::spawn(async move {
                let mut buyer = Client::connect(&url).await;
                let sale = json!({"action": "stock.adjust", "room": "shop", "sku": "tee-m", "delta": -1, "id": format!("order-{n}")});
                let first = buyer.request(sale.clone()).await;
                // The ack was "lost": the buyer sends the same sale again.
                let again = buyer.request(sale).await;
                (first, again)
            })
        })
        .collect();
    let outcomes = all_at_once(tasks).await;
    let sold = outcomes.iter().filter(|(first, _)| first["type"] == "stock").count();
    assert_eq!(sold, 10);
    for (first, again) in &outcomes {
        match first["type"].as_str() {
            Some("stock") => {
                assert_eq!(again["version"], first["version"], "the retry answers as the sale did: {again}");
                assert_eq!(again["level"], first["level"]);
            }
            _ => {
                assert_eq!(first["code"], "insufficient_stock", "{first}");
                assert_eq!(first["level"], 0);
                assert_eq!(again["code"], "insufficient_stock");
            }
        }
    }
    // The dashboard saw the set and ten sales, never a negative level, ending at 0.
    let levels: Vec<i64> =
        dashboard.pushed_events("shop", 11).await.iter().map(|e| e["data"]["level"].as_i64().unwrap()).collect();
    assert_eq!(levels, (0..=10).rev().collect::<Vec<_>>());
    let stock = dashboard.request(json!({"action": "stock.get", "room": "shop"})).await;
    assert_eq!(stock["items"], json!([{"sku": "tee-m", "level": 0, "version": 11}]));
}

/// A client's view of a text: what it had at `rev`, kept current from pushed edits.
struct Typist {
    client: Client,
    rev: u64,
    text: String,
}

impl Typist {
    /// Applies pushed edits until the text reaches `rev`.
    async fn catch_up_to(&mut self, rev: u64) {
        while self.rev < rev {
            // A push may carry several events (one frame per room and batch): apply them all.
            for event in self.client.pushed_events("pad", 1).await {
                assert_eq!(event["kind"], "text", "{event}");
                let edit: Operation = serde_json::from_value(event["data"]["ops"].clone()).unwrap();
                self.text = edit.apply(&self.text).unwrap();
                self.rev = event["data"]["rev"].as_u64().unwrap();
            }
        }
    }

    /// Inserts `word` at the end of the text as this client last saw it.
    async fn type_at_end(&mut self, word: &str) -> Value {
        let mut edit = Operation::default();
        edit.retain(self.text.encode_utf16().count() as u64).insert(word);
        self.client
            .request(json!({"action": "text.edit", "room": "pad", "doc": "t", "rev": self.rev, "ops": edit}))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_typing_in_one_text_at_once_converge() {
    let local = Local::start().await;
    let mut ann = Typist { client: joined(&local, "pad").await, rev: 0, text: String::new() };
    let mut bob = Typist { client: joined(&local, "pad").await, rev: 0, text: String::new() };
    let first = ann.type_at_end("Hello").await;
    assert_eq!((first["type"].as_str(), first["rev"].as_u64()), (Some("text.ack"), Some(1)), "{first}");
    ann.catch_up_to(1).await;
    bob.catch_up_to(1).await;
    // Both type at the end of "Hello" at once, each a few times, without waiting for the other.
    for round in 0..5 {
        let (a, b) = tokio::join!(ann.type_at_end(" ann😀"), bob.type_at_end(" bob"));
        assert_eq!(
            (a["type"].as_str(), b["type"].as_str()),
            (Some("text.ack"), Some("text.ack")),
            "round {round}: {a} {b}"
        );
        let rev = a["rev"].as_u64().unwrap().max(b["rev"].as_u64().unwrap());
        ann.catch_up_to(rev).await;
        bob.catch_up_to(rev).await;
    }
    let server = ann.client.request(json!({"action": "text.get", "room": "pad", "doc": "t"})).await;
    assert_eq!(server["rev"], 11);
    assert_eq!(ann.text, server["text"].as_str().unwrap());
    assert_eq!(bob.text, ann.text);
    assert_eq!(ann.text.matches(" ann😀").count(), 5, "{}", ann.text);
    assert_eq!(ann.text.matches(" bob").count(), 5, "{}", ann.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_joins_leaves_and_disconnects() {
    let local = Local::start().await;
    let mut ann = local.client().await;
    ann.request(json!({"action": "join", "room": "team", "user": "ann"})).await;
    let mut bob = local.client().await;
    bob.request(json!({"action": "join", "room": "team", "user": "bob"})).await;
    let mut carol = local.client().await;
    carol.request(json!({"action": "join", "room": "team", "user": "carol"})).await;
    let listed = ann.request(json!({"action": "presence", "room": "team"})).await;
    let users: Vec<&str> = listed["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(users.len(), 3);

    carol.request(json!({"action": "leave", "room": "team"})).await;
    bob.close().await;
    let seen: Vec<Value> = ann.pushed_events("team", 5).await.iter().map(|e| e["data"].clone()).collect();
    let described: Vec<String> = seen
        .iter()
        .map(|d| {
            d.as_object().unwrap().iter().map(|(what, m)| format!("{what} {}", m["user"].as_str().unwrap())).collect()
        })
        .collect();
    assert_eq!(described, vec!["joined ann", "joined bob", "joined carol", "left carol", "left bob"]);
    let listed = ann.request(json!({"action": "presence", "room": "team"})).await;
    assert_eq!(listed["members"].as_array().unwrap().len(), 1);
    assert_eq!(listed["members"][0]["user"], "ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_the_last_versions_pages_back_and_a_rollback_restores_one() {
    let local = Local::start_with(|config| config.history_versions = 5).await;
    let mut client = local.client().await;
    for version in 1..=8u64 {
        let reply = client
            .request(
                json!({"action": "doc.put", "room": "r", "doc": "d", "base": version - 1, "value": {"n": version}}),
            )
            .await;
        assert_eq!(reply["version"], version, "{reply}");
    }
    let history = client.request(json!({"action": "doc.history", "room": "r", "doc": "d"})).await;
    let kept: Vec<u64> =
        history["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(kept, vec![8, 7, 6, 5, 4], "the last five, newest first");
    assert_eq!(history["more"], false);
    let older = client.request(json!({"action": "doc.history", "room": "r", "doc": "d", "before": 6})).await;
    assert_eq!(
        older["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![5, 4]
    );

    let old = client.request(json!({"action": "doc.get", "room": "r", "doc": "d", "version": 4})).await;
    assert_eq!(old["value"], json!({"n": 4}));
    let pruned = client.request(json!({"action": "doc.get", "room": "r", "doc": "d", "version": 3})).await;
    assert_eq!(pruned["code"], "not_found", "{pruned}");

    let rolled = client.request(json!({"action": "doc.rollback", "room": "r", "doc": "d", "to": 4, "base": 8})).await;
    assert_eq!((rolled["version"].as_u64(), &rolled["value"]), (Some(9), &json!({"n": 4})), "{rolled}");
    let stale = client.request(json!({"action": "doc.rollback", "room": "r", "doc": "d", "to": 5, "base": 8})).await;
    assert_eq!((stale["code"].as_str(), stale["current"]["version"].as_u64()), (Some("conflict"), Some(9)));
    let gone = client.request(json!({"action": "doc.rollback", "room": "r", "doc": "d", "to": 2, "base": 9})).await;
    assert_eq!(gone["code"], "not_found");
}

/// Sends `frame`; the reply must be an error with `code` whose message says `says`.
async fn expect(client: &mut Client, frame: Value, code: &str, says: &str) -> Value {
    let reply = client.request(frame.clone()).await;
    assert_eq!(reply["code"], code, "{frame} -> {reply}");
    assert!(reply["message"].as_str().unwrap().contains(says), "{frame} -> {reply}");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_its_code_and_changes_nothing() {
    let local = Local::start_with(|config| config.history_versions = 2).await;
    let c = &mut local.client().await;
    expect(c, json!({"action": "doc.get", "room": "r", "doc": "nope"}), "not_found", "no document").await;
    expect(
        c,
        json!({"action": "doc.patch", "room": "r", "doc": "nope", "base": 1, "patch": {}}),
        "not_found",
        "no document",
    )
    .await;
    expect(c, json!({"action": "doc.history", "room": "r", "doc": "nope"}), "not_found", "no document").await;
    expect(c, json!({"action": "text.get", "room": "r", "doc": "nope"}), "not_found", "no text").await;
    expect(c, json!({"action": "stock.get", "room": "r", "sku": "nope"}), "not_found", "no SKU").await;
    expect(
        c,
        json!({"action": "stock.adjust", "room": "r", "sku": "nope", "delta": 1}),
        "not_found",
        "stock.set it first",
    )
    .await;

    let created = c
        .request(json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": {"name": "x", "n": 1}}))
        .await;
    assert_eq!(created["version"], 1);
    let again = expect(
        c,
        json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": 2}),
        "conflict",
        "base 0 only creates",
    )
    .await;
    assert_eq!(again["current"]["value"], json!({"name": "x", "n": 1}));
    expect(
        c,
        json!({"action": "doc.incr", "room": "r", "doc": "d", "path": "/name", "by": 1}),
        "bad_request",
        "not a number",
    )
    .await;
    expect(
        c,
        json!({"action": "doc.put", "room": "r", "doc": "d", "base": 1, "value": 1, "strategy": "lww"}),
        "bad_request",
        "only at creation",
    )
    .await;
    let big = "x".repeat(100_000);
    c.request(json!({"action": "doc.patch", "room": "r", "doc": "d", "base": 1, "patch": {"a": big}})).await;
    expect(
        c,
        json!({"action": "doc.patch", "room": "r", "doc": "d", "base": 2, "patch": {"b": big}}),
        "too_large",
        "the limit is",
    )
    .await;

    c.request(json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 0, "ops": ["abc"]})).await;
    expect(
        c,
        json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 1, "ops": [5, "x"]}),
        "bad_request",
        "does not fit",
    )
    .await;
    expect(c, json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 7, "ops": [3]}), "bad_request", "ahead of")
        .await;
    for rev in 1..=3 {
        c.request(json!({"action": "text.edit", "room": "r", "doc": "t", "rev": rev, "ops": ["z", 2 + rev]})).await;
    }
    let behind = expect(
        c,
        json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 1, "ops": [3, "late"]}),
        "conflict",
        "older than the edits kept",
    )
    .await;
    assert_eq!(behind["current"]["rev"], 4);

    c.request(json!({"action": "stock.set", "room": "r", "sku": "s", "level": 1})).await;
    let short = expect(
        c,
        json!({"action": "stock.adjust", "room": "r", "sku": "s", "delta": -2}),
        "insufficient_stock",
        "has 1 left",
    )
    .await;
    assert_eq!(short["level"], 1);
    let reused =
        c.request(json!({"action": "doc.put", "room": "r", "doc": "e", "base": 0, "value": 1, "id": "k"})).await;
    assert_eq!(reused["type"], "doc");
    expect(
        c,
        json!({"action": "stock.adjust", "room": "r", "sku": "s", "delta": -1, "id": "k"}),
        "bad_request",
        "already used",
    )
    .await;
    let level = c.request(json!({"action": "stock.get", "room": "r", "sku": "s"})).await;
    assert_eq!(level["level"], 1, "refusals changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_one_write_of_one_target_and_never_answers_for_another() {
    let local = Local::start().await;
    let c = &mut local.client().await;
    let first =
        c.request(json!({"action": "doc.put", "room": "r", "doc": "A", "base": 0, "value": 1, "id": "k1"})).await;
    assert_eq!(first["doc"], "A");
    // The same id for another document, another kind of write, or a publish: refused, not
    // answered with document A's outcome.
    expect(
        c,
        json!({"action": "doc.put", "room": "r", "doc": "B", "base": 0, "value": 2, "id": "k1"}),
        "bad_request",
        "already used",
    )
    .await;
    expect(
        c,
        json!({"action": "stock.set", "room": "r", "sku": "s", "level": 1, "id": "k1"}),
        "bad_request",
        "already used",
    )
    .await;
    expect(c, json!({"action": "publish", "room": "r", "data": "x", "id": "k1"}), "bad_request", "already used").await;
    let b = c.request(json!({"action": "doc.get", "room": "r", "doc": "B"})).await;
    assert_eq!(b["code"], "not_found", "B was never written");
    // The same write again is still the same outcome.
    let again =
        c.request(json!({"action": "doc.put", "room": "r", "doc": "A", "base": 0, "value": 1, "id": "k1"})).await;
    assert_eq!((again["doc"].as_str(), again["version"].as_u64()), (Some("A"), Some(1)), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_keeps_the_name_it_joined_with_until_it_leaves() {
    let local = Local::start().await;
    let mut watcher = joined(&local, "pr").await;
    let c = &mut local.client().await;
    c.request(json!({"action": "join", "room": "pr", "user": "alice"})).await;
    c.request(json!({"action": "join", "room": "pr", "user": "bob"})).await;
    c.request(json!({"action": "join", "room": "pr"})).await;
    let listed = c.request(json!({"action": "presence", "room": "pr"})).await;
    assert_eq!(listed["members"].as_array().unwrap().len(), 1);
    assert_eq!(listed["members"][0]["user"], "alice", "rejoining changes nothing the log did not say");
    c.request(json!({"action": "leave", "room": "pr"})).await;
    let seen: Vec<Value> = watcher.pushed_events("pr", 2).await.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(seen[0]["joined"]["user"], "alice");
    assert_eq!(seen[1]["left"]["user"], "alice");
    let listed = watcher.request(json!({"action": "presence", "room": "pr"})).await;
    assert_eq!(listed["members"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_stay_under_128_kb_however_the_content_escapes() {
    let local = Local::start().await;
    let c = &mut local.client().await;
    // Control characters take 6 bytes as JSON: the limit counts them so.
    let escaped = "\u{1}".repeat(21_162);
    let first = c.request(json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 0, "ops": [escaped]})).await;
    assert_eq!(first["type"], "text.ack", "126974 bytes of JSON fit");
    let len = 21_162;
    expect(
        c,
        json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 1, "ops": [len, "\u{1}"]}),
        "too_large",
        "as JSON",
    )
    .await;
    c.send_text(json!({"action": "text.get", "room": "r", "doc": "t", "ref": "g"}).to_string()).await;
    let raw = c.next_message().await.unwrap().into_text().unwrap();
    assert!(raw.len() <= 128 * 1024, "{} bytes", raw.len());

    // SKU names full of quotes: a page holds what fits, and says more follow.
    let sku = |n: usize| format!("{}{n:04}", "\"".repeat(250));
    for n in 0..305 {
        c.request(json!({"action": "stock.set", "room": "r", "sku": sku(n), "level": n})).await;
    }
    c.send_text(json!({"action": "stock.get", "room": "r", "ref": "all"}).to_string()).await;
    let raw = c.next_message().await.unwrap().into_text().unwrap();
    assert!(raw.len() <= 128 * 1024, "{} bytes", raw.len());
    let page: Value = serde_json::from_str(&raw).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(page["more"], true);
    let rest = c.request(json!({"action": "stock.get", "room": "r", "after": items.last().unwrap()["sku"]})).await;
    assert_eq!(items.len() + rest["items"].as_array().unwrap().len(), 305);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_whose_lengths_overflow_is_refused_and_the_connection_stays() {
    let local = Local::start().await;
    let c = &mut local.client().await;
    c.request(json!({"action": "join", "room": "r", "user": "ann"})).await;
    c.request(json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 0, "ops": ["ab"]})).await;
    let max = i64::MAX;
    expect(
        c,
        json!({"action": "text.edit", "room": "r", "doc": "t", "rev": 1, "ops": [max, -max, 2]}),
        "bad_request",
        "at most",
    )
    .await;
    let pong = c.request(json!({"action": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_keeps_the_strategy_it_was_written_under() {
    let local = Local::start().await;
    let c = &mut local.client().await;
    c.request(json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": 1, "strategy": "merge"})).await;
    c.request(json!({"action": "doc.delete", "room": "r", "doc": "d", "base": 1})).await;
    let again = c
        .request(json!({"action": "doc.put", "room": "r", "doc": "d", "base": 0, "value": 3, "strategy": "lww"}))
        .await;
    assert_eq!((again["version"].as_u64(), again["strategy"].as_str()), (Some(3), Some("lww")), "{again}");
    let old = c.request(json!({"action": "doc.get", "room": "r", "doc": "d", "version": 1})).await;
    assert_eq!((old["value"].as_u64(), old["strategy"].as_str()), (Some(1), Some("merge")), "{old}");
}
