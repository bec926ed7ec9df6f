//! The HTTP API Lambda: `POST /rooms/{room}/events` (publish) and `GET /rooms/{room}/events`
//! (read, or long poll with `wait`). Tokens are checked here, with the authorizer's keys.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use livesync_core::reading::LookAgain;
use livesync_handlers::http::{HttpApi, LOOK_AGAIN_EVERY};
use livesync_handlers::metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let engine = &livesync_lambdas::engine(&livesync_lambdas::Config::from_env()).await;
    let keyring = &livesync_lambdas::authorizer(&livesync_lambdas::AuthConfig::from_env()).await?;
    // A Lambda sees no change feed: a long poll looks at the room again every so often.
    let arrivals = &LookAgain { every: LOOK_AGAIN_EVERY };
    run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        let response = HttpApi { engine, keyring, arrivals }.handle(&event.payload).await;
        let route = event.payload.route_key.as_deref().unwrap_or_default();
        println!("{}", metrics::http_line(route, response.status_code, metrics::now_ms()));
        Ok::<_, Error>(response)
    }))
    .await
}
