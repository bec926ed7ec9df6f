//! `cargo run`: the LiveSync local runner, and the `livesync` commands beside it (`token`,
//! `jobs`, `backups`, `restore`, `report`, `cron`).

use clap::Parser;
use livesync_core::clock::{Clock, SystemClock};
use livesync_core::engine::Chain;
use livesync_runner::cli::{BackupsCommand, Cli, Command, JobsCommand};
use livesync_runner::{Config, Runner, StoreKind};
use livesync_runner::{commands, remote};
use std::process::ExitCode;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> ExitCode {
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Token(args)) => {
            args.mint(SystemClock.now_ms() / 1000).map(|token| println!("{token}")).map_err(Into::into)
        }
        Some(Command::Jobs(JobsCommand::List(args))) => commands::jobs_list(&args),
        Some(Command::Jobs(JobsCommand::Run(args))) => commands::jobs_run(&args).await,
        Some(Command::Jobs(JobsCommand::Runs(args))) => commands::jobs_runs(&args).await,
        Some(Command::Backups(BackupsCommand::List(args))) => commands::backups_list(&args).await,
        Some(Command::Restore(args)) => commands::restore(&args),
        Some(Command::Report(args)) => commands::report(&args).await,
        Some(Command::Cron(args)) => commands::cron(&args),
        Some(Command::Connect(args)) => remote::connect(&args).await,
        Some(Command::Publish(args)) => remote::publish(&args).await,
        Some(Command::Tail(args)) => remote::tail(&args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The whole chain, in words: what failed and why.
            eprintln!("livesync: {}", Chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let runner = Runner::start(config.clone()).await?;
    let data = match config.data.store {
        StoreKind::Embedded => format!("data in {}", config.data.data_dir.display()),
        StoreKind::Dynamodb => format!("data in DynamoDB table {}", config.data.table),
    };
    eprintln!("LiveSync local runner on {} ({data})", runner.url());
    eprintln!("  demo page: http://{}/ (open it in two browser tabs)", runner.local_addr());
    if runner.is_open() {
        eprintln!(
            "  open: no token required, every client may read and write every room (--auth-secret to require tokens)"
        );
    } else {
        eprintln!("  tokens required on connect: ?token=<JWT> (mint one with `livesync token`)");
    }
    eprintln!("  connection management API (SigV4) on http://{}", runner.management_addr());
    for (job, schedule) in runner.scheduled_jobs() {
        eprintln!("  {job} job on {schedule}, from {}", config.jobs.template.display());
    }
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
