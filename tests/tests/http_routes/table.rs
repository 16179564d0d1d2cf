//! The route table's cases, grouped as `testdata/http_routes.yaml` is: virtual host selection,
//! route matching (path, headers, query), route actions (forwarding, redirects, direct
//! responses), header mutations, then HTTP/2 downstream and HTTP/1 protocol edges.
//!
//! Every expectation here was checked against Envoy 1.40.0 (`envoy_agrees_with_table`); comments
//! mark where Envoy's behaviour is not what one might guess.

use super::case::{Case, get, request};

pub fn cases() -> Vec<Case> {
    [
        virtual_hosts(),
        route_matching(),
        header_matching(),
        query_matching(),
        actions(),
        redirects(),
        direct_responses(),
        header_mutations(),
        http_filters(),
        http2(),
        protocol_edges(),
    ]
    .concat()
}

fn virtual_hosts() -> Vec<Case> {
    vec![
        get("exact domain", "exact.test", "/").backend("a", "exact"),
        get("second domain of a virtual host", "exact-alias.test", "/x").backend("a", "exact"),
        get("host matching ignores case", "EXACT.Test", "/").backend("a", "exact"),
        get("suffix wildcard", "one.suffix.test", "/").backend("b", "suffix"),
        get("longest suffix wildcard wins", "x.deep.suffix.test", "/").backend("c", "deep_suffix"),
        get(
            "suffix wildcard needs a non-empty prefix",
            "suffix.test",
            "/",
        )
        .backend("c", "default"),
        get(
            "suffix wildcard beats prefix wildcard",
            "prefix.suffix.test",
            "/",
        )
        .backend("b", "suffix"),
        get("prefix wildcard", "prefix.anything", "/").backend("c", "prefix"),
        get(
            "no domain matches: default virtual host",
            "unknown.test",
            "/",
        )
        .backend("c", "default"),
        get(
            "ignored port: host with port matches a domain without",
            "noport.test:9999",
            "/",
        )
        .backend("b", "noport"),
        get("ignored port: default port too", "exact.test:80", "/").backend("a", "exact"),
        get("ignored port: a domain with a port", "port.test:8080", "/").backend("c", "default"),
        get(
            "strict port: host with port matches only that domain",
            "port.test:8080",
            "/",
        )
        .on_strict_listener()
        .backend("a", "ported"),
        get(
            "strict port: host without port misses a domain with port",
            "port.test",
            "/",
        )
        .on_strict_listener()
        .backend("c", "default"),
        get(
            "strict port: host with port misses a domain without",
            "noport.test:9999",
            "/",
        )
        .on_strict_listener()
        .backend("c", "default"),
        get("strict port: plain host", "noport.test", "/")
            .on_strict_listener()
            .backend("b", "noport"),
        get(
            "no route in the virtual host: 404",
            "noroute.test",
            "/other",
        )
        .status(404)
        .body(""),
        get("only route of a virtual host", "noroute.test", "/only").backend("a", "noroute"),
        // A fully qualified host (trailing dot) is not normalised before matching.
        get("trailing dot in the host", "exact.test.", "/").backend("c", "default"),
    ]
}

fn route_matching() -> Vec<Case> {
    let m = "match.test";
    vec![
        get("path match", m, "/exact").route("a", "match", "path"),
        get("path match ignores the query", m, "/exact?x=1").route("a", "match", "path"),
        get("path match is exact: trailing slash", m, "/exact/").route("c", "match", "fallback"),
        get("path match is case sensitive", m, "/EXACT").route("c", "match", "fallback"),
        get("separated prefix: itself", m, "/sep").route("a", "match", "sep"),
        get("separated prefix: a sub-path", m, "/sep/x").route("a", "match", "sep"),
        get("separated prefix: with a query", m, "/sep?x=1").route("a", "match", "sep"),
        get("separated prefix: not a longer segment", m, "/separate")
            .route("c", "match", "fallback"),
        get("regex matches the whole path", m, "/re/123").route("b", "match", "regex"),
        get("regex ignores the query", m, "/re/123?x=y").route("b", "match", "regex"),
        get("regex must match the whole path", m, "/re/12a").route("c", "match", "fallback"),
        get("regex is anchored at the start", m, "/x/re/1").route("c", "match", "fallback"),
        get("case-insensitive prefix", m, "/caseless/x").route("b", "match", "caseless"),
        get("case-insensitive prefix, upper case", m, "/CASELESS").route("b", "match", "caseless"),
        get("case-sensitive path", m, "/Case/Exact").route("b", "match", "case-exact"),
        get("case-sensitive path, other case", m, "/case/exact").route("c", "match", "fallback"),
        request("grpc match", "POST", m, "/grpc.Svc/Call")
            .header("content-type", "application/grpc")
            .route("c", "match", "grpc"),
        request("grpc match with a subtype", "POST", m, "/grpc.Svc/Call")
            .header("content-type", "application/grpc+proto")
            .route("c", "match", "grpc"),
        request(
            "grpc match needs the grpc content type",
            "POST",
            m,
            "/grpc.Svc/Call",
        )
        .header("content-type", "application/json")
        .route("c", "match", "fallback"),
        request(":method header match", "POST", m, "/method").route("c", "match", "method-post"),
        get(":method header mismatch", m, "/method").route("c", "match", "fallback"),
        get("first match wins", m, "/order/specific").route("a", "match", "order-first"),
        get("catch-all", m, "/anything/else").route("c", "match", "fallback"),
    ]
}

fn header_matching() -> Vec<Case> {
    let m = "match.test";
    let hdr = |name, path, value| get(name, m, path).header("x-h", value);
    vec![
        hdr("header exact", "/hdr/exact", "foo").route("a", "match", "hdr-exact"),
        hdr("header exact mismatch", "/hdr/exact", "foobar").route("c", "match", "fallback"),
        get("header exact, header missing", m, "/hdr/exact").route("c", "match", "fallback"),
        // A repeated header matches when any one of its values does (the values are not
        // joined with commas first), for every kind of matcher.
        hdr(
            "header exact, repeated header, one value matches",
            "/hdr/exact",
            "bar",
        )
        .header("x-h", "foo")
        .route("a", "match", "hdr-exact")
        .upstream_header("x-h", &["bar", "foo"]),
        hdr(
            "header exact, repeated header, same value twice",
            "/hdr/exact",
            "foo",
        )
        .header("x-h", "foo")
        .route("a", "match", "hdr-exact"),
        hdr("header exact, comma-joined value", "/hdr/exact", "foo,foo")
            .route("c", "match", "fallback"),
        hdr("header prefix, repeated header", "/hdr/prefix", "bar")
            .header("x-h", "foox")
            .route("a", "match", "hdr-prefix"),
        hdr("header regex, repeated header", "/hdr/regex", "xv12")
            .header("x-h", "v12")
            .route("a", "match", "hdr-regex"),
        hdr("range match, repeated header", "/hdr/range", "15")
            .header("x-h", "abc")
            .route("a", "match", "hdr-range"),
        // ...so an inverted matcher fails when any one value matches.
        hdr(
            "inverted exact, repeated header, one value matches",
            "/hdr/invert",
            "foo",
        )
        .header("x-h", "bar")
        .route("c", "match", "fallback"),
        hdr("header prefix", "/hdr/prefix", "foobar").route("a", "match", "hdr-prefix"),
        hdr("header prefix mismatch", "/hdr/prefix", "barfoo").route("c", "match", "fallback"),
        hdr("header suffix", "/hdr/suffix", "barfoo").route("a", "match", "hdr-suffix"),
        hdr("header contains", "/hdr/contains", "xfoox").route("a", "match", "hdr-contains"),
        hdr("header regex", "/hdr/regex", "v12").route("a", "match", "hdr-regex"),
        hdr("header regex is a full match", "/hdr/regex", "xv12").route("c", "match", "fallback"),
        hdr("header ignore_case", "/hdr/ignore-case", "FOO").route("a", "match", "hdr-ignore-case"),
        hdr("header present", "/hdr/present", "anything").route("a", "match", "hdr-present"),
        hdr("header present with an empty value", "/hdr/present", "").route(
            "a",
            "match",
            "hdr-present",
        ),
        get("header present, missing", m, "/hdr/present").route("c", "match", "fallback"),
        get(
            "present_match false matches a missing header",
            m,
            "/hdr/absent",
        )
        .route("a", "match", "hdr-absent"),
        hdr("present_match false, header there", "/hdr/absent", "foo")
            .route("c", "match", "fallback"),
        hdr("inverted exact, other value", "/hdr/invert", "bar").route("a", "match", "hdr-invert"),
        hdr("inverted exact, same value", "/hdr/invert", "foo").route("c", "match", "fallback"),
        // A missing header matches no string matcher, inverted or not.
        get("inverted exact, header missing", m, "/hdr/invert").route("c", "match", "fallback"),
        hdr("range match", "/hdr/range", "15").route("a", "match", "hdr-range"),
        hdr("range start is inclusive", "/hdr/range", "10").route("a", "match", "hdr-range"),
        hdr("range end is exclusive", "/hdr/range", "20").route("c", "match", "fallback"),
        hdr("range needs an integer", "/hdr/range", "abc").route("c", "match", "fallback"),
        hdr("all header matchers must match", "/hdr/both", "foo")
            .header("x-i", "1")
            .route("a", "match", "hdr-both"),
        hdr(
            "all header matchers must match: one missing",
            "/hdr/both",
            "foo",
        )
        .route("c", "match", "fallback"),
        get(":authority header match", m, "/hdr/authority").route("a", "match", "hdr-authority"),
    ]
}

fn query_matching() -> Vec<Case> {
    let m = "match.test";
    vec![
        get("query exact", m, "/q/exact?k=v").route("b", "match", "q-exact"),
        get("query exact among others", m, "/q/exact?a=1&k=v").route("b", "match", "q-exact"),
        get("query exact mismatch", m, "/q/exact?k=vv").route("c", "match", "fallback"),
        get("query exact, no query", m, "/q/exact").route("c", "match", "fallback"),
        get("query exact, repeated parameter", m, "/q/exact?k=v&k=w")
            .route("b", "match", "q-exact"),
        get("query present without a value", m, "/q/present?k").route("b", "match", "q-present"),
        get("query present with an empty value", m, "/q/present?k=").route(
            "b",
            "match",
            "q-present",
        ),
        get("query present, other name", m, "/q/present?kk=1").route("c", "match", "fallback"),
        get("query regex", m, "/q/regex?k=123").route("b", "match", "q-regex"),
        get("query regex is a full match", m, "/q/regex?k=12a").route("c", "match", "fallback"),
        // Query values are compared as sent: neither `%20` nor `+` becomes a space.
        get("query value is not percent-decoded", m, "/q/space?k=a%20b")
            .route("c", "match", "fallback"),
        get("query value plus sign is not a space", m, "/q/space?k=a+b")
            .route("c", "match", "fallback"),
    ]
}

fn actions() -> Vec<Case> {
    let act = "action.test";
    vec![
        get("cluster_header picks the cluster", act, "/cluster-header")
            .header("x-target-cluster", "b")
            .route("b", "actions", "cluster-header"),
        get(
            "cluster_header names an unknown cluster",
            act,
            "/cluster-header",
        )
        .header("x-target-cluster", "nope")
        .status(503)
        .body(""),
        get("cluster_header missing", act, "/cluster-header")
            .status(503)
            .body(""),
        get("weighted clusters 100/0", act, "/weighted-a")
            .header("x-remove-at-wc", "1")
            .route("a", "actions", "weighted-a")
            .upstream_header("x-wc", &["a"])
            .upstream_authority("wc-a.test")
            .upstream_absent("x-remove-at-wc")
            // Unlike the route-level host_rewrite_literal below.
            .upstream_absent("x-envoy-original-host"),
        get("weighted clusters 0/100", act, "/weighted-b")
            .backend_sets("x-strip-at-wc=1")
            .route("b", "actions", "weighted-b")
            .upstream_absent("x-wc")
            .response_header("x-wc-resp", &["b"])
            .response_absent("x-strip-at-wc"),
        get("prefix_rewrite", act, "/prefix-rewrite/x/y?q=1")
            .route("a", "actions", "prefix-rewrite")
            .upstream_path("/rewritten/x/y?q=1")
            .upstream_header("x-envoy-original-path", &["/prefix-rewrite/x/y?q=1"]),
        get("prefix_rewrite to the root", act, "/pr-root/x")
            .route("a", "actions", "pr-root")
            .upstream_path("/x"),
        get("prefix_rewrite of the whole path", act, "/pr-root/")
            .route("a", "actions", "pr-root")
            .upstream_path("/"),
        get(
            "regex_rewrite keeps the query",
            act,
            "/regex-rewrite/one/two?q",
        )
        .route("b", "actions", "regex-rewrite")
        .upstream_path("/two/one?q"),
        // The path is left alone, yet x-envoy-original-path is added all the same.
        get(
            "regex_rewrite that does not match",
            act,
            "/regex-rewrite/1/2",
        )
        .route("b", "actions", "regex-rewrite")
        .upstream_header("x-envoy-original-path", &["/regex-rewrite/1/2"]),
        get("host_rewrite_literal", act, "/host-rewrite")
            .route("c", "actions", "host-rewrite")
            .upstream_authority("rewritten.test")
            .upstream_header("x-envoy-original-host", &["action.test"])
            .upstream_absent("x-forwarded-host"),
        get("unknown cluster: 503", act, "/unknown-cluster")
            .status(503)
            .body(""),
        get("route timeout is announced upstream", act, "/timeout")
            .route("a", "actions", "timeout")
            .upstream_header("x-envoy-expected-rq-timeout-ms", &["500"]),
        // With use_remote_address unset and no XFF every client is external: Envoy drops the
        // x-envoy-* headers that steer it (and x-envoy-internal itself) before routing...
        get(
            "x-envoy control headers from a client are dropped",
            act,
            "/plain",
        )
        .header("x-envoy-upstream-rq-timeout-ms", "1234")
        .header("x-envoy-max-retries", "3")
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-internal", "true")
        .route("a", "actions", "actions-fallback")
        .upstream_header("x-envoy-expected-rq-timeout-ms", &["15000"])
        .upstream_absent("x-envoy-upstream-rq-timeout-ms")
        .upstream_absent("x-envoy-max-retries")
        .upstream_absent("x-envoy-retry-on")
        .upstream_absent("x-envoy-internal"),
        get(
            "x-envoy retry headers from a client are not obeyed",
            act,
            "/fails",
        )
        .header("x-envoy-max-retries", "2")
        .header("x-envoy-retry-on", "5xx")
        .header("x-backend-status", "503")
        .status(503)
        .route("a", "actions", "actions-fallback"),
        // ...but passes other x-envoy-* headers through, even a spoofed original path.
        get(
            "other x-envoy headers from a client pass through",
            act,
            "/plain",
        )
        .header("x-envoy-original-path", "/spoofed")
        .header("x-envoy-decorator-operation", "op")
        .header("x-envoy-anything", "1")
        .route("a", "actions", "actions-fallback")
        .upstream_header("x-envoy-original-path", &["/spoofed"])
        .upstream_header("x-envoy-decorator-operation", &["op"])
        .upstream_header("x-envoy-anything", &["1"]),
        get("route timeout: 504", act, "/timeout")
            .header("x-backend-delay-ms", "3000")
            .status(504)
            .reached("a")
            .body("upstream request timeout"),
        get("upstream over HTTP/2", act, "/h2-upstream")
            .route("c", "actions", "h2-upstream")
            .upstream_version("HTTP/2"),
        get(
            "upstream error status passes through, no retry",
            act,
            "/fails",
        )
        .header("x-backend-status", "503")
        .status(503)
        .route("a", "actions", "actions-fallback"),
        get("headers the proxy adds upstream", act, "/plain")
            .route("a", "actions", "actions-fallback")
            .upstream_header("x-forwarded-proto", &["http"])
            .upstream_header("x-envoy-expected-rq-timeout-ms", &["15000"])
            .upstream_header("x-rc", &["routes"])
            .upstream_absent("x-forwarded-for")
            .upstream_absent("x-envoy-original-path")
            .response_header("x-resp-rc", &["routes"]),
        request("request body is forwarded", "POST", act, "/body")
            .with_body(b"0123456789")
            .route("a", "actions", "actions-fallback")
            .upstream_body_len(10),
    ]
}

fn redirects() -> Vec<Case> {
    let act = "action.test";
    vec![
        get("https_redirect", act, "/redirect/https")
            .status(301)
            .location("https://action.test/redirect/https")
            .body(""),
        get(
            "https_redirect from a host with a port",
            "action.test:8080",
            "/redirect/https",
        )
        .status(301)
        .location("https://action.test:8080/redirect/https")
        .body(""),
        get(
            "host_redirect keeps path and query",
            act,
            "/redirect/host?x=1",
        )
        .status(302)
        .location("http://other.test/redirect/host?x=1"),
        // host_redirect replaces the port too (none given: none kept)...
        get(
            "host_redirect drops the port",
            "action.test:8080",
            "/redirect/host",
        )
        .status(302)
        .location("http://other.test/redirect/host"),
        // ...while redirects that do not touch the host keep its port.
        get(
            "path_redirect keeps the port",
            "action.test:8080",
            "/redirect/path",
        )
        .status(301)
        .location("http://action.test:8080/new/path"),
        get(
            "port_redirect replaces the port",
            "action.test:8080",
            "/redirect/port",
        )
        .status(301)
        .location("http://action.test:8443/redirect/port"),
        // Switching to https drops a port 80 (http's default) but keeps any other, 443 included.
        get(
            "https_redirect from port 80",
            "action.test:80",
            "/redirect/https",
        )
        .status(301)
        .location("https://action.test/redirect/https"),
        get(
            "path_redirect from port 80",
            "action.test:80",
            "/redirect/path",
        )
        .status(301)
        .location("http://action.test:80/new/path"),
        get(
            "https_redirect from port 443",
            "action.test:443",
            "/redirect/https",
        )
        .status(301)
        .location("https://action.test:443/redirect/https"),
        get(
            "scheme and port redirect from a port",
            "action.test:8080",
            "/redirect/scheme",
        )
        .status(308)
        .location("https://action.test:8443/redirect/scheme"),
        get("port_redirect", act, "/redirect/port")
            .status(301)
            .location("http://action.test:8443/redirect/port"),
        get("path_redirect keeps the query", act, "/redirect/path?a=1")
            .status(301)
            .location("http://action.test/new/path?a=1"),
        get("prefix_rewrite redirect", act, "/redirect/prefix/x/y?z")
            .status(303)
            .location("http://action.test/rewritten/x/y?z"),
        get("strip_query", act, "/redirect/strip?a=1")
            .status(307)
            .location("http://action.test/redirect/strip"),
        get("scheme and port redirect", act, "/redirect/scheme")
            .status(308)
            .location("https://action.test:8443/redirect/scheme"),
        get(
            "host, port, path and strip_query together",
            act,
            "/redirect/all?q=1",
        )
        .status(301)
        .location("http://all.test:9000/all"),
        get("regex_rewrite redirect", act, "/redirect/regex/abc")
            .status(301)
            .location("http://action.test/r/abc"),
    ]
}

fn direct_responses() -> Vec<Case> {
    let act = "action.test";
    vec![
        get("direct response with a body", act, "/direct/text")
            .body("hello from the route table\n")
            .response_header("content-type", &["text/plain"]),
        get("direct response with another status", act, "/direct/teapot")
            .status(418)
            .body("short and stout"),
        get("direct response without a body", act, "/direct/empty")
            .status(204)
            .body("")
            .response_absent("content-type"),
        get("direct 503", act, "/direct/503").status(503).body(""),
    ]
}

fn http_filters() -> Vec<Case> {
    let f = "filters.test";
    vec![
        get("fault: abort", f, "/fault/abort")
            .status(503)
            .body("fault filter abort")
            .response_header("content-type", &["text/plain"])
            .response_header("x-resp-route", &["fault"]),
        get("fault: gRPC abort", f, "/fault/abort-grpc")
            .header("content-type", "application/grpc")
            .response_header("grpc-status", &["7"])
            .response_header("grpc-message", &["fault filter abort"]),
        get("fault: a 0% abort never fires", f, "/fault/never").backend("a", "filters"),
        get("fault: header abort", f, "/fault/header")
            .header("x-envoy-fault-abort-request", "429")
            .status(429)
            .body("fault filter abort"),
        get(
            "fault: header abort out of range is ignored",
            f,
            "/fault/header",
        )
        .header("x-envoy-fault-abort-request", "600")
        .backend("a", "filters"),
        get("fault: header delay then forward", f, "/fault/header")
            .header("x-envoy-fault-delay-request", "20")
            .backend("a", "filters"),
        get("fault: no fault header, no fault", f, "/fault/header").backend("a", "filters"),
        get(
            "fault: upstream_cluster targets another cluster",
            f,
            "/fault/other-cluster",
        )
        .backend("a", "filters"),
        get(
            "fault: the weighted cluster's config is the most specific",
            f,
            "/fault/weighted",
        )
        .status(418)
        .body("fault filter abort"),
        get("fault: fixed delay then forward", f, "/fault/delay").backend("a", "filters"),
        request("cors: preflight answered locally", "OPTIONS", f, "/cors")
            .header("origin", "https://good.test")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-a")
            .response_header("access-control-allow-origin", &["https://good.test"])
            .response_header("access-control-allow-methods", &["GET,POST"])
            .response_header("access-control-allow-headers", &["x-a,x-b"])
            .response_header("access-control-max-age", &["600"])
            .response_header("access-control-allow-credentials", &["true"])
            .response_header("access-control-expose-headers", &["x-exposed"])
            .body(""),
        request(
            "cors: suffix-matched origin preflight",
            "OPTIONS",
            f,
            "/cors",
        )
        .header("origin", "https://app.friends.test")
        .header("access-control-request-method", "GET")
        .response_header("access-control-allow-origin", &["https://app.friends.test"]),
        request(
            "cors: preflight from a foreign origin goes upstream",
            "OPTIONS",
            f,
            "/cors",
        )
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "POST")
        .backend("a", "filters")
        .response_absent("access-control-allow-origin"),
        get("cors: allowed origin marks the response", f, "/cors")
            .header("origin", "https://good.test")
            .backend("a", "filters")
            .response_header("access-control-allow-origin", &["https://good.test"])
            .response_header("access-control-allow-credentials", &["true"])
            .response_header("access-control-expose-headers", &["x-exposed"])
            .response_absent("access-control-allow-methods"),
        get("cors: foreign origin is left alone", f, "/cors")
            .header("origin", "https://evil.test")
            .backend("a", "filters")
            .response_absent("access-control-allow-origin"),
        get("cors: no origin, nothing added", f, "/cors")
            .backend("a", "filters")
            .response_absent("access-control-allow-origin"),
        // The fault filter runs before CORS here, so its abort never passes through CORS.
        get(
            "cors: an earlier filter's reply is not marked",
            f,
            "/fault/abort",
        )
        .header("origin", "https://good.test")
        .status(503)
        .response_absent("access-control-allow-origin"),
        request(
            "cors: a route's FilterConfig disables it",
            "OPTIONS",
            f,
            "/cors/disabled",
        )
        .header("origin", "https://good.test")
        .header("access-control-request-method", "POST")
        .backend("a", "filters")
        .response_absent("access-control-allow-origin"),
        request(
            "cors: the route's policy merges over the vhost's",
            "OPTIONS",
            f,
            "/cors/route",
        )
        .header("origin", "https://route.test")
        .header("access-control-request-method", "PUT")
        .response_header("access-control-allow-origin", &["https://route.test"])
        .response_header("access-control-allow-methods", &["PUT"])
        .response_header("access-control-allow-headers", &["x-a,x-b"])
        .response_header("access-control-allow-credentials", &["true"]),
        request(
            "cors: the route's origins replace the vhost's",
            "OPTIONS",
            f,
            "/cors/route",
        )
        .header("origin", "https://good.test")
        .header("access-control-request-method", "PUT")
        .backend("a", "filters")
        .response_absent("access-control-allow-origin"),
        get("local rate limit: the bucket's one token", f, "/ratelimit")
            .backend("b", "filters")
            .response_absent("x-limited"),
        get("local rate limit: empty bucket", f, "/ratelimit")
            .status(429)
            .body("local_rate_limited")
            .response_header("x-limited", &["yes"]),
        // The rate limit runs after CORS: its reply is marked.
        get("cors: a later filter's reply is marked", f, "/ratelimit")
            .header("origin", "https://good.test")
            .status(429)
            .response_header("access-control-allow-origin", &["https://good.test"]),
    ]
}

fn header_mutations() -> Vec<Case> {
    let h = "headers.test";
    vec![
        get("request headers added at every level", h, "/mutate")
            .backend("b", "headers")
            .upstream_header("x-append", &["route"])
            .upstream_header("x-add-if-absent", &["route"])
            .upstream_header("x-overwrite", &["route"])
            .upstream_absent("x-overwrite-if-exists")
            .upstream_header("x-level", &["route", "vhost", "rc"])
            .upstream_header("x-level-overwrite", &["rc"])
            .upstream_header("x-rc", &["routes"]),
        get("append actions against client headers", h, "/mutate")
            .header("x-append", "client")
            .header("x-add-if-absent", "client")
            .header("x-overwrite", "client")
            .header("x-overwrite-if-exists", "client")
            .header("x-level", "client")
            .header("x-level-overwrite", "client")
            .backend("b", "headers")
            .upstream_header("x-append", &["client", "route"])
            .upstream_header("x-add-if-absent", &["client"])
            .upstream_header("x-overwrite", &["route"])
            .upstream_header("x-overwrite-if-exists", &["route"])
            .upstream_header("x-level", &["client", "route", "vhost", "rc"])
            .upstream_header("x-level-overwrite", &["rc"]),
        get("request headers removed at every level", h, "/mutate")
            .header("x-remove-at-route", "1")
            .header("x-remove-at-vhost", "1")
            .header("x-remove-at-rc", "1")
            .header("x-keep", "1")
            .backend("b", "headers")
            .upstream_absent("x-remove-at-route")
            .upstream_absent("x-remove-at-vhost")
            .upstream_absent("x-remove-at-rc")
            .upstream_header("x-keep", &["1"]),
        get(
            "response headers added and removed at every level",
            h,
            "/mutate",
        )
        .backend_sets("x-strip-at-route=1")
        .backend_sets("x-strip-at-vhost=1")
        .backend_sets("x-strip-at-rc=1")
        .backend_sets("x-resp-overwrite=backend")
        .backend_sets("x-resp-route=backend")
        .backend_sets("x-kept=1")
        .backend("b", "headers")
        .response_absent("x-strip-at-route")
        .response_absent("x-strip-at-vhost")
        .response_absent("x-strip-at-rc")
        .response_header("x-resp-overwrite", &["route"])
        .response_header("x-resp-route", &["backend", "mutate"])
        .response_header("x-resp-vhost", &["headers"])
        .response_header("x-resp-rc", &["routes"])
        .response_header("x-kept", &["1"]),
        get("response headers on a direct response", h, "/direct")
            .body("direct with headers")
            .response_header("x-resp-route", &["direct"])
            .response_header("x-resp-vhost", &["headers"])
            .response_header("x-resp-rc", &["routes"]),
        get("response headers on a redirect", h, "/redirect")
            .status(301)
            .location("http://elsewhere.test/redirect")
            .response_header("x-resp-route", &["redirect"])
            .response_header("x-resp-vhost", &["headers"])
            .response_header("x-resp-rc", &["routes"]),
        get("response headers on a 404", "noroute.test", "/other")
            .status(404)
            .response_absent("x-resp-rc"),
        get(
            "response headers on an unknown cluster",
            "action.test",
            "/unknown-cluster",
        )
        .status(503)
        .response_header("x-resp-rc", &["routes"]),
    ]
}

fn http2() -> Vec<Case> {
    vec![
        get("h2: exact domain", "exact.test", "/h2")
            .h2()
            .backend("a", "exact"),
        get("h2: host with an ignored port", "noport.test:9999", "/")
            .h2()
            .backend("b", "noport"),
        request("h2: POST with a body", "POST", "match.test", "/method")
            .h2()
            .with_body(b"hello")
            .route("c", "match", "method-post")
            .upstream_body_len(5),
        get(
            "h2: upstream over HTTP/2 too",
            "action.test",
            "/h2-upstream",
        )
        .h2()
        .route("c", "actions", "h2-upstream")
        .upstream_version("HTTP/2"),
        get("h2: prefix_rewrite", "action.test", "/prefix-rewrite/z")
            .h2()
            .route("a", "actions", "prefix-rewrite")
            .upstream_path("/rewritten/z"),
        get("h2: redirect", "action.test", "/redirect/port?q")
            .h2()
            .status(301)
            .location("http://action.test:8443/redirect/port?q"),
        get("h2: direct response", "action.test", "/direct/teapot")
            .h2()
            .status(418)
            .body("short and stout"),
        get("h2: no route", "noroute.test", "/other")
            .h2()
            .status(404)
            .body(""),
        request("h2: grpc match", "POST", "match.test", "/grpc.Svc/Call")
            .h2()
            .header("content-type", "application/grpc")
            .route("c", "match", "grpc"),
    ]
}

fn protocol_edges() -> Vec<Case> {
    vec![
        get("HTTP/1.0 is refused", "action.test", "/direct/text")
            .http10()
            .status(426)
            .body("Upgrade Required")
            .response_header("connection", &["close"]),
        get("HTTP/1.1 without a Host header", "", "/direct/text")
            .status(400)
            .body("")
            .response_header("connection", &["close"]),
        request(
            "HEAD of a direct response",
            "HEAD",
            "action.test",
            "/direct/text",
        )
        .body("")
        .response_header("content-length", &["27"])
        .response_header("content-type", &["text/plain"]),
    ]
}
