//! When a call gives up, and waiting for something no longer than that.

use std::future::Future;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::future;

/// The longest duration the client works with (100 years): a setting longer than this is cut
/// to it, so that deadlines computed from it cannot overflow the clock.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// When a call times out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// The instant the call times out.
    pub(crate) at: Instant,
    /// The time left at the call's start: sent to the server as the call's relative deadline
    /// (cut to what is left when it is written), and reported in
    /// [`crate::CallError::Timeout`].
    pub(crate) left: Duration,
}

/// Runs `work` until `deadline` (`None`: for ever); `None` if the deadline came first.
pub(crate) async fn until<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = T>,
) -> Option<T> {
    let Some(at) = deadline else {
        return Some(work.await);
    };
    future::or(async { Some(work.await) }, async {
        Timer::at(at).await;
        None
    })
    .await
}

/// Runs `work` for at most `limit`; `None` if the time ran out first.
pub(crate) async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    until(Instant::now().checked_add(limit), work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_gives_up_at_the_deadline_and_not_before() {
        future::block_on(async {
            let past = Some(Instant::now());
            assert_eq!(until(past, future::pending::<()>()).await, None);
            assert_eq!(until(None, async { 7 }).await, Some(7));
            assert_eq!(within(MAX_DURATION, async { 8 }).await, Some(8));
        });
    }
}
