//! `cargo run --release -p livesync-runner --bin livesync-bench`: LiveSync's benchmark.
//!
//! It starts the runner as a separate process (this same binary, in `--serve` mode, so the
//! server's memory and CPU are its own; every event persisted by the embedded store with fsync)
//! and runs the named workloads against it, each the way users load a room (see `workloads`):
//! `ack` (one user waiting for each answer), `contended` (4 and 16 such users in one room of 100),
//! `pipelined` (32 clients with 8 publishes in flight each), `rooms` (100 rooms of 10 at 20
//! events/s each), `fanout` (one publisher to 1,000), `idle` (10,000 connections' memory),
//! `burst` (ten times the steady rate: memory and what is kept), `state` (8 writers on one
//! document). A progress line runs on stderr; `--json FILE` writes every figure for scripts.
//!
//! Figures are printed, never asserted: speed belongs here, not in the tests. `--tiny` runs each
//! workload at a tiny size, as CI does to keep them working.

mod floor;
mod measure;
mod server;
mod workloads;

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use server::Server;
use workloads::Size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Ack,
    Contended,
    Pipelined,
    Rooms,
    Fanout,
    Idle,
    Burst,
    State,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmark the LiveSync local runner")]
struct Args {
    /// Workloads to run, in this order (default: all).
    #[arg(long = "workload", value_enum)]
    workloads: Vec<Workload>,
    /// Every workload at a tiny size: checks they run, measures nothing worth reading.
    #[arg(long)]
    tiny: bool,
    /// Writes the figures as JSON to this file (`-`: stdout, after the summary).
    #[arg(long)]
    json: Option<String>,
    /// Serve instead of benchmarking (used by the benchmark itself).
    #[arg(long, hide = true)]
    serve: Option<std::path::PathBuf>,
    /// Serve the floor instead (used by the benchmark itself).
    #[arg(long, hide = true)]
    serve_floor: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(data_dir) = args.serve {
        return runtime.block_on(server::serve(data_dir));
    }
    if args.serve_floor {
        return runtime.block_on(floor::serve());
    }
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let size = if args.tiny { Size::Tiny } else { Size::Full };
    let workloads = if args.workloads.is_empty() { Workload::value_variants().to_vec() } else { args.workloads };
    let server = Server::start()?;
    let floor = Server::start_floor()?;
    let machine = machine();
    println!("LiveSync benchmark: runner at {} (its own process; every event stored with fsync)", server.url);
    println!("floor: a bare broadcast server at {} (nothing stored, no guarantees)", floor.url);
    println!("machine: {machine}");
    let mut results = serde_json::Map::new();
    for workload in workloads {
        let name = workload.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
        let figures = match workload {
            Workload::Ack => workloads::ack(&server, size).await,
            Workload::Contended => workloads::contended(&server, &floor, size).await,
            Workload::Pipelined => workloads::pipelined(&server, size).await,
            Workload::Rooms => workloads::rooms(&server, size).await,
            Workload::Fanout => workloads::fanout(&server, &floor, size).await,
            Workload::Idle => workloads::idle(&server, size).await,
            Workload::Burst => workloads::burst(&server, size).await,
            Workload::State => workloads::state(&server, size).await,
        };
        results.insert(name, figures);
    }
    if let Some(path) = args.json {
        let report = json!({"machine": machine, "size": if args.tiny { "tiny" } else { "full" }, "workloads": results});
        let text = serde_json::to_string_pretty(&report)?;
        if path == "-" {
            println!("{text}");
        } else {
            std::fs::write(&path, text)?;
        }
    }
    Ok(())
}

/// What the figures were measured on: CPUs, memory, kernel.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']));
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model.unwrap_or("unknown"),
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}
