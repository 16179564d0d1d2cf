//! Redirect `Location` values, Envoy's way.

use super::*;

/// The redirect of a one-route configuration matching `match_yaml`, and its Location for a
/// request.
fn location(
    match_yaml: &str,
    redirect_yaml: &str,
    scheme: &'static str,
    authority: &str,
    path: &str,
) -> String {
    let route = only_route(&format!(
        "- {{name: r, match: {match_yaml}, redirect: {redirect_yaml}}}"
    ));
    let Action::Redirect(redirect) = &route.action else {
        panic!("expected a redirect");
    };
    let req = TestRequest::get(authority, path).scheme(scheme);
    redirect.location(&req.view(), route.matcher.matched_prefix())
}

#[test]
fn location_for_each_field_combination() {
    let any = "{prefix: /}";
    let cases = [
        // Scheme changes drop the old scheme's default port, and only that.
        (
            any,
            "{https_redirect: true}",
            "http",
            "a.com:80",
            "/p?q",
            "https://a.com/p?q",
        ),
        (
            any,
            "{https_redirect: true}",
            "http",
            "a.com:8080",
            "/p",
            "https://a.com:8080/p",
        ),
        (
            any,
            "{https_redirect: true}",
            "https",
            "a.com:443",
            "/p",
            "https://a.com:443/p",
        ),
        (
            any,
            "{https_redirect: true}",
            "http",
            "[::1]:80",
            "/p",
            "https://[::1]/p",
        ),
        (
            any,
            "{scheme_redirect: https}",
            "http",
            "a.com:80",
            "/p",
            "https://a.com/p",
        ),
        (
            any,
            "{scheme_redirect: http}",
            "https",
            "a.com:443",
            "/",
            "http://a.com/",
        ),
        (
            any,
            "{scheme_redirect: http}",
            "https",
            "a.com",
            "/",
            "http://a.com/",
        ),
        // A host redirect replaces host and port; a port redirect replaces the port.
        (
            any,
            "{host_redirect: b.com}",
            "http",
            "a.com:8080",
            "/p",
            "http://b.com/p",
        ),
        (
            any,
            "{port_redirect: 8443}",
            "http",
            "a.com:80",
            "/p",
            "http://a.com:8443/p",
        ),
        (
            any,
            "{port_redirect: 8443}",
            "http",
            "[::1]:80",
            "/p",
            "http://[::1]:8443/p",
        ),
        (
            any,
            "{host_redirect: b.com, port_redirect: 8443, https_redirect: true}",
            "http",
            "a.com",
            "/p",
            "https://b.com:8443/p",
        ),
        // path_redirect keeps the request's query unless it brings its own.
        (
            any,
            "{path_redirect: /new}",
            "http",
            "a.com",
            "/old?q=1",
            "http://a.com/new?q=1",
        ),
        (
            any,
            "{path_redirect: '/new?z=1', strip_query: true}",
            "http",
            "a.com",
            "/old?q=1",
            "http://a.com/new?z=1",
        ),
        (
            any,
            "{path_redirect: /new, strip_query: true}",
            "http",
            "a.com",
            "/old?q=1",
            "http://a.com/new",
        ),
        (
            any,
            "{strip_query: true}",
            "http",
            "a.com",
            "/old/x?q=1",
            "http://a.com/old/x",
        ),
        (
            any,
            "{path_redirect: new}",
            "http",
            "a.com",
            "/old",
            "http://a.com/new",
        ),
        // Prefix rewrites replace what the route matched.
        (
            "{prefix: /old/}",
            "{prefix_rewrite: /new/}",
            "http",
            "a.com",
            "/old/x?q=1",
            "http://a.com/new/x?q=1",
        ),
        (
            "{prefix: /OLD/, case_sensitive: false}",
            "{prefix_rewrite: /new/}",
            "http",
            "a.com",
            "/old/x",
            "http://a.com/new/x",
        ),
        (
            "{path: /old}",
            "{prefix_rewrite: /new}",
            "http",
            "a.com",
            "/old?q",
            "http://a.com/new?q",
        ),
        (
            "{prefix: /old/}",
            "{prefix_rewrite: x/}",
            "http",
            "a.com",
            "/old/y",
            "http://a.com/x/y",
        ),
        (
            "{safe_regex: {regex: '/old/.*'}}",
            "{prefix_rewrite: /all}",
            "http",
            "a.com",
            "/old/y?q",
            "http://a.com/all?q",
        ),
        (
            any,
            r"{regex_rewrite: {pattern: {regex: '^/old/(.*)$'}, substitution: '/v2/\1'}}",
            "http",
            "a.com",
            "/old/x?q=1",
            "http://a.com/v2/x?q=1",
        ),
    ];
    for (matcher, redirect, scheme, authority, path, expected) in cases {
        assert_eq!(
            location(matcher, redirect, scheme, authority, path),
            expected,
            "{redirect} for {scheme}://{authority}{path}"
        );
    }
}

#[test]
fn redirect_status_defaults_to_301() {
    let status = |code: &str| {
        let route = only_route(&format!(
            "- {{name: r, match: {{prefix: /}}, redirect: {{response_code: {code}}}}}"
        ));
        match route.action {
            Action::Redirect(r) => r.status.as_u16(),
            _ => panic!("expected a redirect"),
        }
    };
    assert_eq!(status("MOVED_PERMANENTLY"), 301);
    assert_eq!(status("FOUND"), 302);
    assert_eq!(status("SEE_OTHER"), 303);
    assert_eq!(status("TEMPORARY_REDIRECT"), 307);
    assert_eq!(status("PERMANENT_REDIRECT"), 308);
    let default = only_route("- {name: r, match: {prefix: /}, redirect: {}}");
    assert!(matches!(default.action, Action::Redirect(r) if r.status == 301));
}
