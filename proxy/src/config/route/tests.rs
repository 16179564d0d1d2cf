//! Route configuration tests: YAML in, behaviour out, one behaviour per test.

use super::*;
use crate::config::matcher::tests::TestRequest;
use serde_json::{Value, json};
use xds_client::proto_json::{ReadOptions, from_value, parse_text};

mod actions;
mod errors;
mod index;
mod matching;
mod redirects;
mod vhosts;

fn yaml(text: &str) -> Value {
    parse_text(text, "test.yaml").expect("valid YAML")
}

fn try_config(value: Value) -> Result<RouteConfig, ConfigError> {
    let proto: proto::RouteConfiguration =
        from_value(value, ReadOptions::default()).expect("valid RouteConfiguration");
    RouteConfig::try_from(&proto)
}

/// A whole route configuration from YAML.
fn config(text: &str) -> RouteConfig {
    try_config(yaml(text)).expect("route configuration converts")
}

/// A configuration named "9080" with one `*` virtual host holding the routes (a YAML list).
fn routes_value(routes: &str) -> Value {
    json!({"name": "9080", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": yaml(routes)}]})
}

fn routes(routes: &str) -> RouteConfig {
    try_config(routes_value(routes)).expect("route configuration converts")
}

fn try_routes(routes: &str) -> Result<RouteConfig, ConfigError> {
    try_config(routes_value(routes))
}

/// The single route of a one-route configuration, given as a JSON value.
fn only_route_value(route: Value) -> Route {
    let value = json!({"name": "9080", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [route]}]});
    let mut cfg = try_config(value).expect("route configuration converts");
    cfg.virtual_hosts.remove(0).routes.remove(0)
}

/// The single route of a one-route configuration.
fn only_route(routes_yaml: &str) -> Route {
    let mut cfg = routes(routes_yaml);
    cfg.virtual_hosts.remove(0).routes.remove(0)
}

fn forward(route: &Route) -> &ForwardAction {
    match &route.action {
        Action::Forward(f) => f,
        other => panic!("expected a forward action, got {other:?}"),
    }
}

/// The name of the route a request selects (random 0).
fn selected<'c>(cfg: &'c RouteConfig, req: &TestRequest) -> Option<&'c str> {
    cfg.route(&req.view(), 0).map(|(_, r)| r.name.as_str())
}

fn get(path: &str) -> TestRequest {
    TestRequest::get("example.com", path)
}
