//! Test kit shared by Tern's cross-crate tests.
//!
//! - [`prereq`]: what a test needs from the machine (root, a binary) and what to do when it is
//!   missing: skip with one line locally, fail under `CI=true`.
//! - [`dns_server`]: a name server whose answer a test can change, for DNS clusters.
//! - [`backend`]: small TCP servers on ephemeral ports that record what reached them.
//! - [`http_backend`]: HTTP/1.1 + h2c servers that answer with a JSON description of the request
//!   that reached them, and a one-shot HTTP client.
//! - [`grpc_backend`]: a tonic gRPC server (unary and server-streaming, chosen delays and
//!   failures) and its client, with messages and service written by hand (no `protoc`).
//! - [`process`]: run `tern` or Envoy as a child process from a bootstrap, learn its admin
//!   address, wait for readiness, and always kill it.
//! - [`inprocess`]: a Tern server inside the test process, from a YAML bootstrap.
//! - [`istiod`]: Istio's own discovery server (`istiod-standalone`) on a directory of Istio YAML,
//!   Istio's sidecar bootstrap pointed at it, and the workload secrets over SDS.
//! - [`pilot_agent`]: Istio's real `pilot-agent` run standalone in a pod namespace, starting
//!   Envoy or Tern as its proxy, with istiod-standalone as its discovery server.
//! - [`bootstrap`]: HTTP test bootstraps from the fragments a test cares about.
//! - [`netns`]: network namespaces, veth pairs and processes inside them (root only).
//! - [`sidecar`]: Istio-shaped sidecar bootstraps and Tern running captured in a pod namespace.
//! - [`envoy`]: where the real Envoy 1.40.0 binary is (installed by `scripts/install-test-deps.sh`).
//! - [`xds_server`]: a real ADS (SotW + delta) and SDS control plane serving versioned snapshots,
//!   recording every request and every ACK/NACK (also the `xds-server` binary).

pub mod backend;
pub mod bootstrap;
pub mod dns_server;
pub mod envoy;
pub mod grpc_backend;
pub mod http_backend;
pub mod inprocess;
pub mod istiod;
pub mod netns;
pub mod pilot_agent;
pub mod pki;
pub mod prereq;
pub mod process;
pub mod sidecar;
pub mod xds_server;
