//! Shutdown as a value: one trigger, any number of waiters.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::channel::{Receiver, Sender};

/// A cheap-clone handle; [`Shutdown::trigger`] wakes every [`Shutdown::wait`].
#[derive(Clone)]
pub(crate) struct Shutdown {
    // Invariant: the sender is dropped exactly when shutdown is triggered; nothing is ever sent.
    sender: Arc<Mutex<Option<Sender<()>>>>,
    receiver: Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        let (sender, receiver) = smol::channel::bounded(1);
        Shutdown { sender: Arc::new(Mutex::new(Some(sender))), receiver }
    }

    pub(crate) fn trigger(&self) {
        self.sender.lock().expect("shutdown lock").take();
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Completes once shutdown has been triggered.
    pub(crate) async fn wait(&self) {
        let _ = self.receiver.recv().await;
    }

    /// `future`'s output, or `None` once shutdown is triggered first (the future is dropped).
    pub(crate) async fn until<T>(&self, future: impl Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(future.await) }, async {
            self.wait().await;
            None
        })
        .await
    }

    /// Sleeps for `period`; false when shutdown came first (for loops that work, then wait).
    pub(crate) async fn sleep(&self, period: Duration) -> bool {
        self.until(async_io::Timer::after(period)).await.is_some()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_ends_a_wait_at_shutdown_and_not_before() {
        smol::block_on(async {
            let shutdown = Shutdown::new();
            assert_eq!(shutdown.until(async { 7 }).await, Some(7));
            assert!(shutdown.sleep(Duration::from_millis(1)).await);
            shutdown.trigger();
            assert_eq!(shutdown.until(futures_lite::future::pending::<()>()).await, None);
            assert!(!shutdown.sleep(Duration::from_secs(3600)).await);
        });
    }
}
