//! The `$connect` authorizer Lambda (a REQUEST authorizer; identity source: the `token` query
//! parameter).

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use livesync_handlers::metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let keyring = &livesync_lambdas::authorizer(&livesync_lambdas::AuthConfig::from_env()).await?;
    run(service_fn(move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
        let outcome = livesync_handlers::authorizer::authorize(keyring, &event.payload).await;
        println!("{}", metrics::authorizer_line(&outcome, metrics::now_ms()));
        outcome.map_err(Error::from)
    }))
    .await
}
