//! Metrics for operators: a registry of the server's counters, gauges and latency
//! histograms ([`ServerMetrics`]), process metrics, and an HTTP listener ([`serve_http`]) that
//! serves them in the Prometheus text format on `GET /metrics` and the server's health on
//! `GET /healthz` (200 while serving, 503 once draining).
//!
//! Families (all prefixed `rpckit_`): `connections_open`, `connections_accepted_total`,
//! `connections_refused_total{reason}`, `handshakes_total{outcome}`,
//! `calls_total{method,outcome}`, `call_duration_seconds{method}` (histogram),
//! `received_bytes_total`, `sent_bytes_total`, `calls_in_flight`, `queue_stalls_total`,
//! `draining`; plus the standard `process_*` families.
//!
//! Method names come from the service ([`crate::Service::METHOD_NAMES`] and
//! [`crate::Service::method_name`]): [`ServerMetrics::new`] takes the list, and each call
//! is recorded on the handles of its method ([`ServerMetrics::method`]).

mod http;
mod labels;
mod process;
mod registry;

pub use http::{serve_http, HttpConfig};
pub use labels::{CallOutcome, HandshakeOutcome, RefusalReason};
pub use registry::{MethodId, MethodMetrics, ServerMetrics, OTHER_METHOD};

/// The content type of [`ServerMetrics::render`]'s output: the Prometheus text exposition
/// format 0.0.4, which Prometheus scrapes by default.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Why the metrics could not be built or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A family could not be defined or registered (a bad name, or a name used twice).
    #[error("cannot set up a metric: {0}")]
    Registry(#[from] prometheus::Error),
}

#[cfg(test)]
mod tests;
