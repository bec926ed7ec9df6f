//! LiveSync core: real-time rooms with ordered, gap-free, recoverable delivery.
//!
//! The core knows nothing of Lambda, sockets or a particular database. It talks to small
//! capability traits and is hosted unchanged by the AWS Lambdas (`functions/`) and by the local
//! runner (`infra/runner`).
//!
//! Modules, from the wire inwards:
//!
//! * [`protocol`]: client and server frames, their parsing and every refusal.
//! * [`engine`]: `$connect`, `$disconnect`, and each client frame to its action.
//! * [`access`]: who asks (as the `$connect` authorizer vouched) and which rooms they may read
//!   or write.
//! * [`limits`]: each connection's write rate (a token bucket, in memory or in the store).
//! * [`actions`]: one file per client action (fields, checks, apply), named in one list.
//! * [`state`]: the read-decide-write loop every shared state change runs, with its event.
//! * [`documents`]: versioned JSON documents, conflict strategies, history.
//! * [`text`] and [`texts`]: ot.js-compatible operational transformation, and texts in the store.
//! * [`stock`]: stock levels that never go below zero.
//! * [`ordering`]: the next seq of a room, claimed by a conditional write; idempotent publish.
//! * [`recovery`]: bounded pages of the events after a seq (`join`/`sync` with `since`).
//! * [`reading`]: reading a room without a socket (HTTP long polling, Server-Sent Events).
//! * [`membership`]: connections, subscriptions, presence; forgetting a gone connection.
//! * [`fanout`]: change-feed batch -> per-room frames, encoded once -> every subscriber.
//! * [`tally`]: the day's figures, counted from the change feed, for the end-of-day report.
//! * [`jobs`]: the scheduled jobs (backup, report), their schedules and run records.
//! * [`layout`]: the keys and shapes of the items above, in one table.
//!
//! Capabilities, implemented at the edges:
//!
//! * [`store::Store`]: conditional writes, small transactions, partition queries, change feed
//!   (DynamoDB; the embedded SQLite store). [`store::conformance`] holds the suite every
//!   implementation must pass.
//! * [`poster::Poster`]: send a frame to a connection, or learn that it is gone; close one.
//! * [`clock::Clock`]: the time.
//! * [`reading::Arrivals`]: wake a reader waiting for a room's next event.
//!
//! With the `faults` feature, [`faults`] wraps a store and a poster to fail as real ones do
//! (before applying, after applying with the answer lost, 410, throttled), for the simulation.

pub mod access;
pub mod actions;
pub mod clock;
pub mod documents;
pub mod engine;
pub mod fanout;
#[cfg(any(test, feature = "faults"))]
pub mod faults;
pub mod jobs;
pub mod layout;
pub mod limits;
pub mod membership;
pub mod ordering;
pub mod poster;
pub mod protocol;
pub mod reading;
pub mod recovery;
pub mod state;
pub mod stock;
pub mod store;
pub mod tally;
pub mod text;
pub mod texts;

pub use engine::{Engine, EngineError};
pub use fanout::{Fanout, FanoutPlan, FanoutReport};
