//! Tern: a thread-per-core sidecar proxy that an Istio control plane can drive in place of Envoy.
//!
//! The main thread ([`server`]) owns configuration: it turns Envoy protos into validated
//! [`config`] types, builds an immutable [`snapshot`] and publishes it; workers ([`worker`]) each
//! run a current-thread tokio runtime with their own SO_REUSEPORT sockets and read the snapshot
//! through a cached pointer. Connections are served by [`listener`] (listener filters, filter
//! chain match) and network filters such as [`tcp_proxy`], over hosts chosen by [`lb`] and
//! connected by [`upstream`]. [`admin`] serves Envoy's admin API.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod drain;
pub mod http;
pub mod lb;
pub mod listener;
pub mod outlier;
pub mod rbac;
pub mod server;
pub mod snapshot;
pub mod sockopt;
pub mod stats;
pub mod tcp_proxy;
pub mod upstream;
pub mod worker;
pub mod xds;

/// The version Tern reports where Envoy reports its own (`/server_info`, `server.version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
