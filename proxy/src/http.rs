//! HTTP: the pieces of the HTTP connection manager.

pub mod access_log;
