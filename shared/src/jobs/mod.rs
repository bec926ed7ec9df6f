//! Scheduled jobs: the nightly backup and the end-of-day report, run exactly once in effect.
//!
//! * [`schedule`]: EventBridge schedule expressions and when they fire.
//! * [`runs`]: the run record each run claims, so a duplicate invocation does nothing.
//! * [`backup`]: the backup job over the store's [`backup::Backups`] capability.
//! * [`report`]: the end-of-day report over the day's tally.
//!
//! [`Jobs`] puts them together: claim the run, do the job, record how it ended. Hosts only say
//! when (a Scheduler event on AWS, the template's schedules in the runner) and with what (the
//! store's backups, a report publisher).

pub mod backup;
pub mod report;
pub mod runs;
pub mod schedule;

use crate::clock::Clock;
use crate::engine::Chain;
use crate::ordering::PublishError;
use crate::store::{Store, StoreError};
use backup::Backups;
use report::ReportPublisher;
use runs::{Claim, Ending, RunRecord};
use std::sync::Arc;
use std::time::Duration;

/// The jobs LiveSync runs on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobName {
    Backup,
    Report,
}

impl JobName {
    pub const ALL: [JobName; 2] = [JobName::Backup, JobName::Report];

    pub fn name(self) -> &'static str {
        match self {
            JobName::Backup => "backup",
            JobName::Report => "report",
        }
    }

    pub fn from_name(name: &str) -> Option<JobName> {
        JobName::ALL.into_iter().find(|job| job.name() == name)
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The job's own work failed (taking a backup, publishing a report).
    #[error("{what}")]
    Failed {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the {job} job cannot run here: {reason}")]
    Unavailable { job: JobName, reason: String },
}

impl JobError {
    pub fn failed(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        JobError::Failed { what: what.into(), source: source.into() }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// A person (`livesync jobs run`).
    Manual,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Backups older than this are deleted after each backup.
    pub backup_retention: Duration,
    /// SKUs below this level are on the report's restock list.
    pub low_stock_threshold: i64,
    /// How long a run holds its record before another invocation may take it over (a run that
    /// died); longer than any run takes (a Lambda runs 15 minutes at most).
    pub lease: Duration,
    /// How long the events the jobs append (the report's push) are kept.
    pub event_retention: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            backup_retention: Duration::from_secs(35 * 24 * 3600),
            low_stock_threshold: 5,
            lease: Duration::from_secs(15 * 60),
            event_retention: crate::ordering::DEFAULT_RETENTION,
        }
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// This invocation ran the job; the record says how it went.
    Ran(RunRecord),
    /// The run had already succeeded: a duplicate delivery.
    AlreadyDone(RunRecord),
    /// Another invocation is running it.
    Busy(RunRecord),
}

/// The jobs, over a store and the capabilities each needs.
pub struct Jobs {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    backups: Option<Arc<dyn Backups>>,
    publisher: Option<Arc<dyn ReportPublisher>>,
    settings: JobSettings,
}

/// A time as a run's identity: RFC 3339, UTC, whole seconds.
pub fn run_time(at: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(at.as_second()).unwrap_or(at).to_string()
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: JobSettings) -> Self {
        Jobs { store, clock, backups: None, publisher: None, settings }
    }

    pub fn with_backups(mut self, backups: Arc<dyn Backups>) -> Self {
        self.backups = Some(backups);
        self
    }

    pub fn with_publisher(mut self, publisher: Arc<dyn ReportPublisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// Runs `job` for the time `scheduled`, unless that run already succeeded or is running.
    /// A run that fails is recorded as failed and returned as `Err`, so the host retries it: the
    /// retry takes the record over.
    pub async fn run(
        &self,
        job: JobName,
        scheduled: jiff::Timestamp,
        trigger: Trigger,
    ) -> Result<RunOutcome, JobError> {
        let scheduled = run_time(scheduled);
        let started = self.clock.now_ms();
        let lease = self.settings.lease.as_millis() as u64;
        let attempt =
            match runs::claim(self.store.as_ref(), job.name(), &scheduled, trigger.name(), started, lease).await? {
                Claim::Run { attempt } => attempt,
                Claim::Done(record) => {
                    tracing::info!(job = job.name(), scheduled, "already ran; this delivery does nothing");
                    return Ok(RunOutcome::AlreadyDone(record));
                }
                Claim::Busy(record) => {
                    tracing::info!(
                        job = job.name(),
                        scheduled,
                        attempt = record.attempt,
                        "running elsewhere; this delivery does nothing"
                    );
                    return Ok(RunOutcome::Busy(record));
                }
            };
        tracing::info!(job = job.name(), scheduled, attempt, trigger = trigger.name(), "job started");
        let outcome = self.execute(job, &scheduled).await;
        let now = self.clock.now_ms();
        let ending = match &outcome {
            Ok(summary) => Ending::Succeeded { summary: summary.to_string() },
            Err(error) => Ending::Failed { error: Chain(error).to_string() },
        };
        let kept = runs::finish(self.store.as_ref(), job.name(), &scheduled, attempt, started, now, ending).await?;
        if !kept {
            tracing::warn!(
                job = job.name(),
                scheduled,
                attempt,
                "another attempt took this run over; its record stands"
            );
        }
        match outcome {
            Ok(_) => {
                let record = runs::get(self.store.as_ref(), job.name(), &scheduled).await?.ok_or_else(|| {
                    StoreError::Invalid(format!("the run record {} {scheduled} vanished", job.name()))
                })?;
                tracing::info!(
                    job = job.name(),
                    scheduled,
                    attempt,
                    duration_ms = record.duration_ms,
                    summary = record.summary.as_deref(),
                    "job succeeded"
                );
                Ok(RunOutcome::Ran(record))
            }
            Err(error) => {
                tracing::error!(job = job.name(), scheduled, attempt, error = %Chain(&error), "job failed");
                Err(error)
            }
        }
    }

    async fn execute(&self, job: JobName, scheduled: &str) -> Result<serde_json::Value, JobError> {
        let now = self.clock.now_ms();
        match job {
            JobName::Backup => {
                let backups = self.backups.as_ref().ok_or(JobError::Unavailable {
                    job,
                    reason: "this host has no backup capability configured".to_owned(),
                })?;
                let retention = self.settings.backup_retention.as_millis() as u64;
                let summary = backup::run(backups.as_ref(), scheduled, now, retention).await?;
                Ok(serde_json::to_value(&summary).unwrap_or_default())
            }
            JobName::Report => {
                let date = &scheduled[..10];
                let generated_at = run_time(jiff::Timestamp::from_millisecond(now as i64).unwrap_or_default());
                let report =
                    report::compute(self.store.as_ref(), date, self.settings.low_stock_threshold, generated_at).await?;
                report::store_report(self.store.as_ref(), &report).await?;
                let seq = report::push(
                    self.store.as_ref(),
                    self.clock.as_ref(),
                    self.settings.event_retention,
                    &report,
                    scheduled,
                )
                .await?;
                if let Some(publisher) = &self.publisher {
                    publisher.publish(&report.for_delivery()).await?;
                }
                Ok(serde_json::json!({ "date": report.date, "totals": report.totals, "pushed_seq": seq }))
            }
        }
    }
}
