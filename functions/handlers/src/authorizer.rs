//! The `$connect` authorizer: a token in, a caller (or a refusal) out.
//!
//! On AWS this is a Lambda REQUEST authorizer on the `$connect` route, with the identity source
//! `route.request.querystring.token` (browsers cannot set headers on a WebSocket, so the token
//! rides in the URL: `wss://…/prod?token=…`). It returns an IAM policy allowing the connection
//! and a context API Gateway attaches to every later event of the connection, from which the
//! other handlers read the [`Caller`]. The runner runs this same code before `$connect`.
//!
//! A token is a JWT signed with HS256 (a shared secret) or RS256/ES256 (a public key, as PEM or
//! a JWKS document), verified by the `jsonwebtoken` crate. Its claims:
//!
//! ```json
//! {"sub": "ann", "exp": 1795500000, "rooms": {"read": ["lobby", "doc-*"], "write": ["lobby"]}}
//! ```
//!
//! No token, a bad signature, `alg: none`, an algorithm the key is not for, an expired token (30 s
//! of leeway for clock skew), a missing `sub`: the upgrade is refused with 401 (the authorizer
//! fails with `Unauthorized`, which API Gateway answers with 401) and nothing is stored. A
//! browser page from an origin not on the allowed list is refused with 403 (a Deny policy).

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use livesync_core::access::{Caller, Grants};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Seconds of clock skew forgiven on `exp` (and `nbf`).
pub const LEEWAY_SECS: u64 = 30;

/// The query parameter that carries the token.
pub const TOKEN_PARAMETER: &str = "token";

/// A token's claims, as LiveSync reads and mints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub rooms: Grants,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401: no token, or one that does not verify. The message is for logs, never the client.
    #[error("Unauthorized")]
    Unauthorized(String),
    /// 403: a browser page from an origin not allowed.
    #[error("Forbidden")]
    Forbidden(String),
}

impl Refusal {
    /// The HTTP status API Gateway answers the upgrade with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthorized(_) => 401,
            Refusal::Forbidden(_) => 403,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Refusal::Unauthorized(reason) | Refusal::Forbidden(reason) => reason,
        }
    }
}

/// The keys tokens are checked with.
#[derive(Clone)]
enum Keys {
    /// No authentication: every caller is anonymous with every room (the runner without
    /// `--auth-secret`/`--auth-jwks`; never deployed).
    Open,
    /// Keys with the one algorithm each is for, and their `kid` if the JWKS named one.
    Verifying(Vec<VerifyingKey>),
}

#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the HS256 secret must be at least 32 bytes (256 bits); generate one with `openssl rand -base64 32`")]
    ShortSecret,
    #[error("not a PEM public key (RSA or EC P-256)")]
    Pem(#[source] jsonwebtoken::errors::Error),
    #[error("not a JWKS document")]
    Jwks(#[source] serde_json::Error),
    #[error("the JWKS document holds no RS256 or ES256 key")]
    NoUsableKey,
    #[error("room pattern refused: {0}")]
    Pattern(String),
}

/// Browser origins allowed to open a connection. A request without an `Origin` header (a
/// backend, a CLI, a native app) is not a browser page and is not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    Only(Vec<String>),
}

impl Origins {
    /// From a comma-separated list; `*` allows any.
    pub fn parse(list: &str) -> Self {
        let origins: Vec<String> =
            list.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect();
        if origins.iter().any(|o| o == "*") { Origins::Any } else { Origins::Only(origins) }
    }

    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) | (Origins::Any, _) => true,
            (Origins::Only(allowed), Some(origin)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Verifies tokens and origins: the `$connect` authorizer's whole policy.
#[derive(Clone)]
pub struct Authorizer {
    keys: Keys,
    origins: Origins,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Authorizer {
    /// Everyone is let in, anonymous, with every room. Only the runner offers this.
    pub fn open() -> Self {
        Authorizer { keys: Keys::Open, origins: Origins::Any, issuer: None, audience: None }
    }

    /// HS256 tokens signed with this shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret);
        }
        let key = VerifyingKey {
            kid: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret).map_err(KeyError::Pem)?,
        };
        Ok(Authorizer::with_keys(vec![key]))
    }

    /// RS256 or ES256 tokens, checked with a PEM public key.
    pub fn public_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => VerifyingKey { kid: None, algorithm: Algorithm::RS256, key },
            Err(_) => VerifyingKey {
                kid: None,
                algorithm: Algorithm::ES256,
                key: DecodingKey::from_ec_pem(pem).map_err(KeyError::Pem)?,
            },
        };
        Ok(Authorizer::with_keys(vec![key]))
    }

    /// RS256 or ES256 tokens, checked with the keys of a JWKS document (chosen by the token's
    /// `kid`). Keys of other kinds are skipped.
    pub fn jwks(document: &str) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_str(document).map_err(KeyError::Jwks)?;
        let keys: Vec<VerifyingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let algorithm = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
                    _ => return None,
                };
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(VerifyingKey { kid: jwk.common.key_id.clone(), algorithm, key })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(Authorizer::with_keys(keys))
    }

    /// RS256/ES256 tokens, checked with a PEM public key or a JWKS document, whichever this is.
    pub fn public_keys(document: &str) -> Result<Self, KeyError> {
        if document.trim_start().starts_with("-----BEGIN") {
            Authorizer::public_pem(document.as_bytes())
        } else {
            Authorizer::jwks(document)
        }
    }

    fn with_keys(keys: Vec<VerifyingKey>) -> Self {
        Authorizer { keys: Keys::Verifying(keys), origins: Origins::Any, issuer: None, audience: None }
    }

    pub fn with_origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// Tokens must name this issuer (`iss`).
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Tokens must name this audience (`aud`).
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// Whether tokens are required.
    pub fn is_open(&self) -> bool {
        matches!(self.keys, Keys::Open)
    }

    /// Whether a key for this token's algorithm and `kid` is held (false for a malformed token).
    pub fn has_key_for(&self, token: &str) -> bool {
        let (Keys::Verifying(keys), Ok(header)) = (&self.keys, jsonwebtoken::decode_header(token)) else {
            return false;
        };
        keys.iter().any(|key| key.algorithm == header.alg && (header.kid.is_none() || key.kid == header.kid))
    }

    /// This authorizer with `other`'s keys (a refetched JWKS document) and its own settings.
    pub fn with_keys_of(&self, other: Authorizer) -> Self {
        Authorizer { keys: other.keys, ..self.clone() }
    }

    /// Decides a connection: the caller it stands for, or why it is refused.
    pub fn authorize(&self, token: Option<&str>, origin: Option<&str>, connection: &str) -> Result<Caller, Refusal> {
        if !self.origins.allows(origin) {
            return Err(Refusal::Forbidden(format!("origin {:?} is not allowed", origin.unwrap_or_default())));
        }
        let keys = match &self.keys {
            Keys::Open => return Ok(Caller::anonymous(connection)),
            Keys::Verifying(keys) => keys,
        };
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| Refusal::Unauthorized("no token".to_owned()))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refusal::Unauthorized(format!("malformed token: {e}")))?;
        let key = keys
            .iter()
            .find(|key| key.algorithm == header.alg && (header.kid.is_none() || key.kid == header.kid))
            .ok_or_else(|| {
                Refusal::Unauthorized(format!("no key for algorithm {:?} and kid {:?}", header.alg, header.kid))
            })?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| Refusal::Unauthorized(format!("token refused: {e}")))?
            .claims;
        if claims.sub.is_empty() || livesync_core::protocol::check_name("sub", &claims.sub).is_err() {
            return Err(Refusal::Unauthorized("the token's sub is empty or not a printable name".to_owned()));
        }
        for patterns in [&claims.rooms.read, &claims.rooms.write] {
            patterns.check().map_err(|e| Refusal::Unauthorized(format!("the token's rooms: {e}")))?;
        }
        Ok(Caller::user(claims.sub, connection, claims.rooms))
    }
}

/// How often a token naming an unknown key may make the keyring fetch its JWKS document again.
pub const REFRESH_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The authorizer in use, and where its keys come from. An identity provider rotates its keys:
/// a token signed with a key the keyring has not seen makes it fetch the JWKS document again
/// (at most once a minute, so unknown `kid`s cannot make it hammer the provider) and try once
/// more, so a rotation needs no restart of the runner or a cold start of the Lambda.
pub struct Keyring {
    current: std::sync::RwLock<std::sync::Arc<Authorizer>>,
    /// The JWKS URL (or file) to fetch again; `None` for keys that do not rotate (a secret).
    source: Option<String>,
    fetched: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl Keyring {
    /// Keys that never change: open, an HS256 secret, a PEM key.
    pub fn fixed(authorizer: Authorizer) -> Self {
        Keyring { current: std::sync::RwLock::new(authorizer.into()), source: None, fetched: Default::default() }
    }

    /// Keys fetched from `source`, a JWKS URL or file, which `authorizer` was built from.
    pub fn refreshed_from(authorizer: Authorizer, source: String) -> Self {
        Keyring {
            current: std::sync::RwLock::new(authorizer.into()),
            source: Some(source),
            fetched: Default::default(),
        }
    }

    pub fn current(&self) -> std::sync::Arc<Authorizer> {
        self.current.read().expect("keyring lock").clone()
    }

    /// [`Authorizer::authorize`], refetching the keys once for a token whose key is unknown.
    pub async fn authorize(
        &self,
        token: Option<&str>,
        origin: Option<&str>,
        connection: &str,
    ) -> Result<Caller, Refusal> {
        let current = self.current();
        let outcome = current.authorize(token, origin, connection);
        let unknown_key = matches!(outcome, Err(Refusal::Unauthorized(_)))
            && token.is_some_and(|token| jsonwebtoken::decode_header(token).is_ok() && !current.has_key_for(token));
        if unknown_key && self.refresh().await {
            return self.current().authorize(token, origin, connection);
        }
        outcome
    }

    /// Fetches the keys again, unless that was done within the last minute; whether it was.
    async fn refresh(&self) -> bool {
        let Some(source) = &self.source else { return false };
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY) {
            return false;
        }
        *fetched = Some(std::time::Instant::now());
        let keys = match crate::keys::load(source).await {
            Ok(document) => Authorizer::public_keys(&document).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match keys {
            Ok(keys) => {
                let refreshed = self.current().with_keys_of(keys);
                *self.current.write().expect("keyring lock") = refreshed.into();
                tracing::info!(source, "token keys fetched again for an unknown key id");
                true
            }
            Err(error) => {
                tracing::warn!(source, error, "token keys could not be fetched again; the old ones stay");
                false
            }
        }
    }
}

/// Mints an HS256 token (`livesync token`, tests).
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, KeyError> {
    if secret.len() < 32 {
        return Err(KeyError::ShortSecret);
    }
    for patterns in [&claims.rooms.read, &claims.rooms.write] {
        patterns.check().map_err(KeyError::Pattern)?;
    }
    let key = EncodingKey::from_secret(secret).map_err(KeyError::Pem)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).map_err(KeyError::Pem)
}

/// The authorizer Lambda's handler: a REQUEST authorizer event in, an Allow policy with the
/// caller's context out; `Err` (whose message API Gateway reads: `Unauthorized` is 401) to refuse.
pub async fn authorize(
    keyring: &Keyring,
    event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> Result<ApiGatewayCustomAuthorizerResponse, Refusal> {
    let token = event.query_string_parameters.first(TOKEN_PARAMETER);
    let origin = event.headers.get("origin").and_then(|v| v.to_str().ok());
    // The connection id is not known to an authorizer; the session is derived later, from each
    // event's own connection id.
    let caller = match keyring.authorize(token, origin, "").await {
        Ok(caller) => caller,
        Err(refusal) => {
            tracing::info!(reason = refusal.reason(), status = refusal.status(), "$connect refused");
            return match refusal {
                Refusal::Unauthorized(_) => Err(refusal),
                Refusal::Forbidden(_) => Ok(policy(event, IamPolicyEffect::Deny, "denied", HashMap::new())),
            };
        }
    };
    Ok(policy(event, IamPolicyEffect::Allow, caller.from(), caller.to_context()))
}

fn policy(
    event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    effect: IamPolicyEffect,
    principal: &str,
    context: HashMap<String, serde_json::Value>,
) -> ApiGatewayCustomAuthorizerResponse {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".to_owned()];
    statement.effect = effect;
    statement.resource = vec![event.method_arn.clone().unwrap_or_else(|| "*".to_owned())];
    let mut document = ApiGatewayCustomAuthorizerPolicy::default();
    document.version = Some("2012-10-17".to_owned());
    document.statement = vec![statement];
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal.to_owned());
    response.policy_document = document;
    response.context = serde_json::Value::Object(context.into_iter().collect());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use livesync_core::access::{Access, RoomPatterns};

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ann".into(),
            exp,
            rooms: Grants { read: RoomPatterns::new(["lobby", "doc-*"]), write: RoomPatterns::new(["lobby"]) },
        }
    }

    fn refused(outcome: Result<Caller, Refusal>) -> String {
        match outcome {
            Err(Refusal::Unauthorized(reason)) => reason,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_becomes_a_caller_with_its_grants() {
        let token = mint(SECRET, &claims(now() + 60)).unwrap();
        let caller = Authorizer::hs256(SECRET).unwrap().authorize(Some(&token), None, "c1").unwrap();
        assert_eq!(caller.user.as_deref(), Some("ann"));
        assert_eq!(caller.from(), "ann");
        assert!(caller.may(Access::Read("doc-7")));
        assert!(!caller.may(Access::Write("doc-7")));
    }

    #[test]
    fn no_token_a_bad_signature_and_an_expired_token_are_refused() {
        let authorizer = Authorizer::hs256(SECRET).unwrap();
        assert_eq!(refused(authorizer.authorize(None, None, "c")), "no token");
        let forged = mint(b"another-secret-of-at-least-32-bytes!", &claims(now() + 60)).unwrap();
        assert!(refused(authorizer.authorize(Some(&forged), None, "c")).contains("InvalidSignature"));
        let expired = mint(SECRET, &claims(now() - LEEWAY_SECS - 5)).unwrap();
        assert!(refused(authorizer.authorize(Some(&expired), None, "c")).contains("ExpiredSignature"));
        let within_leeway = mint(SECRET, &claims(now() - 5)).unwrap();
        assert!(authorizer.authorize(Some(&within_leeway), None, "c").is_ok());
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let early = serde_json::json!({"sub": "ann", "exp": now() + 7200, "nbf": now() + 3600});
        let early = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &early, &key).unwrap();
        assert!(
            refused(authorizer.authorize(Some(&early), None, "c")).contains("ImmatureSignature"),
            "not before its nbf"
        );
        assert!(refused(authorizer.authorize(Some("not.a.token"), None, "c")).contains("malformed"));
    }

    #[test]
    fn alg_none_and_a_wrong_algorithm_are_refused() {
        use base64::Engine as _;
        let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let payload = b64(&format!(r#"{{"sub":"ann","exp":{}}}"#, now() + 60));
        let authorizer = Authorizer::hs256(SECRET).unwrap();
        let none = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        assert!(refused(authorizer.authorize(Some(&none), None, "c")).contains("malformed"));
        // An HS384 token made with the right secret is still refused: the key is for HS256 only.
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let hs384 = jsonwebtoken::encode(&Header::new(Algorithm::HS384), &claims(now() + 60), &key).unwrap();
        assert!(refused(authorizer.authorize(Some(&hs384), None, "c")).contains("no key for algorithm HS384"));
    }

    #[test]
    fn a_token_without_sub_or_with_a_bad_room_pattern_is_refused() {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let header = Header::new(Algorithm::HS256);
        let no_sub = jsonwebtoken::encode(&header, &serde_json::json!({"exp": now() + 60}), &key).unwrap();
        let authorizer = Authorizer::hs256(SECRET).unwrap();
        assert!(refused(authorizer.authorize(Some(&no_sub), None, "c")).contains("sub"));
        let bad_rooms = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "ann", "exp": now() + 60, "rooms": {"read": ["a*b"]}}),
            &key,
        )
        .unwrap();
        assert!(refused(authorizer.authorize(Some(&bad_rooms), None, "c")).contains("rooms"));
    }

    #[test]
    fn a_short_secret_is_refused_at_startup() {
        assert!(matches!(Authorizer::hs256(b"short"), Err(KeyError::ShortSecret)));
    }

    #[test]
    fn an_origin_not_on_the_list_is_forbidden_and_no_origin_is_not_a_browser() {
        let authorizer = Authorizer::open().with_origins(Origins::parse("http://localhost:3001, https://app.example"));
        assert!(authorizer.authorize(None, Some("https://app.example"), "c").is_ok());
        assert!(authorizer.authorize(None, None, "c").is_ok());
        assert!(matches!(authorizer.authorize(None, Some("https://evil.example"), "c"), Err(Refusal::Forbidden(_))));
        assert!(Origins::parse("*").allows(Some("https://any.example")));
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let token = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "ann", "exp": now() + 60});
            claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let authorizer = Authorizer::hs256(SECRET)
            .unwrap()
            .with_issuer(Some("https://issuer.example".into()))
            .with_audience(Some("livesync".into()));
        let good = token(serde_json::json!({"iss": "https://issuer.example", "aud": "livesync"}));
        assert!(authorizer.authorize(Some(&good), None, "c").is_ok());
        let other = token(serde_json::json!({"iss": "https://issuer.example", "aud": "other"}));
        assert!(refused(authorizer.authorize(Some(&other), None, "c")).contains("InvalidAudience"));
        let none = token(serde_json::json!({}));
        assert!(refused(authorizer.authorize(Some(&none), None, "c")).contains("Missing"));
    }

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");

    fn key_file(name: &str) -> Vec<u8> {
        std::fs::read(format!("{KEYS}{name}")).unwrap()
    }

    #[test]
    fn rs256_tokens_verify_against_a_jwks_document_by_kid() {
        let private = EncodingKey::from_rsa_pem(&key_file("rsa-test-private.pem")).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-rsa-1".into());
        let token = jsonwebtoken::encode(&header, &claims(now() + 60), &private).unwrap();
        let jwks = String::from_utf8(key_file("jwks.json")).unwrap();
        let authorizer = Authorizer::jwks(&jwks).unwrap();
        assert_eq!(authorizer.authorize(Some(&token), None, "c").unwrap().user.as_deref(), Some("ann"));
        header.kid = Some("unknown".into());
        let unknown = jsonwebtoken::encode(&header, &claims(now() + 60), &private).unwrap();
        assert!(refused(authorizer.authorize(Some(&unknown), None, "c")).contains("no key"));
        // An HS256 token "signed" with the public key's text (the classic confusion) is refused.
        let confused = mint(&key_file("rsa-test-public.pem"), &claims(now() + 60)).unwrap();
        assert!(refused(authorizer.authorize(Some(&confused), None, "c")).contains("no key for algorithm HS256"));
    }

    #[test]
    fn es256_and_rs256_tokens_verify_against_a_pem_public_key() {
        let ec = EncodingKey::from_ec_pem(&key_file("ec-test-private.pem")).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(now() + 60), &ec).unwrap();
        let authorizer = Authorizer::public_pem(&key_file("ec-test-public.pem")).unwrap();
        assert!(authorizer.authorize(Some(&token), None, "c").is_ok());
        let rsa = EncodingKey::from_rsa_pem(&key_file("rsa-test-private.pem")).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(now() + 60), &rsa).unwrap();
        assert!(
            Authorizer::public_pem(&key_file("rsa-test-public.pem"))
                .unwrap()
                .authorize(Some(&token), None, "c")
                .is_ok()
        );
        assert!(refused(authorizer.authorize(Some(&token), None, "c")).contains("no key for algorithm RS256"));
    }

    /// Serves `document` over HTTP on loopback, counting the requests, as an identity provider's
    /// JWKS endpoint would.
    async fn jwks_endpoint(document: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", document.len());
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&document).await;
            }
        });
        (url, served)
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_once_and_unknown_keys_do_not_hammer_the_provider() {
        let (url, served) = jwks_endpoint(key_file("jwks-rotated.json")).await;
        // Built from the document before the rotation, which has only the first key.
        let before = Authorizer::jwks(&String::from_utf8(key_file("jwks.json")).unwrap()).unwrap();
        let keyring = Keyring::refreshed_from(before, url);
        let sign = |kid: &str| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.into());
            let key = EncodingKey::from_rsa_pem(&key_file("rsa2-test-private.pem")).unwrap();
            jsonwebtoken::encode(&header, &claims(now() + 60), &key).unwrap()
        };
        let rotated = sign("test-rsa-2");
        assert!(keyring.authorize(Some(&rotated), None, "c").await.is_ok(), "the new key was fetched");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(keyring.authorize(Some(&rotated), None, "c").await.is_ok());
        let unknown = sign("test-rsa-9");
        assert!(keyring.authorize(Some(&unknown), None, "c").await.is_err());
        assert!(keyring.authorize(Some(&unknown), None, "c").await.is_err());
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "at most one fetch a minute");
        // A bad signature with a known kid is refused without a fetch.
        let forged = format!("{}x", &rotated[..rotated.len() - 1]);
        assert!(keyring.authorize(Some(&forged), None, "c").await.is_err());
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
