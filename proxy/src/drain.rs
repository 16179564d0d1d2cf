//! Drain signals: "finish what you have by this deadline, then close".
//!
//! A [`Drain`] belongs to something that can go away (a listener version, the whole server).
//! Connections take a [`DrainWatch`] when they start and, once it fires, have until the deadline
//! to finish on their own; at the deadline they are closed.

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The owner's side.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<Option<Instant>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Self {
            tx: watch::channel(None).0,
        }
    }

    /// Starts draining with `grace` to go. A second call never extends an earlier deadline.
    pub fn start(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.tx.send_if_modified(|current| match current {
            Some(existing) if *existing <= deadline => false,
            _ => {
                *current = Some(deadline);
                true
            }
        });
    }

    pub fn is_draining(&self) -> bool {
        self.tx.borrow().is_some()
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }
}

/// A connection's side.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<Option<Instant>>,
}

impl DrainWatch {
    /// Resolves when draining started; returns the deadline. Never resolves if the owner is
    /// dropped without draining.
    pub async fn started(&mut self) -> Instant {
        loop {
            if let Some(deadline) = *self.rx.borrow_and_update() {
                return deadline;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves at the drain deadline.
    pub async fn deadline(&mut self) {
        let deadline = self.started().await;
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deadline_fires_after_grace_and_is_not_extended() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        let start = Instant::now();
        drain.start(Duration::from_millis(50));
        drain.start(Duration::from_secs(3600));
        watch.deadline().await;
        let waited = start.elapsed();
        // Fired no earlier than the first grace, and long before the second would have allowed.
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(3600), "{waited:?}");
    }

    #[tokio::test]
    async fn watch_taken_after_start_sees_the_drain() {
        let drain = Drain::new();
        drain.start(Duration::ZERO);
        assert!(drain.is_draining());
        drain.watch().deadline().await;
    }
}
