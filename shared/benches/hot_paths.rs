//! Micro-benchmarks of the hot paths, with criterion: a client frame parsed (every request pays
//! it), a change-feed batch planned into per-room frames (every event pays it once, whatever
//! the number of subscribers: a frame is encoded once and the same bytes go to each), and a
//! text edit transformed past a concurrent one.
//!
//! `cargo bench -p livesync-core --bench hot_paths` times them; `scripts/instructions` counts
//! their instructions with callgrind (stable on a noisy machine) by running this binary with
//! `LIVESYNC_HOT_PATH=<name>`; `cargo test` runs each once.

use criterion::{BatchSize, Criterion};
use livesync_core::fanout::FanoutPlan;
use livesync_core::layout;
use livesync_core::protocol::{Event, EventKind, JsonData, parse_client_frame};
use livesync_core::store::{Change, ChangeKind};
use livesync_core::text::Operation;
use std::hint::black_box;

/// A chat message as a client sends it.
const PUBLISH: &str = r#"{"action":"publish","room":"lobby","id":"m-6f1c2a9e-3","data":{"user":"ann","text":"hello, is anyone here?"},"ref":"r17"}"#;

/// A document patch: a nested value to canonicalise for its idempotency digest.
const DOC_PATCH: &str = r#"{"action":"doc.patch","room":"board","doc":"poll","base":41,"patch":{"tea":12,"coffee":9,"votes":{"ann":"tea","bob":"coffee","cy":null}},"id":"v-19"}"#;

fn event(room: &str, seq: u64, text_bytes: usize) -> Event {
    Event {
        room: room.to_owned(),
        seq,
        id: format!("m-{seq}"),
        from: "s-3f2a9d81c07b6e45".to_owned(),
        kind: EventKind::Publish,
        data: JsonData::from_value(&serde_json::json!({ "user": "ann", "text": "x".repeat(text_bytes) })),
        ts: 1_796_237_382_815 + seq,
    }
}

/// A change-feed batch of `events` inserted events over `rooms` rooms.
fn batch(events: u64, rooms: u64, text_bytes: usize) -> Vec<Change> {
    (0..events)
        .map(|n| {
            let item = layout::event_item(&event(&format!("room-{}", n % rooms), n / rooms + 1, text_bytes));
            Change { kind: ChangeKind::Insert, key: item.key.clone(), new: Some(item) }
        })
        .collect()
}

/// Two concurrent edits of a 2,000-character text: each types in 20 places.
fn concurrent_edits() -> (Operation, Operation) {
    let edit = |offset: u64| {
        let mut op = Operation::default();
        let mut at = 0;
        for n in 0..20 {
            let to = n * 100 + offset;
            op.retain(to - at).insert("typed ");
            at = to;
        }
        op.retain(2_000 - at);
        op
    };
    (edit(3), edit(51))
}

/// One named path, run once: what both criterion and callgrind measure.
fn run(path: &str, input: &Inputs) {
    match path {
        "parse_publish" => drop(black_box(parse_client_frame(black_box(PUBLISH)))),
        "parse_doc_patch" => drop(black_box(parse_client_frame(black_box(DOC_PATCH)))),
        "plan_one_event" => drop(black_box(FanoutPlan::from_changes(black_box(&input.one_event)))),
        "plan_batch_100_in_10_rooms" => drop(black_box(FanoutPlan::from_changes(black_box(&input.batch)))),
        "transform_20_by_20" => {
            drop(black_box(Operation::transform(black_box(&input.edits.0), black_box(&input.edits.1))))
        }
        "none" => {}
        other => panic!("no hot path named {other:?}; see PATHS"),
    }
}

const PATHS: [&str; 5] =
    ["parse_publish", "parse_doc_patch", "plan_one_event", "plan_batch_100_in_10_rooms", "transform_20_by_20"];

struct Inputs {
    one_event: Vec<Change>,
    batch: Vec<Change>,
    edits: (Operation, Operation),
}

impl Inputs {
    fn new() -> Self {
        Inputs { one_event: batch(1, 1, 40), batch: batch(100, 10, 200), edits: concurrent_edits() }
    }
}

fn main() {
    let input = Inputs::new();
    // Under callgrind: one path, a fixed number of times, nothing else.
    if let Ok(path) = std::env::var("LIVESYNC_HOT_PATH") {
        let times: u64 = std::env::var("LIVESYNC_HOT_PATH_TIMES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000);
        for _ in 0..times {
            run(&path, &input);
        }
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    for path in PATHS {
        criterion.bench_function(path, |b| b.iter_batched(|| (), |()| run(path, &input), BatchSize::SmallInput));
    }
    criterion.final_summary();
}
