//! Helpers shared by the server crate's in-process tests.

use std::future::Future;
use std::time::Duration;

/// Runs `fut` on async-std, failing the test if it takes longer than `limit`.
pub fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    async_std::task::block_on(async {
        futures_lite::future::or(async { Some(fut.await) }, async {
            async_io::Timer::after(limit).await;
            None
        })
        .await
    })
    .unwrap_or_else(|| panic!("test step did not finish within {limit:?}"))
}
