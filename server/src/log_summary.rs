//! The server's use of [`LogLimiter`]: connection-level warnings go through [`limited!`],
//! which logs the first few of each reason per window at their own level and the rest at
//! debug (so `--log-level debug` still shows every one), and [`SummaryTicker`] runs a task
//! for the server's life that logs each window's summary of what was not logged, even once a
//! flood has stopped, and the last window's at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{future, StreamExt};
use tracing::warn;

use crate::log_limit::{LogLimiter, Summary, WarnReason};
use crate::spawn::spawn;

/// Logs one connection-level event of a reason through the server's limiter: at `$level`
/// (`warn` or `info`) while the reason's budget for the window lasts, at `debug` after.
/// `limited!(limiter, WarnReason::X, warn, %peer, "refused: …")`.
macro_rules! limited {
    ($limiter:expr, $reason:expr, $level:ident, $($arg:tt)+) => {
        if $crate::log_summary::counts_one($limiter, $reason) {
            tracing::$level!($($arg)+)
        } else {
            tracing::debug!($($arg)+)
        }
    };
}
pub(crate) use limited;

/// Counts one event of `reason` now; logs the summary of the window it closed, if any.
/// Whether the event itself is to be logged at its own level.
pub(crate) fn counts_one(limiter: &LogLimiter, reason: WarnReason) -> bool {
    let decision = limiter.event(reason, Instant::now());
    if let Some(summary) = decision.summary {
        log_summary(&summary);
    }
    decision.log
}

/// One summary line: the text says what was suppressed; `reason`, `total` and `suppressed`
/// are fields for log processors.
fn log_summary(summary: &Summary) {
    warn!(
        reason = summary.reason.name(),
        total = summary.total,
        suppressed = summary.suppressed,
        "{summary}"
    );
}

/// Owns the task that logs summaries each window; dropping it ends the task and logs the
/// summary of the window still open (before the drop returns, so before the process exits).
#[derive(Debug)]
pub(crate) struct SummaryTicker {
    /// The limiter the task ticks.
    limiter: Arc<LogLimiter>,
    /// Closed on drop: the task's signal to stop.
    _stop: async_channel::Sender<()>,
}

impl SummaryTicker {
    /// Starts the task for `limiter`: it ticks just after each window ends.
    pub(crate) fn start(limiter: Arc<LogLimiter>) -> Self {
        let origin = limiter.origin();
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let window = limiter.window();
        // Just past each boundary, so the tick finds the window closed.
        let first = origin + window + Duration::from_millis(5).min(window / 2);
        let ticked = limiter.clone();
        spawn(async move {
            let limiter = ticked;
            let mut ticks = Timer::interval_at(first, window);
            let stopped = async {
                let _ = stop_rx.recv().await;
            };
            let ticking = async {
                while ticks.next().await.is_some() {
                    limiter.tick(Instant::now()).iter().for_each(log_summary);
                }
            };
            future::or(stopped, ticking).await;
        });
        SummaryTicker {
            limiter,
            _stop: stop_tx,
        }
    }
}

impl Drop for SummaryTicker {
    fn drop(&mut self) {
        // The server stops: sum up the window still open too.
        let end = Instant::now() + self.limiter.window();
        self.limiter.tick(end).iter().for_each(log_summary);
    }
}
