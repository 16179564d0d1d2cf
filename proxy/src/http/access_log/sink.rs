//! Where formatted lines go: one writer thread per destination, fed by a bounded channel.
//!
//! A worker only formats its line and `try_send`s it: it never waits for a disk, a full pipe
//! or another worker. When the channel is full (the destination has stalled for
//! [`CHANNEL_LINES`] lines) the line is dropped and counted rather than blocking the data path.
//! The writer drains whatever has queued and writes it in one `write` per batch, so each line
//! reaches the file whole; files are opened `O_APPEND`, so other writers (a rotated Tern, a
//! sibling process) interleave only between batches.
//!
//! Destinations are shared: every `AccessLog` naming the same path (Istio gives each of many
//! HTTP connection managers the same `/dev/stdout` log) holds the same [`Sink`] through a
//! lock-free registry of weak references, so there is one thread per path, not per config.
//! When the last `AccessLog` for a path is dropped its channel closes and the thread writes
//! what is left and exits.

use arc_swap::ArcSwap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

/// Lines that may wait for one destination before new ones are dropped.
const CHANNEL_LINES: usize = 16 * 1024;

/// Bytes gathered before a write, when more lines keep arriving.
const BATCH_BYTES: usize = 64 * 1024;

/// How long [`Sink::flush`] waits for the writer to confirm.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Where an access log writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Destination {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl Destination {
    /// `/dev/stdout` and `/dev/stderr` mean the process's own streams (which may be sockets or
    /// pipes that cannot be reopened by name); anything else is a file.
    pub(super) fn from_path(path: &str) -> Self {
        match path {
            "/dev/stdout" => Destination::Stdout,
            "/dev/stderr" => Destination::Stderr,
            other => Destination::File(PathBuf::from(other)),
        }
    }
}

/// The sending side of one destination's writer thread.
#[derive(Debug)]
pub(super) struct Sink {
    destination: Destination,
    tx: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: AtomicU64,
}

#[derive(Debug)]
enum Message {
    Line(String),
    /// Write everything before this, then answer.
    Flush(mpsc::Sender<()>),
    /// Look at the reopen flag.
    Wake,
}

type Registry = Vec<Weak<Sink>>;

static SINKS: LazyLock<ArcSwap<Registry>> = LazyLock::new(|| ArcSwap::from_pointee(Vec::new()));

impl Sink {
    /// The live sink for `destination`, opening it (and starting its thread) if there is none.
    pub(super) fn shared(destination: Destination) -> Result<Arc<Sink>, String> {
        let mut created: Option<Arc<Sink>> = None;
        loop {
            let current = SINKS.load_full();
            let live = current
                .iter()
                .filter_map(Weak::upgrade)
                .find(|sink| sink.destination == destination);
            if let Some(live) = live {
                // A sink of ours that lost the race closes with its last reference.
                return Ok(live);
            }
            let sink = match &created {
                Some(sink) => Arc::clone(sink),
                None => Arc::clone(created.insert(Sink::spawn(destination.clone())?)),
            };
            let mut next: Registry = current
                .iter()
                .filter(|sink| sink.strong_count() > 0)
                .cloned()
                .collect();
            next.push(Arc::downgrade(&sink));
            let previous = SINKS.compare_and_swap(&current, Arc::new(next));
            if Arc::ptr_eq(&previous, &current) {
                return Ok(sink);
            }
        }
    }

    fn spawn(destination: Destination) -> Result<Arc<Sink>, String> {
        let output = Output::open(&destination)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        std::thread::Builder::new()
            .name("tern-accesslog".into())
            .spawn(move || run(output, &rx, &flag))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Arc::new(Sink {
            destination,
            tx,
            reopen,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues `line`; never blocks. A full or closed channel drops it and counts it.
    pub(super) fn write(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Message::Line(line))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Blocks until every line queued before the call has been written (true), or the writer
    /// has gone or not answered within [`FLUSH_DEADLINE`] (false). Not for worker threads.
    pub(super) fn flush(&self) -> bool {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Message::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(FLUSH_DEADLINE).is_ok()
    }

    /// Lines dropped because the writer had fallen [`CHANNEL_LINES`] behind.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Asks every open access log file to be reopened by name (after rotation, on SIGUSR1 as in
/// Envoy); stdout and stderr are left alone. Returns the number of files asked. Never blocks.
pub fn reopen_files() -> usize {
    let mut asked = 0;
    for sink in SINKS.load().iter().filter_map(Weak::upgrade) {
        if let Destination::File(_) = sink.destination {
            sink.reopen.store(true, Ordering::Release);
            // If the channel is full the writer is busy and sees the flag after this batch.
            let _ = sink.tx.try_send(Message::Wake);
            asked += 1;
        }
    }
    asked
}

/// Waits until every line queued so far, for every destination, has been written; false if a
/// writer did not confirm in time. For shutdown, after the workers have stopped logging.
pub fn flush_all() -> bool {
    let mut all = true;
    for sink in SINKS.load().iter().filter_map(Weak::upgrade) {
        all &= sink.flush();
    }
    all
}

/// The writer thread: batch what has queued, write it, until every sender is gone.
fn run(mut output: Output, rx: &Receiver<Message>, reopen: &AtomicBool) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    batch.extend_from_slice(line.as_bytes());
                    if batch.len() >= BATCH_BYTES {
                        output.write(&mut batch);
                    }
                }
                Message::Flush(ack) => {
                    output.write(&mut batch);
                    let _ = ack.send(());
                }
                Message::Wake => {
                    // Lines queued after the request go to the reopened file.
                    if reopen.swap(false, Ordering::AcqRel) {
                        output.write(&mut batch);
                        output.reopen();
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        output.write(&mut batch);
        if reopen.swap(false, Ordering::AcqRel) {
            output.reopen();
        }
    }
    output.write(&mut batch);
}

/// An open destination.
enum Output {
    Stdout,
    Stderr,
    File {
        path: PathBuf,
        file: File,
        /// Set after a failed write, so a broken destination warns once, not per batch.
        failing: bool,
    },
}

impl Output {
    fn open(destination: &Destination) -> Result<Self, String> {
        Ok(match destination {
            Destination::Stdout => Output::Stdout,
            Destination::Stderr => Output::Stderr,
            Destination::File(path) => Output::File {
                file: append(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
                path: path.clone(),
                failing: false,
            },
        })
    }

    /// Writes and empties `batch`. A failed write loses the batch: there is nobody to retry
    /// for, and holding it would grow without bound.
    fn write(&mut self, batch: &mut Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        let result = match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(batch).and_then(|()| out.flush())
            }
            Output::Stderr => std::io::stderr().lock().write_all(batch),
            Output::File { file, .. } => file.write_all(batch),
        };
        batch.clear();
        if let Output::File { path, failing, .. } = self {
            match result {
                Err(e) if !*failing => {
                    *failing = true;
                    tracing::warn!(path = %path.display(), error = %e, "access log write failed");
                }
                Ok(()) => *failing = false,
                Err(_) => {}
            }
        }
    }

    fn reopen(&mut self) {
        if let Output::File { path, file, .. } = self {
            match append(path) {
                Ok(reopened) => *file = reopened,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "access log reopen failed")
                }
            }
        }
    }
}

fn append(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}
