//! The backup and report functions' handler: a scheduled invocation in, one run of the job out.
//!
//! Two shapes of invocation are understood:
//!
//! * **EventBridge Scheduler** (the template's `ScheduleV2` events), whose `Input` carries the
//!   scheduled time through Scheduler's context attributes:
//!   `{"job": "backup", "scheduledTime": "<aws.scheduler.scheduled-time>", "executionId": ..., "attempt": ...}`;
//! * **an EventBridge rule** (`Schedule` events): `{"detail-type": "Scheduled Event", "time": ...}`.
//!
//! Either way the run is keyed by the job and the scheduled time, so a duplicate delivery does
//! nothing (see `livesync_core::jobs::runs`). A failed run is returned as an error: Lambda then
//! retries the asynchronous invocation with the same payload, and the retry takes the run over;
//! after the last retry the event goes to the dead-letter queue, whose alarm tells an
//! administrator.

use crate::metrics::Emf;
use livesync_core::engine::Chain;
use livesync_core::jobs::runs::RunRecord;
use livesync_core::jobs::{JobError, JobName, Jobs, RunOutcome, Trigger};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ScheduledError {
    #[error(
        "the invocation names no scheduled time: give the schedule an Input with \"scheduledTime\": \
         \"<aws.scheduler.scheduled-time>\" (as template.yaml does), or use an EventBridge rule"
    )]
    NoScheduledTime,
    #[error("the scheduled time {0:?} is not an RFC 3339 time")]
    BadTime(String),
    #[error("this function runs the {expected} job, but the invocation asks for {asked:?}")]
    WrongJob { expected: JobName, asked: String },
    #[error("the {job} run of {scheduled} failed")]
    Failed {
        job: JobName,
        scheduled: String,
        #[source]
        source: JobError,
    },
}

/// What one invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub scheduled: jiff::Timestamp,
    /// Scheduler's attempt number or the rule event's id, for the log.
    pub delivery: Option<String>,
}

/// Reads the scheduled time out of a Scheduler input or an EventBridge rule event.
pub fn invocation(job: JobName, payload: &Value) -> Result<Invocation, ScheduledError> {
    if let Some(asked) = payload.get("job").and_then(Value::as_str)
        && asked != job.name()
    {
        return Err(ScheduledError::WrongJob { expected: job, asked: asked.to_owned() });
    }
    let (time, delivery) = if let Some(time) = payload.get("scheduledTime").and_then(Value::as_str) {
        let execution = payload.get("executionId").and_then(Value::as_str);
        let attempt = payload.get("attempt").map(|a| a.to_string().trim_matches('"').to_owned());
        (time, execution.map(|e| format!("{e} attempt {}", attempt.unwrap_or_default())))
    } else if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let time = payload.get("time").and_then(Value::as_str).ok_or(ScheduledError::NoScheduledTime)?;
        (time, payload.get("id").and_then(Value::as_str).map(str::to_owned))
    } else {
        return Err(ScheduledError::NoScheduledTime);
    };
    let scheduled = time.parse().map_err(|_| ScheduledError::BadTime(time.to_owned()))?;
    Ok(Invocation { scheduled, delivery })
}

/// Runs the job for the invocation's scheduled time.
pub async fn scheduled(jobs: &Jobs, job: JobName, payload: Value) -> Result<RunOutcome, ScheduledError> {
    let Invocation { scheduled, delivery } = invocation(job, &payload)?;
    tracing::info!(job = job.name(), %scheduled, delivery, "scheduled invocation");
    jobs.run(job, scheduled, Trigger::Schedule).await.map_err(|source| {
        tracing::error!(job = job.name(), %scheduled, error = %Chain(&source), "scheduled run failed; it will be retried");
        ScheduledError::Failed { job, scheduled: livesync_core::jobs::run_time(scheduled), source }
    })
}

/// The function's answer: what this invocation did, and the run's record.
pub fn answer(outcome: &RunOutcome) -> Value {
    let (name, record) = match outcome {
        RunOutcome::Ran(record) => ("ran", record),
        RunOutcome::AlreadyDone(record) => ("already_done", record),
        RunOutcome::Busy(record) => ("busy", record),
    };
    json!({ "outcome": name, "run": record })
}

/// A CloudWatch embedded-metric-format line for a finished run: CloudWatch Logs turns it into
/// metrics (namespace `LiveSync`, dimension `Job`) with no API call from the function.
pub fn metrics_line(job: JobName, record: Option<&RunRecord>, failed: bool, now_ms: u64) -> String {
    let mut emf =
        Emf::new("Job", job.name()).count("JobSucceeded", u8::from(!failed)).count("JobFailed", u8::from(failed));
    if let Some(record) = record {
        emf = emf.millis("JobDurationMs", json!(record.duration_ms));
        let summary: Value =
            record.summary.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null);
        match job {
            JobName::Backup => {
                emf = emf
                    .count("BackupItems", summary["backup"]["items"].clone())
                    .bytes("BackupBytes", summary["backup"]["bytes"].clone())
                    .count("BackupsDeleted", json!(summary["deleted"].as_array().map(Vec::len)));
            }
            JobName::Report => {
                for (name, field) in [
                    ("ReportEvents", "events"),
                    ("ReportDocVersions", "doc_versions"),
                    ("ReportConflicts", "conflicts"),
                    ("ReportUnitsSold", "units_sold"),
                    ("ReportRestockSkus", "restock"),
                ] {
                    emf = emf.count(name, summary["totals"][field].clone());
                }
            }
        }
    }
    emf.line(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, summary: Value) -> RunRecord {
        serde_json::from_value(json!({
            "job": job, "scheduled": "2026-12-02T02:00:00Z", "status": "succeeded", "attempt": 1,
            "trigger": "schedule", "started_ms": 1, "finished_ms": 1201, "duration_ms": 1200,
            "summary": summary.to_string(), "error": null,
        }))
        .unwrap()
    }

    #[test]
    fn a_backup_run_becomes_cloudwatch_metrics_of_its_duration_items_and_bytes() {
        let summary = json!({"backup": {"name": "b", "location": "arn", "created_ms": 1, "items": 42, "bytes": 9000}, "reused": false, "deleted": ["old"]});
        let line: Value =
            serde_json::from_str(&metrics_line(JobName::Backup, Some(&record("backup", summary)), false, 7)).unwrap();
        assert_eq!(line["Job"], "backup");
        assert_eq!(
            (line["JobDurationMs"].clone(), line["BackupItems"].clone(), line["BackupBytes"].clone()),
            (json!(1200), json!(42), json!(9000))
        );
        assert_eq!(
            (line["JobSucceeded"].clone(), line["JobFailed"].clone(), line["BackupsDeleted"].clone()),
            (json!(1), json!(0), json!(1))
        );
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 7);
        assert_eq!(directive["Namespace"], "LiveSync");
        assert_eq!(directive["Dimensions"], json!([["Job"]]));
        let names: Vec<&str> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        // Every metric named in the directive is a member of the line, as CloudWatch requires.
        assert!(names.iter().all(|name| line.get(name).is_some()), "{names:?}");
        assert!(names.contains(&"BackupBytes") && names.contains(&"JobDurationMs"));
    }

    #[test]
    fn a_failed_run_is_one_failure_and_a_report_run_carries_its_figures() {
        let failed: Value = serde_json::from_str(&metrics_line(JobName::Report, None, true, 7)).unwrap();
        assert_eq!((failed["JobFailed"].clone(), failed["JobSucceeded"].clone()), (json!(1), json!(0)));
        assert!(failed.get("JobDurationMs").is_none());
        let summary = json!({"date": "2026-12-02", "totals": {"rooms": 2, "events": 16, "doc_versions": 2, "text_edits": 0, "conflicts": 1, "units_sold": 7, "restock": 2}, "pushed_seq": 1});
        let line: Value =
            serde_json::from_str(&metrics_line(JobName::Report, Some(&record("report", summary)), false, 7)).unwrap();
        assert_eq!(
            (line["ReportEvents"].clone(), line["ReportUnitsSold"].clone(), line["ReportRestockSkus"].clone()),
            (json!(16), json!(7), json!(2))
        );
    }
}
