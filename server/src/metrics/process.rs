//! Process metrics: open file descriptors (and their limit), resident and virtual memory,
//! CPU time, threads and start time, under their standard names (`process_open_fds`,
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`, ...), read from
//! `/proc/self` at each scrape by the `prometheus` crate's process collector. Linux only;
//! elsewhere there are none.

use prometheus::Registry;

use super::MetricsError;

/// Adds the process metrics to `registry`.
#[cfg(target_os = "linux")]
pub(super) fn register(registry: &Registry) -> Result<(), MetricsError> {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(collector))?;
    Ok(())
}

/// Adds nothing: process metrics are read from Linux's /proc.
#[cfg(not(target_os = "linux"))]
pub(super) fn register(_registry: &Registry) -> Result<(), MetricsError> {
    Ok(())
}
