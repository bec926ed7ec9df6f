//! The runner routes frames exactly as the deployed API would: the same route keys as
//! template.yaml, the same selection expression, and the TTL attribute the store writes.

use livesync_core::store::TTL_ATTRIBUTE;
use livesync_runner::gateway::ROUTES;

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap()
}

/// Values of `key: value` lines, in order.
fn values_of<'t>(template: &'t str, key: &str) -> Vec<&'t str> {
    template
        .lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().trim_matches('"'))
        .collect()
}

#[test]
fn the_runner_serves_exactly_the_routes_the_template_declares() {
    let template = template();
    let mut declared = values_of(&template, "RouteKey");
    declared.sort();
    let mut served = ROUTES.to_vec();
    served.sort();
    assert_eq!(declared, served);
}

#[test]
fn routes_are_selected_by_the_action_field_as_the_runner_does() {
    assert_eq!(values_of(&template(), "RouteSelectionExpression"), vec!["$request.body.action"]);
}

#[test]
fn the_table_expires_items_by_the_attribute_the_store_writes() {
    let template = template();
    let ttl = template.split("TimeToLiveSpecification:").nth(1).expect("a TTL specification");
    assert_eq!(values_of(ttl, "AttributeName").first(), Some(&TTL_ATTRIBUTE));
}

#[test]
fn the_runner_answers_cross_origin_requests_as_the_templates_http_api_does() {
    use livesync_runner::http::{CORS_HEADERS, CORS_MAX_AGE_SECS, CORS_METHODS};
    let template = template();
    assert_eq!(values_of(&template, "AllowMethods"), vec![format!("[{}]", CORS_METHODS.join(", "))]);
    assert_eq!(values_of(&template, "AllowHeaders"), vec![format!("[{}]", CORS_HEADERS.join(", "))]);
    assert_eq!(values_of(&template, "MaxAge"), vec![CORS_MAX_AGE_SECS.to_string()]);
}
