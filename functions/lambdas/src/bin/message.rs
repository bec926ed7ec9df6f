//! The `$default and action routes` Lambda.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use livesync_handlers::metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = livesync_lambdas::Config::from_env();
    let engine = &livesync_lambdas::engine(&config).await;
    run(service_fn(move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        let reply = livesync_handlers::message_reply(engine, event.payload).await?;
        println!("{}", metrics::message_line(&reply, metrics::now_ms()));
        Ok::<_, Error>(livesync_handlers::reply_response(&reply))
    }))
    .await
}
