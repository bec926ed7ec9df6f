//! LiveSync core: real-time rooms with ordered, gap-free, recoverable delivery.
//!
//! The core knows nothing of Lambda, sockets or a particular database. It talks to small
//! capability traits and is hosted unchanged by the AWS Lambdas (`functions/`) and by the local
//! runner (`infra/runner`).
//!
//! Modules, from the wire inwards:
//!
//! * [`protocol`]: client and server frames, their parsing and every refusal.
//! * [`engine`]: `$connect`, `$disconnect` and one handler per client action.
//! * [`ordering`]: the next seq of a room, claimed by a conditional write; idempotent publish.
//! * [`recovery`]: bounded pages of the events after a seq (`join`/`sync` with `since`).
//! * [`membership`]: connections and their subscriptions; forgetting a gone connection.
//! * [`fanout`]: change-feed batch -> per-room frames, encoded once -> every subscriber.
//! * [`layout`]: the keys and shapes of the items above, in one table.
//!
//! Capabilities, implemented at the edges:
//!
//! * [`store::Store`]: conditional writes, small transactions, partition queries, change feed
//!   (DynamoDB; the embedded SQLite store). [`store::conformance`] holds the suite every
//!   implementation must pass.
//! * [`poster::Poster`]: send a frame to a connection, or learn that it is gone.
//! * [`clock::Clock`]: the time.

pub mod clock;
pub mod engine;
pub mod fanout;
pub mod layout;
pub mod membership;
pub mod ordering;
pub mod poster;
pub mod protocol;
pub mod recovery;
pub mod store;

pub use engine::{Engine, EngineError};
pub use fanout::{Fanout, FanoutPlan, FanoutReport};
