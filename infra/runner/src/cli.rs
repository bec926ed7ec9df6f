//! The `livesync` command line: `livesync` (or `livesync serve`) runs the local runner;
//! `livesync token` mints a token for it.

use crate::Config;
use livesync_core::access::{Grants, RoomPatterns};
use livesync_handlers::authorizer::{self, Claims};
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
