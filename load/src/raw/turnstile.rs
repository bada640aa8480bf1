//! Turns for pipelined calls: responses come back in request order, so each call waits until
//! the response before its own has been read.

use std::sync::Mutex;
use std::task::{Poll, Waker};

/// Hands out turns to read responses in request order.
pub struct Turnstile {
    state: Mutex<TurnState>,
}

struct TurnState {
    /// Sequence number whose response is read next.
    next: u64,
    poisoned: bool,
    /// Calls waiting for their turn: (sequence number, waker).
    waiters: Vec<(u64, Waker)>,
}

impl Default for Turnstile {
    fn default() -> Self {
        Turnstile {
            state: Mutex::new(TurnState {
                next: 0,
                poisoned: false,
                waiters: Vec::new(),
            }),
        }
    }
}

impl std::fmt::Debug for Turnstile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Turnstile")
            .field("next", &st.next)
            .field("poisoned", &st.poisoned)
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

impl Turnstile {
    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `seq` is the next response to read; `Err` once poisoned.
    pub async fn wait(&self, seq: u64) -> Result<(), ()> {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            if st.poisoned {
                return Poll::Ready(Err(()));
            }
            if st.next == seq {
                return Poll::Ready(Ok(()));
            }
            match st.waiters.iter_mut().find(|(s, _)| *s == seq) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => st.waiters.push((seq, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    /// Passes the turn to the next sequence number and wakes its waiter.
    pub fn advance(&self) {
        let waker = {
            let mut st = self.lock();
            st.next += 1;
            let next = st.next;
            st.waiters
                .iter()
                .position(|(s, _)| *s == next)
                .map(|i| st.waiters.swap_remove(i).1)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Fails every current and future waiter.
    pub fn poison(&self) {
        let waiters = {
            let mut st = self.lock();
            st.poisoned = true;
            std::mem::take(&mut st.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn turnstile_wakes_only_the_next_in_line() {
        let t = Turnstile::default();
        let w1 = Arc::new(CountWake(AtomicUsize::new(0)));
        let w2 = Arc::new(CountWake(AtomicUsize::new(0)));
        let mut f1 = Box::pin(t.wait(1));
        let mut f2 = Box::pin(t.wait(2));
        let waker1 = Waker::from(w1.clone());
        let waker2 = Waker::from(w2.clone());
        let mut cx1 = std::task::Context::from_waker(&waker1);
        let mut cx2 = std::task::Context::from_waker(&waker2);
        assert!(f1.as_mut().poll(&mut cx1).is_pending());
        assert!(f2.as_mut().poll(&mut cx2).is_pending());
        t.advance(); // 0 -> 1
        assert_eq!(w1.0.load(Ordering::SeqCst), 1);
        assert_eq!(w2.0.load(Ordering::SeqCst), 0);
        assert_eq!(f1.as_mut().poll(&mut cx1), Poll::Ready(Ok(())));
        t.poison();
        assert_eq!(w2.0.load(Ordering::SeqCst), 1);
        assert_eq!(f2.as_mut().poll(&mut cx2), Poll::Ready(Err(())));
    }
}
