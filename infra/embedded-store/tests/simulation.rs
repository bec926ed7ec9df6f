//! The simulation: many clients, the engine, the store and the fanout, with faults injected
//! everywhere the real ones fail, driven step by step by one seeded random generator; then the
//! faults heal and every guarantee is checked.
//!
//! Faults: store calls that fail before they apply or apply and lose their answer; posts that
//! fail, find their connection gone (410), or deliver and lose their answer; batches the mapping
//! delivers twice, or gives up on; clients that drop their connection and come back with `since`.
//!
//! Invariants, checked once healed and settled:
//! * per room, the log holds seqs 1..=head with no gap, and each client id at most once (no
//!   event applied twice, however often its write was retried);
//! * every write that was acknowledged is in the log, under the seq its ack named;
//! * every push to a connection moves past the last seq it pushed there, in seq order, or is
//!   an exact repeat of an earlier push (a redelivery): the fanout never reorders;
//! * every client saw every room's events in seq order, each once, with no gap after recovery,
//!   and all clients hold the same log (convergence).
//!
//! A failing run names its seed: `SIMULATION_SEED=<seed> cargo test -p livesync-embedded-store
//! --test simulation replay -- --ignored --nocapture` runs it alone. `SIMULATION_SECONDS=600 cargo test
//! --release -p livesync-embedded-store --test simulation soak -- --ignored --nocapture` runs new
//! seeds for as long as asked. The engine runs its steps one at a time, so a seed replays the
//! same schedule; the store's own thread and the fanout's concurrent posts may still order a
//! few things differently between runs.

use async_trait::async_trait;
use livesync_core::access::Caller;
use livesync_core::clock::SystemClock;
use livesync_core::faults::{Faults, FaultyPoster, FaultyStore};
use livesync_core::poster::{Delivery, Frame, PostError, Poster};
use livesync_core::store::{Change, ChangeFeed, Store};
use livesync_core::{Engine, Fanout, layout};
use livesync_embedded_store::{EmbeddedStore, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOMS: [&str; 3] = ["lobby", "orders", "chat"];

/// The connections' ends: each one's frames, until API Gateway (here: a fault, or the fanout
/// closing a failing connection) cuts it.
#[derive(Default)]
struct Sockets {
    open: Mutex<HashMap<String, Vec<String>>>,
}

impl Sockets {
    fn open(&self, connection: &str) {
        self.open.lock().unwrap().insert(connection.to_owned(), Vec::new());
    }

    fn is_open(&self, connection: &str) -> bool {
        self.open.lock().unwrap().contains_key(connection)
    }

    fn take(&self, connection: &str) -> Vec<String> {
        self.open.lock().unwrap().get_mut(connection).map(std::mem::take).unwrap_or_default()
    }
}

#[async_trait]
impl Poster for Sockets {
    async fn post(&self, connection: &str, frame: &Frame) -> Result<Delivery, PostError> {
        match self.open.lock().unwrap().get_mut(connection) {
            Some(frames) => {
                frames.push(String::from_utf8(frame.bytes().to_vec()).unwrap());
                Ok(Delivery::Sent)
            }
            None => Ok(Delivery::Gone),
        }
    }

    async fn delete_connection(&self, connection: &str) -> Result<(), PostError> {
        self.open.lock().unwrap().remove(connection);
        Ok(())
    }
}

/// One client: its connection, what it has seen of each room, its writes not yet acknowledged.
struct Client {
    name: String,
    connection: String,
    generation: u32,
    /// Per room, the events seen, in the order they were taken: (seq, id).
    seen: BTreeMap<&'static str, Vec<(u64, String)>>,
    /// Writes sent and not yet acknowledged: retried with the same id until they are.
    pending: Vec<(&'static str, String)>,
    /// The connection is new and its rooms must be joined (again).
    needs_join: bool,
    writes: u32,
}

impl Client {
    fn last(&self, room: &str) -> u64 {
        self.seen.get(room).and_then(|events| events.last()).map_or(0, |(seq, _)| *seq)
    }
}

#[derive(Debug, Default)]
struct Counts {
    steps: u64,
    acked: u64,
    retried_writes: u64,
    batches: u64,
    redelivered_batches: u64,
    abandoned_batches: u64,
    repeats_dropped: u64,
    gaps_filled: u64,
    reconnects: u64,
    internal_errors: u64,
}

struct Simulation {
    seed: u64,
    rng: StdRng,
    faults: Arc<Faults>,
    store: Arc<dyn Store>,
    engine: Engine,
    fanout: Fanout,
    feed: Box<dyn ChangeFeed>,
    sockets: Arc<Sockets>,
    clients: Vec<Client>,
    /// Every ack: (room, id) -> seq.
    acks: HashMap<(&'static str, String), u64>,
    counts: Counts,
    requests: u64,
    /// Per connection and room: the last seq pushed, and every frame pushed (a push that does
    /// not move past the last seq must be an exact repeat of an earlier one: a redelivery).
    pushed: HashMap<(String, String), (u64, HashSet<String>)>,
    /// Faults are off: the settling phase.
    healing: bool,
}

impl Simulation {
    async fn new(seed: u64, dir: &std::path::Path, clients: usize) -> Simulation {
        let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir, Options::default()).unwrap());
        let feed = embedded.change_feed().await.unwrap();
        let faults = Faults::new(seed);
        let store: Arc<dyn Store> = Arc::new(FaultyStore::new(embedded.clone(), faults.clone()));
        let sockets = Arc::new(Sockets::default());
        let poster = Arc::new(FaultyPoster::new(sockets.clone(), faults.clone()));
        let mut simulation = Simulation {
            seed,
            rng: StdRng::seed_from_u64(seed),
            faults,
            engine: Engine::new(store.clone(), Arc::new(SystemClock)),
            fanout: Fanout::new(store, poster).counting().with_retry_delays(vec![Duration::ZERO; 3]),
            store: embedded,
            feed,
            sockets,
            clients: Vec::new(),
            acks: HashMap::new(),
            counts: Counts::default(),
            requests: 0,
            pushed: HashMap::new(),
            healing: false,
        };
        for n in 0..clients {
            let name = format!("client{n}");
            simulation.clients.push(Client {
                connection: String::new(),
                name,
                generation: 0,
                seen: ROOMS.iter().map(|room| (*room, Vec::new())).collect(),
                pending: Vec::new(),
                needs_join: true,
                writes: 0,
            });
            simulation.reconnect(n).await;
        }
        simulation
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {}: {what}\nreplay: SIMULATION_SEED={} cargo test -p livesync-embedded-store --test simulation replay -- --ignored",
            self.seed, self.seed
        )
    }

    async fn ask(&mut self, client: usize, body: Value) -> Value {
        self.requests += 1;
        let connection = self.clients[client].connection.clone();
        let reply = self
            .engine
            .handle(&Caller::anonymous(&connection), &connection, &format!("req-{}", self.requests), &body.to_string())
            .await;
        let reply: Value = serde_json::from_str(&reply.to_json()).unwrap();
        if reply["type"] == "error" {
            if reply["code"] != "internal" {
                self.fail(format!("{body} was refused: {reply}"));
            }
            self.counts.internal_errors += 1;
        }
        reply
    }

    /// A new connection (the old one, if any, disconnects as far as the store lets it).
    async fn reconnect(&mut self, client: usize) {
        let old = std::mem::take(&mut self.clients[client].connection);
        if !old.is_empty() {
            let _ = self.engine.disconnect(&old).await;
            self.sockets.delete_connection(&old).await.unwrap();
            self.counts.reconnects += 1;
        }
        let c = &mut self.clients[client];
        c.generation += 1;
        let connection = format!("{}-{}", c.name, c.generation);
        self.sockets.open(&connection);
        let c = &mut self.clients[client];
        c.connection = connection;
        c.needs_join = true;
    }

    /// Joins every room after what the client has, taking the backlog (pages of it).
    async fn join(&mut self, client: usize) {
        for room in ROOMS {
            let since = self.clients[client].last(room);
            let reply = self.ask(client, json!({"action": "join", "room": room, "since": since})).await;
            if reply["type"] == "error" {
                return;
            }
            self.take_events(client, room, &reply["events"]);
            if reply["more"] == true && !self.catch_up(client, room).await {
                return;
            }
        }
        self.clients[client].needs_join = false;
    }

    /// Syncs a room up to its head; `false` if a sync failed (tried again later).
    async fn catch_up(&mut self, client: usize, room: &'static str) -> bool {
        loop {
            let since = self.clients[client].last(room);
            let reply = self.ask(client, json!({"action": "sync", "room": room, "since": since})).await;
            if reply["type"] == "error" {
                return false;
            }
            self.take_events(client, room, &reply["events"]);
            if reply["more"] != true {
                return true;
            }
        }
    }

    /// Takes events in seq order: a repeat is dropped, the next seq is taken, and a gap stops
    /// the taking (the caller syncs).
    fn take_events(&mut self, client: usize, room: &'static str, events: &Value) -> bool {
        for event in events.as_array().cloned().unwrap_or_default() {
            let seq = event["seq"].as_u64().unwrap();
            let last = self.clients[client].last(room);
            if seq <= last {
                self.counts.repeats_dropped += 1;
            } else if seq == last + 1 {
                let id = event["id"].as_str().unwrap().to_owned();
                self.clients[client].seen.get_mut(room).unwrap().push((seq, id));
            } else {
                return false;
            }
        }
        true
    }

    async fn publish(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let (room, id) = match c.pending.first() {
            Some(pending) => {
                self.counts.retried_writes += 1;
                pending.clone()
            }
            None => {
                c.writes += 1;
                let write = (ROOMS[self.rng.random_range(0..ROOMS.len())], format!("{}-w{}", c.name, c.writes));
                c.pending.push(write.clone());
                write
            }
        };
        let reply = self.ask(client, json!({"action": "publish", "room": room, "id": id, "data": {"by": id}})).await;
        if reply["type"] == "ack" {
            let seq = reply["seq"].as_u64().unwrap();
            if let Some(before) = self.acks.insert((room, id.clone()), seq)
                && before != seq
            {
                self.fail(format!("{id} in {room} was acknowledged as seq {before}, then as seq {seq}"));
            }
            self.clients[client].pending.retain(|(_, pending)| *pending != id);
            self.counts.acked += 1;
        }
    }

    /// Reads the client's pushes; a gap is filled with `sync`.
    async fn read(&mut self, client: usize) {
        let connection = self.clients[client].connection.clone();
        for frame in self.sockets.take(&connection) {
            let pushed: Value = serde_json::from_str(&frame).unwrap();
            let (room, events) = match pushed["type"].as_str() {
                Some("event") => (pushed["room"].as_str().unwrap().to_owned(), json!([pushed])),
                Some("events") => (pushed["room"].as_str().unwrap().to_owned(), pushed["events"].clone()),
                _ => self.fail(format!("an unexpected push: {frame}")),
            };
            let seqs: Vec<u64> = events.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
            if seqs.windows(2).any(|pair| pair[0] >= pair[1]) {
                self.fail(format!("a push to {connection} is not in seq order: {seqs:?}"));
            }
            let (last, frames) = self.pushed.entry((connection.clone(), room.clone())).or_default();
            if seqs[0] > *last {
                *last = *seqs.last().unwrap();
                frames.insert(frame.clone());
            } else if !frames.contains(&frame) {
                let last = *last;
                self.fail(format!("{connection} was pushed {seqs:?} of {room} after seq {last}, and not as a repeat"));
            }
            let room = ROOMS.into_iter().find(|r| *r == room).unwrap();
            if !self.take_events(client, room, &events) {
                self.counts.gaps_filled += 1;
                if self.catch_up(client, room).await {
                    self.take_events(client, room, &events);
                }
            }
        }
    }

    /// One batch of the change feed through the fanout, with the event source mapping's retries
    /// of failed records; sometimes delivered twice.
    async fn fan_out(&mut self) -> bool {
        let batch = match tokio::time::timeout(Duration::from_millis(50), self.feed.next_batch(20)).await {
            Ok(batch) => batch.unwrap(),
            Err(_) => return false,
        };
        self.counts.batches += 1;
        // A batch the mapping gives up on (its records aged out while the fanout failed): its
        // subscribers see a gap and fill it with `sync`.
        if self.faults.total() > 0 && self.rng.random_bool(0.03) && !self.healing {
            self.counts.abandoned_batches += 1;
            return true;
        }
        let mut changes: Vec<Change> = batch;
        for _ in 0..=5 {
            let report = self.fanout.deliver(&changes).await;
            let retry = report.records_to_retry();
            if retry.is_empty() {
                break;
            }
            changes = retry.into_iter().map(|index| changes[index].clone()).collect();
        }
        if self.rng.random_bool(0.1) {
            self.counts.redelivered_batches += 1;
            self.fanout.deliver(&changes).await;
        }
        true
    }

    /// One step of one client or of the fanout, as the dice say.
    async fn step(&mut self) {
        self.counts.steps += 1;
        let client = self.rng.random_range(0..self.clients.len());
        if !self.sockets.is_open(&self.clients[client].connection) {
            return self.reconnect(client).await;
        }
        if self.clients[client].needs_join {
            return self.join(client).await;
        }
        match self.rng.random_range(0..100) {
            0..45 => self.publish(client).await,
            45..75 => {
                self.fan_out().await;
            }
            75..96 => self.read(client).await,
            _ => self.reconnect(client).await,
        }
    }

    /// Faults off; every write retried until acknowledged, the feed drained, every client back
    /// and caught up.
    async fn settle(&mut self) {
        self.faults.heal();
        self.healing = true;
        for client in 0..self.clients.len() {
            while !self.clients[client].pending.is_empty() {
                if !self.sockets.is_open(&self.clients[client].connection) {
                    self.reconnect(client).await;
                }
                self.publish(client).await;
            }
        }
        while self.fan_out().await {}
        for client in 0..self.clients.len() {
            if !self.sockets.is_open(&self.clients[client].connection) {
                self.reconnect(client).await;
            }
            if self.clients[client].needs_join {
                self.join(client).await;
            }
            self.read(client).await;
            for room in ROOMS {
                if !self.catch_up(client, room).await {
                    self.fail(format!("{} could not sync {room} once healed", self.clients[client].name));
                }
            }
        }
    }

    async fn check(&self) {
        for room in ROOMS {
            let mut log: Vec<(u64, String)> = Vec::new();
            let mut since = 0;
            loop {
                let page = self.store.query(layout::events_after(room, since, 100)).await.unwrap();
                for item in &page.items {
                    let event = layout::event_from_item(item).unwrap().unwrap();
                    log.push((event.seq, event.id));
                }
                since = log.last().map_or(0, |(seq, _)| *seq);
                if !page.more {
                    break;
                }
            }
            let seqs: Vec<u64> = log.iter().map(|(seq, _)| *seq).collect();
            if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
                self.fail(format!("room {room}'s log has a gap or a repeat: {seqs:?}"));
            }
            let mut ids = HashSet::new();
            if let Some((seq, id)) = log.iter().find(|(_, id)| !ids.insert(id.clone())) {
                self.fail(format!("{id} was applied twice in {room} (again as seq {seq})"));
            }
            for ((acked_room, id), seq) in &self.acks {
                if *acked_room == room && log.get(*seq as usize - 1).is_none_or(|(_, logged)| logged != id) {
                    self.fail(format!("{id}, acknowledged as seq {seq} of {room}, is not there"));
                }
            }
            for client in &self.clients {
                if client.seen[room] != log {
                    self.fail(format!(
                        "{} saw {room} as {:?}, the log is {:?}",
                        client.name,
                        client.seen[room].iter().map(|(seq, _)| seq).collect::<Vec<_>>(),
                        seqs
                    ));
                }
            }
        }
    }

    fn summary(&self) -> String {
        let events: usize = self.clients.first().map_or(0, |c| c.seen.values().map(Vec::len).sum());
        format!(
            "seed {}: {} clients, {} events, {} faults {:?}, {:?}, 0 violations",
            self.seed,
            self.clients.len(),
            events,
            self.faults.total(),
            self.faults.counts(),
            self.counts
        )
    }
}

/// One run of a seed: `steps` steps under faults, then settle and check.
async fn run(seed: u64, clients: usize, steps: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut simulation = Simulation::new(seed, dir.path(), clients).await;
    simulation.faults.set_rates(0.05, 0.05);
    for _ in 0..steps {
        simulation.step().await;
    }
    simulation.settle().await;
    simulation.check().await;
    simulation.summary()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_seeds_keep_order_gap_freedom_idempotency_and_convergence_under_faults() {
    for seed in 1..=6 {
        let summary = run(seed, 6, 400).await;
        println!("{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "replays one seed: SIMULATION_SEED=<seed> cargo test -p livesync-embedded-store --test simulation replay -- --ignored --nocapture"]
async fn replay() {
    let seed = std::env::var("SIMULATION_SEED").expect("SIMULATION_SEED names the seed to replay");
    println!("{}", run(seed.parse().expect("SIMULATION_SEED is a number"), 6, 400).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: SIMULATION_SECONDS=600 cargo test --release -p livesync-embedded-store --test simulation soak -- --ignored --nocapture"]
async fn soak() {
    let seconds: u64 = std::env::var("SIMULATION_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut seed = rand::random::<u32>() as u64;
    let mut runs = 0;
    while Instant::now() < until {
        println!("{}", run(seed, 12, 2000).await);
        seed += 1;
        runs += 1;
    }
    println!("{runs} runs, every invariant held");
}
