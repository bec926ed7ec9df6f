//! What API Gateway does before a Lambda runs: pick the route, build the event.
//!
//! The template declares no route per action (every action goes through `$default`, see
//! docs/ARCHITECTURE.md), so with its `RouteSelectionExpression: $request.body.action` every
//! message is routed to `$default`, as here. The events carry every field API Gateway sends, so
//! a handler that reads real events reads these.

use aws_lambda_events::apigw::{ApiGatewayRequestIdentity, ApiGatewayWebsocketProxyRequest};
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use std::collections::HashMap;
use std::net::SocketAddr;

/// The routes the template declares: a test holds this equal to `template.yaml`.
pub const ROUTES: [&str; 3] = ["$connect", "$disconnect", DEFAULT_ROUTE];

/// The route of every message: no action has a route of its own.
pub const DEFAULT_ROUTE: &str = "$default";

/// An id in API Gateway's style (base64 of random bytes, as in `CpbWUd2JDoECJ5w=`).
pub fn new_id() -> String {
    base64::engine::general_purpose::URL_SAFE.encode(rand::random::<[u8; 11]>())
}

/// The stage-level facts every event repeats.
#[derive(Debug, Clone)]
pub struct Stage {
    pub api_id: String,
    pub stage: String,
    pub domain_name: String,
}

/// One client connection, as API Gateway knows it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub connection_id: String,
    pub connected_at_ms: i64,
    pub source_ip: String,
    pub user_agent: Option<String>,
    /// What the `$connect` authorizer returned: API Gateway attaches it to every event of the
    /// connection (`requestContext.authorizer`).
    pub authorizer: HashMap<String, serde_json::Value>,
}

impl Stage {
    pub fn connect_event(&self, peer: &Peer, headers: &HeaderMap, now_ms: i64) -> ApiGatewayWebsocketProxyRequest {
        let mut event = self.event(peer, "$connect", "CONNECT", now_ms);
        let mut headers = headers.clone();
        for (name, value) in
            [("x-forwarded-for", peer.source_ip.as_str()), ("x-forwarded-port", "443"), ("x-forwarded-proto", "https")]
        {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        event.multi_value_headers = headers.clone();
        event.headers = headers;
        event
    }

    pub fn message_event(
        &self,
        peer: &Peer,
        body: String,
        is_base64_encoded: bool,
        now_ms: i64,
    ) -> ApiGatewayWebsocketProxyRequest {
        let mut event = self.event(peer, DEFAULT_ROUTE, "MESSAGE", now_ms);
        event.request_context.message_id = Some(new_id());
        event.body = Some(body);
        event.is_base64_encoded = is_base64_encoded;
        event
    }

    pub fn disconnect_event(
        &self,
        peer: &Peer,
        status: u16,
        reason: &str,
        now_ms: i64,
    ) -> ApiGatewayWebsocketProxyRequest {
        let mut event = self.event(peer, "$disconnect", "DISCONNECT", now_ms);
        event.request_context.disconnect_status_code = Some(i64::from(status));
        event.request_context.disconnect_reason = Some(reason.to_owned());
        event
    }

    fn event(&self, peer: &Peer, route: &str, event_type: &str, now_ms: i64) -> ApiGatewayWebsocketProxyRequest {
        let request_id = new_id();
        let mut event = ApiGatewayWebsocketProxyRequest::default();
        let context = &mut event.request_context;
        context.route_key = Some(route.to_owned());
        context.event_type = Some(event_type.to_owned());
        context.extended_request_id = Some(request_id.clone());
        context.request_id = Some(request_id);
        context.request_time = Some(request_time(now_ms));
        context.request_time_epoch = now_ms;
        context.message_direction = Some("IN".to_owned());
        context.stage = Some(self.stage.clone());
        context.connected_at = peer.connected_at_ms;
        context.domain_name = Some(self.domain_name.clone());
        context.connection_id = Some(peer.connection_id.clone());
        context.apiid = Some(self.api_id.clone());
        let mut identity = ApiGatewayRequestIdentity::default();
        identity.source_ip = Some(peer.source_ip.clone());
        identity.user_agent = peer.user_agent.clone();
        context.identity = identity;
        context.authorizer.fields = peer.authorizer.clone();
        event
    }
}

pub fn source_ip(addr: &SocketAddr) -> String {
    addr.ip().to_string()
}

/// API Gateway's `requestTime` format: `24/Nov/2026:05:32:22 +0000`.
fn request_time(epoch_ms: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = epoch_ms.div_euclid(1000);
    let (days, time) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_time_is_written_as_api_gateway_writes_it() {
        assert_eq!(request_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(request_time(1_707_503_008_941), "09/Feb/2024:18:23:28 +0000");
        assert_eq!(request_time(1_795_498_342_118), "24/Nov/2026:05:32:22 +0000");
        assert_eq!(request_time(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn ids_look_like_api_gateway_ids_and_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 16 && id.ends_with('=')));
    }

    #[test]
    fn a_built_event_reads_back_as_a_real_one_does() {
        let stage = Stage { api_id: "local".into(), stage: "local".into(), domain_name: "127.0.0.1:3001".into() };
        let peer = Peer {
            connection_id: "c1".into(),
            connected_at_ms: 1,
            source_ip: "127.0.0.1".into(),
            user_agent: None,
            authorizer: livesync_core::access::Caller::anonymous("c1").to_context(),
        };
        let event = stage.message_event(&peer, r#"{"action":"ping"}"#.into(), false, 2);
        let json = serde_json::to_value(&event).unwrap();
        let context = &json["requestContext"];
        for field in [
            "routeKey",
            "eventType",
            "requestId",
            "messageId",
            "connectionId",
            "domainName",
            "stage",
            "apiId",
            "requestTime",
            "messageDirection",
            "extendedRequestId",
        ] {
            assert!(context[field].is_string(), "{field} missing from {context}");
        }
        assert_eq!(context["routeKey"], "$default");
        assert_eq!(
            context["authorizer"]["anonymous"], "true",
            "the authorizer's context, flat, as API Gateway sends it"
        );
        assert_eq!(context["connectedAt"], 1);
        assert_eq!(context["requestTimeEpoch"], 2);
        let back: ApiGatewayWebsocketProxyRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
