//! Differential HTTP routing: one static bootstrap (`testdata/http_routes.yaml`: an HTTP
//! connection manager with an inline route table) runs under the real Envoy 1.40.0 and under
//! Tern, every row of the table in `http_routes/table.rs` is sent through both, and Tern must
//! answer as Envoy does.
//!
//! - `envoy_agrees_with_table` runs the table against Envoy alone: it keeps the table honest,
//!   so every expectation in it is Envoy's observed behaviour, not a guess.
//! - `tern_matches_envoy` runs it against both and reports every observable difference (status,
//!   which backend answered and how many requests each received, the upstream request's
//!   method, path, authority, protocol and headers, the response headers and body).
//!
//! Both run every case before failing and print one block per failing case, so one run shows
//! every mismatch (`TERN_HTTP_ROUTES_VERBOSE=1` prints every outcome in full). Backends are HTTP servers on ephemeral loopback ports that answer with a JSON
//! description of the request they received; cases run one after another on fresh connections,
//! so a backend's request counter tells which backend each case reached.

#[path = "http_routes/case.rs"]
mod case;
#[path = "http_routes/outcome.rs"]
mod outcome;
#[path = "http_routes/table.rs"]
mod table;

use case::{Case, Listener};
use outcome::{BACKENDS, Outcome};
use std::net::SocketAddr;
use tern_tests::envoy::envoy_binary;
use tern_tests::http_backend::{self, HttpBackend};
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess};

const BOOTSTRAP: &str = include_str!("../testdata/http_routes.yaml");

/// The three backends, `a`, `b`, `c`, in [`BACKENDS`] order.
struct Backends([HttpBackend; 3]);

impl Backends {
    async fn start() -> Backends {
        let [a, b, c] = BACKENDS;
        Backends([
            HttpBackend::start(a).await.expect("backend a"),
            HttpBackend::start(b).await.expect("backend b"),
            HttpBackend::start(c).await.expect("backend c"),
        ])
    }

    fn requests(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.0[i].requests())
    }

    fn bootstrap(&self) -> String {
        let mut bootstrap = BOOTSTRAP.to_string();
        for backend in &self.0 {
            let placeholder = format!("{{{{{}_PORT}}}}", backend.name.to_uppercase());
            bootstrap = bootstrap.replace(&placeholder, &backend.address.port().to_string());
        }
        assert!(
            !bootstrap.contains("{{"),
            "unfilled placeholder in:\n{bootstrap}"
        );
        bootstrap
    }
}

/// A proxy running the bootstrap, with its two listeners' bound addresses.
struct Proxy {
    process: ProxyProcess,
    main: SocketAddr,
    strict: SocketAddr,
}

impl Proxy {
    async fn start(kind: ProxyKind, bootstrap: &str) -> Proxy {
        let process = match kind {
            ProxyKind::Envoy => {
                let binary = envoy_binary().expect("checked by the caller");
                ProxyProcess::start(kind, &binary, bootstrap, 1).await
            }
            ProxyKind::Tern => ProxyProcess::tern(bootstrap, 1).await,
        }
        .unwrap_or_else(|e| panic!("{} starts: {e:#}", kind.name()));
        let main = process
            .listener_address("http_in")
            .await
            .expect("http_in address");
        let strict = process
            .listener_address("http_strict")
            .await
            .expect("http_strict address");
        Proxy {
            process,
            main,
            strict,
        }
    }

    fn name(&self) -> &'static str {
        self.process.kind.name()
    }

    /// Sends `case` and records what came of it; `Err` when no HTTP response came back.
    async fn run(&self, case: &Case, backends: &Backends) -> Result<Outcome, String> {
        let address = match case.listener {
            Listener::Main => self.main,
            Listener::Strict => self.strict,
        };
        let request = http_backend::Request {
            method: case.method,
            authority: case.authority,
            path: case.path,
            headers: &case.headers,
            body: case.body,
        };
        let before = backends.requests();
        let response = http_backend::send(address, case.protocol, &request)
            .await
            .map_err(|e| format!("no response: {e:#}"))?;
        let after = backends.requests();
        Ok(Outcome::new(
            &response,
            [0, 1, 2].map(|i| after[i] - before[i]),
        ))
    }
}

/// Envoy is the oracle; without it these tests skip (fail under `CI=true`).
fn envoy_available() -> bool {
    prereq::require(
        envoy_binary().is_some(),
        "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
    )
}

/// `TERN_HTTP_ROUTES_VERBOSE=1` prints every outcome, to see what a proxy did in full.
fn verbose() -> bool {
    std::env::var_os("TERN_HTTP_ROUTES_VERBOSE").is_some_and(|v| v == "1")
}

/// One block per failing case: what was sent, then each mismatch on its own line.
fn report(failures: &[(String, Vec<String>)], total: usize) -> String {
    let mut text = format!("{} of {total} cases failed:\n", failures.len());
    for (case, problems) in failures {
        text.push_str(&format!("\n--- {case}\n"));
        for problem in problems {
            text.push_str(&format!("    {problem}\n"));
        }
    }
    text
}

fn describe(case: &Case) -> String {
    format!(
        "{} [{:?} {:?} {} {}{}{}]",
        case.name,
        case.listener,
        case.protocol,
        case.method,
        case.authority,
        case.path,
        if case.headers.is_empty() {
            String::new()
        } else {
            format!(" {:?}", case.headers)
        }
    )
}

#[tokio::test]
async fn envoy_agrees_with_table() {
    if !envoy_available() {
        return;
    }
    let backends = Backends::start().await;
    let envoy = Proxy::start(ProxyKind::Envoy, &backends.bootstrap()).await;
    let cases = table::cases();
    let mut failures = Vec::new();
    for case in &cases {
        let problems = match envoy.run(case, &backends).await {
            Ok(outcome) => {
                if verbose() {
                    eprintln!("=== {}\n{:#?}", describe(case), outcome.brief());
                }
                outcome::check(case, &outcome)
            }
            Err(e) => vec![e],
        };
        if !problems.is_empty() {
            failures.push((describe(case), problems));
        }
    }
    assert!(
        failures.is_empty(),
        "Envoy disagrees with the table (the table is wrong, or Envoy changed):\n{}",
        report(&failures, cases.len())
    );
}

#[tokio::test]
async fn tern_matches_envoy() {
    if !envoy_available() {
        return;
    }
    let backends = Backends::start().await;
    let bootstrap = backends.bootstrap();
    let envoy = Proxy::start(ProxyKind::Envoy, &bootstrap).await;
    let tern = Proxy::start(ProxyKind::Tern, &bootstrap).await;
    let cases = table::cases();
    let mut failures = Vec::new();
    for case in &cases {
        let mut problems = Vec::new();
        let (envoy_outcome, tern_outcome) = (
            envoy.run(case, &backends).await,
            tern.run(case, &backends).await,
        );
        if verbose() {
            eprintln!(
                "=== {}\nenvoy: {:#?}\ntern: {:#?}",
                describe(case),
                envoy_outcome.as_ref().map(Outcome::brief),
                tern_outcome.as_ref().map(Outcome::brief),
            );
        }
        match (&envoy_outcome, &tern_outcome) {
            (Ok(e), Ok(t)) => problems.extend(outcome::differences(case, e, t)),
            (Err(e), _) => problems.push(format!("{}: {e}", envoy.name())),
            (Ok(_), Err(e)) => problems.push(format!("{}: {e}", tern.name())),
        }
        if let Ok(e) = &envoy_outcome {
            problems.extend(
                outcome::check(case, e)
                    .into_iter()
                    .map(|p| format!("(table disagrees with Envoy) {p}")),
            );
        }
        if !problems.is_empty() {
            failures.push((describe(case), problems));
        }
    }
    assert!(
        failures.is_empty(),
        "Tern answers differently from Envoy:\n{}",
        report(&failures, cases.len())
    );
}

#[tokio::test]
async fn config_dump_lists_inline_route_configs_as_envoy_does() {
    if !envoy_available() {
        return;
    }
    let backends = Backends::start().await;
    let bootstrap = backends.bootstrap();
    let envoy = Proxy::start(ProxyKind::Envoy, &bootstrap).await;
    let tern = Proxy::start(ProxyKind::Tern, &bootstrap).await;
    // Each item of ?resource=static_route_configs: its @type and the route config's name and
    // virtual hosts (Envoy's order of the items is its own; sorted here).
    let items = |body: &str| -> Vec<(String, String, Vec<String>)> {
        let dump: serde_json::Value = serde_json::from_str(body).expect("JSON");
        let mut items: Vec<_> = dump["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .map(|item| {
                let config = &item["route_config"];
                (
                    item["@type"].as_str().unwrap_or_default().to_string(),
                    config["name"].as_str().unwrap_or_default().to_string(),
                    config["virtual_hosts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
                        .collect(),
                )
            })
            .collect();
        items.sort();
        items
    };
    let path = "/config_dump?resource=static_route_configs";
    let mut dumps = Vec::new();
    for proxy in [&envoy, &tern] {
        let (status, body) = proxy.process.get(path).await.expect("admin answers");
        assert_eq!(status, 200, "{} {path}: {body}", proxy.name());
        dumps.push(items(&body));
    }
    let names: Vec<&str> = dumps[0].iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, ["routes", "strict"], "Envoy's {path}");
    assert_eq!(dumps[1], dumps[0], "Tern's {path} against Envoy's");
}
