//! The backup job's capability on DynamoDB: on-demand backups (`CreateBackup`).
//!
//! Why on-demand backups rather than an export to S3 from point-in-time recovery: a backup is a
//! consistent copy of the whole table at one moment, taken in seconds whatever the table's size,
//! with no bucket to own and no read capacity consumed; `RestoreTableFromBackup` brings it back
//! as a new table in one call. An export needs PITR switched on (billed continuously), a bucket,
//! and an import to restore. Exports are the better tool for analytics, not for restores.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::BackupTypeFilter;
use livesync_core::jobs::JobError;
use livesync_core::jobs::backup::{BackupRecord, Backups};

/// The table's on-demand backups.
#[derive(Clone, Debug)]
pub struct DynamoBackups {
    client: Client,
    table: String,
}

impl DynamoBackups {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoBackups { client: Client::new(config), table: table.into() }
    }
}

fn ms(at: Option<&aws_sdk_dynamodb::primitives::DateTime>) -> u64 {
    at.and_then(|t| t.to_millis().ok()).map_or(0, |ms| ms.max(0) as u64)
}

#[async_trait]
impl Backups for DynamoBackups {
    async fn take(&self, name: &str) -> Result<BackupRecord, JobError> {
        let created = self
            .client
            .create_backup()
            .table_name(&self.table)
            .backup_name(name)
            .send()
            .await
            .map_err(|e| JobError::failed(format!("CreateBackup of table {} failed", self.table), e))?;
        let details = created.backup_details().ok_or_else(|| {
            JobError::failed("CreateBackup answered without BackupDetails", "no backup details in the answer")
        })?;
        Ok(BackupRecord {
            name: details.backup_name().to_owned(),
            location: details.backup_arn().to_owned(),
            created_ms: ms(Some(details.backup_creation_date_time())),
            items: None,
            bytes: details.backup_size_bytes().map(|b| b.max(0) as u64),
        })
    }

    async fn list(&self) -> Result<Vec<BackupRecord>, JobError> {
        let mut backups = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .client
                .list_backups()
                .table_name(&self.table)
                .backup_type(BackupTypeFilter::User)
                .set_exclusive_start_backup_arn(start.take())
                .send()
                .await
                .map_err(|e| JobError::failed(format!("ListBackups of table {} failed", self.table), e))?;
            for summary in page.backup_summaries() {
                backups.push(BackupRecord {
                    name: summary.backup_name().unwrap_or_default().to_owned(),
                    location: summary.backup_arn().unwrap_or_default().to_owned(),
                    created_ms: ms(summary.backup_creation_date_time()),
                    items: None,
                    bytes: summary.backup_size_bytes().map(|b| b.max(0) as u64),
                });
            }
            match page.last_evaluated_backup_arn() {
                Some(arn) => start = Some(arn.to_owned()),
                None => break,
            }
        }
        backups.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
        Ok(backups)
    }

    async fn delete(&self, backup: &BackupRecord) -> Result<(), JobError> {
        self.client
            .delete_backup()
            .backup_arn(&backup.location)
            .send()
            .await
            .map_err(|e| JobError::failed(format!("DeleteBackup of {} failed", backup.name), e))?;
        Ok(())
    }
}
