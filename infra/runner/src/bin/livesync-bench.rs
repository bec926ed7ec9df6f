//! `cargo run --release -p livesync-runner --bin livesync-bench`: LiveSync's benchmark.
//!
//! It starts the runner as a separate process (this same binary, in `--serve` mode, so the
//! server's memory and CPU are its own), then measures:
//!
//! * **fanout**: `--subscribers` clients join one room; one publisher keeps up to `--window`
//!   publishes unacknowledged; every event is persisted by the embedded store. Reported:
//!   deliveries per second (events received, summed over subscribers) and publish-to-receipt
//!   latency percentiles over every delivery.
//! * **idle memory**: the server's resident memory with `--subscribers` idle connections.
//! * **contended state**: `--writers` clients increment one counter in one document at once,
//!   each waiting for its acknowledgement before the next (`doc.incr`, a read-decide-write with
//!   its event in one transaction, retried by the server on every lost race). Reported: accepted
//!   writes per second, acknowledgement latency percentiles, and the final count, which must be
//!   exactly the number of acknowledgements.
//!
//! Figures are printed, never asserted: speed belongs here, not in the tests.

use clap::Parser;
use livesync_runner::{Config, Runner};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Benchmark the LiveSync local runner")]
struct Args {
    /// Subscribed connections in the room (and idle connections for the memory figure).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publishes the publisher keeps unacknowledged.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Publishes in the fanout run.
    #[arg(long, default_value_t = 3000)]
    publishes: u64,
    /// Publishes per second at most (0: as fast as acknowledgements allow).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes of payload per event.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Clients writing one document at once in the contended-state run (0: skip it).
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Increments each writer makes in the contended-state run.
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// Serve instead of benchmarking (used by the benchmark itself).
    #[arg(long, hide = true)]
    serve: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(data_dir) = args.serve {
        return runtime.block_on(serve(data_dir));
    }
    runtime.block_on(bench(args))
}

/// The server side: the ordinary runner, announcing its address on stdout.
async fn serve(data_dir: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let runner = Runner::start(Config::for_tests(data_dir)).await?;
    println!("{}", runner.url());
    // Runs until the benchmark closes our stdin.
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    runner.shutdown().await?;
    Ok(())
}

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Result<Server, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        Ok(Server { child, url: line.trim().to_owned(), _dir: dir })
    }

    fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn cpu_seconds(&self) -> f64 {
        // utime + stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        ticks as f64 / 100.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A client of the `livesync-client` crate, as an application would use.
type Socket = livesync_client::Connection;

async fn connect(url: &str) -> Socket {
    // Many connections at once can overflow the listen backlog; retry rather than fail.
    for _ in 0..50 {
        if let Ok(socket) = Socket::open(url, None).await {
            return socket;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}");
}

#[derive(Deserialize)]
struct Pushed {
    #[serde(default)]
    data: Option<Probe>,
    #[serde(default)]
    events: Vec<PushedEvent>,
}

#[derive(Deserialize)]
struct PushedEvent {
    data: Probe,
}

/// What the publisher puts in each event: when it was sent, in µs since the benchmark began.
#[derive(Deserialize)]
struct Probe {
    t: u64,
}

async fn bench(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::start()?;
    let start = Instant::now();
    let baseline_kib = server.resident_kib();
    println!("LiveSync benchmark: runner at {} (separate process, embedded store persisting every event)", server.url);

    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        subscribers.push(connect(&server.url).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = server.resident_kib();
    println!(
        "idle memory: {} connections -> server resident {:.1} MiB (empty server {:.1} MiB)",
        args.subscribers,
        idle_kib as f64 / 1024.0,
        baseline_kib as f64 / 1024.0
    );

    for socket in &mut subscribers {
        let reply = socket.request(serde_json::json!({"action": "join", "room": "bench"})).await?;
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    let expected = args.publishes;
    let received = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Vec<u32>>(args.subscribers);
    for mut socket in subscribers {
        let received = received.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(expected as usize);
            while (latencies_us.len() as u64) < expected {
                let Ok(frame) = socket.next_push().await else {
                    break;
                };
                let now = start.elapsed().as_micros() as u64;
                let Ok(pushed) = serde_json::from_value::<Pushed>(frame) else {
                    continue;
                };
                let probes = pushed.data.into_iter().chain(pushed.events.into_iter().map(|e| e.data));
                for probe in probes {
                    latencies_us.push(now.saturating_sub(probe.t) as u32);
                }
                received.store(latencies_us.len() as u64, Ordering::Relaxed);
            }
            let _ = done.send(latencies_us).await;
        });
    }
    drop(done_tx);

    let mut publisher = connect(&server.url).await;
    let padding = "x".repeat(args.payload);
    let cpu_before = server.cpu_seconds();
    let began = Instant::now();
    let mut in_flight = 0usize;
    let mut sent = 0u64;
    let mut acked = 0u64;
    while acked < expected {
        while in_flight < args.window && sent < expected {
            if args.rate > 0 {
                let due = began + Duration::from_secs_f64(sent as f64 / args.rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let t = start.elapsed().as_micros() as u64;
            let frame = format!(r#"{{"action":"publish","room":"bench","data":{{"t":{t},"pad":"{padding}"}}}}"#);
            publisher.send_text(&frame).await?;
            sent += 1;
            in_flight += 1;
        }
        match publisher.next_frame().await {
            Ok(Some(frame)) if frame["type"] == "ack" => {
                acked += 1;
                in_flight -= 1;
            }
            Ok(Some(_)) => {}
            other => return Err(format!("publisher lost its connection: {other:?}").into()),
        }
    }
    let publish_elapsed = began.elapsed();

    let mut latencies: Vec<u32> = Vec::with_capacity(args.subscribers * expected as usize);
    while let Some(mine) = done_rx.recv().await {
        latencies.extend(mine);
    }
    let elapsed = began.elapsed();
    let cpu = server.cpu_seconds() - cpu_before;
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let deliveries = latencies.len() as f64;
    println!(
        "fanout: {} subscribers, {} publishes (window {}, {}), {} B payload",
        args.subscribers,
        expected,
        args.window,
        if args.rate > 0 { format!("paced at {}/s", args.rate) } else { "unpaced".to_owned() },
        args.payload
    );
    println!(
        "  publishes acknowledged: {:.0}/s ({:.2} s)",
        expected as f64 / publish_elapsed.as_secs_f64(),
        publish_elapsed.as_secs_f64()
    );
    println!(
        "  deliveries: {:.0} of {} expected, {:.0}/s over {:.2} s",
        deliveries,
        args.subscribers as u64 * expected,
        deliveries / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  publish-to-receipt latency: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        percentile(0.50),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0)
    );
    println!(
        "  server CPU: {:.2} s for {:.2} s wall ({:.0}% of one core); resident {:.1} MiB",
        cpu,
        elapsed.as_secs_f64(),
        100.0 * cpu / elapsed.as_secs_f64(),
        server.resident_kib() as f64 / 1024.0
    );
    if args.writers > 0 {
        contended_state(&server, args.writers, args.writes).await?;
    }
    Ok(())
}

/// Milliseconds at percentile `p` of sorted microsecond samples.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    let at = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1));
    sorted_us.get(at).copied().unwrap_or(0) as f64 / 1000.0
}

async fn contended_state(server: &Server, writers: usize, writes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut setup = connect(&server.url).await;
    let created = setup
        .request(
            serde_json::json!({"action": "doc.put", "room": "state", "doc": "counter", "base": 0, "value": {"n": 0}}),
        )
        .await?;
    assert_eq!(created["version"], 1, "{created}");
    let cpu_before = server.cpu_seconds();
    let began = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let url = server.url.clone();
            tokio::spawn(async move {
                let mut socket = connect(&url).await;
                let mut acks_us = Vec::with_capacity(writes);
                for _ in 0..writes {
                    let sent = Instant::now();
                    let frame = serde_json::json!({"action": "doc.incr", "room": "state", "doc": "counter", "path": "/n", "by": 1});
                    let reply = socket.call(frame).await.expect("a reply");
                    assert_eq!(reply["type"], "doc", "{reply}");
                    acks_us.push(sent.elapsed().as_micros() as u32);
                }
                acks_us
            })
        })
        .collect();
    let mut acks: Vec<u32> = Vec::with_capacity(writers * writes);
    for task in tasks {
        acks.extend(task.await?);
    }
    let elapsed = began.elapsed();
    let cpu = server.cpu_seconds() - cpu_before;
    acks.sort_unstable();
    let counter = setup.request(serde_json::json!({"action": "doc.get", "room": "state", "doc": "counter"})).await?;
    let count = counter["value"]["n"].as_u64().unwrap_or(0);
    println!("contended state: {writers} writers x {writes} doc.incr on one document, each waiting for its ack");
    println!(
        "  accepted writes: {:.0}/s ({:.2} s); final count {count} of {} acknowledged",
        acks.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        acks.len()
    );
    println!(
        "  ack latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {:.0}% of one core",
        percentile_ms(&acks, 0.50),
        percentile_ms(&acks, 0.99),
        percentile_ms(&acks, 1.0),
        100.0 * cpu / elapsed.as_secs_f64()
    );
    Ok(())
}
