//! Worker threads: one current-thread tokio runtime each, owning its listening sockets, its
//! connections and its per-cluster balancer state.
//!
//! The main thread talks to a worker only through a command channel (start or stop listening on
//! an address); configuration reaches it through the published snapshot. Everything in
//! [`Worker`] is `!Send` on purpose: it is only ever touched by its own thread.

use crate::listener::accept_loop;
use crate::snapshot::{BindKey, Snapshot, SnapshotCell, SnapshotReader};
use crate::stats::{self, Store};
use crate::upstream::WorkerClusters;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// State shared by the main thread and every worker (all of it lock-free on the data path).
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub snapshots: Arc<SnapshotCell>,
    /// Total downstream connections across listeners (`server.total_connections`).
    pub total_connections: stats::Gauge,
    /// `POST /healthcheck/fail` is in force: connections on listeners with Envoy's `DEFAULT`
    /// drain type stop keeping themselves alive (see [`crate::drain::DrainWatch::or_health`]).
    pub health_check_failed: tokio::sync::watch::Sender<bool>,
}

/// What the main thread asks of a worker.
#[derive(Debug)]
pub enum Command {
    /// Accept on this socket; connections go to the listener the current snapshot has for `key`.
    Listen {
        key: BindKey,
        socket: std::net::TcpListener,
    },
    /// Stop accepting for `key`. Established connections carry on.
    StopListening { key: BindKey },
}

/// A worker as its own thread sees it.
pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    snapshots: SnapshotReader,
    pub clusters: WorkerClusters,
    pub rng: RefCell<SmallRng>,
    http_pools: Rc<crate::http::pool::Pools>,
}

impl Worker {
    /// The current snapshot (one atomic load unless it changed).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.get()
    }

    /// This worker's upstream HTTP connection pools.
    pub fn http_pools(&self) -> Rc<crate::http::pool::Pools> {
        self.http_pools.clone()
    }
}

/// The main thread's handle on a worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub index: usize,
    commands: mpsc::UnboundedSender<Command>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts worker `index` on its own thread.
    pub fn spawn(index: usize, shared: Arc<Shared>) -> std::io::Result<Self> {
        let (commands, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("tern-worker-{index}"))
            .spawn(move || run(index, shared, runtime, rx, stop_rx))?;
        Ok(WorkerHandle {
            index,
            commands,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Sends a command; a worker that has exited ignores it.
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Stops the worker's runtime (closing whatever it still holds) and joins its thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    index: usize,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stop: oneshot::Receiver<()>,
) {
    stats::set_shard(index);
    let local = tokio::task::LocalSet::new();
    let worker = Rc::new(Worker {
        index,
        snapshots: SnapshotReader::new(shared.snapshots.clone()),
        shared,
        clusters: WorkerClusters::default(),
        rng: RefCell::new(SmallRng::from_os_rng()),
        http_pools: Rc::default(),
    });
    local.block_on(&runtime, async move {
        let mut accepting: HashMap<BindKey, oneshot::Sender<()>> = HashMap::new();
        let serve = async {
            while let Some(command) = commands.recv().await {
                match command {
                    Command::Listen { key, socket } => {
                        let (stop_tx, stop_rx) = oneshot::channel();
                        match socket
                            .set_nonblocking(true)
                            .and_then(|()| tokio::net::TcpListener::from_std(socket))
                        {
                            Ok(listener) => {
                                accepting.insert(key.clone(), stop_tx);
                                tokio::task::spawn_local(accept_loop(
                                    worker.clone(),
                                    key,
                                    listener,
                                    stop_rx,
                                ));
                            }
                            Err(e) => tracing::error!(
                                worker = index,
                                ?key,
                                "cannot adopt listening socket: {e}"
                            ),
                        }
                    }
                    Command::StopListening { key } => {
                        accepting.remove(&key);
                    }
                }
            }
        };
        tokio::select! {
            () = serve => {}
            _ = stop => {}
        }
    });
    // Dropping the LocalSet and runtime here closes every connection this worker still holds.
}
