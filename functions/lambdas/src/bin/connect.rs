//! The `$connect` Lambda: the authorizer has decided; this only logs the connection, and
//! counts it.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use livesync_handlers::metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        let outcome = livesync_handlers::connect(event.payload);
        println!("{}", metrics::connection_line("connect", outcome.is_err(), metrics::now_ms()));
        outcome.map_err(Error::from)
    }))
    .await
}
