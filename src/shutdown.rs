//! Shutdown as a value: one trigger, any number of waiters.

use std::sync::{Arc, Mutex};

use smol::channel::{Receiver, Sender};

/// A cheap-clone handle; [`Shutdown::trigger`] wakes every [`Shutdown::wait`].
#[derive(Clone)]
pub struct Shutdown {
    // Invariant: the sender is dropped exactly when shutdown is triggered; nothing is ever sent.
    sender: Arc<Mutex<Option<Sender<()>>>>,
    receiver: Receiver<()>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (sender, receiver) = smol::channel::bounded(1);
        Shutdown { sender: Arc::new(Mutex::new(Some(sender))), receiver }
    }

    pub fn trigger(&self) {
        self.sender.lock().expect("shutdown lock").take();
    }

    pub fn is_triggered(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        let _ = self.receiver.recv().await;
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}
