//! The `$connect` Lambda: the authorizer has decided; this only logs the connection.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        livesync_handlers::connect(event.payload).map_err(Error::from)
    }))
    .await
}
