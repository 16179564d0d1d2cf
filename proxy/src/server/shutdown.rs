//! How listeners stop: Envoy's admin drain sequence (`POST /drain_listeners`, what pilot-agent
//! sends on pod termination) and the SIGTERM drain.
//!
//! `/drain_listeners` as Envoy 1.40 does it (`source/server/admin/listeners_handler.cc`, checked
//! against the binary): the chosen listeners (`inboundonly`: those with `traffic_direction:
//! INBOUND`) start an open-ended drain at once, so their HTTP connections answer the next request
//! with `connection: close` (HTTP/2: GOAWAY) but nothing is closed by force; with `graceful`
//! they keep accepting for `--drain-time-s`, then stop listening; without it they stop at once;
//! with `skip_exit` they never stop. A second graceful request for a scope already draining is
//! ignored. `server.state` stays LIVE throughout: only SIGTERM sets DRAINING.

use super::{Manager, ServerState};
use crate::config::listener::Direction;
use crate::snapshot::BindKey;
use std::time::Duration;

/// What `POST /drain_listeners` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainRequest {
    /// `inboundonly`: only listeners with `traffic_direction: INBOUND`.
    pub inbound_only: bool,
    /// `graceful`: keep accepting for the drain time before stopping.
    pub graceful: bool,
    /// `skip_exit`: drain connections but never stop the listeners.
    pub skip_exit: bool,
}

/// Which listeners a graceful admin drain covers (ordered: `All` covers `InboundOnly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrainScope {
    InboundOnly,
    All,
}

impl Manager {
    pub(super) fn drain_listeners(&mut self, request: DrainRequest) {
        let scope = if request.inbound_only {
            DrainScope::InboundOnly
        } else {
            DrainScope::All
        };
        if request.graceful {
            if self.admin_drain.is_some_and(|started| started >= scope) {
                return;
            }
            self.admin_drain = Some(scope);
        }
        let snapshot = self.handle.shared.snapshots.load();
        let chosen: Vec<BindKey> = snapshot
            .listeners
            .values()
            .filter(|l| scope == DrainScope::All || l.config.direction == Direction::Inbound)
            .map(|l| {
                l.drain.start_open_ended();
                BindKey::of(&l.config)
            })
            .collect();
        if request.skip_exit {
            return;
        }
        if request.graceful {
            // Envoy keeps accepting through the drain time: there is no other listener version
            // to take new connections.
            let handle = self.handle.clone();
            let drain_time = self.handle.info.options.drain_time;
            tokio::spawn(async move {
                tokio::time::sleep(drain_time).await;
                handle.send(super::Command::StopAccepting { keys: chosen });
            });
        } else {
            self.stop_accepting(chosen);
        }
    }

    /// Stops listening on `keys` for good, counting each socket group stopped as Envoy counts
    /// `listener_manager.listener_stopped`.
    pub(super) fn stop_accepting(&mut self, keys: Vec<BindKey>) {
        let stopped = self.sockets.stop(keys, &self.workers);
        self.handle
            .shared
            .store
            .counter("listener_manager.listener_stopped")
            .add(stopped as u64);
    }

    /// SIGTERM: stop accepting everywhere, then wait for connections to finish (or the drain time).
    pub(super) async fn drain_all(&mut self) {
        self.handle.info.state.set(ServerState::Draining as i64);
        let snapshot = self.handle.shared.snapshots.load();
        let drain_time = self.handle.info.options.drain_time;
        for listener in snapshot.listeners.values() {
            listener.drain.start(drain_time);
        }
        let keys: Vec<BindKey> = snapshot
            .listeners
            .values()
            .map(|l| BindKey::of(&l.config))
            .collect();
        self.sockets.stop(keys, &self.workers);
        let deadline = tokio::time::Instant::now() + drain_time;
        let total = &self.handle.shared.total_connections;
        while total.value() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
