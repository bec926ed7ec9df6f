//! Backups of the embedded store, and restoring one into a data directory.
//!
//! A backup is SQLite's online backup API run in one step from its own read connection: in WAL
//! mode that reads one consistent snapshot (every commit up to the moment it starts, nothing of
//! the commits after) while writers keep committing. The copy is then gzipped next to a manifest
//! (`<name>.json`: time, item counts, the last change id, the SHA-256 of the compressed file).
//!
//! A restore checks the checksum, decompresses into the data directory under a temporary name,
//! checks that SQLite reads it whole and that it holds what the manifest says, and only then
//! moves it into place. A directory that holds data is never overwritten unless asked.

use crate::{DATABASE_FILE, DataDirLock, db};
use async_trait::async_trait;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use livesync_core::jobs::JobError;
use livesync_core::jobs::backup::{BackupRecord, Backups};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The folder of a data directory where its backups go unless told otherwise.
pub const BACKUP_FOLDER: &str = "backups";

/// The file a backup's database is compressed into, beside its manifest.
const COMPRESSED: &str = ".db.gz";
const MANIFEST: &str = ".json";

/// Bytes read and written per step, and per progress report.
const CHUNK: usize = 256 * 1024;

/// What a backup holds, written beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_ms: u64,
    /// The compressed database, a file name beside the manifest.
    pub file: String,
    pub items: u64,
    pub events: u64,
    pub rooms: u64,
    /// The id of the last change in the backup: every write acknowledged before the backup
    /// started has a change at or below it.
    pub last_change: i64,
    pub database_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SQLite failed while {what}")]
    Sqlite {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Io { what, path, source }
}

fn sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BackupError {
    move |source| BackupError::Sqlite { what, source }
}

/// Whether `name` can name a backup: a bare file name of safe characters, so that the files
/// derived from it stay in the backup folder whatever a manifest says.
fn is_backup_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A manifest as read from disk, checked: its name is a backup name and its file is the one
/// that name gives, beside it. Anything else (`"file": "../livesync.db"`) is not a backup.
fn checked(manifest: Manifest, path: &Path) -> Result<Manifest, BackupError> {
    if !is_backup_name(&manifest.name) || manifest.file != format!("{}{COMPRESSED}", manifest.name) {
        return Err(BackupError::Refused(format!(
            "{} is not a LiveSync manifest: its file must be {:?}, beside it",
            path.display(),
            format!("{}{COMPRESSED}", manifest.name)
        )));
    }
    Ok(manifest)
}

/// Reports progress: bytes done of a total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Takes a backup of the store in `data_dir` into `backup_dir` as `<name>.db.gz` and
/// `<name>.json`. Runs alongside a store serving writers, in this process or another.
pub fn take(
    data_dir: &Path,
    backup_dir: &Path,
    name: &str,
    now_ms: u64,
    progress: Progress<'_>,
) -> Result<Manifest, BackupError> {
    let source_path = data_dir.join(DATABASE_FILE);
    if !source_path.exists() {
        return Err(BackupError::Refused(format!(
            "there is no store in {} to back up (no {DATABASE_FILE}); is --data-dir right?",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(backup_dir).map_err(io("cannot create the backup folder", backup_dir))?;
    let snapshot_path = backup_dir.join(format!(".{name}.db.partial"));
    let partial = backup_dir.join(format!(".{name}{COMPRESSED}.partial"));
    // Left by an attempt that was killed, or removed below when this one fails.
    let remove_partials = || {
        let _ = std::fs::remove_file(&snapshot_path);
        let _ = std::fs::remove_file(&partial);
    };
    remove_partials();
    let taken = snapshot_and_compress(&source_path, &snapshot_path, &partial, backup_dir, name, now_ms, progress);
    remove_partials();
    taken
}

fn snapshot_and_compress(
    source_path: &Path,
    snapshot_path: &Path,
    partial: &Path,
    backup_dir: &Path,
    name: &str,
    now_ms: u64,
    progress: Progress<'_>,
) -> Result<Manifest, BackupError> {
    let source = Connection::open_with_flags(source_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite("opening the store to back it up"))?;
    source.busy_timeout(std::time::Duration::from_secs(5)).map_err(sqlite("opening the store to back it up"))?;
    let mut snapshot = Connection::open(snapshot_path).map_err(sqlite("creating the snapshot"))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut snapshot).map_err(sqlite("starting the backup"))?;
        // All pages in one step: one read transaction, so one consistent snapshot. Steps of a few
        // pages would restart whenever a writer commits in between, and never end under load.
        backup.step(-1).map_err(sqlite("copying the store"))?;
    }
    drop(source);
    let counts = Counts::of(&snapshot)?;
    drop(snapshot);

    let file = format!("{name}{COMPRESSED}");
    let compressed_path = backup_dir.join(&file);
    let database_bytes = std::fs::metadata(snapshot_path).map_err(io("cannot read the snapshot", snapshot_path))?.len();
    let (compressed_bytes, sha256) = compress(snapshot_path, partial, database_bytes, progress)?;
    std::fs::rename(partial, &compressed_path).map_err(io("cannot move the backup into place", &compressed_path))?;

    let manifest = Manifest {
        name: name.to_owned(),
        created_at: jiff::Timestamp::from_millisecond(now_ms as i64).unwrap_or_default().to_string(),
        created_ms: now_ms,
        file,
        items: counts.items,
        events: counts.events,
        rooms: counts.rooms,
        last_change: counts.last_change,
        database_bytes,
        compressed_bytes,
        sha256,
    };
    let manifest_path = backup_dir.join(format!("{name}{MANIFEST}"));
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    std::fs::write(&manifest_path, json).map_err(io("cannot write the manifest", &manifest_path))?;
    Ok(manifest)
}

struct Counts {
    items: u64,
    events: u64,
    rooms: u64,
    last_change: i64,
}

impl Counts {
    fn of(connection: &Connection) -> Result<Counts, BackupError> {
        let count = |sql: &str| -> Result<u64, BackupError> {
            connection
                .query_row(sql, [], |row| row.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(sqlite("counting items"))
        };
        Ok(Counts {
            items: count("SELECT count(*) FROM items")?,
            events: count(
                "SELECT count(*) FROM items WHERE pk >= 'ROOM#' AND pk < 'ROOM$' AND sk >= 'EVT#' AND sk < 'EVT$'",
            )?,
            rooms: count(
                "SELECT count(DISTINCT pk) FROM items WHERE pk >= 'ROOM#' AND pk < 'ROOM$' AND sk >= 'EVT#' AND sk < 'EVT$'",
            )?,
            last_change: db::last_change(connection).map_err(|e| BackupError::Refused(e.to_string()))?,
        })
    }
}

fn compress(from: &Path, to: &Path, total: u64, progress: Progress<'_>) -> Result<(u64, String), BackupError> {
    let mut input = std::fs::File::open(from).map_err(io("cannot read the snapshot", from))?;
    let output = std::fs::File::create(to).map_err(io("cannot write the backup", to))?;
    let mut encoder =
        GzEncoder::new(HashingWriter { inner: output, hash: Sha256::new(), bytes: 0 }, Compression::default());
    copy(
        &mut input,
        &mut encoder,
        total,
        progress,
        io("cannot read the snapshot", from),
        io("cannot write the backup", to),
    )?;
    let writer = encoder.finish().map_err(io("cannot write the backup", to))?;
    writer.inner.sync_all().map_err(io("cannot write the backup", to))?;
    Ok((writer.bytes, hex(&writer.hash.finalize())))
}

/// Copies `from` into `to` a chunk at a time, reporting the bytes read against `total`.
fn copy(
    from: &mut impl Read,
    to: &mut impl Write,
    total: u64,
    progress: Progress<'_>,
    read_failed: impl FnOnce(std::io::Error) -> BackupError,
    write_failed: impl FnOnce(std::io::Error) -> BackupError,
) -> Result<(), BackupError> {
    let mut buffer = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return Err(read_failed(e)),
        };
        if let Err(e) = to.write_all(&buffer[..n]) {
            return Err(write_failed(e));
        }
        done += n as u64;
        progress(done, total);
    }
}

struct HashingWriter {
    inner: std::fs::File,
    hash: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_of(path: &Path) -> Result<String, BackupError> {
    let mut file = std::fs::File::open(path).map_err(io("cannot read the backup", path))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buffer).map_err(io("cannot read the backup", path))?;
        if n == 0 {
            return Ok(hex(&hash.finalize()));
        }
        hash.update(&buffer[..n]);
    }
}

/// The backups in `backup_dir`, oldest first.
pub fn list(backup_dir: &Path) -> Result<Vec<(PathBuf, Manifest)>, BackupError> {
    let entries = match std::fs::read_dir(backup_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("cannot list the backups", backup_dir)(e)),
    };
    let mut backups = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(text) = std::fs::read(&path)
            && let Ok(manifest) = serde_json::from_slice::<Manifest>(&text)
        {
            match checked(manifest, &path) {
                Ok(manifest) => backups.push((backup_dir.join(&manifest.file), manifest)),
                Err(error) => tracing::warn!(%error, "skipped"),
            }
        }
    }
    backups.sort_by(|a, b| (a.1.created_ms, &a.1.name).cmp(&(b.1.created_ms, &b.1.name)));
    Ok(backups)
}

/// Reads the manifest of a backup, named by its `.db.gz` file or its `.json` manifest.
pub fn manifest_of(file: &Path) -> Result<(PathBuf, Manifest), BackupError> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let stem = name.strip_suffix(COMPRESSED).or_else(|| name.strip_suffix(MANIFEST)).ok_or_else(|| {
        BackupError::Refused(format!(
            "{} is not a LiveSync backup (a <name>.db.gz or <name>.json file)",
            file.display()
        ))
    })?;
    let folder = file.parent().unwrap_or(Path::new("."));
    let manifest_path = folder.join(format!("{stem}{MANIFEST}"));
    let text = std::fs::read(&manifest_path).map_err(io("cannot read the backup's manifest", &manifest_path))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| BackupError::Refused(format!("{} is not a readable manifest: {e}", manifest_path.display())))?;
    let manifest = checked(manifest, &manifest_path)?;
    if manifest.name != stem {
        return Err(BackupError::Refused(format!(
            "{} names the backup {:?}, not {stem:?}",
            manifest_path.display(),
            manifest.name
        )));
    }
    Ok((folder.join(&manifest.file), manifest))
}

/// Whether `data_dir` holds a store with any item in it.
pub fn holds_data(data_dir: &Path) -> Result<bool, BackupError> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite("opening the data directory's store"))?;
    let has_items = connection.query_row("SELECT EXISTS (SELECT 1 FROM items)", [], |row| row.get::<_, bool>(0));
    match has_items {
        Ok(found) => Ok(found),
        // A file that is not a store (or an empty one without the table) holds nothing of ours;
        // but a file we cannot read is not ours to overwrite silently.
        Err(rusqlite::Error::SqliteFailure(_, Some(message))) if message.contains("no such table") => Ok(false),
        Err(source) => Err(BackupError::Refused(format!(
            "{} is not a store LiveSync can read ({source}); add --force to replace it",
            path.display()
        ))),
    }
}

/// Restores the backup `file` into `data_dir`. A `data_dir` whose store holds data is refused
/// unless `force`; nothing in it changes until the restored copy has been checked.
pub fn restore(file: &Path, data_dir: &Path, force: bool, progress: Progress<'_>) -> Result<Manifest, BackupError> {
    let (compressed, manifest) = manifest_of(file)?;
    // Never under a runner: it would go on serving (and acknowledging writes into) the old file.
    let _lock = DataDirLock::acquire(data_dir).map_err(|e| BackupError::Refused(e.to_string()))?;
    if !force && holds_data(data_dir)? {
        return Err(BackupError::Refused(format!(
            "{} already holds data; restore into an empty directory, or add --force to replace it",
            data_dir.display()
        )));
    }
    let actual = sha256_of(&compressed)?;
    if actual != manifest.sha256 {
        return Err(BackupError::Refused(format!(
            "{} is damaged: its SHA-256 is {actual}, the manifest says {}",
            compressed.display(),
            manifest.sha256
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io("cannot create the data directory", data_dir))?;
    let partial = data_dir.join(format!(".{DATABASE_FILE}.restoring"));
    let remove_partial = || {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(data_dir.join(format!(".{DATABASE_FILE}.restoring{suffix}")));
        }
    };
    let unpacked = unpack_and_check(&compressed, &partial, &manifest, progress);
    if let Err(error) = unpacked {
        remove_partial();
        return Err(error);
    }
    let target = data_dir.join(DATABASE_FILE);
    // The old store's write-ahead log would be replayed onto the restored file: it goes too.
    for suffix in ["-wal", "-shm"] {
        let stale = data_dir.join(format!("{DATABASE_FILE}{suffix}"));
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove the old store's log", &stale)(e)),
        }
    }
    let moved = std::fs::rename(&partial, &target).map_err(io("cannot move the restored store into place", &target));
    remove_partial();
    moved?;
    Ok(manifest)
}

/// Decompresses the backup to `partial` and checks it: SQLite reads it whole, and it holds what
/// the manifest says.
fn unpack_and_check(
    compressed: &Path,
    partial: &Path,
    manifest: &Manifest,
    progress: Progress<'_>,
) -> Result<(), BackupError> {
    {
        let input = std::fs::File::open(compressed).map_err(io("cannot read the backup", compressed))?;
        let mut decoder = GzDecoder::new(input);
        let mut output = std::fs::File::create(partial).map_err(io("cannot write the restored store", partial))?;
        copy(
            &mut decoder,
            &mut output,
            manifest.database_bytes,
            progress,
            io("cannot decompress the backup", compressed),
            io("cannot write the restored store", partial),
        )?;
        output.sync_all().map_err(io("cannot write the restored store", partial))?;
    }
    let connection = Connection::open_with_flags(partial, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite("opening the restored store"))?;
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(sqlite("checking the restored store"))?;
    if integrity != "ok" {
        return Err(BackupError::Refused(format!("the restored store fails SQLite's integrity check: {integrity}")));
    }
    let counts = Counts::of(&connection)?;
    if (counts.items, counts.events, counts.last_change) != (manifest.items, manifest.events, manifest.last_change) {
        return Err(BackupError::Refused(format!(
            "the restored store holds {} items, {} events, last change {}; the manifest says {}, {}, {}",
            counts.items, counts.events, counts.last_change, manifest.items, manifest.events, manifest.last_change
        )));
    }
    Ok(())
}

/// A progress callback a backup can own: bytes done of a total.
pub type SharedProgress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// The embedded store's backups for the backup job: files in a folder.
pub struct LocalBackups {
    data_dir: PathBuf,
    backup_dir: PathBuf,
    progress: Option<SharedProgress>,
}

impl LocalBackups {
    pub fn new(data_dir: impl Into<PathBuf>, backup_dir: impl Into<PathBuf>) -> Self {
        LocalBackups { data_dir: data_dir.into(), backup_dir: backup_dir.into(), progress: None }
    }

    /// Reports each backup's progress (for a progress bar).
    pub fn with_progress(mut self, progress: SharedProgress) -> Self {
        self.progress = Some(progress);
        self
    }

    pub fn backup_dir(&self) -> &Path {
        &self.backup_dir
    }
}

fn record(path: &Path, manifest: &Manifest) -> BackupRecord {
    BackupRecord {
        name: manifest.name.clone(),
        location: path.display().to_string(),
        created_ms: manifest.created_ms,
        items: Some(manifest.items),
        bytes: Some(manifest.compressed_bytes),
    }
}

fn job_error(what: &'static str) -> impl FnOnce(BackupError) -> JobError {
    move |error| JobError::failed(what, error)
}

#[async_trait]
impl Backups for LocalBackups {
    async fn take(&self, name: &str) -> Result<BackupRecord, JobError> {
        let (data_dir, backup_dir, name) = (self.data_dir.clone(), self.backup_dir.clone(), name.to_owned());
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let progress = self.progress.clone();
        let report = move |done, total| {
            if let Some(progress) = &progress {
                progress(done, total);
            }
        };
        let manifest = tokio::task::spawn_blocking(move || take(&data_dir, &backup_dir, &name, now, &report))
            .await
            .map_err(|e| JobError::failed("the backup task crashed", e))?
            .map_err(job_error("the local backup failed"))?;
        Ok(record(&self.backup_dir.join(&manifest.file), &manifest))
    }

    async fn list(&self) -> Result<Vec<BackupRecord>, JobError> {
        let backups = list(&self.backup_dir).map_err(job_error("the local backup failed"))?;
        Ok(backups.iter().map(|(path, manifest)| record(path, manifest)).collect())
    }

    async fn delete(&self, backup: &BackupRecord) -> Result<(), JobError> {
        // Paths from the name alone (checked when listed), never from what a manifest says.
        if !is_backup_name(&backup.name) {
            return Err(JobError::failed(
                "cannot delete an old backup",
                format!("{:?} is not a backup name", backup.name),
            ));
        }
        let files = [format!("{}{COMPRESSED}", backup.name), format!("{}{MANIFEST}", backup.name)];
        for path in files.iter().map(|file| self.backup_dir.join(file)) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(JobError::failed("cannot delete an old backup", io("cannot delete", &path)(e))),
            }
        }
        Ok(())
    }
}
