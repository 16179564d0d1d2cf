//! One request through the connection manager and `envoy.filters.http.router`: checks, route
//! selection, the route's action (direct response, redirect, forward) and, for forwarding, host
//! selection, upstream request shaping, timeouts and retries.
//!
//! A retry happens only before anything of the response went downstream: the decision is taken
//! on the upstream response headers (or on the failure), and the response handed to hyper is
//! final.

use super::ConnectionContext;
use super::access_log::LogRecord;
use super::filter::{FilterRequest, ResponseDecorations, RouteLevels, run_request_filters};
use super::headers;
use super::local_reply::{self, Body};
use super::replay::RequestBody;
use super::stream::{DownstreamBody, StreamBody, StreamClock};
use super::stream_deadline::DeadlineBody;
use crate::config::cluster::UpstreamProtocol;
use crate::config::http_connection_manager::{
    EscapedSlashes, HttpConnectionManager, RouteSource, ServerHeader, StripPort, UnderscoreAction,
};
use crate::config::route::{
    Action, ClusterSpecifier, ForwardAction, HashPolicy, HeaderOps, HostRewrite, RequestView,
    RetryOn, RetryPolicy, Route, RouteConfig, VirtualHost, WeightedCluster,
};
use crate::http::pool::Failure;
use crate::outlier::Outcome;
use crate::snapshot::{ClusterEntry, Snapshot};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;
use std::borrow::Cow;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Request bodies up to this size are kept so the request can be retried or mirrored (Envoy's
/// default per-connection buffer limit).
const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_ENVOY_EXPECTED_TIMEOUT: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
const X_ENVOY_UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const X_ENVOY_RQ_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
const X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
const X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
const X_ENVOY_RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
const X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
/// The router's control headers: honoured from trusted callers, never forwarded.
const ROUTER_CONTROLS: [HeaderName; 4] = [
    X_ENVOY_RQ_TIMEOUT,
    X_ENVOY_MAX_RETRIES,
    X_ENVOY_RETRY_ON,
    X_ENVOY_RETRY_GRPC_ON,
];

/// The connection manager's entry point for one request.
pub async fn handle(
    ctx: Rc<ConnectionContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let stats = &ctx.stats;
    let started = Instant::now();
    let open = ctx.streams.open(
        stats.downstream_rq_active.clone(),
        stats.downstream_rq_time.clone(),
    );
    let clock = StreamClock::new(&ctx, started);
    let request = request.map(|body| DownstreamBody::new(body, clock.clone()));
    stats.downstream_rq_total.inc();
    let protocol = match request.version() {
        http::Version::HTTP_2 => {
            stats.downstream_rq_http2_total.inc();
            "HTTP/2"
        }
        http::Version::HTTP_10 => {
            stats.downstream_rq_http1_total.inc();
            "HTTP/1.0"
        }
        _ => {
            stats.downstream_rq_http1_total.inc();
            "HTTP/1.1"
        }
    };
    // The record's text is copied only for an access log (the request id also for the response).
    let logging = logging(&ctx.hcm);
    let mut log = LogRecord {
        start_time: logging.then(std::time::SystemTime::now),
        method: if logging {
            request.method().to_string()
        } else {
            String::new()
        },
        path: if logging {
            request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().path().to_string(), |p| p.to_string())
        } else {
            String::new()
        },
        protocol,
        downstream_remote_address: Some(ctx.peer),
        downstream_local_address: Some(ctx.local),
        connection_id: ctx.connection_id,
        ..Default::default()
    };
    let grpc = local_reply::is_grpc(request.headers());
    let mut decorations = ResponseDecorations::default();
    let outcome = tokio::select! {
        biased;
        outcome = process(&ctx, &clock, request, &mut log, &mut decorations) => outcome,
        expiry = clock.expired() => {
            StreamClock::count(&ctx, expiry);
            let (status, body, flag, details) = expiry.reply(clock.request_complete());
            let reply = LocalReply {
                grpc_status: expiry.grpc_status(),
                ..LocalReply::new(status, body, flag, details)
            };
            Err(if status == StatusCode::REQUEST_TIMEOUT { reply.closing() } else { reply })
        }
    };
    let mut response = match outcome {
        Ok(r) => r,
        Err(reply) => reply.into_response(grpc, &mut log),
    };
    decorations.apply(response.headers_mut());
    let hcm = &ctx.hcm;
    match hcm.server_header {
        ServerHeader::Overwrite => {
            if let Ok(v) = HeaderValue::from_str(&hcm.server_name) {
                response.headers_mut().insert(header::SERVER, v);
            }
        }
        ServerHeader::AppendIfAbsent => {
            if !response.headers().contains_key(header::SERVER)
                && let Ok(v) = HeaderValue::from_str(&hcm.server_name)
            {
                response.headers_mut().insert(header::SERVER, v);
            }
        }
        ServerHeader::PassThrough => {}
    }
    // Envoy's drain-close: once the connection drains (its listener does, or the server failed
    // its health check), every HTTP/1 response closes it.
    if protocol != "HTTP/2" && ctx.drain.is_started() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if hcm.always_set_request_id_in_response
        && let Some(id) = log
            .request_id
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
    let status = response.status().as_u16();
    stats.classes.record(status);
    stats.downstream_rq_completed.inc();
    let record = (!hcm.access_log.is_empty()).then(|| {
        log.response_code = status;
        log.response_headers = response.headers().clone();
        log.response_duration = Some(started.elapsed());
        Box::new(log)
    });
    // The stream ends (access log written, timers off) when the response body has gone out.
    let (parts, body) = response.into_parts();
    let body = StreamBody::new(body, ctx.clone(), clock, record, open);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Whether an access log reads this connection manager's records: their text fields are only
/// filled then.
fn logging(hcm: &HttpConnectionManager) -> bool {
    !hcm.access_log.is_empty()
}

/// A local reply the connection manager sends instead of forwarding.
struct LocalReply {
    status: StatusCode,
    body: String,
    /// Envoy's response flag for the access log (`NR`, `UH`, ...).
    flag: &'static str,
    details: &'static str,
    /// The connection closes after this reply (a request the codec cannot carry on from).
    close: bool,
    /// The `grpc-status` for a gRPC request, when not the one mapped from `status`.
    grpc_status: Option<u32>,
    /// A circuit breaker refused the request: Envoy marks the reply `x-envoy-overloaded: true`.
    overloaded: bool,
}

impl LocalReply {
    fn new(status: StatusCode, body: &str, flag: &'static str, details: &'static str) -> Self {
        LocalReply {
            status,
            body: body.to_string(),
            flag,
            details,
            close: false,
            grpc_status: None,
            overloaded: false,
        }
    }

    /// A circuit breaker (requests, pending requests, connections) refused the request.
    fn overflow() -> Self {
        LocalReply {
            overloaded: true,
            ..LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                local_reply::OVERFLOW,
                "UO",
                "upstream_reset_before_response_started{overflow}",
            )
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The reply as sent (a gRPC request gets a trailers-only answer), with its flag and
    /// details recorded for the access log.
    fn into_response(self, grpc: bool, log: &mut LogRecord) -> Response<Body> {
        log.response_flags = self.flag.to_string();
        log.response_code_details = self.details.to_string();
        let mut response =
            local_reply::reply_with_grpc_status(self.status, &self.body, grpc, self.grpc_status);
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.overloaded {
            response
                .headers_mut()
                .insert(X_ENVOY_OVERLOADED, HeaderValue::from_static("true"));
        }
        response
    }
}

async fn process(
    ctx: &ConnectionContext,
    clock: &StreamClock,
    request: Request<DownstreamBody>,
    log: &mut LogRecord,
    decorations: &mut ResponseDecorations,
) -> Result<Response<Body>, LocalReply> {
    let hcm = &ctx.hcm;
    let mut request = request;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    if headers::header_bytes(&parts.headers) > hcm.max_request_headers_bytes
        || parts.headers.len() > hcm.max_headers_count
    {
        return Err(LocalReply::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "",
            "",
            "request_headers_too_large",
        ));
    }
    if parts.version == http::Version::HTTP_10 || parts.version == http::Version::HTTP_09 {
        // Envoy's default `accept_http_10: false`.
        return Err(LocalReply::new(
            StatusCode::UPGRADE_REQUIRED,
            "Upgrade Required",
            "",
            "low_version",
        )
        .closing());
    }
    check_underscores(hcm, &mut parts.headers)?;
    let authority = authority_of(&parts).ok_or_else(|| {
        LocalReply::new(StatusCode::BAD_REQUEST, "", "", "missing_host_header").closing()
    })?;
    let authority = strip_port(hcm, authority, ctx.local.port());
    if logging(hcm) {
        log.authority = authority.clone();
    }
    let mut path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    if parts.method != Method::CONNECT {
        path = normalized(hcm, path)?;
    }
    prepare_request_headers(ctx, &mut parts.headers, log);
    // The configuration this request sees, whole: RDS routes and the clusters they name come
    // from the same snapshot, the worker's latest (as in Envoy, a push applies to the next
    // request of a keep-alive connection).
    let snapshot = ctx.worker.snapshot();
    let routes: Option<Arc<RouteConfig>> = match &hcm.routes {
        RouteSource::Inline(r) => Some(r.clone()),
        RouteSource::Rds(name) => snapshot.routes.get(name).cloned(),
    };
    let random: u64 = ctx.worker.rng.borrow_mut().random();
    let view = request_view(ctx, &parts, &authority, &path);
    let selected = routes.as_deref().and_then(|r| r.route(&view, random));
    // The cluster is chosen before the filters run: they see the weighted pick (per-filter
    // configs, the fault filter's upstream_cluster) that the router then uses.
    let target = selected.and_then(|(_, route)| match &route.action {
        Action::Forward(action) => Some(pick_cluster(action, &parts.headers, random)),
        _ => None,
    });
    let levels = routes
        .as_deref()
        .zip(selected)
        .map(|(routes, (vhost, route))| RouteLevels {
            routes,
            vhost,
            route,
            weighted: target.as_ref().and_then(|(_, w)| *w),
        });
    let filter_request = FilterRequest {
        method: &parts.method,
        scheme: ctx.scheme,
        authority: &authority,
        path: &path,
        cluster: target.as_ref().map(|(name, _)| name.as_ref()),
        grpc: local_reply::is_grpc(&parts.headers),
    };
    let mut fault_flags = "";
    if let Err(reply) = run_request_filters(
        ctx,
        levels,
        &filter_request,
        &mut parts.headers,
        decorations,
        &mut fault_flags,
    )
    .await
    {
        log.response_flags = reply.flag.to_string();
        log.response_code_details = reply.details.to_string();
        let mut response = reply.response;
        if reply.local_reply
            && let Some((vhost, route)) = selected
            && let Some(routes) = routes.as_deref()
        {
            route_response_headers(routes, vhost, route, response.headers_mut());
        }
        return Ok(response);
    }
    log.response_flags = fault_flags.to_string();
    let (Some(routes), Some((vhost, route))) = (routes.as_deref(), selected) else {
        ctx.stats.no_route.inc();
        return Err(LocalReply::new(
            StatusCode::NOT_FOUND,
            "",
            "NR",
            "route_not_found",
        ));
    };
    if logging(hcm) {
        log.route_name = route.name.clone();
    }
    let mut response = match &route.action {
        Action::DirectResponse { status, body } => {
            ctx.stats.rq_direct_response.inc();
            let mut response = Response::new(local_reply::full(body.clone().unwrap_or_default()));
            *response.status_mut() = *status;
            if body.as_ref().is_some_and(|b| !b.is_empty()) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            response
        }
        Action::Redirect(redirect) => {
            ctx.stats.rq_redirect.inc();
            let view = request_view(ctx, &parts, &authority, &path);
            let location = redirect.location(&view, route.matcher.matched_prefix());
            let mut response = Response::new(local_reply::empty());
            *response.status_mut() = redirect.status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
        Action::Forward(action) => {
            let (cluster_name, weighted) = target.unwrap_or_default();
            let request = Forward {
                ctx,
                snapshot: &snapshot,
                clock,
                routes,
                cluster_name,
                weighted,
                vhost,
                route,
                action,
                authority,
                path,
            };
            let grpc = local_reply::is_grpc(&parts.headers);
            match request.run(parts, body, on_upgrade, log).await {
                // Forwarded responses get the route's headers (with the weighted cluster's
                // level) in `run`.
                Ok(response) => return Ok(response),
                Err(reply) => reply.into_response(grpc, log),
            }
        }
    };
    // Answers made here after route selection carry the route's response headers.
    route_response_headers(routes, vhost, route, response.headers_mut());
    Ok(response)
}

/// What route matching sees of a request.
fn request_view<'a>(
    ctx: &ConnectionContext,
    parts: &'a http::request::Parts,
    authority: &'a str,
    path: &'a str,
) -> RequestView<'a> {
    RequestView {
        method: &parts.method,
        scheme: ctx.scheme,
        authority,
        path,
        headers: &parts.headers,
    }
}

/// The cluster a forwarding route sends this request to: for weighted clusters, the one
/// `random` picks (with its per-cluster settings).
fn pick_cluster<'a>(
    action: &'a ForwardAction,
    headers: &HeaderMap,
    random: u64,
) -> (Cow<'a, str>, Option<&'a WeightedCluster>) {
    match &action.cluster {
        ClusterSpecifier::Name(n) => (Cow::Borrowed(n), None),
        ClusterSpecifier::Header(h) => (
            Cow::Owned(
                headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            ),
            None,
        ),
        ClusterSpecifier::Weighted(w) => {
            let picked = w.pick(random);
            (Cow::Borrowed(&picked.name), Some(picked))
        }
    }
}

fn check_underscores(
    hcm: &HttpConnectionManager,
    headers: &mut HeaderMap,
) -> Result<(), LocalReply> {
    if hcm.headers_with_underscores == UnderscoreAction::Allow {
        return Ok(());
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    if hcm.headers_with_underscores == UnderscoreAction::RejectRequest {
        return Err(LocalReply::new(
            StatusCode::BAD_REQUEST,
            "",
            "",
            "http1.unexpected_underscore",
        ));
    }
    for name in names {
        headers.remove(name);
    }
    Ok(())
}

/// `:authority` (HTTP/2, absolute-form) or `Host`.
fn authority_of(parts: &http::request::Parts) -> Option<String> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .filter(|a| !a.is_empty())
}

fn strip_port(hcm: &HttpConnectionManager, mut authority: String, listener_port: u16) -> String {
    let host_len = match (hcm.strip_port, split_port(&authority)) {
        (StripPort::Any, Some((host, _))) => host.len(),
        (StripPort::Matching, Some((host, port))) if port == listener_port => host.len(),
        _ => return authority,
    };
    authority.truncate(host_len);
    authority
}

/// `host:port` → (host, port), IPv6 literals included; `None` without a port.
fn split_port(authority: &str) -> Option<(&str, u16)> {
    let colon = authority.rfind(':')?;
    if authority[colon..].contains(']')
        || (!authority.starts_with('[') && authority[..colon].contains(':'))
    {
        return None;
    }
    let port = authority[colon + 1..].parse().ok()?;
    Some((&authority[..colon], port))
}

fn normalized(hcm: &HttpConnectionManager, path: String) -> Result<String, LocalReply> {
    let mut path = path;
    if headers::has_escaped_slash(path.split('?').next().unwrap_or_default()) {
        match hcm.escaped_slashes {
            EscapedSlashes::KeepUnchanged => {}
            EscapedSlashes::RejectRequest => {
                return Err(LocalReply::new(
                    StatusCode::BAD_REQUEST,
                    "",
                    "",
                    "path_normalization_failed",
                ));
            }
            EscapedSlashes::UnescapeAndForward | EscapedSlashes::UnescapeAndRedirect => {
                let (p, q) = path.split_at(path.find('?').unwrap_or(path.len()));
                path = format!("{}{q}", headers::unescape_slashes(p));
            }
        }
    }
    if hcm.normalize_path || hcm.merge_slashes {
        let merge = hcm.merge_slashes;
        path = if hcm.normalize_path {
            headers::normalize_path(&path, merge).ok_or_else(|| {
                LocalReply::new(StatusCode::BAD_REQUEST, "", "", "path_normalization_failed")
            })?
        } else {
            merge_slashes(&path)
        };
    }
    Ok(path)
}

fn merge_slashes(path_and_query: &str) -> String {
    let (p, q) = path_and_query.split_at(path_and_query.find('?').unwrap_or(path_and_query.len()));
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out.push_str(q);
    out
}

/// x-request-id, x-forwarded-proto and x-forwarded-for, as Envoy's connection manager sets them.
fn prepare_request_headers(ctx: &ConnectionContext, headers: &mut HeaderMap, log: &mut LogRecord) {
    let hcm = &ctx.hcm;
    let internal = internal_request(ctx);
    let external = !internal;
    if hcm.generate_request_id
        && (!headers.contains_key(X_REQUEST_ID)
            || (hcm.use_remote_address && external && !hcm.preserve_external_request_id))
    {
        let id = headers::uuid4(&mut *ctx.worker.rng.borrow_mut());
        if let Ok(v) = HeaderValue::from_str(&id) {
            headers.insert(X_REQUEST_ID, v);
        }
    }
    if logging(hcm) || hcm.always_set_request_id_in_response {
        log.request_id = headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    if hcm.use_remote_address || !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.scheme));
    }
    if hcm.use_remote_address && !hcm.skip_xff_append {
        let peer = ctx.peer.ip().to_string();
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing},{peer}"),
            None => peer,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    if external {
        // Envoy ignores (and drops) the router's control headers from external callers.
        if has_envoy_header(headers) {
            for name in ROUTER_CONTROLS.iter().chain([&X_ENVOY_INTERNAL]) {
                headers.remove(name);
            }
        }
    } else if hcm.use_remote_address {
        headers.insert(X_ENVOY_INTERNAL, HeaderValue::from_static("true"));
    }
    // Only an access log reads them; copying every request's headers otherwise is waste.
    if !hcm.access_log.is_empty() {
        log.request_headers = headers.clone();
    }
}

/// Whether any header is an `x-envoy-*` one: most requests have none, and one pass over the
/// names is cheaper than looking each control header up.
fn has_envoy_header(headers: &HeaderMap) -> bool {
    headers.keys().any(|n| n.as_str().starts_with("x-envoy-"))
}

/// Envoy trusts a request (its `x-envoy-*` control headers) only when it is the edge
/// (`use_remote_address`) and the caller's address is internal.
fn internal_request(ctx: &ConnectionContext) -> bool {
    ctx.hcm.use_remote_address && is_internal(ctx.peer.ip())
}

/// RFC 1918, loopback and unique-local addresses: Envoy's default internal address set.
fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The header mutation levels in the order they apply: weighted cluster, route, virtual host,
/// route config (least specific last, so it wins), reversed by
/// `most_specific_header_mutations_wins`.
fn header_levels<'a>(
    routes: &'a RouteConfig,
    vhost: &'a VirtualHost,
    route: &'a Route,
    weighted: Option<&'a WeightedCluster>,
) -> impl Iterator<Item = &'a HeaderOps> {
    let most_specific_last = routes.most_specific_header_mutations_wins;
    let weighted_at = |last: bool| {
        weighted
            .filter(move |_| most_specific_last == last)
            .map(|w| &w.headers)
    };
    weighted_at(false)
        .into_iter()
        .chain(routes.header_ops(vhost, route))
        .chain(weighted_at(true))
}

/// Applies one side of every level's header ops (`HeaderOps::apply_request` or
/// `HeaderOps::apply_response`) in Envoy's order.
fn apply_header_ops(
    routes: &RouteConfig,
    vhost: &VirtualHost,
    route: &Route,
    weighted: Option<&WeightedCluster>,
    headers: &mut HeaderMap,
    side: fn(&HeaderOps, &mut HeaderMap),
) {
    for ops in header_levels(routes, vhost, route, weighted) {
        side(ops, headers);
    }
}

/// The route's response header mutations (route config, virtual host, route) on a response
/// the proxy made itself.
fn route_response_headers(
    routes: &RouteConfig,
    vhost: &VirtualHost,
    route: &Route,
    headers: &mut HeaderMap,
) {
    apply_header_ops(
        routes,
        vhost,
        route,
        None,
        headers,
        HeaderOps::apply_response,
    );
}

/// A request that a route forwards to a cluster.
struct Forward<'a> {
    ctx: &'a ConnectionContext,
    snapshot: &'a Snapshot,
    clock: &'a StreamClock,
    routes: &'a RouteConfig,
    cluster_name: Cow<'a, str>,
    weighted: Option<&'a WeightedCluster>,
    vhost: &'a VirtualHost,
    route: &'a Route,
    action: &'a ForwardAction,
    authority: String,
    path: String,
}

/// Why an attempt failed, for retry decisions and the final reply.
enum AttemptError {
    Failure(Failure),
    /// The route timeout, the per-try timeout or (`idle`) the per-try idle timeout passed.
    PerTryTimeout {
        idle: bool,
    },
}

impl Forward<'_> {
    async fn run(
        self,
        mut parts: http::request::Parts,
        body: DownstreamBody,
        on_upgrade: hyper::upgrade::OnUpgrade,
        log: &mut LogRecord,
    ) -> Result<Response<Body>, LocalReply> {
        let ctx = self.ctx;
        let weighted = self.weighted;
        let cluster_name: &str = &self.cluster_name;
        if logging(&ctx.hcm) {
            log.upstream_cluster = Some(cluster_name.to_string());
        }
        let Some(cluster) = self.snapshot.clusters.get(cluster_name).cloned() else {
            ctx.stats.no_cluster.inc();
            return Err(LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "",
                "NC",
                "cluster_not_found",
            ));
        };
        let trusted = internal_request(ctx);
        let grpc = local_reply::is_grpc(&parts.headers);
        let timeout = self.timeout(&parts.headers, trusted, grpc);
        let stream_duration = self.stream_duration(&parts.headers);
        self.clock.set_max_duration(stream_duration);
        if let Some(idle) = self.action.idle_timeout {
            self.clock
                .set_idle_timeout((!idle.is_zero()).then_some(idle));
        }
        let policy = self.retry_policy(&parts.headers, trusted);
        // Mirrors need the whole body first; retries keep a copy as it streams.
        let upgrade = self.upgrade_type(&parts.headers);
        let mut request_body = if hyper::body::Body::is_end_stream(&body) {
            RequestBody::Buffered(Bytes::new())
        } else if upgrade.is_some() {
            RequestBody::Streaming(Some(body))
        } else if !self.action.mirror_policies.is_empty()
            && hyper::body::Body::size_hint(&body)
                .exact()
                .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
        {
            match body.collect().await {
                Ok(b) => RequestBody::Buffered(b.to_bytes()),
                Err(_) => {
                    ctx.stats.downstream_rq_rx_reset.inc();
                    return Err(LocalReply::new(
                        StatusCode::BAD_REQUEST,
                        "",
                        "DC",
                        "downstream_remote_disconnect",
                    ));
                }
            }
        } else if policy.num_retries > 0 {
            RequestBody::replayable(body, RETRY_BUFFER_LIMIT)
        } else {
            RequestBody::Streaming(Some(body))
        };
        let downstream_upgrade = upgrade.as_ref().map(|_| on_upgrade);
        // Shape the upstream request headers once; attempts only add their own.
        let mut headers = std::mem::take(&mut parts.headers);
        headers::strip_hop_by_hop(&mut headers, upgrade.is_some());
        if has_envoy_header(&headers) {
            for name in &ROUTER_CONTROLS {
                headers.remove(name);
            }
        }
        let mut upstream_path = Cow::Borrowed(self.path.as_str());
        if let Some(rewritten) = self.action.rewrite_path(&self.route.matcher, &self.path) {
            if let Ok(v) = HeaderValue::from_str(&self.path) {
                headers.insert(X_ENVOY_ORIGINAL_PATH, v);
            }
            log.original_path = Some(self.path.clone());
            log.path = rewritten.clone();
            upstream_path = Cow::Owned(rewritten);
        }
        // An HTTP/1 attempt reuses the request's URI when it already is what goes upstream.
        let request_uri_fits = parts.uri.scheme().is_none()
            && parts.uri.authority().is_none()
            && parts
                .uri
                .path_and_query()
                .is_some_and(|p| p.as_str() == upstream_path);
        let mut authority = Cow::Borrowed(self.authority.as_str());
        if let Some(w) = weighted.and_then(|w| w.host_rewrite.as_ref()) {
            authority = Cow::Borrowed(w);
        }
        let mut auto_host_rewrite = false;
        if !matches!(self.action.host_rewrite, HostRewrite::None)
            && let Ok(v) = HeaderValue::from_str(&self.authority)
        {
            headers.insert(HeaderName::from_static("x-envoy-original-host"), v);
        }
        match &self.action.host_rewrite {
            HostRewrite::None => {}
            HostRewrite::Literal(h) => authority = Cow::Borrowed(h),
            HostRewrite::Auto => auto_host_rewrite = true,
            HostRewrite::Header(name) => {
                if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    authority = Cow::Owned(v.to_string());
                }
            }
            HostRewrite::PathRegex(re, substitution) => {
                let p = self.path.split('?').next().unwrap_or_default();
                authority = Cow::Owned(re.replace_all(p, substitution.as_str()).into_owned());
            }
        }
        if let Some(t) = timeout {
            headers.insert(
                X_ENVOY_EXPECTED_TIMEOUT,
                HeaderValue::from(t.as_millis() as u64),
            );
        }
        // The upstream learns the deadline the proxy enforces: Envoy rewrites `grpc-timeout` to
        // the router timeout on a `max_grpc_timeout` route, to the stream duration on a
        // `max_stream_duration` one.
        let enforced = if self.action.uses_stream_duration {
            stream_duration
        } else {
            timeout.filter(|_| self.action.max_grpc_timeout.is_some())
        };
        if grpc && let Some(t) = enforced {
            headers.insert(GRPC_TIMEOUT, grpc_timeout_value(t));
        }
        apply_header_ops(
            self.routes,
            self.vhost,
            self.route,
            weighted,
            &mut headers,
            HeaderOps::apply_request,
        );
        let hash = self.hash(&headers);
        let original_destination = ctx.original_destination;
        let deadline = timeout.map(|t| Instant::now() + t);
        // The route timeout covers the whole response, its body included (the stream's duration
        // is the stream clock's).
        let response_deadline = deadline;
        let http2 = match cluster.config.http.protocol {
            UpstreamProtocol::Http2 => upgrade.is_none(),
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::UseDownstream => {
                parts.version == http::Version::HTTP_2 && upgrade.is_none()
            }
        };
        let stats = &cluster.stats.http;
        let mut attempts: u32 = 0;
        let mut retry_slot: Option<RetrySlot> = None;
        let request_retriable = policy
            .retriable_request_headers
            .iter()
            .all(|m| m.matches(&headers));
        let mut tried: Vec<std::net::SocketAddr> = Vec::new();
        let started = Instant::now();
        self.mirror(&parts, &headers, &request_body);
        loop {
            attempts += 1;
            let picked = match ctx.worker.clusters.pick(
                &cluster,
                hash,
                if policy.previous_hosts { &tried } else { &[] },
                policy.host_selection_retry_max_attempts,
                original_destination,
            ) {
                Ok(p) => p,
                Err(_) => {
                    cluster.stats.upstream_cx_none_healthy.inc();
                    return Err(LocalReply::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        local_reply::NO_HEALTHY_UPSTREAM,
                        "UH",
                        "no_healthy_upstream",
                    ));
                }
            };
            if stats.upstream_rq_active.value()
                >= i64::from(cluster.config.circuit_breakers.max_requests)
            {
                stats.upstream_rq_pending_overflow.inc();
                return Err(LocalReply::overflow());
            }
            let address = picked.address;
            if policy.previous_hosts {
                tried.push(address);
            }
            log.upstream_host = Some(address);
            log.attempt_count = attempts;
            let Some(body) = request_body.take() else {
                break Err(self.reset_reply("UR"));
            };
            let empty_body = hyper::body::Body::is_end_stream(&body);
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            // The last attempt the policy allows takes the shaped headers; earlier ones copy
            // them for a retry.
            *request.headers_mut() = if attempts > policy.num_retries {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            // Envoy's HTTP/1 codec states an empty body explicitly, except where none is expected.
            if !http2
                && empty_body
                && !matches!(parts.method, Method::GET | Method::HEAD)
                && !request.headers().contains_key(header::CONTENT_LENGTH)
                && !request.headers().contains_key(header::TRANSFER_ENCODING)
                && upgrade.is_none()
            {
                request
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
            // auto_host_rewrite: the endpoint's hostname, else its address.
            let host = if auto_host_rewrite {
                match picked.host.endpoint.hostname.as_str() {
                    "" => Cow::Owned(address.to_string()),
                    hostname => Cow::Borrowed(hostname),
                }
            } else {
                Cow::Borrowed(authority.as_ref())
            };
            if self.vhost.include_request_attempt_count {
                request
                    .headers_mut()
                    .insert(X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempts));
            }
            let uri = if http2 {
                format!("http://{host}{upstream_path}").parse::<http::Uri>()
            } else if request_uri_fits {
                Ok(parts.uri.clone())
            } else {
                upstream_path.parse::<http::Uri>()
            };
            match uri {
                Ok(u) => *request.uri_mut() = u,
                Err(_) => {
                    return Err(LocalReply::new(
                        StatusCode::BAD_REQUEST,
                        "",
                        "",
                        "invalid_upstream_uri",
                    ));
                }
            }
            if http2 {
                request.headers_mut().remove(header::HOST);
                *request.version_mut() = http::Version::HTTP_2;
            } else if !is_only_value(request.headers(), &header::HOST, &host)
                && let Ok(v) = HeaderValue::from_str(&host)
            {
                request.headers_mut().insert(header::HOST, v);
            }
            stats.upstream_rq_total.inc();
            stats.upstream_rq_active.inc();
            picked
                .host
                .stats
                .rq_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let active = ActiveRequest(cluster.clone());
            // Before the response headers no byte comes back, so the per-try idle timeout runs
            // from the attempt's start like the per-try timeout.
            let now = Instant::now();
            let per_try = policy.per_try_timeout.map(|p| (now + p, false));
            let per_try_idle = policy.per_try_idle_timeout.map(|p| (now + p, true));
            let attempt_deadline = response_deadline
                .map(|d| (d, false))
                .into_iter()
                .chain(per_try)
                .chain(per_try_idle)
                .min_by_key(|(at, _)| *at);
            let pools = ctx.worker.http_pools();
            let destination = picked.destination();
            let outlier = picked.host.outlier.clone();
            let send = pools.send_from(
                started,
                &cluster,
                &destination,
                http2,
                request,
                Box::new((picked, active)),
            );
            let outcome = match attempt_deadline {
                Some((at, idle)) => match tokio::time::timeout_at(at, send).await {
                    Ok(r) => r.map_err(AttemptError::Failure),
                    Err(_) => Err(AttemptError::PerTryTimeout { idle }),
                },
                None => send.await.map_err(AttemptError::Failure),
            };
            let global_expired = deadline.is_some_and(|d| Instant::now() >= d);
            let can_retry = attempts <= policy.num_retries && !global_expired && request_retriable;
            match outcome {
                Ok(response) => {
                    let status = response.status().as_u16();
                    stats.record_status(status);
                    cluster.report_outlier(&outlier, Outcome::Response(status));
                    if can_retry
                        && request_body.can_replay()
                        && retriable_response(&policy, &response)
                        && self.retry_budget(&cluster, &mut retry_slot)
                    {
                        drop(response);
                        stats.upstream_rq_retry.inc();
                        self.backoff(&policy, attempts).await;
                        continue;
                    }
                    if attempts > 1 && status < 500 {
                        stats.upstream_rq_retry_success.inc();
                    }
                    if attempts > policy.num_retries && attempts > 1 {
                        stats.upstream_rq_retry_limit_exceeded.inc();
                    }
                    let mut response = response;
                    if let (Some(downstream), true) = (downstream_upgrade, status == 101) {
                        return Ok(splice_upgrade(downstream, response));
                    }
                    let upgraded = status == 101;
                    if let (Some(at), false) = (response_deadline, upgraded) {
                        response = response.map(|b| Body::new(DeadlineBody::new(b, at)));
                    }
                    headers::strip_hop_by_hop(response.headers_mut(), upgraded);
                    response.headers_mut().insert(
                        X_ENVOY_UPSTREAM_TIME,
                        HeaderValue::from(started.elapsed().as_millis() as u64),
                    );
                    apply_header_ops(
                        self.routes,
                        self.vhost,
                        self.route,
                        weighted,
                        response.headers_mut(),
                        HeaderOps::apply_response,
                    );
                    return Ok(response);
                }
                Err(AttemptError::PerTryTimeout { idle }) => {
                    cluster.report_outlier(&outlier, Outcome::Timeout);
                    if global_expired {
                        stats.upstream_rq_timeout.inc();
                        return Err(LocalReply::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            local_reply::UPSTREAM_TIMEOUT,
                            "UT",
                            "upstream_response_timeout",
                        ));
                    }
                    if idle {
                        stats.upstream_rq_per_try_idle_timeout.inc();
                    } else {
                        stats.upstream_rq_per_try_timeout.inc();
                    }
                    let retriable = policy.retry_on.contains(RetryOn::FIVE_XX)
                        || policy.retry_on.contains(RetryOn::GATEWAY_ERROR)
                        || policy.retry_on.contains(RetryOn::RESET);
                    if can_retry
                        && retriable
                        && request_body.can_replay()
                        && self.retry_budget(&cluster, &mut retry_slot)
                    {
                        stats.upstream_rq_retry.inc();
                        self.backoff(&policy, attempts).await;
                        continue;
                    }
                    stats.upstream_rq_timeout.inc();
                    return Err(LocalReply::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        local_reply::UPSTREAM_TIMEOUT,
                        "UT",
                        "upstream_per_try_timeout",
                    ));
                }
                Err(AttemptError::Failure(failure)) => {
                    if let Some(outcome) = Outcome::of_failure(&failure) {
                        cluster.report_outlier(&outlier, outcome);
                    }
                    let retriable = match &failure {
                        Failure::Connect(_) => {
                            policy.retry_on.contains(RetryOn::CONNECT_FAILURE)
                                || policy.retry_on.contains(RetryOn::FIVE_XX)
                                || policy.retry_on.contains(RetryOn::GATEWAY_ERROR)
                                || policy.retry_on.contains(RetryOn::RESET)
                                || policy.retry_on.contains(RetryOn::RESET_BEFORE_REQUEST)
                        }
                        Failure::RefusedStream => {
                            policy.retry_on.contains(RetryOn::REFUSED_STREAM)
                                || policy.retry_on.contains(RetryOn::FIVE_XX)
                                || policy.retry_on.contains(RetryOn::RESET)
                        }
                        Failure::Reset(_) => {
                            policy.retry_on.contains(RetryOn::RESET)
                                || policy.retry_on.contains(RetryOn::FIVE_XX)
                                || policy.retry_on.contains(RetryOn::GATEWAY_ERROR)
                        }
                        Failure::Overflow => false,
                    };
                    if matches!(failure, Failure::Reset(_)) {
                        stats.upstream_rq_rx_reset.inc();
                    }
                    // A streaming body went with the failed attempt: only buffered ones replay.
                    if can_retry
                        && retriable
                        && request_body.can_replay()
                        && self.retry_budget(&cluster, &mut retry_slot)
                    {
                        stats.upstream_rq_retry.inc();
                        log.response_flags = "URX".into();
                        self.backoff(&policy, attempts).await;
                        continue;
                    }
                    break Err(self.failure_reply(&failure));
                }
            }
        }
    }

    fn failure_reply(&self, failure: &Failure) -> LocalReply {
        match failure {
            Failure::Overflow => LocalReply::overflow(),
            Failure::Connect(_) => LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                local_reply::CONNECTION_FAILURE,
                "UF",
                "upstream_reset_before_response_started{connection_failure}",
            ),
            Failure::RefusedStream | Failure::Reset(_) => self.reset_reply("UR"),
        }
    }

    fn reset_reply(&self, flag: &'static str) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            local_reply::RESET_BEFORE_HEADERS,
            flag,
            "upstream_reset_before_response_started{connection_termination}",
        )
    }

    /// The cluster's retry circuit breaker: at most `max_retries` requests retrying at once,
    /// across workers. A request that got a slot keeps it until it finishes.
    fn retry_budget(&self, cluster: &Arc<ClusterEntry>, slot: &mut Option<RetrySlot>) -> bool {
        if slot.is_some() {
            return true;
        }
        let stats = &cluster.stats.http;
        let max = cluster.config.circuit_breakers.max_retries;
        let taken = stats
            .retries_active
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |n| (n < max).then_some(n + 1),
            )
            .is_ok();
        if !taken {
            stats.upstream_rq_retry_overflow.inc();
            stats.circuit_breakers_rq_retry_open.set(1);
            return false;
        }
        *slot = Some(RetrySlot(cluster.clone()));
        true
    }

    async fn backoff(&self, policy: &RetryPolicy, attempt: u32) {
        let base = policy.backoff_base.as_millis().max(1) as u64;
        let max = policy.backoff_max.as_millis().max(1) as u64;
        let ceiling = base.saturating_mul(1u64 << attempt.min(20)).min(max);
        let wait = self
            .ctx
            .worker
            .rng
            .borrow_mut()
            .random_range(0..ceiling.max(1));
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }

    /// The router's timeout (Envoy's `FilterUtility::finalTimeout`): none on a
    /// `max_stream_duration` route; for a gRPC request on a `max_grpc_timeout` route its
    /// `grpc-timeout` (none when absent) less the offset, capped by a non-zero maximum; else the
    /// route timeout. A trusted `x-envoy-upstream-rq-timeout-ms` overrides all of them.
    fn timeout(&self, headers: &HeaderMap, trusted: bool, grpc: bool) -> Option<Duration> {
        let action = self.action;
        let mut timeout = match action.max_grpc_timeout {
            _ if action.uses_stream_duration => None,
            Some(max) if grpc => {
                let mut t = grpc_timeout(headers).unwrap_or_default();
                if let Some(offset) = action.grpc_timeout_header_offset
                    && offset < t
                {
                    t -= offset;
                }
                if !max.is_zero() && (t.is_zero() || t > max) {
                    t = max;
                }
                Some(t)
            }
            _ => action.timeout,
        };
        if trusted
            && let Some(ms) = headers
                .get(X_ENVOY_RQ_TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        {
            timeout = Some(Duration::from_millis(ms));
        }
        timeout.filter(|t| !t.is_zero())
    }

    /// The stream's maximum duration (Envoy's connection manager `refreshDurationTimeout`): on a
    /// route with `max_stream_duration.grpc_timeout_header_max`, a `grpc-timeout` capped by a
    /// non-zero maximum, less the offset; else the route's `max_stream_duration`; else the
    /// connection manager's. Zero disables all but the first, which then expires at once.
    fn stream_duration(&self, headers: &HeaderMap) -> Option<Duration> {
        let action = self.action;
        if let Some(max) = action
            .max_grpc_timeout
            .filter(|_| action.uses_stream_duration)
            && let Some(mut t) = grpc_timeout(headers)
        {
            if !max.is_zero() && t > max {
                t = max;
            }
            if let Some(offset) = action.grpc_timeout_header_offset
                && !t.is_zero()
            {
                t = t.saturating_sub(offset);
            }
            return Some(t);
        }
        action
            .max_stream_duration
            .or(self.ctx.hcm.max_stream_duration)
            .filter(|t| !t.is_zero())
    }

    /// The route's (else the virtual host's) retry policy, with trusted header overrides.
    fn retry_policy(&self, headers: &HeaderMap, trusted: bool) -> RetryPolicy {
        let configured = self
            .action
            .retry_policy
            .as_ref()
            .or(self.vhost.retry_policy.as_ref());
        let mut policy = configured.cloned().unwrap_or_else(no_retries);
        if trusted {
            let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
            if let Some(on) = text(&X_ENVOY_RETRY_ON) {
                policy.retry_on = policy.retry_on | RetryOn::parse(on);
                if configured.is_none() {
                    policy.num_retries = 1;
                }
            }
            if let Some(on) = text(&X_ENVOY_RETRY_GRPC_ON) {
                policy.retry_on = policy.retry_on | RetryOn::parse(on);
                if configured.is_none() {
                    policy.num_retries = 1;
                }
            }
            if let Some(n) = text(&X_ENVOY_MAX_RETRIES).and_then(|v| v.parse().ok()) {
                policy.num_retries = n;
            }
        }
        if policy.retry_on == RetryOn::default() {
            policy.num_retries = 0;
        }
        policy
    }

    fn upgrade_type(&self, headers: &HeaderMap) -> Option<String> {
        let kind = headers
            .get(header::UPGRADE)?
            .to_str()
            .ok()?
            .to_ascii_lowercase();
        let connection_upgrade = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            });
        (connection_upgrade && self.ctx.hcm.upgrades.contains(&kind)).then_some(kind)
    }

    /// The consistent-hash key from the route's hash policies (Envoy combines them in order).
    fn hash(&self, headers: &HeaderMap) -> Option<u64> {
        let mut hash: Option<u64> = None;
        for policy in &self.action.hash_policy {
            let (value, terminal) = match policy {
                HashPolicy::Header { name, terminal } => (
                    headers.get(name).map(|v| crate::lb::hash_key(v.as_bytes())),
                    *terminal,
                ),
                HashPolicy::Cookie { name, terminal, .. } => (
                    cookie(headers, name).map(|v| crate::lb::hash_key(v.as_bytes())),
                    *terminal,
                ),
                HashPolicy::QueryParameter { name, terminal } => (
                    query_param(&self.path, name).map(|v| crate::lb::hash_key(v.as_bytes())),
                    *terminal,
                ),
                HashPolicy::SourceIp { terminal } => (
                    Some(crate::lb::hash_key(
                        self.ctx.peer.ip().to_string().as_bytes(),
                    )),
                    *terminal,
                ),
            };
            if let Some(v) = value {
                hash = Some(match hash {
                    Some(h) => h.rotate_left(1) ^ v,
                    None => v,
                });
                if terminal {
                    break;
                }
            }
        }
        hash
    }

    /// Fire-and-forget copies to the route's mirror clusters (`request_mirror_policies`).
    fn mirror(&self, parts: &http::request::Parts, headers: &HeaderMap, body: &RequestBody) {
        let RequestBody::Buffered(bytes) = body else {
            return;
        };
        for policy in &self.action.mirror_policies {
            let roll = self
                .ctx
                .worker
                .rng
                .borrow_mut()
                .random_range(0..1_000_000u32);
            if roll >= policy.fraction_ppm {
                continue;
            }
            let Some(cluster) = self.snapshot.clusters.get(&policy.cluster).cloned() else {
                continue;
            };
            let Ok(picked) = self.ctx.worker.clusters.pick(&cluster, None, &[], 0, None) else {
                continue;
            };
            let mut request = Request::new(local_reply::full(bytes.clone()));
            *request.method_mut() = parts.method.clone();
            *request.headers_mut() = headers.clone();
            if !policy.disable_shadow_host_suffix_append
                && let Ok(v) = HeaderValue::from_str(&shadow_authority(&self.authority))
            {
                request.headers_mut().insert(header::HOST, v);
            }
            let Ok(uri) = self.path.parse::<http::Uri>() else {
                continue;
            };
            *request.uri_mut() = uri;
            let pools = self.ctx.worker.http_pools();
            let destination = picked.destination();
            tokio::task::spawn_local(async move {
                if let Ok(response) = pools
                    .send(&cluster, &destination, false, request, Box::new(picked))
                    .await
                {
                    let _ = response.into_body().collect().await;
                }
            });
        }
    }
}

/// Whether `name` has exactly one value and it is `value` (inserting `value` would change nothing).
fn is_only_value(headers: &HeaderMap, name: &HeaderName, value: &str) -> bool {
    let mut values = headers.get_all(name).iter();
    values
        .next()
        .is_some_and(|v| v.as_bytes() == value.as_bytes())
        && values.next().is_none()
}

/// The policy of a route without one: no retries, Envoy's back-off defaults for header overrides.
fn no_retries() -> RetryPolicy {
    RetryPolicy {
        retry_on: RetryOn::NONE,
        num_retries: 0,
        per_try_timeout: None,
        per_try_idle_timeout: None,
        retriable_status_codes: Vec::new(),
        retriable_headers: Vec::new(),
        retriable_request_headers: Vec::new(),
        previous_hosts: false,
        host_selection_retry_max_attempts: 1,
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
    }
}

/// Envoy appends `-shadow` to the host of a mirrored request (before any port).
fn shadow_authority(authority: &str) -> String {
    match split_port(authority) {
        Some((host, port)) => format!("{host}-shadow:{port}"),
        None => format!("{authority}-shadow"),
    }
}

/// One of the cluster's `max_retries` concurrent-retry slots.
struct RetrySlot(Arc<ClusterEntry>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        let stats = &self.0.stats.http;
        stats
            .retries_active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        stats.circuit_breakers_rq_retry_open.set(0);
    }
}

/// Holds the cluster's active-request gauge up while the upstream response is alive.
struct ActiveRequest(Arc<ClusterEntry>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.stats.http.upstream_rq_active.dec();
        self.0.stats.http.upstream_rq_completed.inc();
    }
}

fn retriable_response(policy: &RetryPolicy, response: &Response<Body>) -> bool {
    let status = response.status().as_u16();
    let on = policy.retry_on;
    if on.contains(RetryOn::FIVE_XX) && status >= 500 {
        return true;
    }
    if on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504) {
        return true;
    }
    if on.contains(RetryOn::RETRIABLE_4XX) && status == 409 {
        return true;
    }
    if on.contains(RetryOn::RETRIABLE_STATUS_CODES)
        && policy.retriable_status_codes.contains(&status)
    {
        return true;
    }
    if on.contains(RetryOn::RETRIABLE_HEADERS)
        && policy
            .retriable_headers
            .iter()
            .any(|m| m.matches_response(response.status(), response.headers()))
    {
        return true;
    }
    // gRPC statuses in a trailers-only response.
    if let Some(code) = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
    {
        let want = match code {
            1 => RetryOn::CANCELLED,
            4 => RetryOn::DEADLINE_EXCEEDED,
            13 => RetryOn::INTERNAL,
            8 => RetryOn::RESOURCE_EXHAUSTED,
            14 => RetryOn::UNAVAILABLE,
            _ => return false,
        };
        return on.contains(want);
    }
    false
}

fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// `grpc-timeout` as Envoy writes it (`Grpc::Common::toGrpcTimeout`): whole milliseconds, or a
/// coarser unit when that needs more than 8 digits.
fn grpc_timeout_value(t: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let mut value = t.as_millis();
    let mut unit = 'm';
    for (divisor, coarser) in [(1000, 'S'), (60, 'M'), (60, 'H')] {
        if value <= MAX {
            break;
        }
        value /= divisor;
        unit = coarser;
    }
    HeaderValue::from_str(&format!("{}{unit}", value.min(MAX)))
        .unwrap_or(HeaderValue::from_static("99999999H"))
}

/// `grpc-timeout`: digits then a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let query = path.split_once('?')?.1;
    query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A 101 from upstream: both sides switch protocols and bytes are relayed until either ends.
fn splice_upgrade(
    downstream: hyper::upgrade::OnUpgrade,
    mut response: Response<Body>,
) -> Response<Body> {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::task::spawn_local(async move {
        let (Ok(down), Ok(up)) = (downstream.await, upstream.await) else {
            return;
        };
        let mut down = hyper_util::rt::TokioIo::new(down);
        let mut up = hyper_util::rt::TokioIo::new(up);
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, local_reply::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_written_as_envoy_writes_it() {
        let value = |t| grpc_timeout_value(t).to_str().unwrap().to_string();
        assert_eq!(value(Duration::from_micros(100_000)), "100m");
        assert_eq!(value(Duration::from_millis(99_999_999)), "99999999m");
        assert_eq!(value(Duration::from_millis(100_000_000)), "100000S");
        assert_eq!(value(Duration::from_secs(6_000_000_000)), "1666666H");
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }

    #[test]
    fn ports_split_for_names_and_ipv6() {
        assert_eq!(split_port("a.b:80"), Some(("a.b", 80)));
        assert_eq!(split_port("[::1]:8080"), Some(("[::1]", 8080)));
        assert_eq!(split_port("[::1]"), None);
        assert_eq!(split_port("::1"), None);
        assert_eq!(split_port("a.b"), None);
        assert_eq!(shadow_authority("a.b:80"), "a.b-shadow:80");
    }

    #[test]
    fn cookies_and_query_parameters() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; user=bob"));
        assert_eq!(cookie(&h, "user"), Some("bob"));
        assert_eq!(query_param("/p?x=1&y=2", "y"), Some("2"));
        assert_eq!(query_param("/p", "y"), None);
    }
}
