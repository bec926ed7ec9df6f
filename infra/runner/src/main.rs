//! `cargo run`: the LiveSync local runner.

use clap::Parser;
use livesync_runner::{Config, Runner, StoreKind};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let config = Config::parse();
    let runner = Runner::start(config.clone()).await?;
    let data = match config.store {
        StoreKind::Embedded => format!("data in {}", config.data_dir.display()),
        StoreKind::Dynamodb => format!("data in DynamoDB table {}", config.table),
    };
    eprintln!("LiveSync local runner on {} ({data})", runner.url());
    shutdown_signal().await;
    tracing::info!("shutting down");
    runner.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
