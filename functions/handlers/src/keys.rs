//! Token keys from where the operator keeps them: a file, or an http(s) URL (an identity
//! provider's JWKS endpoint), fetched once at startup.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
}

/// How long fetching a JWKS document may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The text at `source`: a URL's body, or a file's contents.
pub async fn load(source: &str) -> Result<String, KeysError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return fetch(source).await;
    }
    std::fs::read_to_string(source).map_err(|error| KeysError::Read { path: source.to_owned(), source: error })
}

async fn fetch(url: &str) -> Result<String, KeysError> {
    let failed = |reason: String| KeysError::Fetch { url: url.to_owned(), reason };
    let uri: hyper::Uri = url.parse().map_err(|e| failed(format!("not a URL: {e}")))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| failed(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| failed(format!("no answer within {FETCH_TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let body = response.into_body().collect().await.map_err(|e| failed(e.to_string()))?.to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| failed("the document is not UTF-8".to_owned()))
}
