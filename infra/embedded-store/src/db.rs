//! The SQL side of the embedded store: schema, item reads and writes, the change log, the sweep.
//! Everything here runs on the store thread.

use crate::{Answer, FeedCursors, Job};
use livesync_core::store::{
    Attrs, Change, ChangeKind, Condition, FailedCondition, Item, Key, Order, Page, Query, SortKeys, StoreError,
    Transaction, TxOp, Update, Write,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::atomic::Ordering;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS items (
        pk TEXT NOT NULL,
        sk TEXT NOT NULL,
        attrs TEXT NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (pk, sk)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS items_by_expiry ON items (expires_at) WHERE expires_at IS NOT NULL;
    -- AUTOINCREMENT: ids never repeat, even once the log has been pruned empty.
    CREATE TABLE IF NOT EXISTS changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind INTEGER NOT NULL,
        pk TEXT NOT NULL,
        sk TEXT NOT NULL,
        new_attrs TEXT
    );
";

fn unavailable(error: rusqlite::Error) -> StoreError {
    // SQLITE_FULL: the disk, or the database's page limit. SQLite has rolled the statement back.
    if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return StoreError::Full;
    }
    StoreError::Unavailable(Box::new(error))
}

pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(unavailable)?;
    // WAL with synchronous=FULL: a commit returns only once its log is on disk, so an
    // acknowledged write survives a crash of the process or of the machine.
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
        .map_err(unavailable)?;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(unavailable)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "{} was written by a newer LiveSync (schema {version}, this one knows {SCHEMA_VERSION})",
            path.display()
        )));
    }
    connection.execute_batch(SCHEMA).map_err(unavailable)?;
    connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(unavailable)?;
    Ok(connection)
}

/// Caps the database at about `max_bytes`: SQLite refuses (SQLITE_FULL) any write that would
/// need a page past it. A database already larger keeps its size and takes no more pages.
pub fn limit_size(connection: &Connection, max_bytes: u64) -> Result<(), StoreError> {
    let page_size: u64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0)).map_err(unavailable)?;
    let pages = (max_bytes / page_size.max(1)).max(1);
    connection.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).map_err(unavailable)
}

/// A second connection for reads only; opened after [`open`] has set up the file.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(unavailable)?;
    connection.execute_batch("PRAGMA busy_timeout = 5000;").map_err(unavailable)?;
    Ok(connection)
}

pub fn last_change(connection: &Connection) -> Result<i64, StoreError> {
    // The AUTOINCREMENT high-water mark survives pruning; max(id) would not.
    connection
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changes'", [], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(unavailable)
}

/// Runs a batch of jobs, each in its own savepoint, under one commit; then calls `committed`
/// with the id of the last change, and only then answers the jobs. So by the time a writer hears
/// its write succeeded, a change feed opened from then on already starts after it.
pub fn run_batch(connection: &mut Connection, batch: Vec<Job>, mut committed: impl FnMut(i64)) {
    let mut jobs = batch.into_iter().peekable();
    while jobs.peek().is_some() {
        let mut answers: Vec<Answer> = Vec::new();
        let outcome = run_until_aborted(connection, &mut jobs, &mut answers);
        let ran = answers.len();
        match outcome {
            Ok(last) => {
                committed(last);
                for answer in answers {
                    answer(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(error = %livesync_core::engine::Chain(&error), jobs = ran, "store commit failed");
                for answer in answers {
                    answer(Err(&error));
                }
                // Not even begun: the rest would fail the same way (their callers hear that
                // the store did not answer).
                if ran == 0 {
                    return;
                }
            }
        }
    }
}

/// Runs jobs in one transaction until they run out, or until SQLite rolls the transaction back
/// by itself, as it may on a full disk: every job of it so far is undone (and answered so), and
/// the rest go on in a new transaction.
fn run_until_aborted(
    connection: &mut Connection,
    jobs: &mut impl Iterator<Item = Job>,
    answers: &mut Vec<Answer>,
) -> Result<i64, StoreError> {
    let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    for job in jobs.by_ref() {
        let mut savepoint = tx.savepoint().map_err(unavailable)?;
        let mut db = Db { sql: &savepoint, failed: false, full: false };
        let answer = job(&mut db);
        let (failed, full) = (db.failed, db.full);
        answers.push(answer);
        // A job that hit an SQL error leaves nothing behind; the others still commit.
        if failed {
            if savepoint.is_autocommit() {
                return Err(if full {
                    StoreError::Full
                } else {
                    StoreError::Unavailable("SQLite rolled the transaction back".into())
                });
            }
            savepoint.rollback().map_err(unavailable)?;
        }
        savepoint.commit().map_err(unavailable)?;
    }
    let last = last_change(&tx)?;
    tx.commit().map_err(unavailable)?;
    Ok(last)
}

/// One job's view of the database, inside its savepoint.
pub struct Db<'a> {
    sql: &'a Connection,
    failed: bool,
    /// The failure was a full disk (or the size limit).
    full: bool,
}

/// The last change-log id every open feed has read; with no feed open, `committed`, the last id
/// committed. Taken under the feeds lock, so a feed cannot register between reading the cursors
/// and choosing the bound. Never past `committed`: changes of the batch a trim runs in are not
/// committed yet, and a feed opened now starts at `committed`.
pub fn read_by_every_feed(feeds: &FeedCursors, committed: i64) -> i64 {
    let mut feeds = feeds.lock().expect("feed cursors lock");
    feeds.retain(|cursor| cursor.strong_count() > 0);
    feeds
        .iter()
        .filter_map(|cursor| cursor.upgrade())
        .map(|cursor| cursor.load(Ordering::Acquire))
        .fold(committed, i64::min)
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_items: usize,
    pub pruned_changes: usize,
}

fn encode(attrs: &Attrs) -> String {
    serde_json::to_string(attrs).expect("attributes always serialise")
}

fn decode(key: &Key, text: &str) -> Result<Attrs, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Malformed { key: key.clone(), reason: format!("attributes are not readable: {e}") })
}

/// The smallest string above every string that starts with `prefix`, if there is one.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl<'a> Db<'a> {
    /// Reads outside any job: each statement sees the latest committed state.
    pub fn reading(sql: &'a Connection) -> Self {
        Db { sql, failed: false, full: false }
    }

    fn check<T>(&mut self, result: rusqlite::Result<T>) -> Result<T, StoreError> {
        result.map_err(|error| {
            let error = unavailable(error);
            self.failed = true;
            self.full |= matches!(error, StoreError::Full);
            error
        })
    }

    pub fn get(&mut self, key: &Key) -> Result<Option<Item>, StoreError> {
        let row =
            self.check(self.sql.prepare_cached("SELECT attrs FROM items WHERE pk = ?1 AND sk = ?2").and_then(
                |mut stmt| stmt.query_row(params![key.pk, key.sk], |row| row.get::<_, String>(0)).optional(),
            ))?;
        row.map(|text| Ok(Item { key: key.clone(), attrs: decode(key, &text)? })).transpose()
    }

    pub fn put(&mut self, item: Item, condition: &Condition) -> Result<Write, StoreError> {
        let current = self.get(&item.key)?;
        if !condition.holds(current.as_ref()) {
            return Ok(Write::Conflict { current });
        }
        self.write(item, current)?;
        Ok(Write::Done)
    }

    pub fn update(&mut self, key: &Key, update: &Update, condition: &Condition) -> Result<Write, StoreError> {
        let current = self.get(key)?;
        if !condition.holds(current.as_ref()) {
            return Ok(Write::Conflict { current });
        }
        self.write(update.apply(key, current.as_ref()), current)?;
        Ok(Write::Done)
    }

    pub fn delete(&mut self, key: &Key, condition: &Condition) -> Result<Write, StoreError> {
        let current = self.get(key)?;
        if !condition.holds(current.as_ref()) {
            return Ok(Write::Conflict { current });
        }
        if let Some(current) = current {
            self.remove(current)?;
        }
        Ok(Write::Done)
    }

    /// All conditions are checked before anything is written, so a conflict changes nothing.
    pub fn transact(&mut self, ops: Vec<TxOp>) -> Result<Transaction, StoreError> {
        let mut currents = Vec::with_capacity(ops.len());
        let mut failed = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let current = self.get(op.key())?;
            if !op.condition().holds(current.as_ref()) {
                failed.push(FailedCondition { index, current: current.clone() });
            }
            currents.push(current);
        }
        if !failed.is_empty() {
            return Ok(Transaction::Conflict { failed });
        }
        for (op, current) in ops.into_iter().zip(currents) {
            match (op, current) {
                (TxOp::Put { item, .. }, current) => self.write(item, current)?,
                (TxOp::Delete { .. }, Some(current)) => self.remove(current)?,
                (TxOp::Delete { .. }, None) | (TxOp::Check { .. }, _) => {}
            }
        }
        Ok(Transaction::Committed)
    }

    fn write(&mut self, item: Item, old: Option<Item>) -> Result<(), StoreError> {
        let attrs = encode(&item.attrs);
        let result = self
            .sql
            .prepare_cached("INSERT OR REPLACE INTO items (pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut stmt| stmt.execute(params![item.key.pk, item.key.sk, attrs, item.expires_at()]));
        self.check(result)?;
        let kind = if old.is_some() { ChangeKind::Modify } else { ChangeKind::Insert };
        self.log(kind, &item.key, Some(&attrs))
    }

    fn remove(&mut self, old: Item) -> Result<(), StoreError> {
        let result = self
            .sql
            .prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")
            .and_then(|mut stmt| stmt.execute(params![old.key.pk, old.key.sk]));
        self.check(result)?;
        self.log(ChangeKind::Remove, &old.key, None)
    }

    fn log(&mut self, kind: ChangeKind, key: &Key, new: Option<&str>) -> Result<(), StoreError> {
        let kind = match kind {
            ChangeKind::Insert => 0,
            ChangeKind::Modify => 1,
            ChangeKind::Remove => 2,
        };
        let result = self
            .sql
            .prepare_cached("INSERT INTO changes (kind, pk, sk, new_attrs) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut stmt| stmt.execute(params![kind, key.pk, key.sk, new]));
        self.check(result).map(drop)
    }

    pub fn query(&mut self, query: &Query) -> Result<Page, StoreError> {
        let mut sql = String::from("SELECT sk, attrs FROM items WHERE pk = ?");
        let mut args: Vec<String> = vec![query.pk.clone()];
        match &query.sort_keys {
            SortKeys::All => {}
            SortKeys::Prefix(prefix) => {
                sql.push_str(" AND sk >= ?");
                args.push(prefix.clone());
                if let Some(end) = prefix_end(prefix) {
                    sql.push_str(" AND sk < ?");
                    args.push(end);
                }
            }
            SortKeys::Between(low, high) => {
                sql.push_str(" AND sk >= ? AND sk <= ?");
                args.push(low.clone());
                args.push(high.clone());
            }
        }
        if let Some(after) = &query.after {
            sql.push_str(if query.order == Order::Ascending { " AND sk > ?" } else { " AND sk < ?" });
            args.push(after.clone());
        }
        sql.push_str(if query.order == Order::Ascending { " ORDER BY sk ASC" } else { " ORDER BY sk DESC" });
        // One row past the limit tells whether more follow.
        sql.push_str(&format!(" LIMIT {}", query.limit.saturating_add(1)));
        let rows = self.check(self.sql.prepare_cached(&sql).and_then(|mut stmt| {
            stmt.query_map(rusqlite::params_from_iter(args.iter()), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        }))?;
        let more = rows.len() > query.limit;
        let items = rows
            .into_iter()
            .take(query.limit)
            .map(|(sk, attrs)| {
                let key = Key::new(query.pk.clone(), sk);
                Ok(Item { attrs: decode(&key, &attrs)?, key })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page { items, more })
    }

    /// The partition keys that begin with `prefix` (SQLite can list them; DynamoDB would scan).
    pub fn partitions(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let end = prefix_end(prefix).unwrap_or_else(|| "\u{10FFFF}".repeat(2));
        self.check(
            self.sql.prepare_cached("SELECT DISTINCT pk FROM items WHERE pk >= ?1 AND pk < ?2 ORDER BY pk").and_then(
                |mut stmt| {
                    stmt.query_map(params![prefix, end], |row| row.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                },
            ),
        )
    }

    pub fn changes_after(&mut self, cursor: i64, max: usize) -> Result<Vec<(i64, Change)>, StoreError> {
        let rows = self.check(
            self.sql
                .prepare_cached("SELECT id, kind, pk, sk, new_attrs FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2")
                .and_then(|mut stmt| {
                    stmt.query_map(params![cursor, max as i64], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, Option<String>>(4)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                }),
        )?;
        rows.into_iter()
            .map(|(id, kind, pk, sk, new)| {
                let key = Key::new(pk, sk);
                let image = |text: Option<String>| -> Result<Option<Item>, StoreError> {
                    text.map(|text| Ok(Item { attrs: decode(&key, &text)?, key: key.clone() })).transpose()
                };
                let kind = match kind {
                    0 => ChangeKind::Insert,
                    1 => ChangeKind::Modify,
                    _ => ChangeKind::Remove,
                };
                Ok((id, Change { kind, new: image(new)?, key }))
            })
            .collect()
    }

    /// Deletes the change-log entries up to `bound` (see [`read_by_every_feed`]).
    pub fn trim_change_log(&mut self, bound: i64) -> Result<usize, StoreError> {
        let trimmed = self.sql.execute("DELETE FROM changes WHERE id <= ?1", params![bound]);
        self.check(trimmed)
    }

    pub fn change_log_len(&mut self) -> Result<u64, StoreError> {
        let len = self.sql.query_row("SELECT COUNT(*) FROM changes", [], |row| row.get::<_, i64>(0));
        Ok(self.check(len)? as u64)
    }

    /// Deletes expired items (logging each removal) and the change-log entries every open feed
    /// has read; with no feed open, every entry up to `committed`, the last id committed.
    pub fn sweep(&mut self, feeds: &FeedCursors, committed: i64) -> Result<SweepReport, StoreError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let expired = self.check(
            self.sql
                .prepare_cached("SELECT pk, sk, attrs FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?1")
                .and_then(|mut stmt| {
                    stmt.query_map(params![now], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                }),
        )?;
        // Freeing first (the read change log, then the expired items), writing last: a store at
        // its size limit can then still sweep itself free.
        let pruned_changes = self.trim_change_log(read_by_every_feed(feeds, committed))?;
        let expired_items = expired.len();
        let mut last_expired: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (pk, sk, attrs) in expired {
            let key = Key::new(pk, sk);
            let attrs = decode(&key, &attrs)?;
            let item = Item { key, attrs };
            if let Ok(Some(event)) = livesync_core::layout::event_from_item(&item) {
                let last = last_expired.entry(event.room).or_default();
                *last = (*last).max(event.seq);
            }
            self.remove(item)?;
        }
        // An event leaving raises its room's head marker, as the fanout does when it sees the
        // event: the fanout of a process killed before it ran never did, and without the marker
        // a room whose events all expired would give their seqs again.
        for (room, seq) in last_expired {
            let at_least = Condition::Below { attr: "seq".to_owned(), value: i64::try_from(seq).unwrap_or(i64::MAX) };
            self.put(livesync_core::layout::head_marker(&room, seq), &at_least)?;
        }
        Ok(SweepReport { expired_items, pruned_changes })
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_end_of_a_prefix_range_is_just_past_every_key_with_that_prefix() {
        assert_eq!(prefix_end("EVT#").as_deref(), Some("EVT$"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }
}
