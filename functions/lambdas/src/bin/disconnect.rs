//! The `$disconnect` Lambda.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use livesync_handlers::metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = livesync_lambdas::Config::from_env();
    let engine = &livesync_lambdas::engine(&config).await;
    run(service_fn(move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        let outcome = livesync_handlers::disconnect(engine, event.payload).await;
        println!("{}", metrics::connection_line("disconnect", outcome.is_err(), metrics::now_ms()));
        outcome.map_err(Error::from)
    }))
    .await
}
