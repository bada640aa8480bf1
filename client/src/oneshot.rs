//! A one-shot channel: how a call's outcome travels from the connection's reader to the
//! waiting caller. One allocation and one lock per call; lighter than a general channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    /// The value, once sent.
    value: Option<T>,
    /// The receiver's waker, while it waits.
    waker: Option<Waker>,
    /// Set when the sender is gone (after sending, or without).
    closed: bool,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    // Nothing panics while holding this lock.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends the one value.
pub(crate) struct Sender<T>(Shared<T>);

/// Resolves to the value, or `None` if the sender was dropped without sending.
pub(crate) struct Receiver<T>(Shared<T>);

/// A connected sender and receiver.
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        value: None,
        waker: None,
        closed: false,
    }));
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Delivers `value` (dropped if the receiver is gone).
    pub(crate) fn send(self, value: T) {
        lock(&self.0).value = Some(value);
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.0);
        if let Some(value) = state.value.take() {
            return Poll::Ready(Some(value));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_once_or_reports_the_sender_gone() {
        futures_lite::future::block_on(async {
            let (tx, rx) = oneshot();
            tx.send(5);
            assert_eq!(rx.await, Some(5));
            let (tx, rx) = oneshot::<u8>();
            drop(tx);
            assert_eq!(rx.await, None);
            let (tx, rx) = oneshot();
            let waiter = async_std::task::spawn(rx);
            tx.send("late");
            assert_eq!(waiter.await, Some("late"));
        });
    }
}
