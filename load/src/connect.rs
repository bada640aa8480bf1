//! Bounded steps shared by the engine and idle mode: resolving the target, connecting with a
//! timeout, many connects at a bounded parallelism, the probe call, and deadline-capped pauses.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{BenchError, Connection, Driver, CONNECT_PARALLEL, CONNECT_TIMEOUT, PROBE_TIMEOUT};

/// Runs `futures` as tasks, at most `parallel` at a time, and returns their outputs in order.
pub async fn spawn_bounded<T, F>(futures: impl IntoIterator<Item = F>, parallel: usize) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let parallel = parallel.max(1);
    let mut out = Vec::new();
    let mut pending = std::collections::VecDeque::with_capacity(parallel);
    for fut in futures {
        if pending.len() == parallel {
            if let Some(h) = pending.pop_front() {
                out.push(h.await);
            }
        }
        pending.push_back(async_std::task::spawn(fut));
    }
    while let Some(h) = pending.pop_front() {
        out.push(h.await);
    }
    out
}

/// Resolves `host:port` to its first address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, BenchError> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = async_std::net::ToSocketAddrs::to_socket_addrs(addr)
        .await
        .map_err(|e| BenchError::new("resolve", format!("cannot resolve {addr:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| BenchError::new("resolve", format!("{addr:?} resolves to no address")))
}

/// One call on `conn` before any clock runs, bounded by [`PROBE_TIMEOUT`]: the answer's
/// payload bytes, or why there was none (`probe_timeout` if it did not come in time).
pub async fn probe<C: Connection>(conn: &C, payload: &[u8]) -> Result<usize, BenchError> {
    async_std::future::timeout(PROBE_TIMEOUT, conn.call(payload))
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::new(
                "probe_timeout",
                format!("probe call unanswered after {}s", PROBE_TIMEOUT.as_secs()),
            ))
        })
}

/// Connects with [`CONNECT_TIMEOUT`].
pub async fn connect_once<D: Driver>(driver: &D, addr: SocketAddr) -> Result<D::Conn, BenchError> {
    match async_std::future::timeout(CONNECT_TIMEOUT, driver.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::new(
            "connect_timeout",
            format!(
                "no connection to {addr} within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )
        .no_connection()),
    }
}

/// Opens `n` connections, up to [`CONNECT_PARALLEL`] attempts at a time.
pub async fn open_initial<D: Driver>(
    driver: &Arc<D>,
    addr: SocketAddr,
    n: usize,
) -> Vec<Result<D::Conn, BenchError>> {
    let attempts = (0..n).map(|_| {
        let d = driver.clone();
        async move { connect_once(&*d, addr).await }
    });
    spawn_bounded(attempts, CONNECT_PARALLEL).await
}

/// Sleeps for `d`, but not past `deadline`.
pub async fn sleep_until_at_most(d: Duration, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    async_std::task::sleep(d.min(left)).await;
}
