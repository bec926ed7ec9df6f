//! The report Lambda: EventBridge Scheduler invokes it on the template's schedule; each
//! invocation runs the report job for its scheduled time, exactly once in effect.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use livesync_core::jobs::JobName;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let jobs = &livesync_lambdas::jobs(&livesync_lambdas::Config::from_env()).await;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        livesync_lambdas::run_scheduled(jobs, JobName::Report, event.payload).await
    }))
    .await
}
