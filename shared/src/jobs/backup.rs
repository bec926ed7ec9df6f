//! The backup job: a consistent copy of the whole store, named after its scheduled time, and
//! backups older than the retention period deleted.
//!
//! How a copy is taken is the store's business ([`Backups`]): DynamoDB's on-demand `CreateBackup`
//! on AWS, SQLite's online backup API for the embedded store. The job is the same on both.

use super::JobError;
use async_trait::async_trait;
use serde::Serialize;

/// One backup, as its store lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRecord {
    /// The name the job gave it (`livesync-<scheduled time>`).
    pub name: String,
    /// Where it is: a file path, or a backup ARN.
    pub location: String,
    pub created_ms: u64,
    /// Items it holds, when the store says.
    pub items: Option<u64>,
    /// Its size in bytes, when the store says.
    pub bytes: Option<u64>,
}

/// The backup capability of a store.
#[async_trait]
pub trait Backups: Send + Sync {
    /// Takes a consistent copy of the store, while writers keep writing.
    async fn take(&self, name: &str) -> Result<BackupRecord, JobError>;

    /// Every backup this store has, oldest first.
    async fn list(&self) -> Result<Vec<BackupRecord>, JobError>;

    async fn delete(&self, backup: &BackupRecord) -> Result<(), JobError>;
}

/// What one backup run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub backup: BackupRecord,
    /// A retry found the backup its earlier attempt had taken, and kept it.
    pub reused: bool,
    /// Backups deleted as older than the retention period.
    pub deleted: Vec<String>,
}

/// The name of the backup of one scheduled time (RFC 3339): `livesync-20261202T020000Z`.
pub fn backup_name(scheduled: &str) -> String {
    let compact: String = scheduled.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("livesync-{compact}")
}

/// Takes the backup of `scheduled` (or finds it, on a retry), then deletes this job's backups
/// created before `now - retention`, never the one just taken.
pub async fn run(
    backups: &dyn Backups,
    scheduled: &str,
    now_ms: u64,
    retention_ms: u64,
) -> Result<BackupSummary, JobError> {
    let name = backup_name(scheduled);
    let existing = backups.list().await?;
    let (backup, reused) = match existing.iter().find(|b| b.name == name) {
        Some(found) => (found.clone(), true),
        None => (backups.take(&name).await?, false),
    };
    let cutoff = now_ms.saturating_sub(retention_ms);
    let mut deleted = Vec::new();
    for old in existing.iter().filter(|b| b.name != name && b.name.starts_with("livesync-") && b.created_ms < cutoff) {
        backups.delete(old).await?;
        deleted.push(old.name.clone());
    }
    Ok(BackupSummary { backup, reused, deleted })
}
