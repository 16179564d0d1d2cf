//! gRPC end to end through Tern, with a real tonic client and a real tonic server
//! (`tern_tests::grpc_backend`) over HTTP/2 on both sides: unary and server-streaming calls,
//! error statuses and trailing metadata passing through unchanged, deadlines (`grpc-timeout`)
//! forwarded to the backend or honoured by the proxy itself, and the proxy's own gRPC local
//! replies.
//!
//! Every case is one row of [`cases`] with the outcome Envoy 1.40.0 gives for it:
//! - the named tests run one case each through Tern in-process and assert that outcome;
//! - `envoy_gives_the_expected_outcomes` runs every case through the real Envoy with the same
//!   bootstrap, keeping each expectation Envoy's observed behaviour rather than a guess (skips
//!   without Envoy, fails under `CI=true`);
//! - `tern_matches_envoy_on_every_case` runs every case through both and reports each
//!   difference.
//!
//! An outcome is what the client saw (HTTP status, trailers-only or not, gRPC status code and
//! message, replies, one metadata entry) and what reached the backend (`grpc-timeout`,
//! `x-envoy-expected-rq-timeout-ms`). Delays are small (100-300 ms) and are the thing under test;
//! nothing synchronises on a sleep.

use std::collections::HashMap;
use std::net::SocketAddr;
use tern_tests::envoy::envoy_binary;
use tern_tests::grpc_backend::{CountRequest, EchoClient, EchoRequest, GrpcBackend, H2Connection};
use tern_tests::inprocess::Running;
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess};
use tonic::Code;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// One listener `grpc`; routes chosen by the `x-route` request header:
/// - `istio`: Istio's sidecar route shape (`timeout: 0s`, `max_grpc_timeout: 0s`);
/// - `stream-duration`: `max_stream_duration.grpc_timeout_header_max: 0s`;
/// - `by-header`: the cluster named by `x-cluster`;
/// - `unhealthy`: a cluster without endpoints (a STATIC cluster whose only endpoint is
///   UNHEALTHY would not do: below the panic threshold Envoy routes to it anyway);
/// - anything else: cluster `backend` with the default route timeout (15 s).
const BOOTSTRAP: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: grpc
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: grpc
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/", headers: [{ name: x-route, string_match: { exact: istio } }] }
                route: { cluster: backend, timeout: 0s, max_grpc_timeout: 0s }
              - match: { prefix: "/", headers: [{ name: x-route, string_match: { exact: stream-duration } }] }
                route: { cluster: backend, max_stream_duration: { grpc_timeout_header_max: 0s } }
              - match: { prefix: "/", headers: [{ name: x-route, string_match: { exact: by-header } }] }
                route: { cluster_header: x-cluster }
              - match: { prefix: "/", headers: [{ name: x-route, string_match: { exact: unhealthy } }] }
                route: { cluster: down }
              - match: { prefix: "/" }
                route: { cluster: backend }
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{BACKEND_PORT}} } } }
  - name: down
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: down }
"#;

fn bootstrap(backend: &GrpcBackend) -> String {
    BOOTSTRAP.replace("{{BACKEND_PORT}}", &backend.address.port().to_string())
}

/// What a case sends.
#[derive(Clone, Debug)]
enum Call {
    Unary(EchoRequest),
    Count(CountRequest),
}

/// One row: a call, the request metadata it carries, and Envoy's outcome for it.
struct Case {
    name: &'static str,
    call: Call,
    metadata: &'static [(&'static str, &'static str)],
    expect: Outcome,
}

/// What came of a call.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    http_status: u16,
    /// `grpc-status` came in the response headers (no body, no trailers).
    trailers_only: bool,
    code: Code,
    /// `grpc-message`, percent-decoded.
    message: String,
    /// `message@backend` for a unary reply, the index of each streamed reply.
    replies: Vec<String>,
    /// The `x-detail` metadata entry: response headers on success, trailers on failure.
    detail: Option<String>,
    /// What reached the backend; `None` when nothing did.
    upstream: Option<Upstream>,
}

/// The request headers the backend saw that a proxy may add or rewrite.
#[derive(Clone, Debug, PartialEq)]
struct Upstream {
    grpc_timeout: Option<String>,
    expected_timeout_ms: Option<String>,
}

fn upstream(grpc_timeout: Option<&str>, expected_timeout_ms: Option<&str>) -> Option<Upstream> {
    Some(Upstream {
        grpc_timeout: grpc_timeout.map(String::from),
        expected_timeout_ms: expected_timeout_ms.map(String::from),
    })
}

fn ok(replies: &[&str], detail: Option<&str>, upstream: Option<Upstream>) -> Outcome {
    Outcome {
        http_status: 200,
        trailers_only: false,
        code: Code::Ok,
        message: String::new(),
        replies: replies.iter().map(|r| r.to_string()).collect(),
        detail: detail.map(String::from),
        upstream,
    }
}

/// A trailers-only gRPC error (HTTP 200, status in the headers).
fn trailers_only(code: Code, message: &str, upstream: Option<Upstream>) -> Outcome {
    Outcome {
        http_status: 200,
        trailers_only: true,
        code,
        message: message.to_string(),
        replies: Vec::new(),
        detail: None,
        upstream,
    }
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_string(),
        ..Default::default()
    }
}

/// The backend's reply on the default route: Envoy adds the 15 s default route timeout.
const DEFAULT_ROUTE_TIMEOUT_MS: Option<&str> = Some("15000");

fn unary_ok() -> Case {
    Case {
        name: "unary_ok",
        call: Call::Unary(EchoRequest {
            response_metadata: HashMap::from([("x-detail".into(), "initial".into())]),
            ..echo("hi")
        }),
        metadata: &[],
        expect: ok(
            &["hi@a"],
            Some("initial"),
            upstream(None, DEFAULT_ROUTE_TIMEOUT_MS),
        ),
    }
}

fn unary_error() -> Case {
    let message = "no echo for \"x\": ünïcode, 100% sure";
    Case {
        name: "unary_error",
        call: Call::Unary(EchoRequest {
            fail_code: Code::NotFound as i32,
            fail_message: message.into(),
            response_metadata: HashMap::from([("x-detail".into(), "trailing".into())]),
            ..echo("hi")
        }),
        metadata: &[],
        expect: Outcome {
            detail: Some("trailing".into()),
            ..trailers_only(
                Code::NotFound,
                message,
                upstream(None, DEFAULT_ROUTE_TIMEOUT_MS),
            )
        },
    }
}

fn stream_ok() -> Case {
    Case {
        name: "stream_ok",
        call: Call::Count(CountRequest {
            count: 4,
            interval_ms: 10,
            ..Default::default()
        }),
        metadata: &[],
        expect: ok(
            &["0", "1", "2", "3"],
            None,
            upstream(None, DEFAULT_ROUTE_TIMEOUT_MS),
        ),
    }
}

fn stream_fails_midway() -> Case {
    Case {
        name: "stream_fails_midway",
        call: Call::Count(CountRequest {
            count: 5,
            interval_ms: 10,
            fail_after: Some(2),
            fail_code: Code::Aborted as i32,
            fail_message: "stopped after 2".into(),
        }),
        metadata: &[],
        expect: Outcome {
            trailers_only: false,
            replies: vec!["0".into(), "1".into()],
            ..trailers_only(
                Code::Aborted,
                "stopped after 2",
                upstream(None, DEFAULT_ROUTE_TIMEOUT_MS),
            )
        },
    }
}

/// The client's deadline reaches the backend untouched, which gives up at it.
fn client_deadline_reaches_backend() -> Case {
    Case {
        name: "client_deadline_reaches_backend",
        call: Call::Unary(EchoRequest {
            delay_ms: 300,
            honour_deadline: true,
            ..echo("late")
        }),
        metadata: &[("grpc-timeout", "100000u")],
        expect: trailers_only(
            Code::DeadlineExceeded,
            "deadline of 100000u exceeded",
            upstream(Some("100000u"), DEFAULT_ROUTE_TIMEOUT_MS),
        ),
    }
}

/// Istio's route (`max_grpc_timeout: 0s`): the proxy's own timer, from `grpc-timeout`, ends a
/// call whose backend ignores its deadline.
fn istio_route_times_out_at_grpc_timeout() -> Case {
    Case {
        name: "istio_route_times_out_at_grpc_timeout",
        call: Call::Unary(EchoRequest {
            delay_ms: 300,
            ..echo("late")
        }),
        metadata: &[("x-route", "istio"), ("grpc-timeout", "100000u")],
        expect: trailers_only(
            Code::Unavailable,
            "upstream request timeout",
            upstream(Some("100m"), Some("100")),
        ),
    }
}

/// Istio's route with no `grpc-timeout`: no timeout at all.
fn istio_route_without_grpc_timeout_has_none() -> Case {
    Case {
        name: "istio_route_without_grpc_timeout_has_none",
        call: Call::Unary(echo("no deadline")),
        metadata: &[("x-route", "istio")],
        expect: ok(&["no deadline@a"], None, upstream(None, None)),
    }
}

/// `max_stream_duration.grpc_timeout_header_max`: the stream's duration is capped by
/// `grpc-timeout`.
fn stream_duration_route_times_out_at_grpc_timeout() -> Case {
    Case {
        name: "stream_duration_route_times_out_at_grpc_timeout",
        call: Call::Unary(EchoRequest {
            delay_ms: 300,
            ..echo("late")
        }),
        metadata: &[("x-route", "stream-duration"), ("grpc-timeout", "100000u")],
        expect: trailers_only(
            Code::DeadlineExceeded,
            "downstream duration timeout",
            upstream(Some("100m"), None),
        ),
    }
}

/// Five replies 200 ms apart, for a deadline (500 ms) that expires mid-stream, after the
/// response headers and three replies went out.
fn long_stream() -> Call {
    Call::Count(CountRequest {
        count: 5,
        interval_ms: 200,
        ..Default::default()
    })
}

/// What tonic makes of a stream the proxy resets after its response headers: past that point
/// a proxy can only reset, and the client's status is tonic's own.
const RESET_MID_STREAM: &str = "h2 protocol error: error reading a body from connection";

fn istio_route_cuts_a_long_stream() -> Case {
    Case {
        name: "istio_route_cuts_a_long_stream",
        call: long_stream(),
        metadata: &[("x-route", "istio"), ("grpc-timeout", "500m")],
        expect: Outcome {
            trailers_only: false,
            replies: vec!["0".into(), "1".into(), "2".into()],
            ..trailers_only(
                Code::Internal,
                RESET_MID_STREAM,
                upstream(Some("500m"), Some("500")),
            )
        },
    }
}

fn stream_duration_cuts_a_long_stream() -> Case {
    Case {
        name: "stream_duration_cuts_a_long_stream",
        call: long_stream(),
        metadata: &[("x-route", "stream-duration"), ("grpc-timeout", "500m")],
        expect: Outcome {
            trailers_only: false,
            replies: vec!["0".into(), "1".into(), "2".into()],
            ..trailers_only(
                Code::Internal,
                RESET_MID_STREAM,
                upstream(Some("500m"), None),
            )
        },
    }
}

fn cluster_not_found() -> Case {
    Case {
        name: "cluster_not_found",
        call: Call::Unary(echo("nowhere")),
        metadata: &[("x-route", "by-header"), ("x-cluster", "missing")],
        expect: trailers_only(Code::Unavailable, "", None),
    }
}

fn no_healthy_upstream() -> Case {
    Case {
        name: "no_healthy_upstream",
        call: Call::Unary(echo("nowhere")),
        metadata: &[("x-route", "unhealthy")],
        expect: trailers_only(Code::Unavailable, "no healthy upstream", None),
    }
}

fn cases() -> Vec<Case> {
    vec![
        unary_ok(),
        unary_error(),
        stream_ok(),
        stream_fails_midway(),
        client_deadline_reaches_backend(),
        istio_route_times_out_at_grpc_timeout(),
        istio_route_without_grpc_timeout_has_none(),
        stream_duration_route_times_out_at_grpc_timeout(),
        istio_route_cuts_a_long_stream(),
        stream_duration_cuts_a_long_stream(),
        cluster_not_found(),
        no_healthy_upstream(),
    ]
}

/// A proxy's listener with a client on one HTTP/2 connection to it.
struct Client {
    echo: EchoClient<H2Connection>,
    connection: H2Connection,
}

impl Client {
    async fn connect(address: SocketAddr) -> Client {
        let (echo, connection) = EchoClient::connect(address).await.expect("client connects");
        Client { echo, connection }
    }

    /// Sends `case` and records what came of it, and what of it reached `backend`.
    async fn run(&mut self, case: &Case, backend: &mut GrpcBackend) -> Outcome {
        backend.clear_seen();
        let mut metadata = MetadataMap::new();
        for (name, value) in case.metadata {
            metadata.insert(
                MetadataKey::from_static(name),
                MetadataValue::from_static(value),
            );
        }
        let mut outcome = match &case.call {
            Call::Unary(message) => {
                match self.echo.unary(with_metadata(&metadata, message)).await {
                    Ok(response) => {
                        let reply = response.get_ref();
                        Outcome {
                            detail: text(response.metadata(), "x-detail"),
                            ..ok(
                                &[&format!("{}@{}", reply.message, reply.backend)],
                                None,
                                None,
                            )
                        }
                    }
                    Err(status) => failed(&status, Vec::new()),
                }
            }
            Call::Count(message) => {
                match self.echo.count(with_metadata(&metadata, message)).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        let mut replies = Vec::new();
                        loop {
                            match stream.message().await {
                                Ok(Some(reply)) => replies.push(reply.index.to_string()),
                                Ok(None) => {
                                    let trailers = stream.trailers().await.ok().flatten();
                                    break Outcome {
                                        replies,
                                        detail: trailers.and_then(|t| text(&t, "x-detail")),
                                        ..ok(&[], None, None)
                                    };
                                }
                                Err(status) => break failed(&status, replies),
                            }
                        }
                    }
                    Err(status) => failed(&status, Vec::new()),
                }
            }
        };
        outcome.http_status = self.connection.last_http_status();
        outcome.trailers_only = self.connection.last_trailers_only();
        outcome.upstream = backend.take_seen().map(|seen| Upstream {
            grpc_timeout: seen.header("grpc-timeout").map(String::from),
            expected_timeout_ms: seen
                .header("x-envoy-expected-rq-timeout-ms")
                .map(String::from),
        });
        outcome
    }
}

fn with_metadata<T: Clone>(metadata: &MetadataMap, message: &T) -> tonic::Request<T> {
    tonic::Request::from_parts(metadata.clone(), Default::default(), message.clone())
}

fn text(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn failed(status: &tonic::Status, replies: Vec<String>) -> Outcome {
    Outcome {
        http_status: 0,
        trailers_only: false,
        code: status.code(),
        message: status.message().to_string(),
        replies,
        detail: text(status.metadata(), "x-detail"),
        upstream: None,
    }
}

/// Tern in-process with its backend, and a client connected to it.
async fn tern() -> (Running, GrpcBackend, Client) {
    let backend = GrpcBackend::start("a").await.expect("backend starts");
    let tern = Running::start(&bootstrap(&backend), 1).await;
    let client = Client::connect(tern.listener("grpc").await).await;
    (tern, backend, client)
}

/// Runs `case` through Tern and asserts Envoy's outcome.
async fn assert_tern_gives(case: Case) {
    let (_tern, mut backend, mut client) = tern().await;
    let outcome = client.run(&case, &mut backend).await;
    assert_eq!(
        outcome, case.expect,
        "{}: Tern's outcome (left) differs from Envoy's (right)",
        case.name
    );
}

#[tokio::test]
async fn unary_call_passes_through_with_its_metadata() {
    assert_tern_gives(unary_ok()).await;
}

#[tokio::test]
async fn unary_error_status_message_and_trailing_metadata_pass_through_unchanged() {
    assert_tern_gives(unary_error()).await;
}

#[tokio::test]
async fn server_stream_delivers_every_message_then_ok_trailers() {
    assert_tern_gives(stream_ok()).await;
}

#[tokio::test]
async fn server_stream_failing_midway_delivers_the_messages_then_the_status() {
    assert_tern_gives(stream_fails_midway()).await;
}

#[tokio::test]
async fn client_deadline_reaches_the_backend_which_answers_deadline_exceeded() {
    assert_tern_gives(client_deadline_reaches_backend()).await;
}

#[tokio::test]
async fn istio_route_times_out_at_grpc_timeout_and_rewrites_it_upstream() {
    assert_tern_gives(istio_route_times_out_at_grpc_timeout()).await;
}

#[tokio::test]
async fn istio_route_without_grpc_timeout_has_no_timeout() {
    assert_tern_gives(istio_route_without_grpc_timeout_has_none()).await;
}

#[tokio::test]
async fn stream_duration_route_ends_the_call_at_grpc_timeout_with_deadline_exceeded() {
    assert_tern_gives(stream_duration_route_times_out_at_grpc_timeout()).await;
}

#[tokio::test]
async fn istio_route_timeout_cuts_a_stream_after_its_headers() {
    assert_tern_gives(istio_route_cuts_a_long_stream()).await;
}

#[tokio::test]
async fn stream_duration_cuts_a_stream_after_its_headers() {
    assert_tern_gives(stream_duration_cuts_a_long_stream()).await;
}

#[tokio::test]
async fn cluster_not_found_is_a_trailers_only_unavailable() {
    assert_tern_gives(cluster_not_found()).await;
}

#[tokio::test]
async fn no_healthy_upstream_is_a_trailers_only_unavailable() {
    assert_tern_gives(no_healthy_upstream()).await;
}

/// Envoy is the oracle; without it the differential tests skip (fail under `CI=true`).
async fn envoy() -> Option<(ProxyProcess, GrpcBackend, Client)> {
    if !prereq::require(
        envoy_binary().is_some(),
        "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
    ) {
        return None;
    }
    let backend = GrpcBackend::start("a").await.expect("backend starts");
    let binary = envoy_binary().expect("checked above");
    let envoy = ProxyProcess::start(ProxyKind::Envoy, &binary, &bootstrap(&backend), 1)
        .await
        .expect("envoy starts");
    let address = envoy
        .listener_address("grpc")
        .await
        .expect("listener address");
    let client = Client::connect(address).await;
    Some((envoy, backend, client))
}

/// One line per field that differs.
fn differences(left: &Outcome, right: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, l: String, r: String| {
        if l != r {
            out.push(format!("  {name}: {l} vs {r}"));
        }
    };
    field(
        "http_status",
        left.http_status.to_string(),
        right.http_status.to_string(),
    );
    field(
        "trailers_only",
        left.trailers_only.to_string(),
        right.trailers_only.to_string(),
    );
    field(
        "code",
        format!("{:?}", left.code),
        format!("{:?}", right.code),
    );
    field(
        "message",
        format!("{:?}", left.message),
        format!("{:?}", right.message),
    );
    field(
        "replies",
        format!("{:?}", left.replies),
        format!("{:?}", right.replies),
    );
    field(
        "detail",
        format!("{:?}", left.detail),
        format!("{:?}", right.detail),
    );
    field(
        "upstream",
        format!("{:?}", left.upstream),
        format!("{:?}", right.upstream),
    );
    out
}

#[tokio::test]
async fn envoy_gives_the_expected_outcomes() {
    let Some((_envoy, mut backend, mut client)) = envoy().await else {
        return;
    };
    let mut failures = Vec::new();
    for case in cases() {
        let outcome = client.run(&case, &mut backend).await;
        let diff = differences(&outcome, &case.expect);
        if !diff.is_empty() {
            failures.push(format!(
                "{} (Envoy vs expected):\n{}",
                case.name,
                diff.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "Envoy no longer gives the expected outcome:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn tern_matches_envoy_on_every_case() {
    let Some((_envoy, mut envoy_backend, mut envoy_client)) = envoy().await else {
        return;
    };
    let (_tern, mut tern_backend, mut tern_client) = tern().await;
    let mut failures = Vec::new();
    for case in cases() {
        let (tern, envoy) = tokio::join!(
            tern_client.run(&case, &mut tern_backend),
            envoy_client.run(&case, &mut envoy_backend),
        );
        let diff = differences(&tern, &envoy);
        if !diff.is_empty() {
            failures.push(format!(
                "{} (Tern vs Envoy):\n{}",
                case.name,
                diff.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "Tern differs from Envoy:\n{}",
        failures.join("\n")
    );
}
