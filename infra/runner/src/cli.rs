//! The `livesync` command line: `livesync` (or `livesync serve`) runs the local runner;
//! `livesync token` mints a token for it; `jobs`, `backups`, `restore`, `report` and `cron` look
//! after the scheduled jobs (see [`crate::commands`]).

use crate::{Config, JobsArgs, StoreArgs};
use livesync_core::access::{Grants, RoomPatterns};
use livesync_handlers::authorizer::{self, Claims};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Parser)]
#[command(
    name = "livesync",
    version,
    about = "LiveSync local runner: the LiveSync WebSocket API on localhost",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the local runner (what `livesync` alone does).
    Serve(Box<Config>),
    /// Mint an HS256 token for a runner started with the same --auth-secret.
    Token(TokenArgs),
    /// The scheduled jobs (backup, report): list them, run one now, see their runs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The embedded store's backups.
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Restore a backup into a data directory (refused if it holds data, unless --force).
    Restore(RestoreArgs),
    /// Show the end-of-day report of a day (today by default).
    Report(ReportArgs),
    /// Translate a crontab line (`0 2 * * *`) into EventBridge's form, and show when it fires.
    Cron(CronArgs),
    /// Talk to a LiveSync endpoint interactively: a JSON frame a line in, every frame out.
    Connect(ConnectArgs),
    /// Publish one event to a room.
    Publish(PublishArgs),
    /// Print a room's events and follow it, gap-free across reconnects.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The endpoint: ws://127.0.0.1:3001 (the runner) or a stack's wss:// WebSocketUrl.
    pub url: String,
    /// A token for an endpoint that requires one (`livesync token` mints one for a runner).
    #[arg(long, env = "LIVESYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The endpoint: ws://127.0.0.1:3001 (the runner) or a stack's wss:// WebSocketUrl.
    pub url: String,
    pub room: String,
    /// The event's data: JSON (`{"text":"hi"}`, `42`), or else taken as a string.
    pub data: String,
    /// An idempotency id: publishing again with it is answered with the first seq.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long, env = "LIVESYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The endpoint: ws://127.0.0.1:3001 (the runner) or a stack's wss:// WebSocketUrl.
    pub url: String,
    pub room: String,
    /// Start after this seq (0: from the room's first event).
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    #[arg(long, env = "LIVESYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Each job on a schedule in the template: its schedule and next fire times.
    List(ListArgs),
    /// Run a job now, on the store of --data-dir (also while a runner is serving it).
    Run(RunArgs),
    /// The recorded runs of the jobs, newest first.
    Runs(RunsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The SAM template whose schedule events are read.
    #[arg(long, env = "LIVESYNC_TEMPLATE", default_value = "template.yaml")]
    pub template: PathBuf,
    /// Fire times shown per schedule.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub next: u16,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum JobArg {
    Backup,
    Report,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job to run.
    #[arg(value_enum)]
    pub job: JobArg,
    #[command(flatten)]
    pub data: StoreArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Only this job's runs.
    #[arg(value_enum)]
    pub job: Option<JobArg>,
    /// Runs shown per job.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    #[command(flatten)]
    pub data: StoreArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BackupsCommand {
    /// One backup a line, oldest first: its file, then when it was taken and what it holds.
    List(BackupsListArgs),
}

#[derive(Debug, clap::Args)]
pub struct BackupsListArgs {
    #[command(flatten)]
    pub data: StoreArgs,
    /// Where the backups are (default: the data directory's `backups` folder).
    #[arg(long, env = "LIVESYNC_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup: its `.db.gz` file (or its `.json` manifest), as `livesync backups list` shows.
    pub backup: PathBuf,
    /// The data directory to restore into.
    #[arg(long, env = "LIVESYNC_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Replace the data the directory holds. Stop any runner using it first.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The day, YYYY-MM-DD (UTC); today by default.
    #[arg(long)]
    pub date: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Count the figures now, from the day's tally, rather than show the stored report (which
    /// was made at the report's time: 23:55 UTC by default).
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub data: StoreArgs,
    /// SKUs below this level are on the restock list (for a report made now).
    #[arg(long, env = "LIVESYNC_LOW_STOCK_THRESHOLD", default_value_t = 5)]
    pub low_stock_threshold: i64,
}

#[derive(Debug, clap::Args)]
pub struct CronArgs {
    /// A crontab line (`0 2 * * *`) or an EventBridge expression (`cron(0 2 * * ? *)`, `rate(1 hour)`).
    pub expression: String,
    /// The IANA time zone the schedule is evaluated in (ScheduleExpressionTimezone).
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Fire times shown.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub next: u16,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user the token is for (its `sub`): events it publishes are `from` this name.
    #[arg(long)]
    pub sub: String,
    /// Rooms it may read: names, or prefixes ending in `*`, comma-separated.
    #[arg(long, default_value = "")]
    pub read: String,
    /// Rooms it may write (publish, change state), in the same form.
    #[arg(long, default_value = "")]
    pub write: String,
    /// How long it is valid: `90s`, `15m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The shared secret (the runner's --auth-secret).
    #[arg(long, env = "LIVESYNC_AUTH_SECRET", hide_env_values = true)]
    pub secret: String,
}

fn patterns(list: &str) -> RoomPatterns {
    RoomPatterns::new(list.split(',').map(str::trim).filter(|p| !p.is_empty()))
}

impl TokenArgs {
    /// The token, or what is wrong with the arguments.
    pub fn mint(&self, now_secs: u64) -> Result<String, authorizer::KeyError> {
        let claims = Claims {
            sub: self.sub.clone(),
            exp: now_secs + self.ttl.as_secs(),
            rooms: Grants { read: patterns(&self.read), write: patterns(&self.write) },
        };
        authorizer::mint(self.secret.as_bytes(), &claims)
    }
}
