//! The local EventBridge Scheduler: fires each schedule of the template on time, invoking the
//! same handler the backup and report Lambdas run, with the payload Scheduler would send.
//!
//! Time comes from a [`Clock`], so a test can move it by hand. A failed run is invoked again
//! with the same payload, a minute and then two minutes later (Lambda's retries of an
//! asynchronous invocation); the run record turns a retry of a run that did succeed into a no-op.
//! After the last retry the failure is an error in the log and a failed run record.

use crate::template::ScheduledJob;
use livesync_core::clock::Clock;
use livesync_core::engine::Chain;
use livesync_core::jobs::{Jobs, RunOutcome, run_time};
use livesync_handlers::jobs::{ScheduledError, scheduled};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The wait before the first retry; each further retry waits one more of these.
const RETRY_DELAY: Duration = Duration::from_secs(60);

/// How late a fire may still run (the template's `MaximumEventAgeInSeconds`).
const MAX_EVENT_AGE: jiff::SignedDuration = jiff::SignedDuration::from_secs(3600);

pub struct Scheduler {
    schedules: Vec<ScheduledJob>,
    jobs: Arc<Jobs>,
    clock: Arc<dyn Clock>,
    retries: u32,
}

impl Scheduler {
    pub fn new(schedules: Vec<ScheduledJob>, jobs: Arc<Jobs>, clock: Arc<dyn Clock>, retries: u32) -> Self {
        let schedules = schedules.into_iter().filter(|s| s.enabled).collect();
        Scheduler { schedules, jobs, clock, retries }
    }

    /// Fires schedules until `stopping`. Fires missed while the runner was down are not made up,
    /// as a schedule created now on AWS would not make them up either.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let now = timestamp(self.clock.now_ms());
        let mut next: Vec<Option<jiff::Timestamp>> =
            self.schedules.iter().map(|s| s.schedule.next_after(now)).collect();
        for (entry, at) in self.schedules.iter().zip(&next) {
            tracing::info!(job = entry.job.name(), function = entry.function, schedule = %entry.schedule, next = ?at.map(|t| t.to_string()), "scheduled");
        }
        loop {
            let Some(due) = next.iter().flatten().min().copied() else {
                return;
            };
            let now_ms = self.clock.now_ms();
            let due_ms = due.as_millisecond().max(0) as u64;
            if now_ms < due_ms {
                tokio::select! {
                    () = self.clock.sleep(Duration::from_millis(due_ms - now_ms)) => continue,
                    () = crate::stopped(&mut stopping) => return,
                }
            }
            let now = timestamp(now_ms);
            for (entry, at) in self.schedules.iter().zip(next.iter_mut()) {
                if *at != Some(due) {
                    continue;
                }
                // After a long sleep of the machine, fire times past Scheduler's event age
                // (MaximumEventAgeInSeconds) are dropped, as Scheduler drops them: the schedule
                // goes on from the first fire still young enough.
                if now.duration_since(due) > MAX_EVENT_AGE {
                    tracing::warn!(job = entry.job.name(), scheduled = %due, "missed by more than an hour (was the machine asleep?); skipped");
                    *at = entry.schedule.next_after(now - MAX_EVENT_AGE);
                    continue;
                }
                tokio::spawn(invoke(self.jobs.clone(), self.clock.clone(), entry.clone(), due, self.retries));
                // One late run at most: the next fire is the first after now.
                *at = entry.schedule.next_after(due.max(now));
            }
        }
    }
}

fn timestamp(ms: u64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms as i64).unwrap_or_default()
}

/// One scheduled invocation, and its retries.
async fn invoke(
    jobs: Arc<Jobs>,
    clock: Arc<dyn Clock>,
    entry: ScheduledJob,
    scheduled_at: jiff::Timestamp,
    retries: u32,
) {
    let execution = format!("local-{}-{}", entry.job.name(), scheduled_at.as_second());
    for attempt in 0..=retries {
        if attempt > 0 {
            clock.sleep(RETRY_DELAY * attempt).await;
        }
        // What EventBridge Scheduler sends, through the Input the template gives.
        let payload = json!({
            "job": entry.job.name(),
            "scheduledTime": run_time(scheduled_at),
            "executionId": execution,
            "attempt": attempt + 1,
        });
        match scheduled(&jobs, entry.job, payload).await {
            Ok(RunOutcome::Ran(_) | RunOutcome::AlreadyDone(_) | RunOutcome::Busy(_)) => return,
            Err(
                error
                @ (ScheduledError::NoScheduledTime | ScheduledError::BadTime(_) | ScheduledError::WrongJob { .. }),
            ) => {
                tracing::error!(job = entry.job.name(), error = %Chain(&error), "scheduled invocation refused");
                return;
            }
            Err(error) if attempt < retries => {
                tracing::warn!(job = entry.job.name(), attempt = attempt + 1, error = %Chain(&error), "scheduled run failed; retrying");
            }
            Err(error) => {
                tracing::error!(
                    job = entry.job.name(),
                    scheduled = %scheduled_at,
                    attempts = attempt + 1,
                    error = %Chain(&error),
                    "scheduled run failed after its last retry; `livesync jobs runs` shows it"
                );
            }
        }
    }
}
