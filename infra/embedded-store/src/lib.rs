//! The embedded store: LiveSync's [`Store`] on one SQLite file, for the local runner.
//!
//! It mirrors DynamoDB's semantics (see `livesync_core::store`), checked by the same conformance
//! suite. Two choices shape it:
//!
//! * **One writer thread, one reader thread.** SQLite allows one writer at a time anyway, so every
//!   write becomes a job for a dedicated thread that owns the writing connection. It takes all the
//!   jobs that are waiting, runs each in its own savepoint (conditions are evaluated there, so
//!   they see every earlier write), and commits them together: one fsync acknowledges many
//!   writes (group commit), and no write is answered before it is durable. Reads (`get`,
//!   `query`, the change feed) run on a second connection in their own thread: in WAL mode they
//!   see every committed write and never wait behind a writer's fsync, which keeps the fanout
//!   path fast while publishes are being committed.
//! * **A change log table.** Every change is appended, in the same SQLite transaction, to
//!   `changes` with a monotonic id. The change feed reads that log after a cursor, so the order is
//!   commit order, writers never wait for readers, and a slow fanout cannot block a publish.
//!   Entries every open feed has read are trimmed within a second (one range delete, riding
//!   along with the next commit), and the periodic sweep deletes items past their TTL (emitting
//!   `Remove` changes, as DynamoDB's TTL deletions do).
//!
//! Another process may write the same file (`livesync jobs run` beside a serving runner): a
//! change feed also looks at the log every [`FOREIGN_WRITES_POLL`], so such writes reach the
//! fanout without waiting for this process's next commit. [`backup`] copies the file while
//! writers write, and restores a copy.

pub mod backup;
mod db;

use async_trait::async_trait;
use livesync_core::store::{
    Change, ChangeFeed, Condition, Item, Key, Page, Query, Store, StoreError, Transaction, TxOp, Update, Write,
    check_transaction, check_update,
};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub use db::SweepReport;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "livesync.db";

/// The file a process keeps locked while it serves (or restores) a data directory.
pub const LOCK_FILE: &str = "livesync.lock";

/// An exclusive claim on a data directory, released when dropped (or when the process dies: it
/// is an OS file lock). One runner serves a directory at a time, and a restore never replaces a
/// store under a runner that would go on serving the old file. Commands that only add writes
/// (`livesync jobs run`) share the directory and take no lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, StoreError> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
                return Err(StoreError::Invalid(format!(
                    "{} is in use by another LiveSync runner or restore{who}: stop it first, or use another --data-dir",
                    data_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::Unavailable(Box::new(e))),
        }
        // Who holds it, for the message another process shows.
        let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{}", std::process::id()));
        Ok(DataDirLock { _file: file })
    }
}

/// How often an idle change feed looks for changes committed by another process.
pub const FOREIGN_WRITES_POLL: Duration = Duration::from_secs(1);

/// Jobs committed together at most; bounds the latency one commit adds to the first job.
const GROUP_COMMIT_JOBS: usize = 256;

#[derive(Debug, Clone)]
pub struct Options {
    /// How often expired items are removed.
    pub sweep_every: Duration,
    /// How often the change-log entries every open feed has read are removed. Often, so the log
    /// stays as short as the slowest feed's lag rather than growing for a whole sweep interval.
    pub trim_every: Duration,
    /// The most the database may grow to; past it writes fail with [`StoreError::Full`], as on
    /// a full disk, while reads go on. `None`: as large as the disk allows.
    pub max_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options { sweep_every: Duration::from_secs(60), trim_every: Duration::from_secs(1), max_bytes: None }
    }
}

impl Options {
    /// For a process that writes beside a serving runner (a job, a restore check): it neither
    /// sweeps nor trims, since the change log's entries are the runner's fanout's to read.
    pub fn beside_a_runner() -> Self {
        let never = Duration::from_secs(365 * 24 * 3600);
        Options { sweep_every: never, trim_every: never, ..Options::default() }
    }
}

/// A handle on the store; clones share the same store thread. The thread stops, and the file is
/// closed, when the last handle is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    jobs: mpsc::Sender<Job>,
    reads: mpsc::Sender<Read>,
    committed: watch::Receiver<i64>,
    feeds: FeedCursors,
}

/// Where each open change feed has read up to; the sweep keeps what the slowest has not read.
type FeedCursors = Arc<Mutex<Vec<Weak<AtomicI64>>>>;

/// Work for the store thread: runs inside a savepoint and returns the function that answers the
/// caller, called once the enclosing commit has succeeded or failed.
type Job = Box<dyn FnOnce(&mut db::Db<'_>) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Work for the reader thread: runs against committed data and answers the caller itself.
type Read = Box<dyn FnOnce(&mut db::Db<'_>) + Send>;

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path, options: Options) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let path = data_dir.join(DATABASE_FILE);
        let connection = db::open(&path)?;
        if let Some(max_bytes) = options.max_bytes {
            db::limit_size(&connection, max_bytes)?;
        }
        let last_change = db::last_change(&connection)?;
        let reader = db::open_reader(&path)?;
        let (reads, read_inbox) = mpsc::channel::<Read>();
        std::thread::Builder::new()
            .name("livesync-store-reader".into())
            .spawn(move || reader_thread(reader, read_inbox))
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (committed_tx, committed) = watch::channel(last_change);
        let feeds = FeedCursors::default();
        let thread_feeds = feeds.clone();
        std::thread::Builder::new()
            .name("livesync-store".into())
            .spawn(move || store_thread(connection, inbox, committed_tx, thread_feeds, options))
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(EmbeddedStore { jobs, reads, committed, feeds })
    }

    /// The partition keys that begin with `prefix`: for a host that owns the whole store (the
    /// runner, under its lock) to find what a previous process left, such as its connections.
    pub async fn partitions(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |db| db.partitions(&prefix)).await
    }

    /// How many entries the change log holds: those some open feed has yet to read, and those
    /// read since the last trim.
    pub async fn change_log_len(&self) -> Result<u64, StoreError> {
        self.read(|db| db.change_log_len()).await
    }

    /// Runs the sweep now rather than at its next interval.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let feeds = self.feeds.clone();
        let committed = *self.committed.borrow();
        self.run(move |db| db.sweep(&feeds, committed)).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut db::Db<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let result = work(db);
            Box::new(move |commit: Result<(), &StoreError>| {
                let outcome = match commit {
                    Ok(()) => result,
                    // A full disk rolls the whole commit back: nothing of it was applied.
                    Err(StoreError::Full) => Err(StoreError::Full),
                    Err(error) => Err(StoreError::Unavailable(format!("commit failed: {error}").into())),
                };
                let _ = reply.send(outcome);
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut db::Db<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let read: Read = Box::new(move |db| {
            let _ = reply.send(work(db));
        });
        self.reads.send(read).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn reader_thread(connection: rusqlite::Connection, inbox: mpsc::Receiver<Read>) {
    while let Ok(read) = inbox.recv() {
        read(&mut db::Db::reading(&connection));
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store did not answer: it has stopped, or its commit failed (see its log)".into())
}

fn store_thread(
    mut connection: rusqlite::Connection,
    inbox: mpsc::Receiver<Job>,
    committed: watch::Sender<i64>,
    feeds: FeedCursors,
    options: Options,
) {
    let mut next_sweep = std::time::Instant::now() + options.sweep_every;
    let mut next_trim = std::time::Instant::now() + options.trim_every;
    let mut trimmed_through = 0;
    loop {
        let wait = next_sweep.min(next_trim).saturating_duration_since(std::time::Instant::now());
        let first = match inbox.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Job> = first.into_iter().collect();
        while batch.len() < GROUP_COMMIT_JOBS {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = std::time::Instant::now();
        if now >= next_sweep {
            let feeds = feeds.clone();
            let committed_before = *committed.borrow();
            batch.push(Box::new(move |db| {
                if let Err(error) = db.sweep(&feeds, committed_before) {
                    tracing::warn!(%error, "store sweep failed");
                }
                Box::new(|_| {})
            }));
            next_sweep = now + options.sweep_every;
        } else if now >= next_trim {
            // Only when some feed moved on: an idle store writes nothing.
            let bound = db::read_by_every_feed(&feeds, *committed.borrow());
            if bound > trimmed_through {
                trimmed_through = bound;
                batch.push(Box::new(move |db| {
                    if let Err(error) = db.trim_change_log(bound) {
                        tracing::warn!(%error, "change log trim failed");
                    }
                    Box::new(|_| {})
                }));
            }
            next_trim = now + options.trim_every;
        }
        if batch.is_empty() {
            continue;
        }
        db::run_batch(&mut connection, batch, |last_change| {
            committed.send_if_modified(|seen| {
                let advanced = last_change > *seen;
                *seen = (*seen).max(last_change);
                advanced
            });
        });
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let key = key.clone();
        self.read(move |db| db.get(&key)).await
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<Write, StoreError> {
        self.run(move |db| db.put(item, &condition)).await
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Write, StoreError> {
        check_update(&update)?;
        let key = key.clone();
        self.run(move |db| db.update(&key, &update, &condition)).await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<Write, StoreError> {
        let key = key.clone();
        self.run(move |db| db.delete(&key, &condition)).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        check_transaction(&ops)?;
        self.run(move |db| db.transact(ops)).await
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        self.read(move |db| db.query(&query)).await
    }

    async fn change_feed(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        // Every write acknowledged so far has its change at or below this id: the store thread
        // publishes the id before it answers the writers. Read under the feeds lock, which the
        // sweep holds while it chooses what to prune.
        let mut feeds = self.feeds.lock().expect("feed cursors lock");
        let cursor = Arc::new(AtomicI64::new(*self.committed.borrow()));
        feeds.push(Arc::downgrade(&cursor));
        drop(feeds);
        Ok(Box::new(Feed { store: self.clone(), cursor, committed: self.committed.clone() }))
    }
}

struct Feed {
    store: EmbeddedStore,
    cursor: Arc<AtomicI64>,
    committed: watch::Receiver<i64>,
}

#[async_trait]
impl ChangeFeed for Feed {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Change>, StoreError> {
        loop {
            let cursor = self.cursor.load(Ordering::Acquire);
            if *self.committed.borrow_and_update() > cursor {
                let max = max.max(1);
                let changes = self.store.read(move |db| db.changes_after(cursor, max)).await?;
                if let Some((last, _)) = changes.last() {
                    self.cursor.store(*last, Ordering::Release);
                    return Ok(changes.into_iter().map(|(_, change)| change).collect());
                }
            }
            match tokio::time::timeout(FOREIGN_WRITES_POLL, self.committed.changed()).await {
                Ok(changed) => changed.map_err(|_| stopped())?,
                Err(_idle) => {
                    let max = max.max(1);
                    let changes = self.store.read(move |db| db.changes_after(cursor, max)).await?;
                    if let Some((last, _)) = changes.last() {
                        self.cursor.store(*last, Ordering::Release);
                        return Ok(changes.into_iter().map(|(_, change)| change).collect());
                    }
                }
            }
        }
    }
}
