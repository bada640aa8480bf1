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
//! Method names come from the service: [`ServerMetrics::new`] takes the list, and each call
//! is recorded on the handles of its method ([`ServerMetrics::method`]). The demo service's
//! names are [`DEMO_METHODS`] and [`demo_method_name`].

mod http;
mod process;
mod registry;

pub use http::{serve_http, HttpConfig};
pub use registry::{
    CallOutcome, HandshakeOutcome, MethodMetrics, RefusalReason, ServerMetrics, OTHER_METHOD,
};

use rpckit_proto::demo::Request;

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

/// The demo service's method names, as [`demo_method_name`] gives them.
pub const DEMO_METHODS: &[&str] = &["echo", "uppercase", "ping", "sleep"];

/// The method name of a demo request, for the `method` label.
pub fn demo_method_name(request: &Request) -> &'static str {
    match request {
        Request::Echo(_) => "echo",
        Request::Uppercase(_) => "uppercase",
        Request::Ping => "ping",
        Request::Sleep { .. } => "sleep",
    }
}

#[cfg(test)]
mod tests;
