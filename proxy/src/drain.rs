//! Drain signals: "finish what you have, then close".
//!
//! A [`Drain`] belongs to something that can go away (a listener version, the whole server).
//! Connections take a [`DrainWatch`] when they start. Once it fires they stop keeping themselves
//! alive (HTTP/1 answers its next request with `connection: close`, HTTP/2 sends GOAWAY) and, if
//! the drain has a deadline, are closed at the deadline. A drain without a deadline
//! ([`Drain::start_open_ended`], Envoy's `/drain_listeners`) closes nothing by force: the listener
//! is stopped, the connections end on their own or when the process is killed.
//!
//! Invariants: a deadline, once set, is never moved later; a later [`Drain::start`] may give an
//! open-ended drain a deadline, and a [`DrainWatch`] that is waiting sees it.

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Serving,
    /// Draining, to be closed by force at `deadline` (never when `None`).
    Draining {
        deadline: Option<Instant>,
    },
}

/// The owner's side.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<State>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Self {
            tx: watch::channel(State::Serving).0,
        }
    }

    /// Starts draining with `grace` to go. A second call never extends an earlier deadline.
    pub fn start(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.tx.send_if_modified(|current| match current {
            State::Draining {
                deadline: Some(existing),
            } if *existing <= deadline => false,
            _ => {
                *current = State::Draining {
                    deadline: Some(deadline),
                };
                true
            }
        });
    }

    /// Starts draining with no deadline (no-op when already draining).
    pub fn start_open_ended(&self) {
        self.tx.send_if_modified(|current| match current {
            State::Serving => {
                *current = State::Draining { deadline: None };
                true
            }
            State::Draining { .. } => false,
        });
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow() != State::Serving
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
            health_check_failed: None,
        }
    }
}

/// A connection's side.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<State>,
    /// The server's failed health check, for listeners that drain on it.
    health_check_failed: Option<watch::Receiver<bool>>,
}

impl DrainWatch {
    /// Also starts (without a deadline) while `health_check_failed` is true: Envoy's `DEFAULT`
    /// drain type, under which a server failing its health check closes connections.
    pub fn or_health(mut self, health_check_failed: watch::Receiver<bool>) -> Self {
        self.health_check_failed = Some(health_check_failed);
        self
    }

    /// Draining has started (or the server's health check is failed, see [`Self::or_health`]).
    pub fn is_started(&self) -> bool {
        *self.rx.borrow() != State::Serving
            || self
                .health_check_failed
                .as_ref()
                .is_some_and(|failed| *failed.borrow())
    }

    /// Resolves when draining started. Never resolves if the owner is dropped without draining.
    pub async fn started(&mut self) {
        let drain = async {
            if self
                .rx
                .wait_for(|state| *state != State::Serving)
                .await
                .is_err()
            {
                std::future::pending::<()>().await;
            }
        };
        let health = async {
            let failed = match &mut self.health_check_failed {
                Some(failed) => failed.wait_for(|f| *f).await.is_ok(),
                None => false,
            };
            if !failed {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = drain => {}
            () = health => {}
        }
    }

    /// Resolves at the drain deadline, following a deadline set after draining started; never
    /// for a drain without one.
    pub async fn deadline(&mut self) {
        self.started().await;
        loop {
            let deadline = match *self.rx.borrow_and_update() {
                State::Draining { deadline } => deadline,
                State::Serving => None,
            };
            let at_deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = at_deadline => return,
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The owner is gone; the deadline it set still holds.
                        match deadline {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                        return;
                    }
                }
            }
        }
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

    #[tokio::test]
    async fn open_ended_drain_has_no_deadline_until_one_is_set() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        drain.start_open_ended();
        assert!(drain.is_draining());
        watch.started().await;
        let mut waiting = tokio::spawn({
            let mut watch = watch.clone();
            async move { watch.deadline().await }
        });
        let quiet = tokio::time::timeout(Duration::from_millis(100), &mut waiting).await;
        assert!(quiet.is_err(), "an open-ended drain fired a deadline");
        // A deadline set later reaches the watch that is already waiting, and an open-ended
        // start does not take it away again.
        let start = Instant::now();
        drain.start(Duration::from_millis(50));
        drain.start_open_ended();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the later deadline fired")
            .expect("deadline task");
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
