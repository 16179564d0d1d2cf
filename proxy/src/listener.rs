//! Listeners at run time: listening sockets per address and per worker, the accept loop, and the
//! path from an accepted socket to the network filter that serves it.
//!
//! Sockets belong to an *address*, not to a listener version: while any listener in the snapshot
//! binds an address, its SO_REUSEPORT sockets stay open and every accept looks up the listener
//! currently at that address. Replacing a listener's config therefore never closes a socket (and
//! never resets connections waiting in its backlog); only removing the last listener at an
//! address does.

pub mod connection;
pub mod filter_chain_match;
pub mod inspect;

use crate::snapshot::Snapshot;
use crate::sockopt;
use crate::worker::{Command, Worker, WorkerHandle};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Accepts on one worker's socket for `address` until told to stop.
pub async fn accept_loop(
    worker: Rc<Worker>,
    address: SocketAddr,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                tracing::warn!(worker = worker.index, %address, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let snapshot = worker.snapshot();
        let Some(entry) = snapshot.by_address.get(&address).cloned() else {
            continue; // the listener went away between accept and now: close
        };
        tokio::task::spawn_local(connection::serve(
            worker.clone(),
            snapshot,
            entry,
            stream,
            peer,
        ));
    }
}

/// The main thread's record of which addresses have sockets on the workers.
#[derive(Debug, Default)]
pub struct ListeningSockets {
    /// Configured address -> the address actually bound (differs when the port was 0).
    bound: HashMap<SocketAddr, SocketAddr>,
    /// Addresses stopped by `/drain_listeners`; not re-bound by later snapshots.
    stopped: HashSet<SocketAddr>,
}

impl ListeningSockets {
    /// Brings the workers' sockets in line with `snapshot`: binds new addresses (one socket per
    /// worker) and stops accepting on addresses no listener binds any more. Returns the addresses
    /// that failed to bind, with the error, so the caller can reject those listeners.
    pub fn sync(
        &mut self,
        snapshot: &Snapshot,
        workers: &[WorkerHandle],
    ) -> Vec<(SocketAddr, std::io::Error)> {
        let wanted: HashSet<SocketAddr> = snapshot
            .bound_addresses()
            .filter(|a| !self.stopped.contains(a))
            .collect();
        let gone: Vec<SocketAddr> = self
            .bound
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for address in gone {
            self.bound.remove(&address);
            for worker in workers {
                worker.send(Command::StopListening { address });
            }
        }
        let mut failures = Vec::new();
        for address in wanted {
            if self.bound.contains_key(&address) {
                continue;
            }
            match bind_group(address, workers.len()) {
                Ok((actual, sockets)) => {
                    for (worker, socket) in workers.iter().zip(sockets) {
                        worker.send(Command::Listen { address, socket });
                    }
                    self.bound.insert(address, actual);
                }
                Err(e) => failures.push((address, e)),
            }
        }
        failures
    }

    /// Stops accepting on `addresses` for good (drain); established connections carry on.
    pub fn stop(
        &mut self,
        addresses: impl IntoIterator<Item = SocketAddr>,
        workers: &[WorkerHandle],
    ) {
        for address in addresses {
            self.stopped.insert(address);
            if self.bound.remove(&address).is_some() {
                for worker in workers {
                    worker.send(Command::StopListening { address });
                }
            }
        }
    }

    /// The address actually bound for a configured address.
    pub fn actual(&self, configured: SocketAddr) -> Option<SocketAddr> {
        self.bound.get(&configured).copied()
    }
}

/// Binds one SO_REUSEPORT socket per worker. With port 0 the first bind picks the port and the
/// others join it, so all workers share one ephemeral port.
fn bind_group(
    address: SocketAddr,
    workers: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = sockopt::reuseport_listener(address)?;
    let actual = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(sockopt::reuseport_listener(actual)?);
    }
    Ok((actual, sockets))
}
