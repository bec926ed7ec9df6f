//! The workloads, one function each: what users do to a room, at a size (`Size::Full` for the
//! figures in docs/BENCHMARKS.md, `Size::Tiny` for CI, which only checks they run). Each returns
//! its figures as JSON and prints them as a few lines.

use crate::measure::{Latency, Progress, Received, Socket, connect, join, publish_frame, receive, reply_to};
use crate::server::Server;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Tiny,
}

impl Size {
    /// `full` at full size, `tiny` in CI.
    fn pick<T>(self, full: T, tiny: T) -> T {
        match self {
            Size::Full => full,
            Size::Tiny => tiny,
        }
    }
}

/// 64 bytes of payload per event: a chat line.
const PAD: &str = "0123456789012345678901234567890123456789012345678901234567890123";

async fn subscribers(server: &Server, room: &str, count: usize) -> (Vec<Socket>, u64) {
    let mut sockets = Vec::with_capacity(count);
    let mut head = 0;
    for _ in 0..count {
        let mut socket = connect(&server.url).await;
        head = join(&mut socket, room).await;
        sockets.push(socket);
    }
    (sockets, head)
}

/// What the subscribers of a workload received, together.
struct Delivered {
    /// Events received, summed over subscribers.
    count: usize,
    /// Subscribers that got every event once, in order.
    in_order: usize,
    subscribers: usize,
    latency: Latency,
    /// When the last event reached any subscriber.
    last_at: Instant,
}

async fn delivered(handles: Vec<tokio::task::JoinHandle<Received>>) -> Delivered {
    let subscribers = handles.len();
    let (mut count, mut in_order, mut latencies) = (0, 0, Vec::new());
    let mut last_at: Option<Instant> = None;
    for handle in handles {
        let received = handle.await.expect("receiver");
        count += received.latencies_us.len();
        in_order += usize::from(received.in_order);
        last_at = last_at.max(Some(received.last_at));
        latencies.extend(received.latencies_us);
    }
    Delivered {
        count,
        in_order,
        subscribers,
        latency: Latency::of(latencies),
        last_at: last_at.unwrap_or_else(Instant::now),
    }
}

/// One publisher waiting for each ack before the next publish: the latency a user feels. Not
/// joined, joined to the room it writes (each ack then followed by the push of its own event),
/// and joined without pacing (as fast as acks come back).
pub async fn ack(server: &Server, size: Size) -> Value {
    let publishes = size.pick(2000u64, 20);
    let mut variants = Vec::new();
    for (name, joined, rate) in
        [("not joined", false, Some(100u64)), ("joined", true, Some(100)), ("joined, unpaced", true, None)]
    {
        let room = format!("ack-{}", variants.len());
        let mut socket = connect(&server.url).await;
        if joined {
            join(&mut socket, &room).await;
        }
        let progress = Progress::start(format!("ack, {name}"), publishes, "publishes");
        let mut acks_us = Vec::with_capacity(publishes as usize);
        let began = Instant::now();
        for n in 0..publishes {
            if let Some(rate) = rate {
                tokio::time::sleep_until((began + Duration::from_secs_f64(n as f64 / rate as f64)).into()).await;
            }
            let sent = Instant::now();
            socket.send_text(&publish_frame(&room, n, None, PAD)).await.expect("send");
            let reply = reply_to(&mut socket, n).await;
            assert_eq!(reply["type"], "ack", "{reply}");
            acks_us.push(sent.elapsed().as_micros() as u32);
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        let elapsed = began.elapsed().as_secs_f64();
        drop(progress);
        let latency = Latency::of(acks_us);
        let rate_label = rate.map_or("unpaced".to_owned(), |r| format!("{r}/s"));
        println!(
            "ack, {name} ({rate_label}): {publishes} publishes, {:.0}/s; ack {latency}",
            publishes as f64 / elapsed
        );
        variants.push(json!({
            "variant": name, "joined": joined, "paced_per_s": rate, "publishes": publishes,
            "publishes_per_s": publishes as f64 / elapsed, "ack": latency,
        }));
    }
    json!(variants)
}

/// `publishers` clients, each waiting for its ack before the next publish, into one room of
/// `subscribers`: a busy room with many writers.
async fn contended_room(server: &Server, publishers: usize, subscriber_count: usize, each: u64) -> Value {
    let room = format!("contended-{publishers}");
    let (sockets, head) = subscribers(server, &room, subscriber_count).await;
    let expected = publishers as u64 * each;
    let progress = Progress::start(
        format!("contended, {publishers} publishers"),
        expected * subscriber_count as u64,
        "deliveries",
    );
    let receivers: Vec<_> = sockets.into_iter().map(|s| receive(s, head, expected, progress.done.clone())).collect();
    let cpu_before = server.cpu_seconds();
    let began = Instant::now();
    let writers: Vec<_> = (0..publishers)
        .map(|_| {
            let (url, room) = (server.url.clone(), room.clone());
            tokio::spawn(async move {
                let mut socket = connect(&url).await;
                let mut acks_us = Vec::with_capacity(each as usize);
                for n in 0..each {
                    let sent = Instant::now();
                    socket.send_text(&publish_frame(&room, n, None, PAD)).await.expect("send");
                    let reply = reply_to(&mut socket, n).await;
                    assert_eq!(reply["type"], "ack", "{reply}");
                    acks_us.push(sent.elapsed().as_micros() as u32);
                }
                acks_us
            })
        })
        .collect();
    let mut acks = Vec::new();
    for writer in writers {
        acks.extend(writer.await.expect("publisher"));
    }
    let Delivered { count: deliveries, in_order: whole, subscribers: of, latency: delivery, last_at } =
        delivered(receivers).await;
    drop(progress);
    let elapsed = last_at.duration_since(began).as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let ack = Latency::of(acks);
    println!(
        "contended: {publishers} ack-paced publishers x {each} into one room of {subscriber_count}: {:.0} deliveries/s, {:.0} publishes/s; ack {ack}; delivery {delivery}; {whole} of {of} subscribers got every event in order; server CPU {:.0}%",
        deliveries as f64 / elapsed,
        expected as f64 / elapsed,
        100.0 * cpu / elapsed
    );
    json!({
        "publishers": publishers, "subscribers": subscriber_count, "publishes": expected,
        "deliveries": deliveries, "deliveries_per_s": deliveries as f64 / elapsed,
        "publishes_per_s": expected as f64 / elapsed, "ack": ack, "delivery": delivery,
        "subscribers_in_order": whole, "server_cpu_percent": 100.0 * cpu / elapsed,
    })
}

/// Beside the floor's figures, the share of its deliveries the runner reached.
fn against_floor(mut runner: Value, floor: Value) -> Value {
    let share = runner["deliveries_per_s"].as_f64().unwrap_or(0.0) / floor["deliveries_per_s"].as_f64().unwrap_or(1.0);
    println!("  the runner reached {share:.2}x the floor's deliveries/s");
    runner["floor"] = floor;
    runner["share_of_floor"] = json!(share);
    runner
}

pub async fn contended(server: &Server, floor: &Server, size: Size) -> Value {
    let subscribers = size.pick(100, 5);
    let mut results = Vec::new();
    for publishers in [4, 16] {
        let each = size.pick(8000 / publishers as u64, 5);
        let runner = contended_room(server, publishers, subscribers, each).await;
        print!("  floor: ");
        let bare = contended_room(floor, publishers, subscribers, each).await;
        results.push(against_floor(runner, bare));
    }
    json!(results)
}

/// Many clients with several publishes in flight each, into one room: whether any publish
/// fails for contention.
pub async fn pipelined(server: &Server, size: Size) -> Value {
    let (clients, window, each) = size.pick((32usize, 8usize, 250u64), (4, 2, 5));
    let total = clients as u64 * each;
    let progress = Progress::start("pipelined".to_owned(), total, "publishes");
    let began = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let url = server.url.clone();
            let done = progress.done.clone();
            tokio::spawn(async move {
                let mut socket = connect(&url).await;
                let mut refused: BTreeMap<String, u64> = BTreeMap::new();
                let (mut sent, mut answered, mut in_flight) = (0u64, 0u64, 0usize);
                while answered < each {
                    while in_flight < window && sent < each {
                        let id = format!("c{client}-{sent}");
                        socket.send_text(&publish_frame("pipelined", sent, Some(&id), PAD)).await.expect("send");
                        sent += 1;
                        in_flight += 1;
                    }
                    let frame = socket.next_frame().await.expect("socket").expect("closed");
                    if frame.get("ref").is_none() {
                        continue;
                    }
                    if frame["type"] != "ack" {
                        *refused.entry(frame["code"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
                    }
                    answered += 1;
                    in_flight -= 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                refused
            })
        })
        .collect();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        for (code, n) in task.await.expect("client") {
            *refused.entry(code).or_default() += n;
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    drop(progress);
    let failed: u64 = refused.values().sum();
    println!(
        "pipelined: {clients} clients x {window} in flight x {each} publishes into one room: {} of {total} acked, {:.0}/s; refused: {refused:?}",
        total - failed,
        total as f64 / elapsed
    );
    json!({
        "clients": clients, "in_flight": window, "publishes": total, "acked": total - failed,
        "refused": refused, "publishes_per_s": total as f64 / elapsed,
    })
}

/// Many rooms at once, each with its own subscribers and a steady publisher.
pub async fn rooms(server: &Server, size: Size) -> Value {
    let (room_count, per_room, rate, seconds) = size.pick((100usize, 10usize, 20u64, 10u64), (3, 2, 20, 1));
    let each = rate * seconds;
    let progress = Progress::start("rooms".to_owned(), room_count as u64 * per_room as u64 * each, "deliveries");
    let mut receivers = Vec::new();
    for r in 0..room_count {
        let room = format!("room-{r}");
        let (sockets, head) = subscribers(server, &room, per_room).await;
        receivers.extend(sockets.into_iter().map(|s| receive(s, head, each, progress.done.clone())));
    }
    let began = Instant::now();
    let publishers: Vec<_> = (0..room_count)
        .map(|r| {
            let url = server.url.clone();
            tokio::spawn(async move {
                let room = format!("room-{r}");
                let mut socket = connect(&url).await;
                // Spread the rooms' publishes over the first interval, as independent users are.
                let offset = Duration::from_secs_f64(r as f64 / room_count as f64 / rate as f64);
                for n in 0..each {
                    let due = began + offset + Duration::from_secs_f64(n as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    socket.send_text(&publish_frame(&room, n, None, PAD)).await.expect("send");
                    let reply = reply_to(&mut socket, n).await;
                    assert_eq!(reply["type"], "ack", "{reply}");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let Delivered { count: deliveries, in_order: whole, subscribers: of, latency: delivery, .. } =
        delivered(receivers).await;
    drop(progress);
    let elapsed = began.elapsed().as_secs_f64();
    println!(
        "rooms: {room_count} rooms x {per_room} subscribers at {rate} events/s each for {seconds} s: {:.0} deliveries/s; delivery {delivery}; {whole} of {of} subscribers got every event in order",
        deliveries as f64 / elapsed
    );
    json!({
        "rooms": room_count, "subscribers_per_room": per_room, "events_per_s_per_room": rate, "seconds": seconds,
        "deliveries": deliveries, "deliveries_per_s": deliveries as f64 / elapsed, "delivery": delivery,
        "subscribers_in_order": whole,
    })
}

/// One publisher keeping a few publishes in flight, to a large room; then the same on the floor.
pub async fn fanout(server: &Server, floor: &Server, size: Size) -> Value {
    let runner = fanout_room(server, size).await;
    print!("  floor: ");
    let bare = fanout_room(floor, size).await;
    against_floor(runner, bare)
}

async fn fanout_room(server: &Server, size: Size) -> Value {
    let (subscriber_count, publishes, window) = size.pick((1000usize, 3000u64, 4u64), (10, 20, 4));
    let (sockets, head) = subscribers(server, "fanout", subscriber_count).await;
    let progress = Progress::start("fanout".to_owned(), publishes * subscriber_count as u64, "deliveries");
    let receivers: Vec<_> = sockets.into_iter().map(|s| receive(s, head, publishes, progress.done.clone())).collect();
    let mut publisher = connect(&server.url).await;
    let cpu_before = server.cpu_seconds();
    let began = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < publishes {
        while sent - acked < window && sent < publishes {
            publisher.send_text(&publish_frame("fanout", sent, None, PAD)).await.expect("send");
            sent += 1;
        }
        let frame = publisher.next_frame().await.expect("socket").expect("closed");
        if frame["type"] == "ack" {
            acked += 1;
        }
    }
    let publish_elapsed = began.elapsed().as_secs_f64();
    let Delivered { count: deliveries, in_order: whole, subscribers: of, latency: delivery, last_at } =
        delivered(receivers).await;
    drop(progress);
    let elapsed = last_at.duration_since(began).as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    println!(
        "fanout: 1 publisher (window {window}) x {publishes} to {subscriber_count} subscribers: {:.0} publishes/s, {:.0} deliveries/s; delivery {delivery}; {whole} of {of} in order; server CPU {:.0}%",
        publishes as f64 / publish_elapsed,
        deliveries as f64 / elapsed,
        100.0 * cpu / elapsed
    );
    json!({
        "subscribers": subscriber_count, "publishes": publishes, "window": window,
        "publishes_per_s": publishes as f64 / publish_elapsed, "deliveries_per_s": deliveries as f64 / elapsed,
        "delivery": delivery, "subscribers_in_order": whole, "server_cpu_percent": 100.0 * cpu / elapsed,
    })
}

/// Connections that only sit there: what each costs the server in memory.
pub async fn idle(server: &Server, size: Size) -> Value {
    let count = size.pick(10_000usize, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.resident_kib();
    let progress = Progress::start("idle".to_owned(), count as u64, "connections");
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(connect(&server.url).await);
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
    drop(progress);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.resident_kib();
    let per = after.saturating_sub(before) as f64 / count as f64;
    println!(
        "idle: {count} connections: server resident {:.1} MiB ({:.1} MiB before), {per:.1} KiB each",
        after as f64 / 1024.0,
        before as f64 / 1024.0
    );
    for socket in sockets {
        drop(socket);
    }
    json!({"connections": count, "resident_mib": after as f64 / 1024.0, "resident_before_mib": before as f64 / 1024.0, "kib_per_connection": per})
}

/// A steady rate, then ten times it, then steady again, into a room with subscribers: the
/// server's memory stays bounded, and every acknowledged publish is stored.
pub async fn burst(server: &Server, size: Size) -> Value {
    let (subscriber_count, steady, phase_secs) = size.pick((100usize, 100u64, 3.0f64), (3, 20, 0.5));
    let (mut sockets, head) = subscribers(server, "burst", subscriber_count).await;
    let peak = steady * 10;
    let phases = [(steady, phase_secs), (peak, phase_secs), (steady, phase_secs)];
    // Several publishers, as a burst comes from many users; ids make "stored" checkable.
    let publishers = 8u64;
    let per_publisher = move |rate: u64, secs: f64| (rate as f64 * secs) as u64 / publishers;
    let total: u64 = phases.iter().map(|(rate, secs)| per_publisher(*rate, *secs) * publishers).sum();
    let progress = Progress::start("burst".to_owned(), total, "publishes");
    let receivers: Vec<_> = sockets.drain(..).map(|s| receive(s, head, total, Arc::new(AtomicU64::new(0)))).collect();
    let before = server.resident_kib();
    let peak_kib = Arc::new(AtomicU64::new(before));
    let sampling = {
        let (peak_kib, resident_kib) = (peak_kib.clone(), server.resident_kib_reader());
        tokio::spawn(async move {
            loop {
                peak_kib.fetch_max(resident_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let began = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let url = server.url.clone();
            let done = progress.done.clone();
            tokio::spawn(async move {
                let mut socket = connect(&url).await;
                let mut acked = Vec::new();
                let mut start = Duration::ZERO;
                let mut n = 0u64;
                for (rate, secs) in phases {
                    for k in 0..per_publisher(rate, secs) {
                        let due = began + start + Duration::from_secs_f64(k as f64 * publishers as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                        let id = format!("b{p}-{n}");
                        socket.send_text(&publish_frame("burst", n, Some(&id), PAD)).await.expect("send");
                        let reply = reply_to(&mut socket, n).await;
                        if reply["type"] == "ack" {
                            acked.push(id);
                        }
                        n += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    start += Duration::from_secs_f64(secs);
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<String> = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("publisher"));
    }
    let published = acked.len() as u64;
    let Delivered { in_order: whole, subscribers: of, latency: delivery, .. } = delivered(receivers).await;
    sampling.abort();
    drop(progress);
    // What is stored: every event of the room, paged through with sync.
    let mut reader = connect(&server.url).await;
    let mut stored: HashSet<String> = HashSet::new();
    let mut since = head;
    loop {
        let page = reader.request(json!({"action": "sync", "room": "burst", "since": since})).await.expect("sync");
        for event in page["events"].as_array().into_iter().flatten() {
            stored.insert(event["id"].as_str().unwrap_or_default().to_owned());
            since = event["seq"].as_u64().unwrap_or(since);
        }
        if page["more"] != json!(true) {
            break;
        }
    }
    let lost = acked.iter().filter(|id| !stored.contains(*id)).count();
    let peak_mib = peak_kib.load(Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "burst: {steady}/s, then {peak}/s, then {steady}/s ({phase_secs} s each) into a room of {subscriber_count}: {published} acked, {lost} of them not stored; server resident {:.1} MiB before, {peak_mib:.1} MiB at most; delivery {delivery}; {whole} of {of} subscribers got every event in order",
        before as f64 / 1024.0
    );
    json!({
        "steady_per_s": steady, "burst_per_s": peak, "phase_seconds": phase_secs, "subscribers": subscriber_count,
        "acked": published, "acked_not_stored": lost, "resident_before_mib": before as f64 / 1024.0,
        "resident_peak_mib": peak_mib, "delivery": delivery, "subscribers_in_order": whole,
    })
}

/// Writers racing on one document: each `doc.incr` reads, decides and writes conditionally with
/// its event, retried by the server on every lost race.
pub async fn state(server: &Server, size: Size) -> Value {
    let (writers, writes) = size.pick((8usize, 200usize), (2, 5));
    let mut setup = connect(&server.url).await;
    let created = setup
        .request(json!({"action": "doc.put", "room": "state", "doc": "counter", "base": 0, "value": {"n": 0}}))
        .await
        .expect("doc.put");
    assert_eq!(created["version"], 1, "{created}");
    let progress = Progress::start("state".to_owned(), (writers * writes) as u64, "writes");
    let cpu_before = server.cpu_seconds();
    let began = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let url = server.url.clone();
            let done = progress.done.clone();
            tokio::spawn(async move {
                let mut socket = connect(&url).await;
                let mut acks_us = Vec::with_capacity(writes);
                for _ in 0..writes {
                    let sent = Instant::now();
                    let frame = json!({"action": "doc.incr", "room": "state", "doc": "counter", "path": "/n", "by": 1});
                    let reply = socket.call(frame).await.expect("a reply");
                    assert_eq!(reply["type"], "doc", "{reply}");
                    acks_us.push(sent.elapsed().as_micros() as u32);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                acks_us
            })
        })
        .collect();
    let mut acks: Vec<u32> = Vec::with_capacity(writers * writes);
    for task in tasks {
        acks.extend(task.await.expect("writer"));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    drop(progress);
    let counter =
        setup.request(json!({"action": "doc.get", "room": "state", "doc": "counter"})).await.expect("doc.get");
    let count = counter["value"]["n"].as_u64().unwrap_or(0);
    let acked = acks.len();
    let ack = Latency::of(acks);
    println!(
        "state: {writers} writers x {writes} doc.incr on one document: {:.0} writes/s; ack {ack}; final count {count} of {acked} acknowledged; server CPU {:.0}%",
        acked as f64 / elapsed,
        100.0 * cpu / elapsed
    );
    json!({
        "writers": writers, "writes": acked, "writes_per_s": acked as f64 / elapsed, "ack": ack,
        "final_count": count, "server_cpu_percent": 100.0 * cpu / elapsed,
    })
}
