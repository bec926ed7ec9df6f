//! The runner routes frames exactly as the deployed API would: the same route keys as
//! template.yaml, the same selection expression, and the TTL attribute the store writes.

use livesync_core::store::TTL_ATTRIBUTE;
use livesync_runner::gateway::ACTION_ROUTES;

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

/// The action names the template's `Fn::ForEach::ActionRoutes` makes a route of each.
fn generated_routes(template: &str) -> Vec<&str> {
    let mut lines = template.lines().skip_while(|line| line.trim() != "Fn::ForEach::ActionRoutes:").skip(1);
    assert_eq!(lines.next().map(str::trim), Some("- Action"), "the loop's identifier");
    let list = lines.next().expect("the loop's list").trim();
    let names = list.strip_prefix("- [").and_then(|l| l.strip_suffix(']')).expect("a one-line [..] list");
    names.split(',').map(str::trim).collect()
}

#[test]
fn the_runner_serves_exactly_the_routes_the_template_declares() {
    let template = template();
    let mut declared: Vec<&str> =
        values_of(&template, "RouteKey").into_iter().filter(|key| !key.starts_with("!Ref")).collect();
    declared.extend(generated_routes(&template));
    declared.sort();
    let mut served: Vec<&str> = ACTION_ROUTES.iter().copied().chain(["$connect", "$disconnect", "$default"]).collect();
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
