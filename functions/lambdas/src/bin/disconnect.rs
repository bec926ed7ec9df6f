//! The `$disconnect` Lambda.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = livesync_lambdas::Config::from_env();
    let engine = &livesync_lambdas::engine(&config).await;
    run(service_fn(move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        livesync_handlers::disconnect(engine, event.payload).await.map_err(Error::from)
    }))
    .await
}
