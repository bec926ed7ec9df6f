//! The fanout Lambda: DynamoDB stream batches in, frames posted to subscribers, failed records
//! reported back as `batchItemFailures`.

use aws_lambda_events::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = livesync_lambdas::Config::from_env();
    let fanout = &livesync_lambdas::fanout(&config).await;
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(livesync_handlers::fanout(fanout, event.payload).await)
    }))
    .await
}
