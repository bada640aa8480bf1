//! The one place the server names its async runtime: every task it starts (a connection, a
//! refusal, a call that has to wait) is spawned here, on async-std's executor. Everything else
//! in the crate uses runtime-neutral pieces (async-io's `Async` and `Timer`, async-channel,
//! futures-lite).

use std::future::Future;

/// Runs `future` as a task of its own, detached: it ends when the future does.
pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    // Dropping the handle detaches the task; the task itself reports what it must.
    drop(async_std::task::spawn(future));
}
