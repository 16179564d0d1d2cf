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

use crate::snapshot::{BindKey, Snapshot};
use crate::sockopt;
use crate::worker::{Command, Worker, WorkerHandle};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Accepts on one worker's socket for `key` until told to stop.
pub async fn accept_loop(
    worker: Rc<Worker>,
    key: BindKey,
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
                tracing::warn!(worker = worker.index, ?key, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let snapshot = worker.snapshot();
        let Some(entry) = snapshot.bound_listener(&key).cloned() else {
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

/// The main thread's record of which socket groups exist on the workers.
#[derive(Debug, Default)]
pub struct ListeningSockets {
    /// Group -> the address actually bound (differs from the configured one when the port was 0).
    bound: HashMap<BindKey, SocketAddr>,
    /// Groups stopped by `/drain_listeners`; not re-bound by later snapshots.
    stopped: HashSet<BindKey>,
}

impl ListeningSockets {
    /// Brings the workers' sockets in line with `snapshot`: binds new groups (one socket per
    /// worker) and stops accepting on groups no listener needs any more. Returns the groups that
    /// failed to bind, with the error, so the caller can report those listeners.
    pub fn sync(
        &mut self,
        snapshot: &Snapshot,
        workers: &[WorkerHandle],
    ) -> Vec<(BindKey, std::io::Error)> {
        let wanted: HashSet<BindKey> = snapshot
            .bind_keys()
            .filter(|k| !self.stopped.contains(k))
            .collect();
        let gone: Vec<BindKey> = self
            .bound
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.bound.remove(&key);
            for worker in workers {
                worker.send(Command::StopListening { key: key.clone() });
            }
        }
        let mut failures = Vec::new();
        for key in wanted {
            if self.bound.contains_key(&key) {
                continue;
            }
            let Some(address) = key.address(snapshot) else {
                continue;
            };
            match bind_group(address, workers.len()) {
                Ok((actual, sockets)) => {
                    for (worker, socket) in workers.iter().zip(sockets) {
                        worker.send(Command::Listen {
                            key: key.clone(),
                            socket,
                        });
                    }
                    self.bound.insert(key, actual);
                }
                Err(e) => failures.push((key, e)),
            }
        }
        failures
    }

    /// Stops accepting on these groups for good (drain); established connections carry on.
    /// Returns how many groups were listening.
    pub fn stop(
        &mut self,
        keys: impl IntoIterator<Item = BindKey>,
        workers: &[WorkerHandle],
    ) -> usize {
        let mut stopped = 0;
        for key in keys {
            self.stopped.insert(key.clone());
            if self.bound.remove(&key).is_some() {
                stopped += 1;
                for worker in workers {
                    worker.send(Command::StopListening { key: key.clone() });
                }
            }
        }
        stopped
    }

    /// The address actually bound for a socket group.
    pub fn actual(&self, key: &BindKey) -> Option<SocketAddr> {
        self.bound.get(key).copied()
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
