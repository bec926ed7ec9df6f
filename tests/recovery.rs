//! A client that was away gets exactly what it missed, no more, no less, a page at a time.

use livesync_tests::{Local, events_of, seqs};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_missed_50_events_gets_exactly_those_when_it_rejoins_with_since() {
    let local = Local::start().await;
    let mut writer = local.client().await;
    let mut reader = local.client().await;
    reader.join("feed", None).await;
    for n in 1..=10 {
        writer.publish("feed", None, json!(n)).await;
    }
    assert_eq!(reader.pushed_seqs("feed", 10).await, (1..=10).collect::<Vec<_>>());
    reader.close().await;

    for n in 11..=60 {
        writer.publish("feed", None, json!(n)).await;
    }

    let mut back = local.client().await;
    let joined = back.join("feed", Some(10)).await;
    assert_eq!(joined["seq"], 60, "the room's head");
    assert_eq!(joined["more"], false);
    let missed = events_of(&joined);
    assert_eq!(seqs(&missed), (11..=60).collect::<Vec<_>>());
    assert_eq!(
        missed.iter().map(|e| e["data"].clone()).collect::<Vec<_>>(),
        (11..=60).map(|n| json!(n)).collect::<Vec<_>>()
    );

    // And it is subscribed again: the next event is pushed. (An event the join's page already
    // held may also arrive as a push, if the fanout was still delivering it: a repeat, by seq.)
    writer.publish("feed", None, json!(61)).await;
    let mut pushed = back.pushed_seqs("feed", 1).await;
    while pushed.last() != Some(&61) {
        assert!(pushed.iter().all(|seq| *seq <= 61), "{pushed:?}");
        pushed.extend(back.pushed_seqs("feed", 1).await);
    }
    assert!(pushed[..pushed.len() - 1].iter().all(|seq| *seq <= 60), "only repeats before 61: {pushed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pages_through_a_long_absence_without_gaps_or_repeats() {
    let local = Local::start().await;
    let mut writer = local.client().await;
    for n in 1..=250 {
        writer.publish("log", None, json!({"n": n})).await;
    }

    let mut reader = local.client().await;
    let mut since = 0;
    let mut received = Vec::new();
    let mut pages = 0;
    loop {
        let page = reader.request(json!({"action": "sync", "room": "log", "since": since})).await;
        assert_eq!(page["type"], "events", "{page}");
        pages += 1;
        let events = seqs(&events_of(&page));
        since = *events.last().unwrap_or(&since);
        received.extend(events);
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(received, (1..=250).collect::<Vec<_>>());
    assert_eq!(pages, 3, "pages of 100 events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_are_paged_to_stay_under_the_128_kb_reply_limit() {
    let local = Local::start().await;
    let mut writer = local.client().await;
    let big = "x".repeat(40 * 1024);
    for _ in 0..5 {
        writer.publish("blobs", None, json!(big)).await;
    }

    let mut reader = local.client().await;
    let first = reader.request(json!({"action": "sync", "room": "blobs", "since": 0})).await;
    assert!(first.to_string().len() <= 128 * 1024);
    assert_eq!(first["more"], true);
    let got = seqs(&events_of(&first));
    assert!(!got.is_empty() && got.len() < 5, "{got:?}");
    let rest = reader.request(json!({"action": "sync", "room": "blobs", "since": got.last().unwrap()})).await;
    let mut all = got.clone();
    all.extend(seqs(&events_of(&rest)));
    while all.len() < 5 {
        let more = reader.request(json!({"action": "sync", "room": "blobs", "since": all.last().unwrap()})).await;
        all.extend(seqs(&events_of(&more)));
    }
    assert_eq!(all, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_without_since_reports_the_head_and_sends_no_history() {
    let local = Local::start().await;
    let mut writer = local.client().await;
    for n in 1..=3 {
        writer.publish("quiet", None, json!(n)).await;
    }
    let mut reader = local.client().await;
    let joined = reader.join("quiet", None).await;
    assert_eq!(joined["seq"], 3);
    assert_eq!(joined["events"], json!([]));
    assert_eq!(joined["more"], false);
}
