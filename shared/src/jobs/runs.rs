//! Run records: exactly once in effect, for at-least-once schedulers.
//!
//! EventBridge delivers a scheduled invocation at least once, and a failed invocation is invoked
//! again with the same payload. Each run first claims the record of its job and scheduled time
//! with a conditional write: a duplicate finds the record and does nothing; a retry of a failed
//! run takes the record over (`attempt` + 1, conditional on the attempt it read); a run that died
//! without finishing is taken over once its lease has passed. Finishing is conditional on the
//! attempt too, so a run that lost its lease cannot overwrite its successor's outcome.

use crate::layout;
use crate::store::{Attr, Condition, Item, Store, StoreError, Update, Write};
use serde::{Deserialize, Serialize};

/// Rounds of claiming at most: each lost round means another claim of the same record went in.
const MAX_CLAIMS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    fn from_name(name: &str) -> Option<RunStatus> {
        [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed].into_iter().find(|s| s.name() == name)
    }
}

/// One run of a job for one scheduled time, as recorded (and as the job functions answer it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    /// The time the schedule named (RFC 3339, UTC): the run's identity.
    pub scheduled: String,
    pub status: RunStatus,
    /// 1 for the first invocation, one more for each retry that took the run over.
    pub attempt: u64,
    /// What started it: `schedule` or `manual`.
    pub trigger: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    /// The job's figures (JSON), on success.
    pub summary: Option<String>,
    pub error: Option<String>,
    #[serde(skip, default)]
    lease_until_ms: u64,
}

impl RunRecord {
    /// A run still marked running whose lease has passed: its invocation died (killed, timed
    /// out). The next delivery of the same time takes it over.
    pub fn is_abandoned(&self, now_ms: u64) -> bool {
        self.status == RunStatus::Running && self.lease_until_ms <= now_ms
    }

    fn from_item(item: &Item) -> Result<RunRecord, StoreError> {
        let malformed = |reason: &str| StoreError::Malformed { key: item.key.clone(), reason: reason.to_owned() };
        let number = |name: &str| item.number(name).and_then(|n| u64::try_from(n).ok());
        Ok(RunRecord {
            job: item.key.pk.strip_prefix("JOB#").unwrap_or_default().to_owned(),
            scheduled: layout::run_scheduled(item).ok_or_else(|| malformed("not a run record"))?.to_owned(),
            status: item.string("status").and_then(RunStatus::from_name).ok_or_else(|| malformed("no status"))?,
            attempt: number("attempt").ok_or_else(|| malformed("no attempt"))?,
            trigger: item.string("trigger").unwrap_or("schedule").to_owned(),
            started_ms: number("started").unwrap_or(0),
            finished_ms: number("finished"),
            duration_ms: number("duration_ms"),
            summary: item.string("summary").map(str::to_owned),
            error: item.string("error").map(str::to_owned),
            lease_until_ms: number("lease_until").unwrap_or(0),
        })
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This invocation runs the job, as this attempt.
    Run { attempt: u64 },
    /// The run already succeeded: a duplicate delivery, nothing to do.
    Done(RunRecord),
    /// Another invocation is running it now (its lease has not passed).
    Busy(RunRecord),
}

/// Claims the run of `job` for `scheduled` (RFC 3339 UTC), holding it until `now + lease`.
pub async fn claim(
    store: &dyn Store,
    job: &str,
    scheduled: &str,
    trigger: &str,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Claim, StoreError> {
    let key = layout::run_key(job, scheduled);
    for _ in 0..MAX_CLAIMS {
        let current = store.get(&key).await?.as_ref().map(RunRecord::from_item).transpose()?;
        let (attempt, condition) = match &current {
            None => (1, Condition::NotExists),
            Some(record) if record.status == RunStatus::Succeeded => return Ok(Claim::Done(record.clone())),
            Some(record) if record.status == RunStatus::Running && record.lease_until_ms > now_ms => {
                return Ok(Claim::Busy(record.clone()));
            }
            // Failed, or running with a lease that passed (its invocation died): take it over.
            Some(record) => (
                record.attempt + 1,
                Condition::Equals { attr: "attempt".to_owned(), value: Attr::N(record.attempt as i64) },
            ),
        };
        let item = Item::new(key.clone())
            .with("status", Attr::S(RunStatus::Running.name().to_owned()))
            .with("attempt", Attr::N(attempt as i64))
            .with("trigger", Attr::S(trigger.to_owned()))
            .with("started", Attr::N(now_ms as i64))
            .with("lease_until", Attr::N(now_ms.saturating_add(lease_ms) as i64));
        match store.put(item, condition).await? {
            Write::Done => return Ok(Claim::Run { attempt }),
            Write::Conflict { .. } => continue,
        }
    }
    Err(StoreError::Unavailable(
        format!("the run record {job} {scheduled} kept changing under {MAX_CLAIMS} claims").into(),
    ))
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Succeeded { summary: String },
    Failed { error: String },
}

/// Records the end of `attempt`. `false`: another attempt had taken the run over, and its record
/// stands.
pub async fn finish(
    store: &dyn Store,
    job: &str,
    scheduled: &str,
    attempt: u64,
    started_ms: u64,
    now_ms: u64,
    ending: Ending,
) -> Result<bool, StoreError> {
    let mut update = Update::default()
        .set("finished", Attr::N(now_ms as i64))
        .set("duration_ms", Attr::N(now_ms.saturating_sub(started_ms) as i64))
        .remove("lease_until");
    update = match ending {
        Ending::Succeeded { summary } => update
            .set("status", Attr::S(RunStatus::Succeeded.name().to_owned()))
            .set("summary", Attr::S(summary))
            .remove("error"),
        Ending::Failed { error } => {
            update.set("status", Attr::S(RunStatus::Failed.name().to_owned())).set("error", Attr::S(error))
        }
    };
    let condition = Condition::Equals { attr: "attempt".to_owned(), value: Attr::N(attempt as i64) };
    match store.update(&layout::run_key(job, scheduled), update, condition).await? {
        Write::Done => Ok(true),
        Write::Conflict { .. } => Ok(false),
    }
}

/// A job's runs, newest first.
pub async fn list(store: &dyn Store, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
    let page = store.query(layout::runs_of(job, limit)).await?;
    page.items.iter().map(RunRecord::from_item).collect()
}

/// One run's record.
pub async fn get(store: &dyn Store, job: &str, scheduled: &str) -> Result<Option<RunRecord>, StoreError> {
    store.get(&layout::run_key(job, scheduled)).await?.as_ref().map(RunRecord::from_item).transpose()
}
