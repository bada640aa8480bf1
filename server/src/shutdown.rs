//! Shutdown broadcast: one trigger, any number of listeners that wake when it fires.

/// Fires the shutdown (dropping it fires it too).
#[derive(Debug)]
pub(crate) struct ShutdownTrigger {
    /// Closed to fire; never used to send.
    tx: async_channel::Sender<()>,
}

/// Completes once the shutdown has fired. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownSignal {
    /// Its `recv` fails once the sender is closed.
    rx: async_channel::Receiver<()>,
}

/// A connected trigger and signal.
pub(crate) fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = async_channel::bounded(1);
    (ShutdownTrigger { tx }, ShutdownSignal { rx })
}

impl ShutdownTrigger {
    /// Wakes every listener.
    pub(crate) fn fire(&self) {
        self.tx.close();
    }
}

impl ShutdownSignal {
    /// Waits until the shutdown fires (returns at once if it has).
    pub(crate) async fn wait(&self) {
        // Nothing is ever sent: this returns when the channel is closed.
        let _ = self.rx.recv().await;
    }

    /// Whether the shutdown has fired.
    pub(crate) fn fired(&self) -> bool {
        self.rx.is_closed()
    }
}
