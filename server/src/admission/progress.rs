//! How far a connection has got in its handshake, as the admission table and the connection's
//! deadline see it: accepted, hello answered, proof checked. [`HelloWatch`] marks the hello as
//! answered when the handshake first writes (its first write is always the answer to the
//! hello), so the server needs no hook inside proto's handshake.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::future;
use futures_lite::io::AsyncWrite;

/// One connection's progress through the handshake.
#[derive(Debug)]
pub(crate) struct Progress {
    /// When the connection was admitted.
    accepted: Instant,
    /// When the server began answering the hello.
    answered: OnceLock<Instant>,
    /// Set once the client's proof has been checked.
    checked: AtomicBool,
}

/// Which step of the client did not come in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stall {
    /// No complete hello within this time of the accept.
    #[error("no hello within {0:?}")]
    Hello(Duration),
    /// No proof within this time of the hello's answer.
    #[error("no proof within {0:?} of the hello's answer")]
    Proof(Duration),
}

impl Progress {
    /// A connection admitted `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Progress {
            accepted: now,
            answered: OnceLock::new(),
            checked: AtomicBool::new(false),
        }
    }

    /// Whether the server has answered the hello (a connection past it is never evicted).
    pub(crate) fn hello_answered(&self) -> bool {
        self.answered.get().is_some()
    }

    /// Records that the client's proof has been checked: no step deadline is left.
    pub(crate) fn proof_checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    /// Completes when a client step is late: the hello not answered within `step` of the
    /// accept, or the proof not checked within `step` of the hello's answer. Never completes
    /// once the proof is checked.
    pub(crate) async fn stalled(&self, step: Duration) -> Stall {
        wait_until(self.accepted.checked_add(step)).await;
        let Some(&answered) = self.answered.get() else {
            return Stall::Hello(step);
        };
        wait_until(answered.checked_add(step)).await;
        if self.checked.load(Ordering::Acquire) {
            return future::pending().await;
        }
        Stall::Proof(step)
    }
}

/// Waits until `at`; for ever if it is `None` (beyond the clock).
async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => {
            Timer::at(at).await;
        }
        None => future::pending().await,
    }
}

/// The handshake's writing half: writes through to `inner`, and marks the hello answered at
/// the first write.
#[derive(Debug)]
pub(crate) struct HelloWatch<W> {
    /// The socket.
    inner: W,
    /// Marked at the first write.
    progress: Arc<Progress>,
}

impl<W> HelloWatch<W> {
    /// Watches writes to `inner` for `progress`.
    pub(crate) fn new(inner: W, progress: Arc<Progress>) -> Self {
        HelloWatch { inner, progress }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HelloWatch<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.progress.answered.get_or_init(Instant::now);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::AsyncWriteExt;

    #[test]
    fn the_first_write_marks_the_hello_answered_and_a_checked_proof_ends_the_deadline() {
        let progress = Arc::new(Progress::new(Instant::now()));
        let mut sink = HelloWatch::new(futures_lite::io::sink(), progress.clone());
        assert!(!progress.hello_answered());
        future::block_on(sink.write_all(b"hello's answer")).unwrap();
        assert!(progress.hello_answered());

        // Past both steps with no proof: the proof is late.
        let step = Duration::ZERO;
        assert_eq!(future::block_on(progress.stalled(step)), Stall::Proof(step));
        // Checked: nothing is late any more.
        progress.proof_checked();
        // Both timers are in the past, so one poll reaches the check.
        let late = future::block_on(future::poll_once(progress.stalled(step)));
        assert_eq!(late, None);
    }

    #[test]
    fn no_hello_is_a_hello_stall() {
        let progress = Progress::new(Instant::now());
        let step = Duration::ZERO;
        assert_eq!(future::block_on(progress.stalled(step)), Stall::Hello(step));
    }
}
